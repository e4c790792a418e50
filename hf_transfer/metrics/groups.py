"""Metrics per group (speaker, patient, site): a model can do well on average and badly on one group."""

from collections import defaultdict

import numpy as np

from hf_transfer.metrics.intervals import CLASSIFICATION_STATISTICS, ErrorCounts


def _members(groups: list[str]) -> dict[str, np.ndarray]:
    members = defaultdict(list)
    for i, group in enumerate(groups):
        members[str(group)].append(i)
    return {group: np.asarray(rows) for group, rows in sorted(members.items())}


def classification_groups(probabilities: np.ndarray, references: np.ndarray, predictions: np.ndarray,
                          groups: list[str]) -> list[dict]:
    """One row per group: its size, accuracy and macro F1 (over every class, as for the whole split)."""
    rows = []
    for group, rows_of_group in _members(groups).items():
        picked = (probabilities[rows_of_group], references[rows_of_group], predictions[rows_of_group])
        rows.append({"group": group, "count": len(rows_of_group),
                     "accuracy": CLASSIFICATION_STATISTICS["accuracy"](*picked),
                     "f1_macro": CLASSIFICATION_STATISTICS["f1_macro"](*picked)})
    return rows


def transcription_groups(counts: ErrorCounts, groups: list[str]) -> list[dict]:
    """One row per group: its size and corpus WER/CER over the group's utterances."""
    return [{"group": group, "count": len(rows), "wer": counts.rate("wer", rows), "cer": counts.rate("cer", rows)}
            for group, rows in _members(groups).items()]


def group_summary(rows: list[dict], metric: str, lower_is_better: bool = False) -> dict:
    """The worst group, its score, the best group's score and the gap between them."""
    ranked = sorted(rows, key=lambda row: row[metric], reverse=lower_is_better)
    worst, best = ranked[0], ranked[-1]
    return {"worst_group": worst["group"], f"worst_group_{metric}": worst[metric],
            f"best_group_{metric}": best[metric], f"group_{metric}_gap": abs(best[metric] - worst[metric])}
