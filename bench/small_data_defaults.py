"""Each strategy with the defaults it gets when no rate or epochs are named, against a linear probe on frozen features.

    python bench/small_data_defaults.py --out /tmp/bench/small_gray
    python bench/small_data_defaults.py --out /tmp/bench/hym_full --per_class 0 --size 0 --keep_color

First it builds a small data set from ../shared/data/hymenoptera (never copied into the repo): `--per_class` training
and as many validation images per class from hymenoptera's `train/`, and all 153 of `val/` as the test split, each
made grayscale and downscaled to `--size` px on its shorter side (0 keeps the size; `--per_class 0` keeps every
image, validation carved out by the recipe). Then, for each `--strategies`, `hf-transfer train image_classification`
on `--model` with only the data flags and `--seed`, so every other setting is the one hf_transfer chooses. The probe
is an L2 logistic regression (C = 1, standardised features: `evaluation.sanity.linear_probe_accuracy`) on the frozen
backbone's pooled features of the training images, scored on the test images. Prints a markdown table, writes
small_data_defaults.json. A finished run is not trained again (use another --out to start over).
"""

import argparse
import json
import random
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from hf_transfer.config import ModelArgs
from hf_transfer.evaluation.sanity import linear_probe_accuracy
from hf_transfer.modalities.image import load_image_processor
from hf_transfer.models.loading import load_model, model_path
from hf_transfer.tasks import TASKS
from hf_transfer.training.features import feature_head

SOURCE = Path("../shared/data/hymenoptera")


def build(out: Path, per_class: int, size: int, keep_color: bool, seed: int) -> Path:
    """The data set's folder: train/, validation/ (when `per_class`) and test/, one folder per class in each."""
    data = out / "data"
    if (data / "test").is_dir():
        return data
    rng = random.Random(seed)
    for label in sorted(p.name for p in (SOURCE / "train").iterdir()):
        pool = sorted((SOURCE / "train" / label).glob("*.jpg"))
        rng.shuffle(pool)
        parts = ({"train": pool[:per_class], "validation": pool[per_class:2 * per_class]} if per_class
                 else {"train": pool})
        parts["test"] = sorted((SOURCE / "val" / label).glob("*.jpg"))
        for split, paths in parts.items():
            (data / split / label).mkdir(parents=True, exist_ok=True)
            for path in paths:
                image = Image.open(path).convert("RGB")
                if not keep_color:
                    image = ImageOps.grayscale(image)
                if size:
                    image.thumbnail((size * image.width // min(image.size), size * image.height // min(image.size)))
                image.save(data / split / label / f"{path.stem}.png")
    return data


@torch.no_grad()
def probe_accuracy(model_name: str, data: Path) -> float:
    """Logistic regression on the frozen backbone's pooled features: fitted on train/, scored on test/."""
    model_args = ModelArgs(model_name_or_path=model_name)
    processor = load_image_processor(model_args, model_path(model_args), None)
    model = load_model(model_args, TASKS["image-classification"].auto_model, ["a", "b"], None, None).eval()
    extract = feature_head(model).features

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        paths = sorted((data / split).glob("*/*.png"))
        rows = [extract(model, dict(processor([Image.open(p).convert("RGB")], return_tensors="pt")))[0].numpy()
                for p in paths]
        return np.stack(rows), np.array([p.parent.name for p in paths])

    return linear_probe_accuracy(*features("train"), *features("test"))


def train(data: Path, model_name: str, strategy: str, seed: int, output_dir: Path) -> dict:
    """The run's all_results.json and the defaults it recorded, with its wall seconds."""
    results = output_dir / "all_results.json"
    if not results.is_file():
        command = ["hf-transfer", "train", "image_classification", "--model_name_or_path", model_name,
                   "--train_dir", str(data / "train"), "--test_dir", str(data / "test"), "--strategy", strategy,
                   "--seed", str(seed), "--output_dir", str(output_dir), "--overwrite_output_dir"]
        if (data / "validation").is_dir():
            command += ["--validation_dir", str(data / "validation")]
        print("$ " + " ".join(command), flush=True)
        start = time.perf_counter()
        subprocess.run(command, check=True)
        (output_dir / "bench_wall_seconds.json").write_text(json.dumps(time.perf_counter() - start))
    return {**json.loads(results.read_text()),
            "wall_seconds": json.loads((output_dir / "bench_wall_seconds.json").read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:efficientnet-lite0")
    parser.add_argument("--per_class", type=int, default=20)
    parser.add_argument("--size", type=int, default=64, help="shorter side in px (0: as they are)")
    parser.add_argument("--keep_color", action="store_true")
    parser.add_argument("--strategies", nargs="+", default=["feature_extraction", "lora", "partial", "full"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    data = build(args.out, args.per_class, args.size, args.keep_color, seed=0)
    probe = probe_accuracy(args.model, data)
    rows = {strategy: [train(data, args.model, strategy, seed, args.out / f"{strategy}-seed{seed}")
                       for seed in args.seeds] for strategy in args.strategies}
    summary = {"probe_test_accuracy": probe, "model": args.model, "per_class": args.per_class, "size": args.size,
               "grayscale": not args.keep_color,
               "strategies": {strategy: {"test_accuracy": [run["test_accuracy"] for run in runs],
                                         "wall_seconds": [run["wall_seconds"] for run in runs]}
                              for strategy, runs in rows.items()}}
    (args.out / "small_data_defaults.json").write_text(json.dumps(summary, indent=2))
    print(f"| strategy | test accuracy (seeds {', '.join(map(str, args.seeds))}) | mean - probe | wall |")
    print("|---|---|---:|---:|")
    print(f"| linear probe on frozen features | {probe:.1%} | | |")
    for strategy, runs in rows.items():
        accuracies = [run["test_accuracy"] for run in runs]
        print(f"| {strategy} | {', '.join(f'{a:.1%}' for a in accuracies)} | "
              f"{100 * (np.mean(accuracies) - probe):+.1f} pts | {np.mean([r['wall_seconds'] for r in runs]):.0f} s |")


if __name__ == "__main__":
    main()
