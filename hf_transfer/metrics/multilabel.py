"""Multi-label metrics: each example holds any number of labels, each label is a yes/no decision.

Inputs are (items, labels) arrays: `scores` are sigmoid probabilities, `references` and `predictions` are 0/1.
Written with numpy, so a thousand bootstrap resamples stay fast.
"""

import numpy as np

MULTILABEL_METRICS = ("f1_micro", "f1_macro", "f1_samples", "map", "subset_accuracy", "hamming_loss")
LOWER_IS_BETTER = ("hamming_loss",)


def _f1(true_positive, predicted, actual) -> np.ndarray:
    """F1 = 2 tp / (predicted + actual), 0 where a label is neither predicted nor present (sklearn's
    zero_division=0)."""
    denominator = predicted + actual
    return np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1), 0.0)


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """sklearn's average_precision_score (sum over distinct thresholds of recall gained times precision), in numpy;
    None when no item is positive."""
    if not positive.any():
        return None
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], positive[order]
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))  # last item of each distinct score
    true_positive = np.cumsum(hits)[ends]
    precision, recall = true_positive / (ends + 1), true_positive / hits.sum()
    return float(np.sum(np.diff(recall, prepend=0) * precision))


def average_precisions(scores: np.ndarray, references: np.ndarray) -> list[float | None]:
    """Each label's average precision; None for a label with no positive example (undefined)."""
    return [average_precision(scores[:, j], references[:, j].astype(bool)) for j in range(references.shape[1])]


def multilabel_metrics(scores: np.ndarray, references: np.ndarray, predictions: np.ndarray) -> dict:
    """f1_micro, f1_macro (over labels), f1_samples (over examples), map (mean average precision over the labels
    that occur), subset_accuracy (every label right) and hamming_loss (share of wrong yes/no decisions)."""
    references, predictions = references.astype(bool), predictions.astype(bool)
    true_positive = predictions & references
    per_label = _f1(true_positive.sum(0), predictions.sum(0), references.sum(0))
    per_example = _f1(true_positive.sum(1), predictions.sum(1), references.sum(1))
    # An example with no label that predicts none is right: sklearn's zero_division=1 for samples-F1 would say so,
    # its default (0) would not; we follow the metric's meaning.
    per_example = np.where(predictions.sum(1) + references.sum(1) == 0, 1.0, per_example)
    precisions = [ap for ap in average_precisions(scores, references) if ap is not None]
    return {
        "f1_micro": float(_f1(true_positive.sum(), predictions.sum(), references.sum())),
        "f1_macro": float(per_label.mean()),
        "f1_samples": float(per_example.mean()),
        "map": float(np.mean(precisions)) if precisions else None,
        "subset_accuracy": float((predictions == references).all(1).mean()),
        "hamming_loss": float((predictions != references).mean()),
    }


def per_label_rows(scores: np.ndarray, references: np.ndarray, predictions: np.ndarray, names: list[str]) -> list:
    """One row per label: support, precision, recall, F1 and average precision."""
    references, predictions = references.astype(bool), predictions.astype(bool)
    rows = []
    for j, (name, ap) in enumerate(zip(names, average_precisions(scores, references))):
        true_positive = int((predictions[:, j] & references[:, j]).sum())
        predicted, actual = int(predictions[:, j].sum()), int(references[:, j].sum())
        rows.append({"label": name, "support": actual, "precision": true_positive / predicted if predicted else 0.0,
                     "recall": true_positive / actual if actual else 0.0,
                     "f1": float(_f1(true_positive, predicted, actual)), "average_precision": ap})
    return rows


def best_f1_thresholds(scores: np.ndarray, references: np.ndarray, default: float = 0.5) -> list[float]:
    """Per label, the threshold on its score that maximises its F1 on these (validation) items: the midpoint
    between the chosen score and the next lower one. A label with no positive example keeps `default`."""
    thresholds = []
    for j in range(references.shape[1]):
        positive = references[:, j].astype(bool)
        if not positive.any():
            thresholds.append(default)
            continue
        order = np.argsort(-scores[:, j], kind="stable")
        ranked, hits = scores[order, j], positive[order]
        true_positive = np.cumsum(hits)
        f1 = 2 * true_positive / (np.arange(1, len(ranked) + 1) + positive.sum())
        # Only cut between distinct scores: the last position of each run of equal scores.
        cut = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
        best = cut[np.argmax(f1[cut])]
        below = ranked[best + 1] if best + 1 < len(ranked) else ranked[best] - 1e-6
        thresholds.append(float((ranked[best] + below) / 2))
    return thresholds
