"""Images: decode with PIL per batch, augment for training, resize/crop/normalise as the checkpoint's processor does.

Augmentation is our own PIL + numpy + torch code: torchvision's wheels don't load beside the CPU torch here,
albumentations pulls in OpenCV (and its maintained successor is AGPL), and kornia would add a compiled dependency
for the handful of ops below. Evaluation and prediction go through the checkpoint's own image processor, exactly
as `pipeline("image-classification")` does, so the reported scores are the ones users get.
"""

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from datasets import DatasetDict
from PIL import Image, ImageEnhance, ImageOps
from tqdm.auto import tqdm
from transformers.image_utils import SizeDict

from hf_transfer.config import AUGMENT_PLACES, DataArgs, ModelArgs, UsageError, _check_choice, _check_positive
from hf_transfer.data.splits import FolderLayout, LabelledSplits, guess_column, resolve_paths
from hf_transfer.modalities.image_augment import (
    GREY,
    POSTERIZE_BITS,
    ROTATE_DEGREES,
    SHARPNESS,
    SOLARIZE_THRESHOLD,
    draw_augmentation,
    geometric_matrix,
)
from hf_transfer.modalities.medical import Window, dicom_to_rgb, to_rgb

IMAGE_LAYOUT = FolderLayout("image", (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".dcm"))
IMAGE_COLUMN_GUESSES = ("image", "img", "path", "file", "filename")
AUGMENTATIONS = ("none", "basic", "randaugment")
BAD_IMAGES = ("error", "skip")
# Model types whose position embeddings fix the input size (a different --image_size fails at the first batch).
FIXED_SIZE_MODEL_TYPES = ("vit", "deit")


@dataclass
class ImageArgs:
    image_column: str | None = field(
        default=None,
        metadata={"help": "Column with the image: a file path (relative to the data file's folder) or a Hub image "
                          "feature. Guessed from image/img/path/file/filename when omitted."},
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Side in pixels of the square the model sees (default: the image processor's)."}
    )
    augment: str = field(
        default="basic",
        metadata={"help": "Training augmentation: none | basic (random resized crop, horizontal flip, small colour "
                          "jitter) | randaugment (basic + two RandAugment-style ops per image)."},
    )
    augment_on: str = field(
        default="auto",
        metadata={"help": "Where training images are augmented: loader (PIL, in the DataLoader workers) | device "
                          "(batched on the training device: workers only decode and resize) | auto (device on a "
                          "GPU, else loader). Both draw the same augmentation for an example."},
    )
    mixup_alpha: float = field(
        default=0.0, metadata={"help": "Mixup: blend pairs of training images, Beta(alpha, alpha) shares (0 = off)."}
    )
    cutmix_alpha: float = field(
        default=0.0, metadata={"help": "CutMix: paste a box of one training image into another (0 = off). With "
                                       "mixup also on, each batch gets one of the two."}
    )
    bad_images: str = field(
        default="error",
        metadata={"help": "An image that can't be decoded, in any split: `error` stops before training and names "
                          "it; `skip` leaves it out and prints which were left out."},
    )
    window_center: float | None = field(
        default=None,
        metadata={"help": "16-bit/float grayscale and DICOM images: centre of the value window mapped to 0-255 "
                          "(after DICOM rescale slope/intercept, e.g. 40 for CT soft tissue). Default: the DICOM "
                          "file's WindowCenter, else each image's min to max."},
    )
    window_width: float | None = field(
        default=None, metadata={"help": "Width of that window (e.g. 400 for CT soft tissue); give both or neither."}
    )

    def __post_init__(self):
        if (self.window_center is None) != (self.window_width is None):
            raise UsageError("give --window_center and --window_width together (or neither: each image's own "
                             "window)")
        _check_positive("window_width", self.window_width)
        _check_choice("augment", self.augment, AUGMENTATIONS)
        _check_choice("augment_on", self.augment_on, AUGMENT_PLACES)
        _check_choice("bad_images", self.bad_images, BAD_IMAGES)
        _check_positive("image_size", self.image_size)
        _check_positive("mixup_alpha", self.mixup_alpha, allow_zero=True)
        _check_positive("cutmix_alpha", self.cutmix_alpha, allow_zero=True)


# --- data ------------------------------------------------------------------------------------------------------
def image_splits(labelled: LabelledSplits, data: DataArgs, image_column: str | None,
                 bad_images: str = "error") -> DatasetDict:
    """Each split as (`image`, `labels`) rows holding undecoded images: absolute paths or {bytes, path} dicts.

    Relative paths in a `--train_file` resolve against that file's folder; every image of every split is decoded
    once here, before training starts, and a missing or corrupt one is named (or left out: `bad_images="skip"`).
    Batches decode again when they need the image.
    """
    column = guess_column(labelled.columns("train"), image_column, IMAGE_COLUMN_GUESSES, "image",
                          labelled.sources["train"])
    # A validation split carved out of the training file shares its folder.
    carved_from_file = data.train_file if not (data.validation_dir or data.dataset_name) else None
    files = {"train": data.train_file, "validation": data.validation_file or carved_from_file, "test": data.test_file}
    prepared = DatasetDict()
    for split, dataset in labelled.splits.items():
        source = labelled.sources[split]
        if column not in dataset.column_names:
            raise UsageError(f"{source}: no image column {column!r}; columns are {', '.join(labelled.columns(split))}")
        dataset = dataset.select_columns([column, "labels"])
        if isinstance(dataset.features[column], datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
        else:
            base = Path(files[split]).parent if files.get(split) else Path.cwd()
            paths = resolve_paths(dataset[column], base, source, "image", labelled.file_rows.get(split))
            dataset = dataset.remove_columns(column).add_column(column, paths)
        dataset = dataset.rename_column(column, "image") if column != "image" else dataset
        prepared[split] = _drop_bad_images(dataset, source, split, bad_images)
    return prepared


def _drop_bad_images(dataset: datasets.Dataset, source: str, split: str, bad_images: str) -> datasets.Dataset:
    keep, bad = [], []
    for index, value in enumerate(tqdm(dataset["image"], desc=f"Checking {split} images", leave=False)):
        try:
            load_image(value, source)
            keep.append(index)
        except UsageError as error:
            bad.append(str(error))
    if not bad:
        return dataset
    shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
    if not keep:
        raise UsageError(f"{source}: not one image of the {split} split can be used: {shown}")
    if bad_images == "error":
        raise UsageError(f"{len(bad)} image(s) of the {split} split can't be used: {shown}. Fix or remove them, or "
                         "pass --bad_images skip to leave them out")
    tqdm.write(f"--bad_images skip: left out {len(bad)} image(s) of the {split} split ({source})")
    return dataset.select(keep)


def window_of(center: float | None, width: float | None) -> Window | None:
    """The --window_center/--window_width pair, when given."""
    return None if center is None else Window(center, width)


def load_image(value: str | dict, source: str, window: Window | None = None) -> Image.Image:
    """Decode one image to RGB (high-bit-depth and DICOM images through `window`: see modalities/medical.py);
    an unreadable or corrupt file is named in the error."""
    if isinstance(value, str):
        name, handle = value, value
    else:
        name = value.get("path") or f"an image in {source}"
        handle = BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
    if name.lower().endswith(".dcm"):
        return dicom_to_rgb(handle, name, window)
    try:
        with Image.open(handle) as image:
            return to_rgb(image, window)
    except (OSError, SyntaxError, ValueError) as error:  # PIL reports bad and truncated files with all three
        raise UsageError(f"can't read image {name} ({source}): {error}") from None


# --- sizes and the processor -----------------------------------------------------------------------------------
def load_image_processor(model_args: ModelArgs, model_path: str | None, image_size: int | None):
    """The checkpoint's image processor (PIL backend), resized to `image_size` when one is given."""
    name = model_args.tokenizer_name or model_path or model_args.config_name
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(
            name, revision=model_args.revision, trust_remote_code=model_args.trust_remote_code, backend="pil")
    except (OSError, ValueError) as error:
        raise UsageError(f"could not load an image processor from {name!r}: {error}") from None
    if image_size:
        set_input_size(processor, image_size)
    return processor


def input_size(processor) -> tuple[int, int]:
    """(height, width) of what the processor hands the model."""
    if getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None):
        return processor.crop_size["height"], processor.crop_size["width"]
    size = processor.size
    if size.get("height"):
        return size["height"], size["width"]
    # ConvNeXt-style processors resize the shortest edge, then crop (or squash) to a square of that side.
    return size["shortest_edge"], size["shortest_edge"]


def set_input_size(processor, side: int) -> None:
    """Make the processor produce `side` x `side` inputs, keeping any resize-then-crop margin."""
    size = processor.size
    if getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None):
        scale = side / processor.crop_size["height"]
        processor.crop_size = SizeDict(height=side, width=side)
        processor.size = (SizeDict(height=round(size["height"] * scale), width=round(size["width"] * scale))
                          if size.get("height") else SizeDict(shortest_edge=round(size["shortest_edge"] * scale)))
    elif size.get("height"):
        processor.size = SizeDict(height=side, width=side)
    else:
        processor.size = SizeDict(shortest_edge=side)


def check_model_input_size(config, size: tuple[int, int]) -> None:
    expected = getattr(config, "image_size", None)
    if config.model_type in FIXED_SIZE_MODEL_TYPES and expected and (expected, expected) != size:
        raise UsageError(f"this {config.model_type} model takes {expected} x {expected} images but the image "
                         f"processor makes {size[0]} x {size[1]}; drop --image_size or set it to {expected}")


# --- transforms ------------------------------------------------------------------------------------------------
def _affine(image: Image.Image, coefficients: tuple) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, coefficients, fillcolor=GREY)


def _geometric(name: str) -> Callable[[Image.Image, int], Image.Image]:
    return lambda image, sign: _affine(image, geometric_matrix(name, sign, *image.size))


# PIL's versions of the ops (magnitudes in image_augment.py, which has the device's versions of the same ops).
RANDAUGMENT_OPS: dict[str, Callable[[Image.Image, int], Image.Image]] = {
    "rotate": lambda image, sign: image.rotate(sign * ROTATE_DEGREES, fillcolor=GREY),
    **{name: _geometric(name) for name in ("shear_x", "shear_y", "translate_x", "translate_y")},
    "autocontrast": lambda image, sign: ImageOps.autocontrast(image),
    "equalize": lambda image, sign: ImageOps.equalize(image),
    "posterize": lambda image, sign: ImageOps.posterize(image, POSTERIZE_BITS),
    "solarize": lambda image, sign: ImageOps.solarize(image, SOLARIZE_THRESHOLD),
    "sharpness": lambda image, sign: ImageEnhance.Sharpness(image).enhance(1 + sign * SHARPNESS),
}
AUGMENTATION_TEXT = {
    "none": "none (resize only)",
    "basic": "random resized crop (25-100 % of the area), horizontal flip, colour jitter (±20 % brightness, "
             "contrast, saturation)",
}
AUGMENTATION_TEXT["randaugment"] = (AUGMENTATION_TEXT["basic"] + ", then 2 random ops per image of "
                                    + ", ".join(RANDAUGMENT_OPS))


def to_tensor(images: list[Image.Image], processor) -> torch.Tensor:
    """Rescale and normalise as the processor would; images must already have the model's size."""
    array = np.stack([np.asarray(image, dtype=np.float32) for image in images]) * processor.rescale_factor
    if processor.do_normalize:
        array = (array - np.asarray(processor.image_mean, np.float32)) / np.asarray(processor.image_std, np.float32)
    return torch.from_numpy(array.transpose(0, 3, 1, 2).copy())


class TrainTransform:
    """Training augmentation on PIL images in the DataLoader (`--augment_on loader`) -> a normalised batch tensor
    of the processor's size.

    Each image draws from its own generator, seeded with the example's `augment_seed` (see `SeededExamples`): never
    from the RNG that dropout uses, and the same in any DataLoader worker or resumed run.
    """

    def __init__(self, processor, augment: str):
        self.processor = processor
        self.augment = augment
        self.height, self.width = input_size(processor)
        self.resample = Image.Resampling(processor.resample)

    def _augment(self, image: Image.Image, rng: random.Random) -> Image.Image:
        draw = draw_augmentation(*image.size, self.augment == "randaugment", rng)
        image = image.resize((self.width, self.height), self.resample, box=draw.box)
        if draw.flip:
            image = ImageOps.mirror(image)
        for enhance, factor in zip((ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color), draw.jitter):
            image = enhance(image).enhance(factor)
        for name, sign in draw.ops:
            image = RANDAUGMENT_OPS[name](image, sign)
        return image

    def __call__(self, images: list[Image.Image], seeds: list[int]) -> torch.Tensor:
        if self.augment == "none":
            return processor_transform(self.processor)(images)
        return to_tensor([self._augment(image, random.Random(seed)) for image, seed in zip(images, seeds)],
                         self.processor)


def augments_on_device(args: ImageArgs, device: torch.device) -> bool:
    """--augment_on, with auto resolved: on the device when it is a GPU (the CPU would only take the work from
    training's own threads). No augmentation needs neither."""
    if args.augment == "none":
        return False
    return args.augment_on == "device" or (args.augment_on == "auto" and device.type == "cuda")


def processor_transform(processor) -> Callable[..., torch.Tensor]:
    """Evaluation and prediction: the processor itself, as the pipeline runs it (no seeds needed)."""
    return lambda images, seeds=None: processor(images=images, return_tensors="pt")["pixel_values"]


def image_collator(transform: Callable[..., torch.Tensor | dict], source: str, window: Window | None = None):
    """Decode and transform one batch: images are read when a batch needs them, never all at once. `transform`
    takes the images and their examples' `augment_seed`s (None outside training) and returns the pixel values, or
    a dict of what the device turns into them (`CanvasTransform`)."""

    def collate(examples: list[dict]) -> dict:
        images = [load_image(example["image"], source, window) for example in examples]
        seeds = [example.get("augment_seed") for example in examples]
        inputs = transform(images, seeds)
        return {**(inputs if isinstance(inputs, dict) else {"pixel_values": inputs}),
                "labels": torch.tensor([example["labels"] for example in examples])}

    return collate


# --- mixup / cutmix --------------------------------------------------------------------------------------------
class BatchMixer:
    """Mixup or CutMix on a training batch, paired with the batch reversed; returns (images, soft targets).

    Batch n of a process draws from a generator seeded with (seed, process, n); n is its whole state, saved with
    each checkpoint (`accelerator.register_for_checkpointing`), so a resumed run mixes as the uninterrupted one.
    """

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, num_labels: int, seed: int, process_index: int = 0):
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.num_labels = num_labels
        self.seed = seed
        self.process_index = process_index
        self.batches = 0

    def state_dict(self) -> dict:
        return {"batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.batches = state["batches"]

    def __call__(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.process_index, self.batches])
        self.batches += 1
        targets = F.one_hot(labels, self.num_labels).float()
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or rng.random() < 0.5)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        keep = float(rng.beta(alpha, alpha))  # share of each image that stays its own
        partner = pixel_values.flip(0)
        if use_cutmix:
            height, width = pixel_values.shape[-2:]
            box_h, box_w = round(height * math.sqrt(1 - keep)), round(width * math.sqrt(1 - keep))
            top, left = rng.integers(0, height - box_h + 1), rng.integers(0, width - box_w + 1)
            pixel_values = pixel_values.clone()
            pixel_values[..., top:top + box_h, left:left + box_w] = partner[..., top:top + box_h, left:left + box_w]
            keep = 1 - box_h * box_w / (height * width)  # the box was rounded to whole pixels
        else:
            pixel_values = keep * pixel_values + (1 - keep) * partner
        return pixel_values, keep * targets + (1 - keep) * targets.flip(0)


def mixed_loss(mixer: BatchMixer, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    """`loss` (single-label cross-entropy, which takes soft targets) against the mixer's mixed targets: the Loop's
    `compute_loss` when mixup or CutMix is on."""

    def compute_loss(model, batch, progress):
        pixel_values, targets = mixer(batch["pixel_values"], batch["labels"])
        return loss(model(pixel_values=pixel_values).logits.float(), targets)

    return compute_loss


def image_details(args: ImageArgs, size: tuple[int, int]) -> dict[str, str]:
    """What the report and the card say about the images."""
    mixing = [f"{name} alpha {alpha:g}" for name, alpha in (("mixup", args.mixup_alpha), ("CutMix", args.cutmix_alpha))
              if alpha]
    return {
        "image size": f"{size[0]} x {size[1]} pixels",
        "training augmentation": AUGMENTATION_TEXT[args.augment],
        "mixup / CutMix": ", ".join(mixing) or "off",
    }


# --- prediction ------------------------------------------------------------------------------------------------
def image_logits(model, processor, paths: list[str], window: Window | None = None) -> torch.Tensor:
    """The model's logits for a batch of image files, preprocessed (and windowed) as in evaluation."""
    images = [load_image(path, "the images to classify", window) for path in paths]
    return model(pixel_values=processor_transform(processor)(images).to(model.device)).logits
