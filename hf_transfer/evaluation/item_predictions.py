"""Per-item predictions, saved beside a run's results (`test_predictions.jsonl`) so two runs can be compared on
the very same items. One JSON object a line: `id`, `input` (text or file path), `reference`, `prediction`, plus
`probabilities` (classification, after calibration), `scores` (multi-label: reference and prediction are label
lists) or edit counts (speech recognition), and `group` when known; a regression's are numbers.
"""

import json
from pathlib import Path

import numpy as np

from hf_transfer.config import UsageError
from hf_transfer.io import atomic_write_text
from hf_transfer.metrics.intervals import ErrorCounts
from hf_transfer.training.run_folder import RUN_RECORD, require_complete

FILE_NAME = "{split}_predictions.jsonl"


def classification_items(inputs: list[str], probabilities: np.ndarray, references: np.ndarray,
                         predictions: np.ndarray, names: list[str], groups: list[str] | None) -> list[dict]:
    return [{"id": i, "input": inputs[i], **({"group": groups[i]} if groups else {}),
             "reference": names[references[i]], "prediction": names[predictions[i]],
             "probabilities": {name: float(p) for name, p in zip(names, probabilities[i])}}
            for i in range(len(references))]


def multilabel_items(inputs: list[str], scores: np.ndarray, references: np.ndarray, predictions: np.ndarray,
                     names: list[str]) -> list[dict]:
    def labels(row):
        return [name for name, on in zip(names, row) if on]
    return [{"id": i, "input": inputs[i], "reference": labels(references[i]), "prediction": labels(predictions[i]),
             "scores": {name: float(p) for name, p in zip(names, scores[i])}}
            for i in range(len(references))]


def regression_items(inputs: list[str], predictions: np.ndarray, references: np.ndarray) -> list[dict]:
    return [{"id": i, "input": inputs[i], "reference": float(references[i]), "prediction": float(predictions[i])}
            for i in range(len(references))]


def transcription_items(inputs: list[str], predictions: list[str], references: list[str], counts: ErrorCounts,
                        groups: list[str] | None) -> list[dict]:
    return [{"id": i, "input": inputs[i], **({"group": groups[i]} if groups else {}),
             "reference": references[i], "prediction": predictions[i],
             "word_errors": int(counts.word_errors[i]), "words": int(counts.words[i]),
             "char_errors": int(counts.char_errors[i]), "chars": int(counts.chars[i])}
            for i in range(len(references))]


def write_items(folder: Path, split: str, items: list[dict]) -> None:
    lines = [json.dumps(item, ensure_ascii=False) for item in items]
    atomic_write_text(Path(folder) / FILE_NAME.format(split=split), "\n".join(lines) + "\n")


def read_items(run: str | Path) -> tuple[Path, list[dict]]:
    """A run's test predictions: RUN may be the file, a training output folder or an `evaluate` report folder. A
    training run must have finished, as for `predict`."""
    path = Path(run)
    folder = path if path.is_dir() else path.parent
    if (folder / RUN_RECORD).is_file():
        require_complete(folder)
    if path.is_dir():
        candidates = [path / FILE_NAME.format(split="test"), path / "evaluation" / FILE_NAME.format(split="test")]
        path = next((c for c in candidates if c.is_file()), candidates[0])
    if not path.is_file():
        raise UsageError(f"{run}: no {FILE_NAME.format(split='test')} (a run writes it when it has a test split; "
                         "`hf-transfer evaluate FOLDER --test_file FILE` writes one into FOLDER/evaluation)")
    items = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise UsageError(f"{path}: line {number} is not JSON ({error.msg})") from None
    if not items:
        raise UsageError(f"{path}: no predictions")
    return path, items


def check_same_items(a: tuple[Path, list[dict]], b: tuple[Path, list[dict]]) -> None:
    """Both runs scored the same items, in the same order: same inputs and same references."""
    (path_a, items_a), (path_b, items_b) = a, b
    if len(items_a) != len(items_b):
        raise UsageError(f"{path_a} has {len(items_a)} items and {path_b} {len(items_b)}: compare runs scored on the "
                         "same test data")
    for field in ("input", "reference"):
        for number, (x, y) in enumerate(zip(items_a, items_b)):
            if x.get(field) != y.get(field):
                raise UsageError(f"item {number} differs in its {field}: {x.get(field)!r} in {path_a}, "
                                 f"{y.get(field)!r} in {path_b}; compare runs scored on the same test data")
