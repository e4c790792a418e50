"""`hf-transfer compare RUN_A RUN_B`: is A better than B on the same test items, or could it be chance?

A paired bootstrap resamples the items once per draw and scores both runs on that draw, so the interval of
the difference accounts for the items both runs find easy or hard. McNemar's test asks whether the items only
A gets right outnumber those only B gets right by more than chance would.
"""

from dataclasses import asdict
from pathlib import Path

import numpy as np

from hf_transfer.config import UsageError
from hf_transfer.evaluation.item_predictions import check_same_items, read_items
from hf_transfer.metrics.intervals import (
    CLASSIFICATION_INTERVALS,
    TRANSCRIPTION_INTERVALS,
    Bootstrap,
    ErrorCounts,
    classification_statistic,
    mcnemar,
    paired_bootstrap,
    paired_item_differences,
)
from hf_transfer.metrics.multilabel import multilabel_metrics
from hf_transfer.metrics.regression import regression_metrics
from hf_transfer.targets import lower_is_better


def _classification_arrays(path: Path, items: list[dict], names: list[str]):
    ids = {name: i for i, name in enumerate(names)}
    if list(items[0]["probabilities"]) != names:
        raise UsageError(f"{path}: labels {', '.join(items[0]['probabilities'])} differ from the other run's "
                         f"({', '.join(names)})")
    probabilities = np.array([[item["probabilities"][n] for n in names] for item in items])
    references = np.array([ids[item["reference"]] for item in items])
    predictions = np.array([ids[item["prediction"]] for item in items])
    return probabilities, references, predictions


def _multilabel_arrays(path: Path, items: list[dict], names: list[str]):
    if list(items[0]["scores"]) != names:
        raise UsageError(f"{path}: labels {', '.join(items[0]['scores'])} differ from the other run's "
                         f"({', '.join(names)})")
    def multi_hot(labels):
        return [name in labels for name in names]
    return (np.array([[item["scores"][name] for name in names] for item in items]),
            np.array([multi_hot(item["reference"]) for item in items]),
            np.array([multi_hot(item["prediction"]) for item in items]))


def _regression_arrays(items: list[dict]):
    return tuple(np.array([item[key] for item in items], dtype=float) for key in ("prediction", "reference"))


def _kind(item: dict) -> str:
    """What a run predicts, from the fields of one of its items."""
    for field, kind in (("probabilities", "single-label"), ("scores", "multi-label"), ("word_errors", "transcription")):
        if field in item:
            return kind
    return "regression"


def _counts(items: list[dict]) -> ErrorCounts:
    return ErrorCounts(*(np.array([item[key] for item in items]) for key in ("word_errors", "words", "char_errors",
                                                                             "chars")))


def compare_runs(run_a: str | Path, run_b: str | Path, bootstrap: Bootstrap = Bootstrap()) -> dict:
    """Paired differences (A - B) of each headline metric, and McNemar's test for single-label classifiers."""
    a, b = read_items(run_a), read_items(run_b)
    (path_a, items_a), (path_b, items_b) = a, b
    kind = _kind(items_a[0])
    if _kind(items_b[0]) != kind:
        raise UsageError(f"{path_a} holds {kind} predictions and {path_b} {_kind(items_b[0])} ones: compare runs of "
                         "one task")
    check_same_items(a, b)
    num_items = len(items_a)
    result = {"run_a": str(path_a), "run_b": str(path_b), "items": num_items, "confidence": bootstrap.confidence,
              "resamples": bootstrap.resamples, "seed": bootstrap.seed}
    if kind == "single-label":
        names = list(items_a[0]["probabilities"])
        probabilities_a, references, predictions_a = _classification_arrays(path_a, items_a, names)
        probabilities_b, _, predictions_b = _classification_arrays(path_b, items_b, names)
        differences = []
        for metric in CLASSIFICATION_INTERVALS:
            statistic_a = classification_statistic(metric, probabilities_a, references, predictions_a)
            statistic_b = classification_statistic(metric, probabilities_b, references, predictions_b)
            if statistic_a(np.arange(num_items)) is not None:
                differences.append(paired_bootstrap(metric, statistic_a, statistic_b, num_items, bootstrap))
        result["mcnemar"] = asdict(mcnemar(predictions_a == references, predictions_b == references))
    elif kind == "multi-label":
        names = list(items_a[0]["scores"])
        differences = paired_item_differences(multilabel_metrics, _multilabel_arrays(path_a, items_a, names),
                                              _multilabel_arrays(path_b, items_b, names), lower_is_better, bootstrap)
    elif kind == "regression":
        differences = paired_item_differences(regression_metrics, _regression_arrays(items_a),
                                              _regression_arrays(items_b), lower_is_better, bootstrap)
    else:
        counts_a, counts_b = _counts(items_a), _counts(items_b)
        differences = [paired_bootstrap(metric, lambda rows, m=metric: counts_a.rate(m, rows),
                                        lambda rows, m=metric: counts_b.rate(m, rows), num_items, bootstrap,
                                        lower_is_better=True)
                       for metric in TRANSCRIPTION_INTERVALS]
    result["differences"] = [asdict(d) for d in differences]
    return result


def format_comparison(result: dict) -> str:
    """The comparison as markdown: one row per metric, then McNemar's test."""
    percent = f"{result['confidence']:.0%}"
    lines = [f"A: {result['run_a']}", f"B: {result['run_b']}",
             f"{result['items']} paired items; {result['resamples']} bootstrap resamples, seed {result['seed']}", "",
             f"| metric | A | B | A - B | {percent} interval of A - B | resamples where A is better |",
             "|---|---:|---:|---:|---|---:|"]
    lines += [f"| {d['metric']} | {d['value_a']:.4f} | {d['value_b']:.4f} | {d['difference']:+.4f} | "
              f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] | {d['share_a_better']:.1%} |" for d in result["differences"]]
    if "mcnemar" in result:
        test = result["mcnemar"]
        statistic = "" if test["statistic"] is None else f", statistic {test['statistic']:.3f}"
        lines += ["", f"McNemar ({test['method']}): {test['only_a']} items only A got right, {test['only_b']} only B; "
                      f"p = {test['p_value']:.4g}{statistic}"]
    return "\n".join(lines)
