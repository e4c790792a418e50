"""Training throughput of hf_transfer's loop against transformers.Trainer, image classification (issue 5).

    # CPU smoke: a tiny ViT, small synthetic JPEGs, a few steps
    python bench/image_classification.py --model_config tiny --synthetic 64 --source_px 48 --batch_size 8 \
        --max_steps 3 --warmup_steps 1
    # CPU: ViT-S/16 at 224 px, bf16 (BENCHMARKS.md has the exact lines measured)
    OMP_NUM_THREADS=1 python bench/image_classification.py --model_config vit-small --mixed_precision bf16 \
        --batch_size 16 --max_steps 14 --warmup_steps 4
    # GPU: ViT-B/16 at 224 px, bf16, batch 32 (MFU against the H100's dense bf16 peak)
    python bench/image_classification.py --model_config vit-base --mixed_precision bf16 --peak_tflops 989

Run from the repository root (`PYTHONPATH=.` where hf_transfer is not installed). hf_transfer's image module
imports `datasets`, so that package (and its `dill` and `multiprocess`) must be importable.

One run trains the same randomly initialised ViT three times on the same synthetic photos (random smooth images,
JPEG-encoded like the hymenoptera set: shorter side --source_px, quality 90), decoded and augmented every step
(`--strategy full`); with `--strategy feature_extraction` only the classifier trains and no side augments (ours
then trains it on features cached in one pass: text_classification.py says how that run is timed):

  ours     hf_transfer's `Loop`, fed as recipes/image_classification.py feeds it: the recipe's `image_collator`
           decoding each batch, with its default `basic` augmentation (random resized crop, flip, colour jitter)
           where --augment_on puts it, as the recipe's flag does: `auto` (the default) on the GPU when there is one
           (the loader only resizes each image to a canvas; `DeviceAugment` crops, flips and jitters the batch on
           the device), else in the loader (`TrainTransform`, PIL);
  trainer  `transformers.Trainer` as run_image_classification.py drives it: torchvision's RandomResizedCrop,
           RandomHorizontalFlip, ToTensor and Normalize per example (where torchvision is missing, hf_transfer's
           TrainTransform per example stands in), stacked by `default_data_collator`;
  trainer_tuned  the same Trainer with --num_workers DataLoader workers augmenting in parallel (pinned memory on
           CUDA) and, with --torch_compile, `torch_compile`.

Ours gets the same --num_workers (the recipe's collator then decodes and augments in the workers).

Same model config, initial weights, batch size, learning rate and schedule, precision and number of steps; timing,
output and the summary line are text_classification.py's (its `StepClock` and `compare`). Each side's line also
holds model TFLOP/s (6 x parameters x patches + attention, per sample), its fraction of the matmul peak measured in
the same run and, given --peak_tflops (a data sheet's), MFU.
"""

import argparse
import json
import random
import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed
from PIL import Image
from text_classification import (
    ClockCallback,
    StepClock,
    add_run_arguments,
    attach_counter,
    check_run_arguments,
    compare,
    loop_arguments,
    run_loop,
    trainer_arguments,
)
from torch.utils.data import Dataset
from transformers import Trainer, ViTConfig, ViTForImageClassification, default_data_collator

from hf_transfer.config import AUGMENT_PLACES, ModelArgs, StrategyArgs
from hf_transfer.modalities.image import (
    ImageArgs,
    TrainTransform,
    augments_on_device,
    image_collator,
    input_size,
    load_image_processor,
    processor_transform,
)
from hf_transfer.modalities.image_augment import CanvasTransform, DeviceAugment
from hf_transfer.models.strategies import apply_strategy
from hf_transfer.training.loop import default_dataloader_workers

# -----------------------------------------------------------------------------------------------------------------
MODEL_CONFIGS = {
    "vit-base": {},  # ViTConfig's defaults are ViT-B/16 at 224 px
    "vit-small": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536},
    "tiny": {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64},  # CPU smoke
}
NUM_LABELS = 2
BATCH_SIZE = 32
LEARNING_RATE = 5e-5
SYNTHETIC = 2048  # images; they are decoded and augmented afresh at every step
SOURCE_PX = 256  # shorter side of the synthetic photos (hymenoptera's copies are at most 256 px)
SEED = 42


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_config", choices=sorted(MODEL_CONFIGS), default="vit-base")
    parser.add_argument("--synthetic", type=int, default=SYNTHETIC, metavar="N", help="number of synthetic photos")
    parser.add_argument("--source_px", type=int, default=SOURCE_PX, help="shorter side of the synthetic photos")
    parser.add_argument("--batch_size", type=int, default=BATCH_SIZE)
    parser.add_argument("--learning_rate", type=float, default=LEARNING_RATE)
    parser.add_argument("--mixed_precision", choices=("no", "bf16", "fp16"), default="no")
    add_run_arguments(parser)
    parser.add_argument("--augment_on", choices=AUGMENT_PLACES, default="auto",
                        help="where ours augments (the recipe's flag): auto = on the GPU when there is one")
    parser.add_argument("--peak_tflops", type=float, help="the device's dense peak at this precision, for MFU")
    parser.add_argument("--num_workers", type=int, default=default_dataloader_workers(),
                        help="DataLoader workers of ours and trainer_tuned (the example's Trainer keeps its 0); "
                             "default: what the recipes use on this machine")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--output_json", help="also write the JSON lines to this file")
    return check_run_arguments(parser, parser.parse_args(argv))


def synthetic_photos(count: int, shorter_side: int, seed: int) -> tuple[list[bytes], list[int]]:
    """Smooth random colour fields, 4:3 landscape, as JPEG bytes: they decode and crop like photos."""
    rng = np.random.default_rng(seed)
    size = (round(shorter_side * 4 / 3), shorter_side)
    photos = []
    for _ in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        buffer = BytesIO()
        coarse.resize(size, Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=90)
        photos.append(buffer.getvalue())
    labels = [random.Random(seed + i).randrange(NUM_LABELS) for i in range(count)]
    return photos, labels


def vit_config(name: str) -> ViTConfig:
    return ViTConfig(num_labels=NUM_LABELS, **MODEL_CONFIGS[name])


def write_processor(folder: Path, config: ViTConfig) -> Path:
    """The ViT image processor google/vit-base-patch16-224 ships, at the config's size, saved like a checkpoint's."""
    settings = {"image_processor_type": "ViTImageProcessor", "do_resize": True, "resample": 2,  # bilinear
                "size": {"height": config.image_size, "width": config.image_size}, "do_rescale": True,
                "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    return folder


def training_flops_per_sample(config: ViTConfig) -> float:
    """Forward + backward: 6 x (transformer weights) x tokens, plus the attention products (12 x layers x T^2 x d)."""
    tokens = (config.image_size // config.patch_size) ** 2 + 1
    d, layers = config.hidden_size, config.num_hidden_layers
    weights = layers * (4 * d * d + 2 * d * config.intermediate_size)
    return 6 * weights * tokens + 12 * layers * tokens**2 * d


def build_model(config: ViTConfig, seed: int, strategy: str) -> ViTForImageClassification:
    set_seed(seed)  # every side starts from the same weights
    return apply_strategy(ViTForImageClassification(config), StrategyArgs(strategy=strategy, layerwise_lr_decay=1.0),
                          None)


# -----------------------------------------------------------------------------------------------------------------
# Ours: the Loop as recipes/image_classification.py builds it.

def run_ours(args, processor, model, photos, labels, device, workdir: str) -> StepClock:
    examples = [{"image": {"bytes": photo, "path": None}, "labels": label} for photo, label in zip(photos, labels)]
    # Feature extraction: no augmentation, so that the frozen backbone's features repeat and are cached.
    augment = "basic" if args.strategy == "full" else "none"
    size = input_size(processor)
    on_device = augments_on_device(ImageArgs(augment=augment, augment_on=args.augment_on), device)
    transform = CanvasTransform(processor, *size, False) if on_device else TrainTransform(processor, augment)
    return run_loop(args, loop_arguments(args, workdir), model, examples, None,
                    image_collator(transform, "synthetic photos"),
                    image_collator(processor_transform(processor), "synthetic photos"), device, workdir,
                    DeviceAugment(processor, *size) if on_device else None)


# -----------------------------------------------------------------------------------------------------------------
# The Trainer, the way run_image_classification.py drives it.

def trainer_transform(processor, seed: int, augment: bool):
    """run_image_classification.py's training transform, or without `augment` its validation one; (transform of one
    PIL image, what it is)."""
    try:
        from torchvision.transforms import (
            CenterCrop,
            Compose,
            Normalize,
            RandomHorizontalFlip,
            RandomResizedCrop,
            Resize,
            ToTensor,
        )
    except (ImportError, RuntimeError):  # not installed, or built for another torch
        if not augment:
            return (lambda image: processor_transform(processor)([image])[0]), \
                "the image processor per example (no torchvision)"
        transform, rng = TrainTransform(processor, "basic"), random.Random(seed)
        return (lambda image: transform([image], [rng.getrandbits(32)])[0]), \
            "hf_transfer TrainTransform per example (no torchvision)"
    normalize = [ToTensor(), Normalize(mean=processor.image_mean, std=processor.image_std)]
    if not augment:
        size = input_size(processor)
        return Compose([Resize(size), CenterCrop(size), *normalize]), \
            "torchvision Resize, CenterCrop, ToTensor, Normalize per example"
    return Compose([RandomResizedCrop(input_size(processor)), RandomHorizontalFlip(), *normalize]), \
        "torchvision RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize per example"


class AugmentedPhotos(Dataset):
    def __init__(self, photos: list[bytes], labels: list[int], transform):
        self.photos, self.labels, self.transform = photos, labels, transform

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, i: int) -> dict:
        with Image.open(BytesIO(self.photos[i])) as image:
            return {"pixel_values": self.transform(image.convert("RGB")), "labels": self.labels[i]}


def run_trainer(args, processor, model, photos, labels, device, workdir: str, tuned: bool) -> StepClock:
    transform, _ = trainer_transform(processor, args.seed, args.strategy == "full")
    training_args = trainer_arguments(args, workdir, device, tuned, remove_unused_columns=False)
    clock = StepClock(args.warmup_steps, device)
    attach_counter(model, clock)
    trainer = Trainer(model=model, args=training_args, train_dataset=AugmentedPhotos(photos, labels, transform),
                      data_collator=default_data_collator,
                      callbacks=[ClockCallback(clock, args.strategy == "feature_extraction")])
    trainer.train()
    return clock


# -----------------------------------------------------------------------------------------------------------------

def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = vit_config(args.model_config)
    with tempfile.TemporaryDirectory() as folder:  # the recipe's own loader reads it, as it would a checkpoint's
        processor = load_image_processor(ModelArgs(config_name=str(write_processor(Path(folder), config))), None, None)
    photos, labels = synthetic_photos(args.synthetic, args.source_px, args.seed)
    data = f"synthetic:{args.synthetic} JPEG {round(args.source_px * 4 / 3)}x{args.source_px}"
    per_example = trainer_transform(processor, args.seed, args.strategy == "full")[1]
    on_device = augments_on_device(ImageArgs(augment_on=args.augment_on), device)
    place = f"DeviceAugment on the {device.type}" if on_device else "TrainTransform in the loader"
    ours = (f"hf_transfer basic (crop, flip, colour jitter) per batch, {place}" if args.strategy == "full" else
            "the image processor per batch, once: the head trains on cached features")
    augmentation = {"ours": ours, "trainer": per_example, "trainer_tuned": per_example}
    flops = training_flops_per_sample(config)

    def extra(side: str, line: dict) -> dict:
        if args.strategy != "full":  # a frozen backbone's forward is not the training FLOPs, and ours runs it once
            return {"augmentation": augmentation[side]}
        tflops = line["samples_per_s"] * flops / 1e12
        return {"augmentation": augmentation[side], "model_tflops_per_s": tflops,
                "mfu": tflops / args.peak_tflops if args.peak_tflops else None}

    def model():
        return build_model(config, args.seed, args.strategy)

    sides = {"ours": lambda workdir: run_ours(args, processor, model(), photos, labels, device, workdir),
             "trainer": lambda workdir: run_trainer(args, processor, model(), photos, labels, device, workdir, False),
             "trainer_tuned": lambda workdir: run_trainer(args, processor, model(), photos, labels, device, workdir,
                                                          True)}
    return compare(sides, args, device, data, extra)


if __name__ == "__main__":
    main()
