"""Where image augmentation costs what: the DataLoader's work per image with augmentation in the loader (PIL,
`TrainTransform`) against `--augment_on device` (the loader decodes and resizes to a canvas, `DeviceAugment`
does the rest on the device), and the device's own time for its part.

    # CPU: hymenoptera's training photos (BENCHMARKS.md has the exact line measured)
    OMP_NUM_THREADS=1 python bench/image_augmentation.py --image_dir ../shared/data/hymenoptera/train
    # CPU smoke (tests/test_bench.py): synthetic photos
    python bench/image_augmentation.py --synthetic 16 --source_px 48 --image_size 32 --batch_size 8 --repeats 1

Run from the repository root (`PYTHONPATH=.` where hf_transfer is not installed). One process, no workers: a
loader's images per second here is what each DataLoader worker delivers. Each measurement is the best of
--repeats passes over the same images, after one pass that warms the file cache and PIL. The device's side runs
on CUDA when there is one, synchronised before its clock stops.

stdout holds one JSON line per augmentation (basic, randaugment): `loader_images_per_s` for each place,
`device_images_per_s` for the device's part, and `loader_ratio` (device place over loader place).
"""

import argparse
import contextlib
from pathlib import Path

import torch
from image_classification import synthetic_photos
from text_classification import augmentation_rates, describe, emit

from hf_transfer.modalities.image import IMAGE_LAYOUT, TrainTransform, image_collator
from hf_transfer.modalities.image_augment import CanvasTransform, DeviceAugment


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image_dir", help="a folder of images (searched recursively)")
    source.add_argument("--synthetic", type=int, metavar="N", help="N synthetic JPEG photos instead")
    parser.add_argument("--source_px", type=int, default=256, help="shorter side of the synthetic photos")
    parser.add_argument("--images", type=int, default=128, help="at most this many of --image_dir's images")
    parser.add_argument("--image_size", type=int, default=224, help="side of the model's input")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output_json", help="also write the JSON lines to this file")
    return parser.parse_args(argv)


class Processor:
    """What the transforms read of an image processor: ViT's settings at --image_size."""

    def __init__(self, side: int):
        self.size = {"height": side, "width": side}
        self.resample, self.rescale_factor, self.do_normalize = 2, 1 / 255, True  # bilinear
        self.image_mean, self.image_std = [0.5] * 3, [0.5] * 3


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.image_dir:
        paths = sorted(str(path) for path in Path(args.image_dir).rglob("*")
                       if path.suffix.lower() in IMAGE_LAYOUT.extensions)[:args.images]
        if not paths:
            raise SystemExit(f"no images under --image_dir {args.image_dir}")
        images = [{"image": path} for path in paths]
        data = f"{len(paths)} images of {args.image_dir}"
    else:
        photos, _ = synthetic_photos(args.synthetic, args.source_px, 0)
        images = [{"image": {"bytes": photo, "path": None}} for photo in photos]
        data = f"synthetic:{args.synthetic} JPEG {round(args.source_px * 4 / 3)}x{args.source_px}"
    examples = [{**image, "labels": 0, "augment_seed": index} for index, image in enumerate(images)]
    batches = [examples[i:i + args.batch_size] for i in range(0, len(examples), args.batch_size)]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    processor, side = Processor(args.image_size), args.image_size
    device_augment = DeviceAugment(processor, side, side)
    lines = []
    with open(args.output_json, "a") if args.output_json else contextlib.nullcontext() as output:
        for augment in ("basic", "randaugment"):
            collators = {"loader": image_collator(TrainTransform(processor, augment), data),
                         "device": image_collator(CanvasTransform(processor, side, side, augment == "randaugment"),
                                                  data)}
            rates = augmentation_rates(collators, batches, device_augment, device, args.repeats)
            line = {"augmentation": augment, "data": data, "image_size": side, "batch_size": args.batch_size,
                    "loader_images_per_s": rates["loader"], "loader_ratio": rates["loader_ratio"],
                    "device_images_per_s": rates["device"], "device": describe(device)}
            lines.append(line)
            emit(line, output)
    return lines


if __name__ == "__main__":
    main()
