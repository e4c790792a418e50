"""Score one split the way a reader can trust: metrics with bootstrap intervals, calibration error, per-group
scores and the per-item predictions, for a training run's splits and for `hf-transfer evaluate` alike."""

from dataclasses import dataclass, field

import numpy as np

from hf_transfer.evaluation.item_predictions import (
    classification_items,
    multilabel_items,
    regression_items,
    transcription_items,
)
from hf_transfer.evaluation.operating_point import Decision
from hf_transfer.metrics.calibration import expected_calibration_error
from hf_transfer.metrics.classification import classification_metrics
from hf_transfer.metrics.groups import classification_groups, group_summary, transcription_groups
from hf_transfer.metrics.intervals import (
    Bootstrap,
    classification_intervals,
    error_counts,
    item_intervals,
    transcription_intervals,
)
from hf_transfer.metrics.speech import transcription_metrics
from hf_transfer.targets import MULTI_LABEL, Target


@dataclass
class ScoredSplit:
    """`results` are unprefixed (accuracy, accuracy_ci_low, ece, worst_group...)."""

    results: dict
    items: list[dict]
    group_rows: list[dict] = field(default_factory=list)
    # Classification, multi-label and regression: what the report plots.
    probabilities: np.ndarray | None = None  # after calibration; a multi-label's scores; a regression's numbers
    references: np.ndarray | None = None
    predictions: np.ndarray | None = None  # after the decision threshold


def score_classification(raw_probabilities: np.ndarray, references: np.ndarray, decision: Decision,
                         names: list[str], inputs: list[str], groups: list[str] | None,
                         bootstrap: Bootstrap) -> ScoredSplit:
    probabilities = decision.calibrated(raw_probabilities)
    predictions = decision.predict(probabilities)
    results = classification_metrics(probabilities, references, predictions)
    results.update(classification_intervals(probabilities, references, predictions, bootstrap))
    results["ece"] = expected_calibration_error(probabilities, references)
    if decision.temperature != 1.0:
        results["ece_before_calibration"] = expected_calibration_error(raw_probabilities, references)
    group_rows = classification_groups(probabilities, references, predictions, groups) if groups else []
    if group_rows:
        results.update(group_summary(group_rows, "accuracy"))
    items = classification_items(inputs, probabilities, references, predictions, names, groups)
    return ScoredSplit(results, items, group_rows, probabilities, references, predictions)


def score_target(target: Target, scores: np.ndarray, references: np.ndarray, thresholds: list[float] | None,
                 names: list[str], inputs: list[str], bootstrap: Bootstrap) -> ScoredSplit:
    """A multi-label or regression split: its metrics with intervals, and its items."""
    predictions = target.decide(scores, thresholds)
    results = target.metrics(scores, references, predictions)
    results.update(item_intervals(target.metrics, (scores, references, predictions), bootstrap))
    items = (multilabel_items(inputs, scores, references, predictions, names) if target.problem_type == MULTI_LABEL
             else regression_items(inputs, predictions, references))
    return ScoredSplit(results, items, [], scores, references, predictions)


def score_transcription(predictions: list[str], references: list[str], inputs: list[str],
                        groups: list[str] | None, bootstrap: Bootstrap) -> ScoredSplit:
    results = transcription_metrics(predictions, references)
    results.update(transcription_intervals(predictions, references, bootstrap))
    counts = error_counts(predictions, references)
    group_rows = transcription_groups(counts, groups) if groups else []
    if group_rows:
        results.update(group_summary(group_rows, "wer", lower_is_better=True))
    return ScoredSplit(results, transcription_items(inputs, predictions, references, counts, groups), group_rows)
