"""Calibration error, temperature scaling and the decision threshold, on hand-made scores."""

import numpy as np
import pytest

from hf_transfer.config import EvalArgs, UsageError
from hf_transfer.evaluation.operating_point import Decision, choose_decision, choose_threshold
from hf_transfer.metrics.calibration import (
    TEMPERATURE_RANGE,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)


def test_ece_by_hand():
    # Bin (0.5, 0.6]: 0.55 and 0.6, one right -> |0.5 - 0.575| = 0.075. Bin (0.9, 1]: 0.95 x 3, two right
    # -> |0.667 - 0.95| = 0.2833. ECE = 2/5 * 0.075 + 3/5 * 0.2833 = 0.2.
    probabilities = np.array([[0.55, 0.45], [0.4, 0.6], [0.95, 0.05], [0.05, 0.95], [0.95, 0.05]])
    references = np.array([0, 0, 0, 1, 1])
    bins = reliability_bins(probabilities, references)
    assert [(b["low"], b["count"]) for b in bins] == [(0.5, 2), (0.9, 3)]
    assert expected_calibration_error(probabilities, references) == pytest.approx(0.2)


def test_temperature_scaling_lowers_the_error_of_an_over_confident_model():
    # Logits 3x too large: the true temperature is 3, and the fitted one should find it.
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 3))
    true_probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    references = np.array([rng.choice(3, p=p) for p in true_probabilities])
    over_confident = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)
    temperature = fit_temperature(over_confident, references)
    assert temperature == pytest.approx(3, rel=0.1)
    before = expected_calibration_error(over_confident, references)
    after = expected_calibration_error(apply_temperature(over_confident, temperature), references)
    assert before > 0.15 and after < 0.03
    assert (apply_temperature(over_confident, temperature).argmax(1) == over_confident.argmax(1)).all()


def test_a_temperature_for_scores_that_ignore_the_labels_is_kept_in_range_with_a_warning():
    # Confident scores against the labels: the unbounded fit runs off towards infinity.
    probabilities = np.array([[0.9, 0.1], [0.1, 0.9]] * 20)
    references = np.array([1, 0] * 20)
    with pytest.warns(UserWarning, match="the best temperature on validation is .*, kept to 20"):
        assert fit_temperature(probabilities, references) == TEMPERATURE_RANGE[1]


def test_threshold_for_target_recall():
    # Positives scored 0.95, 0.9, ..., 0.5 (10); negatives 0.85, 0.65, 0.45, 0.3, 0.1. Recall 0.9 needs 9 of the 10
    # positives: the highest such threshold is the 9th positive score, 0.55 (precision 9 / 11).
    positives = np.round(np.arange(0.95, 0.49, -0.05), 2)
    negatives = np.array([0.85, 0.65, 0.45, 0.3, 0.1])
    scores = np.concatenate([positives, negatives])
    is_positive = np.arange(15) < 10
    threshold, note = choose_threshold(scores, is_positive, "recall", 0.9)
    assert threshold == pytest.approx(0.55)
    assert "recall 0.9000" in note and "precision 0.8182" in note
    threshold, _ = choose_threshold(scores, is_positive, "precision", 1.0 - 1e-9)
    assert threshold == pytest.approx(0.9)  # above the 0.85 negative: the first 2 positives only
    threshold, note = choose_threshold(scores, is_positive, "f1")
    assert threshold == pytest.approx(0.5) and "0.9091" in note  # 10 tp, 2 fp (0.85, 0.65): F1 20 / 22


def test_decision_applies_temperature_then_threshold():
    probabilities = np.array([[0.7, 0.3], [0.2, 0.8], [0.45, 0.55]])
    decision = Decision(temperature=2.0, threshold=0.4)
    calibrated = decision.calibrated(probabilities)
    assert calibrated[0, 1] == pytest.approx(np.sqrt(0.3) / (np.sqrt(0.3) + np.sqrt(0.7)))  # 0.396
    assert decision.predict(calibrated).tolist() == [0, 1, 1]
    assert Decision().predict(probabilities).tolist() == [0, 1, 1]


def test_choose_decision_from_settings():
    references = np.array([0, 0, 1, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3], [0.35, 0.65], [0.2, 0.8]])
    decision = choose_decision(EvalArgs(decision_threshold="auto", target_recall=0.99), probabilities, references)
    assert decision.threshold == pytest.approx(0.3) and decision.temperature == 1.0
    assert choose_decision(EvalArgs(), probabilities, references) == Decision()


@pytest.mark.parametrize("flags, message", [
    ({"target_recall": 0.9}, "--decision_threshold auto"),
    ({"decision_threshold": "auto", "target_recall": 0.9, "target_precision": 0.9}, "not both"),
    ({"decision_threshold": "auto", "threshold_goal": "recall"}, "needs --target_recall"),
    ({"decision_threshold": "auto", "target_recall": 1.5}, "between 0 and 1"),
    ({"calibrate": "platt"}, "--calibrate must be one of"),
])
def test_bad_operating_point_flags(flags, message):
    with pytest.raises(UsageError, match=message):
        EvalArgs(**flags)


def test_a_threshold_needs_two_classes():
    from hf_transfer.evaluation.operating_point import check_decision_settings

    with pytest.raises(UsageError, match="binary tasks; this one has 3 classes \\(a, b, c\\)"):
        check_decision_settings(EvalArgs(decision_threshold="auto"), ["a", "b", "c"])
    check_decision_settings(EvalArgs(calibrate="temperature"), ["a", "b", "c"])
