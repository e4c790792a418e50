"""The report's sections on trust: how sure each number is, how the operating point was chosen, whether the
probabilities are calibrated, and how each group fares. Each returns markdown lines (and writes its figure)."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn import metrics as sk

from hf_transfer.evaluation.operating_point import Decision
from hf_transfer.evaluation.report import save_figure
from hf_transfer.metrics.calibration import BINS, reliability_bins
from hf_transfer.metrics.intervals import Bootstrap


def intervals_note(bootstrap: Bootstrap, num_items: int, unit: str = "items") -> list[str]:
    return ["", f"Brackets give the {bootstrap.confidence:.0%} percentile-bootstrap interval over the {num_items} "
                f"{unit} ({bootstrap.resamples} resamples, seed {bootstrap.seed}); `hf-transfer compare` tests the "
                "difference between two runs on the same items."]


def selection_note(has_test: bool, decision: Decision | None = None, per_label_thresholds: bool = False) -> list[str]:
    threshold = (", the decision threshold" if decision and decision.threshold is not None
                 else ", each label's threshold (its best F1)" if per_label_thresholds else "")
    chosen = "the best checkpoint" + threshold + (" and the temperature" if decision and decision.temperature != 1.0
                                                  else "")
    test = (" The test split was used once, for this report; nothing was chosen on it." if has_test else
            " There is no test split: the validation scores above also chose the model, so they are optimistic.")
    return ["", "## How the model was selected", "", f"{chosen[0].upper() + chosen[1:]} came from the validation "
            f"split only.{test}"]


def operating_point_section(output_dir: Path, probabilities: np.ndarray, references: np.ndarray,
                            predictions: np.ndarray, decision: Decision, names: list[str]) -> list[str]:
    """Binary tasks: the ROC and precision-recall curves with the operating point marked."""
    if len(names) != 2 or len(np.unique(references)) < 2:
        return []
    scores, truth = probabilities[:, 1], references == 1
    tp, fp = np.sum(predictions.astype(bool) & truth), np.sum(predictions.astype(bool) & ~truth)
    fn, tn = np.sum(~predictions.astype(bool) & truth), np.sum(~predictions.astype(bool) & ~truth)
    recall, fpr = tp / max(tp + fn, 1), fp / max(fp + tn, 1)
    precision = tp / max(tp + fp, 1)
    figure, (roc_axes, pr_axes) = plt.subplots(1, 2, figsize=(10, 4.5))
    false_positive_rate, true_positive_rate, _ = sk.roc_curve(truth, scores)
    roc_axes.plot(false_positive_rate, true_positive_rate, label="ROC")
    roc_axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    roc_axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    curve_precision, curve_recall, _ = sk.precision_recall_curve(truth, scores)
    pr_axes.plot(curve_recall, curve_precision, label="precision-recall")
    pr_axes.axhline(truth.mean(), linestyle="--", color="grey", linewidth=1, label="chance")
    pr_axes.set(xlabel=f"recall of {names[1]}", ylabel=f"precision of {names[1]}", title="Precision-recall",
                xlim=(0, 1), ylim=(0, 1.01))
    label = f"threshold {decision.threshold:.3f}" if decision.threshold is not None else "top class"
    roc_axes.plot([fpr], [recall], "o", color="red", label=label)
    pr_axes.plot([recall], [precision], "o", color="red", label=label)
    roc_axes.legend(loc="lower right", fontsize=8)
    pr_axes.legend(loc="lower left", fontsize=8)
    save_figure(figure, Path(output_dir) / "operating_point.png")
    if decision.threshold is None:
        rule = (f"The top class decides (the same as `{names[1]}` when its probability is at least 0.5); "
                "`--decision_threshold auto` chooses a threshold on validation instead.")
    else:
        rule = (f"`{names[1]}` when its probability is at least **{decision.threshold:.4f}**, chosen for "
                f"{decision.goal}; saved as `decision_threshold` in `config.json`.")
    return ["", "## Operating point", "", rule, "",
            f"At this point: recall {recall:.4f}, precision {precision:.4f}, false positive rate {fpr:.4f} "
            f"({tp} true and {fp} false positives, {fn} missed).", "",
            "![ROC and precision-recall curves with the operating point](operating_point.png)"]


def calibration_section(output_dir: Path, probabilities: np.ndarray, references: np.ndarray, results: dict,
                        prefix: str, decision: Decision) -> list[str]:
    """Expected calibration error and the reliability diagram (equal-width bins of the top-class probability)."""
    rows = reliability_bins(probabilities, references)
    figure, axes = plt.subplots(figsize=(5, 5))
    centres = [(r["low"] + r["high"]) / 2 for r in rows]
    axes.bar(centres, [r["accuracy"] for r in rows], width=1 / BINS, edgecolor="black", alpha=0.7, label="accuracy")
    axes.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o", color="red",
              label="mean confidence of the bin")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    axes.set(xlabel="top-class probability", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.01),
             title=f"Reliability, ECE {results[f'{prefix}_ece']:.4f}")
    axes.legend(loc="upper left", fontsize=8)
    save_figure(figure, Path(output_dir) / "reliability_diagram.png")
    lines = ["", "## Calibration", "",
             f"Expected calibration error (ECE): **{results[f'{prefix}_ece']:.4f}**: the items are put in {BINS} "
             "equal-width bins of their top-class probability, and ECE is the item-weighted mean gap between each "
             "bin's accuracy and its mean probability (0 = probabilities you can read as frequencies)."]
    if decision.temperature != 1.0:
        lines += ["", f"Temperature scaling (T = {decision.temperature:.4f}, fitted on validation and saved as "
                      f"`calibration_temperature` in `config.json`) divides the logits by T: ECE was "
                      f"{results[f'{prefix}_ece_before_calibration']:.4f} before it."]
    lines += ["", "| bin | items | mean probability | accuracy |", "|---|---:|---:|---:|"]
    lines += [f"| {r['low']:.1f}–{r['high']:.1f} | {r['count']} | {r['confidence']:.4f} | {r['accuracy']:.4f} |"
              for r in rows]
    return lines + ["", "![reliability diagram](reliability_diagram.png)"]


def groups_section(group_rows: list[dict], column: str, results: dict, prefix: str, metric: str) -> list[str]:
    if not group_rows:
        return []
    other = "f1_macro" if metric == "accuracy" else "cer"
    return ["", f"## Per {column}", "",
            f"Worst {column}: **{results[f'{prefix}_worst_group']}** ({metric} "
            f"{results[f'{prefix}_worst_group_{metric}']:.4f}); the best is "
            f"{results[f'{prefix}_best_group_{metric}']:.4f}, a gap of {results[f'{prefix}_group_{metric}_gap']:.4f}.",
            "", f"| {column} | items | {metric} | {other} |", "|---|---:|---:|---:|"] + [
        f"| {r['group']} | {r['count']} | {r[metric]:.4f} | {r[other]:.4f} |" for r in group_rows]
