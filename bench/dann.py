"""Source-only against DANN, same steps and seeds, each pair compared on the same target test items.

    python bench/dann.py --config recipes/configs/audio_classification_fsdd_whisper.yaml \
        --source_file /tmp/synth/train.csv --target_train_file /tmp/fsdd/train.csv \
        --target_test_file /tmp/fsdd/test.csv --seeds 1 2 3 --out /tmp/bench/dann_whisper

For each seed it trains the recipe twice with `hf-transfer train`: on the labelled source alone, and with
`--adaptation dann` and the unlabelled target training data. Both score the target test as their test split (the
best checkpoint chosen on a validation split held out of the source), and `hf-transfer compare` gives the paired
bootstrap interval of the difference. Extra `--set key=value` pairs go to both runs. Prints a markdown table and
writes dann.json. A finished run is not trained again (rerun with another --out to start over).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from hf_transfer.evaluation.compare import compare_runs


def train(recipe: str, config: str, output_dir: Path, flags: list[str]) -> dict:
    """The run's all_results.json, and the wall seconds of its command (`wall_seconds`)."""
    results, wall = output_dir / "all_results.json", output_dir / "bench_wall_seconds.json"
    if not results.is_file():
        command = ["hf-transfer", "train", recipe, "--config", config, "--output_dir", str(output_dir), *flags]
        print("$ " + " ".join(command), flush=True)
        start = time.perf_counter()
        subprocess.run(command, check=True)
        wall.write_text(json.dumps(time.perf_counter() - start))
    return {**json.loads(results.read_text()), "wall_seconds": json.loads(wall.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="audio_classification")
    parser.add_argument("--config", required=True, help="the recipe config both runs start from")
    parser.add_argument("--source_file", required=True, help="labelled source data")
    parser.add_argument("--target_train_file", required=True, help="target data, its labels unread")
    parser.add_argument("--target_test_file", required=True, help="labelled target test: both runs' test split")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--max_train_steps", type=int, default=300)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more flags for both runs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    common = ["--train_file", args.source_file, "--test_file", args.target_test_file,
              "--max_train_steps", str(args.max_train_steps)]
    for pair in args.set:
        key, _, value = pair.partition("=")
        common += [f"--{key}", value]
    rows = []
    for seed in args.seeds:
        seeded = [*common, "--seed", str(seed)]
        source_dir, dann_dir = args.out / f"source_only_seed{seed}", args.out / f"dann_seed{seed}"
        source_only = train(args.recipe, args.config, source_dir, seeded)
        adapted = train(args.recipe, args.config, dann_dir,
                        [*seeded, "--adaptation", "dann", "--target_train_file", args.target_train_file])
        accuracy = next(d for d in compare_runs(dann_dir, source_dir)["differences"] if d["metric"] == "accuracy")
        rows.append({"seed": seed, "source_only": source_only["test_accuracy"], "dann": adapted["test_accuracy"],
                     "difference": accuracy["difference"], "ci_low": accuracy["ci_low"],
                     "ci_high": accuracy["ci_high"], "source_validation_source_only": source_only["eval_accuracy"],
                     "source_validation_dann": adapted["eval_accuracy"],
                     "wall_seconds": {"source_only": source_only["wall_seconds"], "dann": adapted["wall_seconds"]}})
    mean = {key: sum(row[key] for row in rows) / len(rows) for key in ("source_only", "dann", "difference")}
    (args.out / "dann.json").write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)}, "seeds": rows,
                                                    "mean": mean}, indent=2))
    print("| seed | source only | DANN | DANN - source only [95 % paired bootstrap] | run s (source only / DANN) |")
    print("|---:|---:|---:|---|---|")
    for row in rows:
        print(f"| {row['seed']} | {100 * row['source_only']:.1f} % | {100 * row['dann']:.1f} % | "
              f"{100 * row['difference']:+.1f} [{100 * row['ci_low']:+.1f}, {100 * row['ci_high']:+.1f}] | "
              f"{row['wall_seconds']['source_only']:.0f} / {row['wall_seconds']['dann']:.0f} |")
    print(f"| mean | {100 * mean['source_only']:.1f} % | {100 * mean['dann']:.1f} % | "
          f"{100 * mean['difference']:+.1f} | |")


if __name__ == "__main__":
    sys.exit(main())
