"""Medical and other non-photo images to the 8-bit RGB a pretrained network reads.

- High-bit-depth grayscale (16-bit PNG/TIFF, 32-bit integer or float TIFF): `convert("RGB")` would clip every
  value above 255 to white. The values are mapped linearly through a window instead: [center - width / 2,
  center + width / 2] -> [0, 255], clipped outside. The window is `--window_center/--window_width` when given,
  else the image's own minimum to maximum.
- DICOM (`.dcm`, through pydicom: `pip install 'hf-transfer-kit[medical]'`): stored values times RescaleSlope plus
  RescaleIntercept (Hounsfield units for CT), then the flags' window, else the file's first WindowCenter /
  WindowWidth, else min to max. MONOCHROME1 (bright = low values) is inverted. Colour DICOM passes through.
- CMYK (print JPEGs): converted through the embedded ICC profile when there is one, else PIL's formula.
8-bit images are left alone: a window applies to values an 8-bit image can't hold.
"""

from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image, ImageCms

from hf_transfer.config import UsageError

HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


@dataclass(frozen=True)
class Window:
    center: float
    width: float


def windowed(values: np.ndarray, window: Window | None) -> Image.Image:
    """Grayscale values -> 8-bit RGB through `window` (the values' min to max when None)."""
    values = values.astype(np.float64)
    if window is None:
        low, high = float(values.min()), float(values.max())
    else:
        low, high = window.center - window.width / 2, window.center + window.width / 2
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    grey = np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1))


def to_rgb(image: Image.Image, window: Window | None) -> Image.Image:
    """A decoded PIL image -> RGB, scaling high-bit-depth grayscale and converting CMYK by its profile."""
    if image.mode in HIGH_BIT_DEPTH_MODES:
        return windowed(np.asarray(image), window)
    if image.mode == "CMYK" and image.info.get("icc_profile"):
        profile = ImageCms.ImageCmsProfile(BytesIO(image.info["icc_profile"]))
        return ImageCms.profileToProfile(image, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
    return image.convert("RGB")


def dicom_to_rgb(handle, name: str, window: Window | None) -> Image.Image:
    """One DICOM frame -> RGB (see the module docstring for the scaling)."""
    try:
        import pydicom
    except ImportError:
        raise UsageError(f"{name} is a DICOM file: pip install 'hf-transfer-kit[medical]' (pydicom) to read it"
                         ) from None
    try:
        dataset = pydicom.dcmread(handle)
    except pydicom.errors.InvalidDicomError as error:
        raise UsageError(f"{name} is not a readable DICOM file: {error}") from None
    if "PixelData" not in dataset:
        raise UsageError(f"{name} is a DICOM file without pixel data (a report or structured data set?); "
                         "give image files only")
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # pydicom raises many types for missing codecs and malformed data
        raise UsageError(f"can't decode the pixels of {name} ({dataset.file_meta.get('TransferSyntaxUID', '?')}): "
                         f"{error}") from None
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UsageError(f"{name} holds {frames} frames; give one image per file (split the series first)")
    if int(dataset.get("SamplesPerPixel", 1)) == 3:
        return Image.fromarray(pixels.astype(np.uint8)).convert("RGB")
    values = pixels * float(dataset.get("RescaleSlope", 1) or 1) + float(dataset.get("RescaleIntercept", 0) or 0)
    if window is None and "WindowCenter" in dataset and "WindowWidth" in dataset:
        window = Window(_first(dataset.WindowCenter), _first(dataset.WindowWidth))
    image = windowed(values, window)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        image = Image.fromarray(255 - np.asarray(image))
    return image


def _first(value) -> float:
    """WindowCenter and WindowWidth may hold several windows; the first is the default one."""
    return float(np.atleast_1d(np.asarray(value, dtype=np.float64))[0])
