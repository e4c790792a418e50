"""`hf-transfer shift`: how far apart the source and target domains are, seen through a checkpoint's features.

The proxy A-distance (Ben-David et al. 2007) of the checkpoint's pooled pretrained features: 2 (1 - 2 eps), eps the
held-out error of a linear classifier telling source from target. 0: the features can't tell the domains apart;
2: they always can. Next to it, the class counts of each domain where its labels are known. It reads the features
as `hf-transfer rank` does (forward passes only, cached).

    hf-transfer shift --model builtin:whisper-tiny.en --train_dir synthetic/ --target_train_dir recordings/
"""

import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from accelerate import Accelerator
from transformers import HfArgumentParser

from hf_transfer.config import DataArgs, UsageError, _check_choice, _check_positive
from hf_transfer.data.splits import LABEL_COLUMN_GUESSES, guess_column, load_class_folder, load_file
from hf_transfer.io import atomic_write_json
from hf_transfer.models.pooling import POOLINGS
from hf_transfer.selection.rank import RANDOM_PREFIX, RankArgs, candidate_features, load_rank_data, resolve_candidates
from hf_transfer.selection.transferability import proxy_a_distance
from hf_transfer.tasks import TASKS
from hf_transfer.training.adaptation import TARGET_TRAIN, with_splits

FROM_SCRATCH_NOTE = ("random weights: features that training has not shaped yet say nothing about how far apart the "
                     "domains are for the trained model; measure a pretrained checkpoint instead")


@dataclass
class ShiftArgs:
    model: str | None = field(default=None, metadata={"help": "The checkpoint whose features are compared (Hub id, "
                                                       f"folder or builtin:NAME; `{RANDOM_PREFIX}MODEL`: random "
                                                       "weights)."})
    target_train_file: str | None = field(default=None,
                                          metadata={"help": "Target-domain data (labels optional)."})
    target_train_dir: str | None = field(default=None, metadata={"help": "Folder of target-domain files."})
    pooling: str = field(default="mean", metadata={"help": "mean or cls, as in `hf-transfer rank`."})
    task: str | None = field(default=None, metadata={"help": "Default: from the checkpoint's config."})
    image_column: str | None = field(default=None, metadata={"help": "Images: the column of paths (guessed)."})
    audio_column: str | None = field(default=None, metadata={"help": "Audio: the column of paths (guessed)."})
    max_duration_seconds: float = field(default=1.0, metadata={"help": "Audio: longer clips keep their centre."})
    batch_size: int = field(default=64, metadata={"help": "Examples per forward pass."})
    output_dir: str = field(default="outputs/shift", metadata={"help": "Where shift.json and the cache go."})
    seed: int = field(default=42, metadata={"help": "Seed of the held-out half (and of random weights)."})

    def __post_init__(self):
        if not self.model:
            raise UsageError("give the checkpoint: --model MODEL")
        if bool(self.target_train_file) == bool(self.target_train_dir):
            raise UsageError("give the target data: --target_train_file or --target_train_dir (one of them)")
        _check_choice("pooling", self.pooling, POOLINGS)
        for name in ("batch_size", "max_duration_seconds"):
            _check_positive(name, getattr(self, name))


def target_class_counts(file: str | None, folder: str | None, task: str,
                        label_column: str | None) -> dict[str, int] | None:
    """The target data's labels, counted, where it has them (a label column, or class subfolders); else None."""
    if folder:
        if not any(p.is_dir() for p in Path(folder).iterdir()):
            return None
        dataset = load_class_folder(folder, TASKS[task].layout)
    else:
        dataset = load_file(file)
    try:
        column = guess_column(dataset.column_names, label_column, LABEL_COLUMN_GUESSES, "label", file or folder)
    except UsageError:
        return None
    return dict(sorted(Counter(str(value) for value in dataset[column]).items()))


def shift(args: ShiftArgs, data_args: DataArgs) -> dict:
    """Write shift.json (the proxy A-distance and the class counts of each domain) and return what it holds."""
    rank_args = RankArgs(models=[args.model], pooling=[args.pooling], task=args.task, image_column=args.image_column,
                         audio_column=args.audio_column, max_duration_seconds=args.max_duration_seconds,
                         batch_size=args.batch_size, output_dir=args.output_dir, seed=args.seed)
    wanted, task = resolve_candidates(rank_args)
    candidate = next(iter(wanted))
    column = {"text-classification": data_args.text_column, "image-classification": args.image_column,
              "audio-classification": args.audio_column}[task]

    def add_target(labelled):
        return with_splits(labelled, TASKS[task], column, data_args.label_column,
                           {TARGET_TRAIN: (args.target_train_file, args.target_train_dir)})

    data = load_rank_data(rank_args, data_args, task, candidate.path, add_target)
    features = candidate_features(Accelerator(), candidate, args.pooling, task, data, rank_args, data_args)
    source, target = (np.asarray(features[split].final, dtype=np.float64) for split in ("train", TARGET_TRAIN))
    names = data.labelled.label_names
    results = {
        "model": candidate.name,
        "task": task,
        "pooling": args.pooling,
        "proxy_a_distance": round(proxy_a_distance(source, target, args.seed), 4),
        "examples": {"source": len(source), "target": len(target)},
        "class_counts": {
            "source": dict(sorted(Counter(names[i] for i in data.labelled.splits["train"]["labels"]).items())),
            "target": target_class_counts(args.target_train_file, args.target_train_dir, task,
                                          data_args.label_column),
        },
        "settings": {**asdict(args), **{k: v for k, v in asdict(data_args).items() if v is not None}},
    }
    if candidate.random_init:
        results["note"] = FROM_SCRATCH_NOTE
    atomic_write_json(Path(args.output_dir) / "shift.json", results)
    print(f"proxy A-distance ({candidate.name}, {args.pooling} pooling): {results['proxy_a_distance']:.3f} "
          "(0: the features can't tell the domains apart, 2: they always can)")
    if results["proxy_a_distance"] == 0:
        print("  a classifier on these features told the domains apart no better than chance on held-out examples "
              "(a worse-than-chance estimate, noise on small samples, is shown as 0)")
    for domain, counts in results["class_counts"].items():
        print(f"{domain}: {results['examples'][domain]} examples; classes: "
              + (", ".join(f"{name} {count}" for name, count in counts.items()) if counts else "labels unknown"))
    if candidate.random_init:
        print(f"note: {FROM_SCRATCH_NOTE}")
    print(f"Saved {Path(args.output_dir) / 'shift.json'}")
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ShiftArgs, DataArgs))
    args, data_args, unknown = parser.parse_args_into_dataclasses(
        args=sys.argv[1:] if argv is None else argv, return_remaining_strings=True)
    if unknown:
        raise UsageError(f"unknown flag(s): {' '.join(unknown)}")
    return shift(args, data_args)
