"""Bootstrap intervals, paired differences and McNemar's test against cases computed by hand."""

import numpy as np
import pytest

from hf_transfer.metrics.intervals import (
    Bootstrap,
    classification_intervals,
    classification_statistic,
    error_counts,
    mcnemar,
    paired_bootstrap,
    transcription_intervals,
)


def test_percentiles_cut_the_central_share():
    # 0..100: the 2.5th and 97.5th percentiles with linear interpolation are 2.5 and 97.5.
    assert Bootstrap(confidence=0.95).percentiles(range(101)) == pytest.approx((2.5, 97.5))
    assert Bootstrap(confidence=0.8).percentiles([None, *range(101)]) == pytest.approx((10.0, 90.0))


def test_accuracy_interval_matches_the_binomial_by_hand():
    # 8 of 10 right: a resample's accuracy is Binomial(10, 0.8) / 10. P(X <= 4) = 0.006 and P(X <= 5) = 0.033
    # straddle 0.025, so the 2.5th percentile is 0.5; P(X <= 9) = 0.89 < 0.975, so the 97.5th is 1.0.
    references = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1, 0])
    predictions = references.copy()
    predictions[:2] = 1 - predictions[:2]
    probabilities = np.eye(2)[predictions]
    intervals = classification_intervals(probabilities, references, bootstrap=Bootstrap(resamples=4000, seed=1))
    assert (intervals["accuracy_ci_low"], intervals["accuracy_ci_high"]) == (0.5, 1.0)


def test_intervals_are_seeded_and_bracket_the_point_estimate():
    rng = np.random.default_rng(0)
    references = rng.integers(0, 3, size=200)
    probabilities = rng.dirichlet(np.ones(3), size=200)
    probabilities[np.arange(150), references[:150]] += 2  # 3/4 of them right
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    first = classification_intervals(probabilities, references)
    assert first == classification_intervals(probabilities, references)
    assert first != classification_intervals(probabilities, references, bootstrap=Bootstrap(seed=5))
    accuracy = np.mean(probabilities.argmax(1) == references)
    assert first["accuracy_ci_low"] < accuracy < first["accuracy_ci_high"]
    assert first["accuracy_ci_high"] - first["accuracy_ci_low"] == pytest.approx(0.12, abs=0.03)  # ~ 4 sd
    assert set(first) == {f"{m}_ci_{s}" for m in ("accuracy", "f1_macro", "roc_auc") for s in ("low", "high")}


def test_auc_interval_is_left_out_when_a_class_is_missing():
    probabilities = np.array([[0.8, 0.2], [0.6, 0.4], [0.7, 0.3]])
    intervals = classification_intervals(probabilities, np.array([0, 0, 0]))
    assert "roc_auc_ci_low" not in intervals and "accuracy_ci_low" in intervals


def test_error_counts_per_utterance_sum_to_jiwer():
    counts = error_counts(["a x c y", "e", "one two"], ["a b c", "d e", "one two"])
    assert counts.word_errors.tolist() == [2, 1, 0]  # substitution + insertion; deletion; none
    assert counts.words.tolist() == [3, 2, 2]
    assert counts.rate("wer") == pytest.approx(3 / 7)
    assert counts.char_errors.tolist()[2] == 0 and counts.chars.tolist() == [5, 3, 7]


def test_wer_interval_resamples_whole_utterances():
    # Ten utterances of 4 words; one has all 4 wrong: the corpus WER of a resample is (4k) / 40 for k copies
    # of that utterance, k ~ Binomial(10, 0.1): P(k = 0) = 0.35 > 0.025 and P(k <= 2) = 0.93, P(k <= 3) = 0.987.
    references = ["one two three four"] * 10
    predictions = ["five six seven eight"] + references[1:]
    intervals = transcription_intervals(predictions, references, Bootstrap(resamples=4000))
    assert intervals["wer_ci_low"] == 0.0 and intervals["wer_ci_high"] == pytest.approx(0.3)


def test_paired_bootstrap_of_a_known_difference():
    # A is right on all 100 items, B on the first 80: A - B = 0.2, and A never loses a resample.
    references = np.zeros(100, dtype=int)
    probabilities_a = np.tile([0.9, 0.1], (100, 1))
    probabilities_b = probabilities_a.copy()
    probabilities_b[80:] = [0.3, 0.7]
    difference = paired_bootstrap("accuracy", classification_statistic("accuracy", probabilities_a, references),
                                  classification_statistic("accuracy", probabilities_b, references), 100)
    assert difference.difference == pytest.approx(0.2)
    assert difference.ci_low < 0.2 < difference.ci_high and difference.ci_low > 0.1
    assert difference.share_a_better == 1.0


def test_mcnemar_exact_and_chi_square():
    # 6 discordant items, all for A: exact two-sided p = 2 * 0.5**6 = 0.03125.
    a, b = np.ones(20, bool), np.ones(20, bool)
    b[:6] = False
    result = mcnemar(a, b)
    assert (result.only_a, result.only_b, result.method) == (6, 0, "exact binomial")
    assert result.p_value == pytest.approx(0.03125)
    # 30 for A, 10 for B: (|30 - 10| - 1)^2 / 40 = 9.025, p = 0.00266.
    a, b = np.zeros(100, bool), np.zeros(100, bool)
    a[:30], b[30:40] = True, True
    result = mcnemar(a, b)
    assert result.statistic == pytest.approx(9.025) and result.p_value == pytest.approx(0.002663, abs=1e-5)


@pytest.mark.parametrize("num_labels", [2, 4])
def test_fast_statistics_equal_sklearn(num_labels):
    from sklearn import metrics as sk

    rng = np.random.default_rng(num_labels)
    references = rng.integers(0, num_labels, size=300)
    probabilities = rng.dirichlet(np.ones(num_labels), size=300).round(2)  # rounded: ties in the scores
    probabilities[np.arange(100), references[:100]] += 1
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predictions, everything = probabilities.argmax(1), np.arange(300)
    auc = (sk.roc_auc_score(references, probabilities[:, 1]) if num_labels == 2
           else sk.roc_auc_score(references, probabilities, multi_class="ovr"))
    f1 = sk.f1_score(references, predictions, average="macro", zero_division=0)
    assert classification_statistic("roc_auc", probabilities, references)(everything) == pytest.approx(auc)
    assert classification_statistic("f1_macro", probabilities, references)(everything) == pytest.approx(f1)
