"""Medical image formats: 16-bit grayscale PNG/TIFF through a window, DICOM (rescale, window, no pixel data), CMYK."""

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from hf_transfer.config import UsageError
from hf_transfer.modalities.image import ImageArgs, load_image
from hf_transfer.modalities.medical import Window

# A 16-bit ramp from 1000 to 4000: far above what 8 bits hold.
RAMP = np.linspace(1000, 4000, 16 * 16).reshape(16, 16).astype(np.uint16)


def grey(image: Image.Image) -> np.ndarray:
    array = np.asarray(image)
    assert image.mode == "RGB" and (array[..., 0] == array[..., 2]).all()
    return array[..., 0].astype(int)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path, suffix):
    path = tmp_path / f"scan{suffix}"
    Image.fromarray(RAMP).save(path)
    assert Image.open(path).mode.startswith("I")
    values = grey(load_image(str(path), "test"))
    assert values.min() == 0 and values.max() == 255  # min to max by default; convert("RGB") gives all 255
    assert np.all(np.diff(values.ravel()) >= 0) and len(np.unique(values)) > 200
    windowed = grey(load_image(str(path), "test", Window(center=2500, width=1000)))
    assert (windowed[RAMP <= 2000] == 0).all() and (windowed[RAMP >= 3000] == 255).all()
    middle = (RAMP > 2400) & (RAMP < 2600)
    assert np.abs(windowed[middle] - (RAMP[middle] - 2000) / 1000 * 255).max() <= 1


def write_dicom(path, pixels: np.ndarray | None, **elements):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    if pixels is not None:
        dataset.Rows, dataset.Columns = pixels.shape
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.BitsAllocated = dataset.BitsStored = 16
        dataset.HighBit, dataset.PixelRepresentation = 15, 0
        dataset.PixelData = pixels.astype(np.uint16).tobytes()
    for key, value in elements.items():
        setattr(dataset, key, value)
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_dicom_rescale_and_the_files_window(tmp_path):
    # Stored 1000..4000, slope 1, intercept -1024 => CT-like values -24..2976; the file's window: 476 +- 500.
    path = write_dicom(tmp_path / "ct.dcm", RAMP, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=476,
                       WindowWidth=1000)
    values = grey(load_image(str(path), "test"))
    hounsfield = RAMP.astype(int) - 1024
    assert (values[hounsfield <= -24] == 0).all() and (values[hounsfield >= 976] == 255).all()
    inside = (hounsfield > 100) & (hounsfield < 900)
    assert np.abs(values[inside] - (hounsfield[inside] + 24) / 1000 * 255).max() <= 1
    # Flags win over the file's window.
    flagged = grey(load_image(str(path), "test", Window(center=1476, width=3000)))
    assert flagged.min() == 0 and flagged.max() == 255 and (flagged[hounsfield >= 976] < 255).any()


def test_dicom_monochrome1_is_inverted_and_min_max_without_a_window(tmp_path):
    path = write_dicom(tmp_path / "xray.dcm", RAMP, PhotometricInterpretation="MONOCHROME1")
    values = grey(load_image(str(path), "test"))
    assert values[0, 0] == 255 and values[-1, -1] == 0


def test_dicom_without_pixel_data_is_a_clear_error(tmp_path):
    path = write_dicom(tmp_path / "report.dcm", None, Modality="SR")
    with pytest.raises(UsageError, match=r"report.dcm is a DICOM file without pixel data"):
        load_image(str(path), "test")
    (tmp_path / "fake.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(UsageError, match="fake.dcm is not a readable DICOM file"):
        load_image(str(tmp_path / "fake.dcm"), "test")


def test_cmyk_jpeg_becomes_the_right_rgb(tmp_path):
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(path, quality=95)  # pure cyan
    assert Image.open(path).mode == "CMYK"
    red, green, blue = np.asarray(load_image(str(path), "test")).reshape(-1, 3).mean(0)
    assert red < 10 and green > 245 and blue > 245


def test_window_flags_come_in_pairs():
    with pytest.raises(UsageError, match="--window_center and --window_width together"):
        ImageArgs(window_center=40)
    with pytest.raises(UsageError, match="--window_width must be > 0"):
        ImageArgs(window_center=40, window_width=0)
    assert pydicom.__version__  # the `medical` extra is part of the test extra
