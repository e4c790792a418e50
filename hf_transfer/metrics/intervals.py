"""How sure a score is: percentile-bootstrap intervals over test items, and paired tests between two runs.

Every resample draws the test items with replacement (seeded, so the same predictions always give the same
interval) and recomputes the metric on the draw. Speech metrics resample utterances and recompute the corpus
rate from summed error and length counts, as the headline WER/CER is computed.
"""

from collections.abc import Callable
from dataclasses import dataclass

import jiwer
import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 1000
SEED = 0
# Metrics that get an interval; all of them are functions of (probabilities, references) over chosen items.
CLASSIFICATION_INTERVALS = ("accuracy", "f1_macro", "roc_auc")
TRANSCRIPTION_INTERVALS = ("wer", "cer")
# Below this many discordant items McNemar's chi-square approximation is poor: use the exact binomial test.
EXACT_MCNEMAR_BELOW = 25


@dataclass(frozen=True)
class Bootstrap:
    """How to resample: `resamples` draws of the items, a `confidence` interval, a `seed` for the draws."""

    confidence: float = CONFIDENCE
    resamples: int = RESAMPLES
    seed: int = SEED

    def indices(self, num_items: int) -> np.ndarray:
        """(resamples, num_items) item indices drawn with replacement."""
        return np.random.default_rng(self.seed).integers(0, num_items, size=(self.resamples, num_items))

    def percentiles(self, values) -> tuple[float, float]:
        """The central `confidence` share of the resampled values (undefined resamples, None, are dropped)."""
        kept = np.asarray([v for v in values if v is not None], dtype=np.float64)
        tail = 100 * (1 - self.confidence) / 2
        low, high = np.percentile(kept, [tail, 100 - tail])
        return float(low), float(high)


# --- classification -------------------------------------------------------------------------------------------
# Written with numpy rather than sklearn's scorers: a thousand resamples of sklearn's input checks take seconds.
def _accuracy(probabilities, references, predictions):
    return float(np.mean(predictions == references))


def _f1_macro(probabilities, references, predictions):
    """sklearn's f1_score(average="macro", zero_division=0) over every class."""
    num_labels = probabilities.shape[1]
    true_positive = np.bincount(references[predictions == references], minlength=num_labels)
    predicted, actual = np.bincount(predictions, minlength=num_labels), np.bincount(references, minlength=num_labels)
    denominator = predicted + actual  # 2 tp + fp + fn
    return float(np.mean(np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1), 0.0)))


def _binary_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney U / (positives x negatives), ties counted half (what sklearn's roc_auc_score gives)."""
    positives = int(is_positive.sum())
    negatives = len(is_positive) - positives
    ranks = stats.rankdata(scores)
    return float((ranks[is_positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _roc_auc(probabilities, references, predictions):
    """Binary AUC of the positive class; macro one-vs-rest AUC for more classes (as `classification_metrics`)."""
    num_labels = probabilities.shape[1]
    if len(np.unique(references)) < num_labels:
        return None  # a resample that misses a class has no AUC; it is left out of the interval
    if num_labels == 2:
        return _binary_auc(references == 1, probabilities[:, 1])
    return float(np.mean([_binary_auc(references == c, probabilities[:, c]) for c in range(num_labels)]))


CLASSIFICATION_STATISTICS: dict[str, Callable] = {"accuracy": _accuracy, "f1_macro": _f1_macro, "roc_auc": _roc_auc}


def classification_statistic(metric: str, probabilities: np.ndarray, references: np.ndarray,
                             predictions: np.ndarray | None = None) -> Callable[[np.ndarray], float | None]:
    """The metric on the items `indices` picks; `predictions` default to the top class (pass thresholded ones)."""
    predictions = probabilities.argmax(axis=1) if predictions is None else np.asarray(predictions)
    statistic = CLASSIFICATION_STATISTICS[metric]
    return lambda indices: statistic(probabilities[indices], references[indices], predictions[indices])


def classification_intervals(probabilities: np.ndarray, references: np.ndarray,
                             predictions: np.ndarray | None = None, bootstrap: Bootstrap = Bootstrap()) -> dict:
    """`{metric}_ci_low` / `{metric}_ci_high` for accuracy, macro F1 and ROC AUC (AUC left out when undefined)."""
    probabilities, references = np.asarray(probabilities), np.asarray(references)
    draws = bootstrap.indices(len(references))
    intervals = {}
    for metric in CLASSIFICATION_INTERVALS:
        statistic = classification_statistic(metric, probabilities, references, predictions)
        if statistic(np.arange(len(references))) is None:
            continue
        low, high = bootstrap.percentiles(statistic(d) for d in draws)
        intervals[f"{metric}_ci_low"], intervals[f"{metric}_ci_high"] = low, high
    return intervals


# --- speech recognition ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ErrorCounts:
    """Per-utterance edit and reference-length counts: corpus WER = word_errors.sum() / words.sum()."""

    word_errors: np.ndarray
    words: np.ndarray
    char_errors: np.ndarray
    chars: np.ndarray

    def rate(self, metric: str, indices: np.ndarray | None = None) -> float:
        errors, lengths = (self.word_errors, self.words) if metric == "wer" else (self.char_errors, self.chars)
        if indices is not None:
            errors, lengths = errors[indices], lengths[indices]
        return float(errors.sum() / max(lengths.sum(), 1))


def error_counts(predictions: list[str], references: list[str]) -> ErrorCounts:
    """Edits per utterance, counted as jiwer counts them for the corpus rates."""
    words = jiwer.process_words(list(references), list(predictions))
    chars = jiwer.process_characters(list(references), list(predictions))

    def per_utterance(output):
        # An insertion spans hypothesis tokens only; substitutions and deletions span reference tokens.
        errors = [sum(c.hyp_end_idx - c.hyp_start_idx if c.type == "insert" else c.ref_end_idx - c.ref_start_idx
                      for c in alignment if c.type != "equal")
                  for alignment in output.alignments]
        return np.asarray(errors, dtype=np.int64), np.asarray([len(r) for r in output.references], dtype=np.int64)

    word_errors, word_counts = per_utterance(words)
    char_errors, char_counts = per_utterance(chars)
    return ErrorCounts(word_errors, word_counts, char_errors, char_counts)


def transcription_intervals(predictions: list[str], references: list[str],
                            bootstrap: Bootstrap = Bootstrap()) -> dict:
    """`wer_ci_low` / `wer_ci_high` and the same for CER, resampling whole utterances."""
    counts = error_counts(predictions, references)
    draws = bootstrap.indices(len(references))
    intervals = {}
    for metric in TRANSCRIPTION_INTERVALS:
        low, high = bootstrap.percentiles(counts.rate(metric, d) for d in draws)
        intervals[f"{metric}_ci_low"], intervals[f"{metric}_ci_high"] = low, high
    return intervals


# --- any per-item metric ----------------------------------------------------------------------------------------
def item_intervals(metrics: Callable[..., dict], arrays: tuple[np.ndarray, ...],
                   bootstrap: Bootstrap = Bootstrap()) -> dict:
    """`{metric}_ci_low` / `{metric}_ci_high` for every metric `metrics(*arrays)` gives (multi-label, regression),
    resampling the items (the first axis of each array); a metric undefined on the full set gets no interval."""
    draws = [metrics(*(array[d] for array in arrays)) for d in bootstrap.indices(len(arrays[0]))]
    intervals = {}
    for metric, value in metrics(*arrays).items():
        if value is None:
            continue
        low, high = bootstrap.percentiles(draw[metric] for draw in draws)
        intervals[f"{metric}_ci_low"], intervals[f"{metric}_ci_high"] = low, high
    return intervals


# --- two runs on the same items -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedDifference:
    """metric(A) - metric(B) on the same items, its bootstrap interval, and how often A came out ahead."""

    metric: str
    value_a: float
    value_b: float
    difference: float
    ci_low: float
    ci_high: float
    share_a_better: float  # share of resamples where A beats B (lower is better for wer/cer)


def paired_bootstrap(metric: str, statistic_a: Callable[[np.ndarray], float | None],
                     statistic_b: Callable[[np.ndarray], float | None], num_items: int,
                     bootstrap: Bootstrap = Bootstrap(), lower_is_better: bool = False) -> PairedDifference:
    """Resample the items once per draw and score both runs on that same draw."""
    everything = np.arange(num_items)
    differences, a_better = [], []
    for draw in bootstrap.indices(num_items):
        a, b = statistic_a(draw), statistic_b(draw)
        if a is None or b is None:
            continue
        differences.append(a - b)
        a_better.append(a < b if lower_is_better else a > b)
    low, high = bootstrap.percentiles(differences)
    value_a, value_b = statistic_a(everything), statistic_b(everything)
    return PairedDifference(metric, value_a, value_b, value_a - value_b, low, high, float(np.mean(a_better)))


def paired_item_differences(metrics: Callable[..., dict], arrays_a: tuple[np.ndarray, ...],
                            arrays_b: tuple[np.ndarray, ...], lower_is_better: Callable[[str], bool],
                            bootstrap: Bootstrap = Bootstrap()) -> list[PairedDifference]:
    """`paired_bootstrap` for every metric `metrics(*arrays)` gives (multi-label, regression): each draw scores both
    runs once on the same items; a metric undefined for either run on the full set is left out."""
    def scored(arrays, rows):
        return metrics(*(array[rows] for array in arrays))

    draws = [(scored(arrays_a, rows), scored(arrays_b, rows)) for rows in bootstrap.indices(len(arrays_a[0]))]
    everything_a, everything_b = metrics(*arrays_a), metrics(*arrays_b)
    differences = []
    for metric, value_a in everything_a.items():
        value_b = everything_b[metric]
        if value_a is None or value_b is None:
            continue
        pairs = [(a[metric], b[metric]) for a, b in draws if a[metric] is not None and b[metric] is not None]
        low, high = bootstrap.percentiles(a - b for a, b in pairs)
        a_better = [a < b if lower_is_better(metric) else a > b for a, b in pairs]
        differences.append(PairedDifference(metric, value_a, value_b, value_a - value_b, low, high,
                                            float(np.mean(a_better))))
    return differences


@dataclass(frozen=True)
class McNemar:
    """Items only A got right (`only_a`) against items only B got right (`only_b`)."""

    only_a: int
    only_b: int
    statistic: float | None  # chi-square with continuity correction; None for the exact test
    p_value: float
    method: str


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """McNemar's test of equal accuracy on paired items: exact binomial when few items disagree."""
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a, only_b = int(np.sum(correct_a & ~correct_b)), int(np.sum(~correct_a & correct_b))
    discordant = only_a + only_b
    if discordant == 0:
        return McNemar(0, 0, None, 1.0, "exact binomial")
    if discordant < EXACT_MCNEMAR_BELOW:
        p_value = stats.binomtest(only_a, discordant, 0.5).pvalue
        return McNemar(only_a, only_b, None, float(min(p_value, 1.0)), "exact binomial")
    statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
    return McNemar(only_a, only_b, float(statistic), float(stats.chi2.sf(statistic, df=1)),
                   "chi-square with continuity correction")
