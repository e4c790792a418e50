"""What a classifier decides with: a softmax temperature and, for binary tasks, a threshold on the positive class.

Both are chosen on the validation split after training, saved in the model's `config.json`
(`calibration_temperature`, `decision_threshold`) and applied by `hf-transfer predict` and `evaluate`.
"""

from dataclasses import dataclass

import numpy as np
from sklearn import metrics as sk

from hf_transfer.config import EvalArgs, UsageError
from hf_transfer.metrics.calibration import apply_temperature, fit_temperature
from hf_transfer.targets import MULTI_LABEL, REGRESSION, SINGLE_LABEL


@dataclass(frozen=True)
class Decision:
    temperature: float = 1.0
    threshold: float | None = None  # binary: positive when P(positive) >= threshold; None: the top class
    goal: str | None = None  # how the threshold was chosen, for the report

    def calibrated(self, probabilities: np.ndarray) -> np.ndarray:
        return apply_temperature(probabilities, self.temperature)

    def predict(self, calibrated: np.ndarray) -> np.ndarray:
        """Class ids from calibrated probabilities."""
        if self.threshold is None:
            return calibrated.argmax(axis=1)
        return (calibrated[:, 1] >= self.threshold).astype(np.int64)

    def save_to(self, config) -> None:
        """Custom `config.json` fields, so the operating point travels with the model."""
        config.calibration_temperature = self.temperature
        config.decision_threshold = self.threshold

    @classmethod
    def from_config(cls, config) -> "Decision":
        return cls(temperature=getattr(config, "calibration_temperature", None) or 1.0,
                   threshold=getattr(config, "decision_threshold", None))


def check_decision_settings(evaluation: EvalArgs, label_names: list[str], problem_type: str = SINGLE_LABEL) -> None:
    """Before training: a threshold on the positive class needs exactly two classes; a multi-label model gets one
    threshold per label, for F1; a regression has no operating point."""
    if problem_type != SINGLE_LABEL and evaluation.calibrate != "none":
        raise UsageError(f"--calibrate {evaluation.calibrate} fits a softmax temperature: single-label "
                         f"classification only, not {problem_type}")
    if problem_type == REGRESSION and evaluation.decision_threshold != "argmax":
        raise UsageError("--decision_threshold is for classification; a regression predicts a number")
    if problem_type == MULTI_LABEL:
        if evaluation.decision_threshold == "auto" and evaluation.threshold_goal != "f1":
            raise UsageError("a multi-label model's thresholds are chosen per label for F1: drop --threshold_goal, "
                             "--target_recall and --target_precision")
        return
    if evaluation.decision_threshold == "auto" and len(label_names) != 2:
        raise UsageError(f"--decision_threshold auto is for binary tasks; this one has {len(label_names)} classes "
                         f"({', '.join(label_names)}). Leave it at argmax (--calibrate temperature still applies)")


def choose_threshold(scores: np.ndarray, is_positive: np.ndarray, goal: str,
                     target: float | None = None) -> tuple[float, str]:
    """A threshold on `scores` (positive when >=) for `goal`, and a sentence saying what it achieved.

    f1: the threshold with the highest F1. recall: the highest threshold whose recall reaches `target` (so the
    best precision at that recall). precision: the lowest threshold whose precision reaches `target` (so the best
    recall); when no threshold gets there, the one with the highest precision, and the sentence says so.
    """
    precision, recall, thresholds = sk.precision_recall_curve(is_positive, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    if goal == "f1":
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        best = int(np.argmax(f1))
        return float(thresholds[best]), f"max F1 on validation ({f1[best]:.4f})"
    if goal == "recall":
        best = int(np.flatnonzero(recall >= target).max())
        return float(thresholds[best]), (f"recall >= {target:g} on validation (recall {recall[best]:.4f}, "
                                         f"precision {precision[best]:.4f})")
    reaching = np.flatnonzero(precision >= target)
    if len(reaching):
        best = int(reaching.min())
        return float(thresholds[best]), (f"precision >= {target:g} on validation (precision {precision[best]:.4f}, "
                                         f"recall {recall[best]:.4f})")
    best = int(np.argmax(precision))
    return float(thresholds[best]), (f"precision >= {target:g} not reached on validation; the highest precision "
                                     f"({precision[best]:.4f}, recall {recall[best]:.4f})")


def choose_decision(evaluation: EvalArgs, probabilities: np.ndarray, references: np.ndarray) -> Decision:
    """Fit the temperature, then the threshold on the calibrated scores; validation data only."""
    temperature = fit_temperature(probabilities, references) if evaluation.calibrate == "temperature" else 1.0
    if evaluation.decision_threshold == "argmax":
        return Decision(temperature)
    target = {"recall": evaluation.target_recall, "precision": evaluation.target_precision}.get(
        evaluation.threshold_goal)
    calibrated = apply_temperature(probabilities, temperature)
    threshold, goal = choose_threshold(calibrated[:, 1], references == 1, evaluation.threshold_goal, target)
    return Decision(temperature, threshold, goal)
