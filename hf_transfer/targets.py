"""What a label is and how a model answers it: one entry per target type, named as transformers' `problem_type`.

Each entry says how a label cell is encoded, the names of the head's outputs (one per class or label; a regression's
one, its column), the loss, how logits become scores,
its metrics and which of them are better lower, and the `problem_type` written to `config.json` (so `pipeline()`
applies softmax, sigmoid or nothing, as `predict` does).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import datasets
import numpy as np
import torch
import torch.nn.functional as F

from hf_transfer.config import UsageError
from hf_transfer.metrics import classification_metrics, multilabel, regression

SINGLE_LABEL, MULTI_LABEL, REGRESSION = "single_label_classification", "multi_label_classification", "regression"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)
# Lower is better for these metrics, whichever target gives them; every other metric is better higher.
LOWER_IS_BETTER = frozenset(("loss", "wer", "cer", "ece", *multilabel.LOWER_IS_BETTER, *regression.LOWER_IS_BETTER))


def lower_is_better(metric: str) -> bool:
    """Whether `metric` (bare, or with its split's prefix: `eval_rmse`, `test_wer`) is better lower."""
    for prefix in ("eval_", "test_", "target_test_"):
        metric = metric.removeprefix(prefix)
    return metric in LOWER_IS_BETTER


@dataclass(frozen=True)
class Cells:
    """One split's label cells, and how to name a row of it in an error (`data.csv, row 7`)."""

    values: list
    row_name: Callable[[int], str]  # index in `values` -> the row as the user sees it
    column: str
    source: str  # the split's file or set
    feature: object = None  # the column's `datasets` feature: a ClassLabel's cells are already class ids


def _whole(value):
    """A whole float as an int: pandas reads an int column that has an empty cell as floats."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))  # pandas reads an empty cell as NaN


class Target:
    problem_type: str
    primary_metric: str  # the default --metric_for_best_model, and what study and tune optimise

    def label_names(self, train: Cells, feature) -> list[str]:
        """The names of the outputs, from the training split's cells (and its `feature`, a ClassLabel on the Hub)."""
        raise NotImplementedError

    def encode(self, cells: Cells, names: list[str], split: str) -> list:
        """Each cell as the model's `labels` column holds it; a bad cell is a UsageError naming its row."""
        raise NotImplementedError

    def feature(self, names: list[str]):
        raise NotImplementedError

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """What `predict` reports for the head's logits: probabilities, or the number."""
        raise NotImplementedError

    def decide(self, scores: np.ndarray, thresholds: list[float] | None = None) -> np.ndarray:
        """The answer for each item's scores: the top class, the labels at or above their thresholds (0.5 when
        none were chosen), or the number itself."""
        raise NotImplementedError

    def metrics(self, scores: np.ndarray, references: np.ndarray, predictions: np.ndarray) -> dict:
        raise NotImplementedError

    def metric_names(self) -> tuple[str, ...]:
        raise NotImplementedError


class SingleLabel(Target):
    """One class per example: softmax over the classes, cross-entropy."""

    problem_type = SINGLE_LABEL
    primary_metric = "accuracy"

    def label_names(self, train: Cells, feature) -> list[str]:
        if isinstance(feature, datasets.ClassLabel):
            return list(feature.names)
        values = train.values
        for index, value in enumerate(values):
            if _is_missing(value):
                raise UsageError(f"{train.row_name(index)}: the label cell ({train.column!r}) is empty")
            if isinstance(value, list | tuple):
                raise UsageError(f"{train.row_name(index)}: the label cell ({train.column!r}) holds a list; "
                                 "for several labels per example pass --problem_type multi_label_classification")
            if isinstance(value, float) and not value.is_integer():
                raise UsageError(f"{train.row_name(index)}: the label {value!r} ({train.column!r}) has a fraction; "
                                 "for a number to predict pass --problem_type regression")
        kinds = {type(v) for v in values}
        if not (kinds <= {int, bool, float} or kinds == {str}):
            raise UsageError(f"{train.source}: column {train.column!r} mixes label types "
                             f"({', '.join(sorted(k.__name__ for k in kinds))}); use all strings or all ints")
        return [str(v) for v in sorted({_whole(v) for v in values})]

    def encode(self, cells: Cells, names: list[str], split: str) -> list[int]:
        if isinstance(cells.feature, datasets.ClassLabel):
            return list(cells.values)
        ids = {name: i for i, name in enumerate(names)}
        encoded = []
        for index, value in enumerate(cells.values):
            if _is_missing(value):
                raise UsageError(f"{cells.row_name(index)}: the label cell ({cells.column!r}) is empty")
            key = str(_whole(value))
            if key not in ids:
                raise UsageError(f"{cells.row_name(index)}: label {value!r} in the {split} split never appears in "
                                 f"the training data (known: {', '.join(names)})")
            encoded.append(ids[key])
        return encoded

    def feature(self, names: list[str]):
        return datasets.ClassLabel(names=names)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(-1)

    def decide(self, scores, thresholds=None):
        return scores.argmax(-1)

    def metrics(self, scores, references, predictions) -> dict:
        return classification_metrics(scores, references, predictions)

    def metric_names(self) -> tuple[str, ...]:
        return tuple(classification_metrics(np.eye(2), np.arange(2)))


class MultiLabel(Target):
    """Any number of labels per example, each a yes/no: sigmoid per label, binary cross-entropy."""

    problem_type = MULTI_LABEL
    primary_metric = "f1_micro"

    def __init__(self, separator: str = "|"):
        self.separator = separator

    def _labels_of(self, value, cells: Cells, index: int) -> list[str]:
        """A cell's labels: a list (JSON), or a string split at the separator; empty means none."""
        if _is_missing(value):
            return []
        if isinstance(value, list | tuple):
            labels = [str(v).strip() for v in value]
        elif isinstance(value, str):
            labels = [part.strip() for part in value.split(self.separator)] if value.strip() else []
        elif isinstance(value, int | np.integer) and not isinstance(value, bool):
            labels = [str(value)]
        else:
            raise UsageError(f"{cells.row_name(index)}: the label cell {value!r} ({cells.column!r}) is not a list of "
                             f"labels or labels separated by {self.separator!r}")
        if "" in labels:
            raise UsageError(f"{cells.row_name(index)}: the label cell {value!r} ({cells.column!r}) has an empty "
                             f"label between separators ({self.separator!r})")
        return labels

    def label_names(self, train: Cells, feature) -> list[str]:
        if isinstance(feature, datasets.Sequence) and isinstance(feature.feature, datasets.ClassLabel):
            return list(feature.feature.names)
        return sorted({label for index, value in enumerate(train.values)
                       for label in self._labels_of(value, train, index)})

    def encode(self, cells: Cells, names: list[str], split: str) -> list[list[float]]:
        ids = {name: i for i, name in enumerate(names)}
        encoded = []
        for index, value in enumerate(cells.values):
            row = [0.0] * len(names)
            for label in self._labels_of(value, cells, index):
                if label not in ids:
                    raise UsageError(f"{cells.row_name(index)}: label {label!r} in the {split} split never appears "
                                     f"in the training data (known: {', '.join(names)})")
                row[ids[label]] = 1.0
            encoded.append(row)
        return encoded

    def feature(self, names: list[str]):
        return datasets.Sequence(datasets.Value("float32"), length=len(names))

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid()

    def decide(self, scores, thresholds=None):
        return (scores >= np.asarray(thresholds if thresholds is not None else 0.5)).astype(np.int64)

    def metrics(self, scores, references, predictions) -> dict:
        return multilabel.multilabel_metrics(scores, references, predictions)

    def metric_names(self) -> tuple[str, ...]:
        return multilabel.MULTILABEL_METRICS


class Regression(Target):
    """A number per example: one output, trained on standardised targets (see `Standardiser`)."""

    problem_type = REGRESSION
    primary_metric = "rmse"

    def label_names(self, train: Cells, feature) -> list[str]:
        return [train.column]

    def encode(self, cells: Cells, names: list[str], split: str) -> list[float]:
        encoded = []
        for index, value in enumerate(cells.values):
            try:
                if isinstance(value, bool) or isinstance(value, list | tuple):
                    raise ValueError
                number = float(value)
            except (TypeError, ValueError):
                raise UsageError(f"{cells.row_name(index)}: the target {value!r} ({cells.column!r}) is not a number; "
                                 "a regression target is one number per row") from None
            if not math.isfinite(number):
                raise UsageError(f"{cells.row_name(index)}: the target ({cells.column!r}) is "
                                 f"{'empty' if _is_missing(value) else repr(value)}; give a finite number")
            encoded.append(number)
        return encoded

    def feature(self, names: list[str]):
        return datasets.Value("float32")

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.squeeze(-1)

    def decide(self, scores, thresholds=None):
        return scores

    def metrics(self, scores, references, predictions) -> dict:
        return regression.regression_metrics(predictions, references)

    def metric_names(self) -> tuple[str, ...]:
        return regression.REGRESSION_METRICS


def target_for(problem_type: str, label_separator: str = "|") -> Target:
    if problem_type == SINGLE_LABEL:
        return SingleLabel()
    if problem_type == MULTI_LABEL:
        return MultiLabel(label_separator)
    if problem_type == REGRESSION:
        return Regression()
    raise UsageError(f"--problem_type {problem_type}: choose one of {', '.join(PROBLEM_TYPES)}")


def infer_problem_type(values: list) -> str | None:
    """`regression` when a label column holds numbers with fractions (the user named no --problem_type)."""
    numbers = [v for v in values if not _is_missing(v)]
    if numbers and all(isinstance(v, float) for v in numbers) and not all(v.is_integer() for v in numbers):
        return REGRESSION
    return None


# --- losses -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Standardiser:
    """Regression targets are trained as (y - mean) / scale, so one learning rate suits any units. `fold_into`
    writes the scale into the head's last linear layer after training: the saved model answers in the user's units
    (`predict`, `pipeline()`), with nothing to undo."""

    mean: float
    scale: float

    @classmethod
    def of(cls, targets: list[float]) -> "Standardiser":
        values = np.asarray(targets, np.float64)
        return cls(float(values.mean()), float(values.std()) or 1.0)

    def standardise(self, targets: torch.Tensor) -> torch.Tensor:
        return (targets - self.mean) / self.scale

    def in_units(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs * self.scale + self.mean

    @torch.no_grad()
    def fold_into(self, layer: torch.nn.Linear) -> None:
        layer.weight.mul_(self.scale)
        layer.bias.mul_(self.scale).add_(self.mean)


def loss_function(target: Target, train_labels: list, num_labels: int, class_weights: str, label_smoothing: float,
                  regression_loss: str = "mse") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(float logits, labels) -> loss, for the target:
    - single-label: cross-entropy, --class_weights auto = inverse class frequency, --label_smoothing;
    - multi-label: BCE with logits, --class_weights auto = pos_weight (negatives / positives per label);
    - regression: --regression_loss (mse, huber, l1) on standardised targets."""
    if isinstance(target, SingleLabel):
        weight = auto_class_weights(train_labels, num_labels) if class_weights == "auto" else None

        def cross_entropy(logits, labels):
            return F.cross_entropy(logits, labels, weight=None if weight is None else weight.to(logits.device),
                                   label_smoothing=label_smoothing)
        return cross_entropy
    if isinstance(target, MultiLabel):
        if label_smoothing:
            raise UsageError("--label_smoothing is for single-label classification")
        pos_weight = auto_pos_weight(train_labels) if class_weights == "auto" else None

        def binary_cross_entropy(logits, labels):
            return F.binary_cross_entropy_with_logits(
                logits, labels.float(), pos_weight=None if pos_weight is None else pos_weight.to(logits.device))
        return binary_cross_entropy
    if class_weights == "auto" or label_smoothing:
        raise UsageError("--class_weights and --label_smoothing are for classification, not regression")
    standardiser = Standardiser.of(train_labels)
    error = {"mse": F.mse_loss, "huber": F.huber_loss, "l1": F.l1_loss}[regression_loss]

    def regression_error(logits, labels):
        return error(logits.squeeze(-1), standardiser.standardise(labels.float()))
    regression_error.standardiser = standardiser
    return regression_error


def auto_class_weights(labels: list[int], num_labels: int) -> torch.Tensor:
    """Inverse class frequency, scaled so a balanced data set gets weight 1 everywhere."""
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    return torch.tensor(len(labels) / (num_labels * np.maximum(counts, 1)), dtype=torch.float32)


def auto_pos_weight(labels: list[list[float]]) -> torch.Tensor:
    """Per label, negatives / positives in training (a label never present gets 1): BCE's answer to imbalance."""
    matrix = np.asarray(labels, np.float64)
    positives = matrix.sum(0)
    return torch.tensor(np.where(positives > 0, (len(matrix) - positives) / np.maximum(positives, 1), 1.0),
                        dtype=torch.float32)
