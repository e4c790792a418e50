"""Whisper's encoder on short clips: the short-input window against the pretrained 30 s one, in one run.

    python bench/prepare_fsdd.py ../shared/data/fsdd/recordings /tmp/fsdd
    python bench/whisper_window.py --train_csv /tmp/fsdd/train.csv --test_csv /tmp/fsdd/test.csv \
        --short_seconds 2 --train_per_class 10 --test_per_class 5 --batch_size 4 --steps 2

For each window (--short_seconds, then 30 s), with builtin:whisper-tiny.en's frozen encoder:
  accuracy  logistic regression on the mean-pooled encoder output (frozen features) of --train_per_class clips
            per digit (seeded draw), scored on --test_per_class test clips per digit (all when omitted); the same
            clips in both windows (30 s windows cost ~15x more: keep the counts small on a CPU);
  step      seconds per full fine-tuning step (forward, backward, AdamW) of WhisperForAudioClassification at
            --batch_size, the mean over --steps steps after one warm-up step.
Clips are padded to the window exactly as recipes/audio_classification.py pads them (hf_transfer's collator).
"""

import argparse
import csv
import json
import time
from collections import defaultdict

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from transformers import AutoFeatureExtractor, WhisperForAudioClassification

from hf_transfer.modalities.audio import AudioArgs, audio_collator
from hf_transfer.modalities.whisper_inputs import fit_whisper_window
from hf_transfer.models.builtin import resolve_model


def rows(path: str, per_class: int | None, seed: int = 0) -> list[dict]:
    """Every row, or `per_class` rows of each label drawn at random (all speakers, not the CSV's first one)."""
    by_label = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            by_label[row["label"]].append({"audio": row["audio"], "labels": int(row["label"])})
    rng = np.random.default_rng(seed)
    return [example for label in sorted(by_label) for example in
            (by_label[label] if per_class is None else rng.permutation(by_label[label])[:per_class].tolist())]


@torch.no_grad()
def pooled_features(model, collate, examples: list[dict], batch_size: int) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start:start + batch_size])
        out.append(model.encoder(batch["input_features"]).last_hidden_state.mean(dim=1).numpy())
    return np.concatenate(out)


def seconds_per_step(model, collate, examples: list[dict], batch_size: int, steps: int) -> float:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times = []
    for step in range(steps + 1):  # step 0 warms up
        batch = collate(examples[step * batch_size:(step + 1) * batch_size])
        start = time.perf_counter()
        loss = model(input_features=batch["input_features"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return float(np.mean(times[1:]))


def measure(window: float, short: bool, train: list[dict], test: list[dict], args) -> dict:
    folder = resolve_model("builtin:whisper-tiny.en")[0]
    extractor = AutoFeatureExtractor.from_pretrained(folder)
    model = WhisperForAudioClassification.from_pretrained(folder, num_labels=10)
    audio = AudioArgs(max_duration_seconds=window, short_inputs=short)
    seconds = fit_whisper_window(model, extractor, window, short)
    collate = audio_collator(extractor, "audio", audio, False)
    classifier = LogisticRegression(max_iter=2000, C=args.C)
    classifier.fit(pooled_features(model, collate, train, args.batch_size), [e["labels"] for e in train])
    accuracy = classifier.score(pooled_features(model, collate, test, args.batch_size), [e["labels"] for e in test])
    step = seconds_per_step(model, collate, train[::3], args.batch_size, args.steps)  # digits mixed in each batch
    return {"window_seconds": seconds, "frozen_feature_accuracy": accuracy, "seconds_per_step": step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_csv", required=True)
    parser.add_argument("--test_csv", required=True)
    parser.add_argument("--short_seconds", type=float, default=2.0)
    parser.add_argument("--train_per_class", type=int, default=30)
    parser.add_argument("--test_per_class", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    args = parser.parse_args()
    torch.manual_seed(0)
    train, test = rows(args.train_csv, args.train_per_class), rows(args.test_csv, args.test_per_class)
    short = measure(args.short_seconds, True, train, test, args)
    full = measure(args.short_seconds, False, train, test, args)
    result = {"train_clips": len(train), "test_clips": len(test), "short": short, "30s": full,
              "speed-up per step": full["seconds_per_step"] / short["seconds_per_step"]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
