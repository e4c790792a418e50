"""eval_report.md and plots for multi-label and regression runs (single-label has `report.write_report`)."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from hf_transfer.evaluation.report import (
    TrainingCurves,
    format_value,
    learning_curve_section,
    save_figure,
    validation_history_section,
    warnings_section,
    with_interval,
)
from hf_transfer.io import atomic_write_text
from hf_transfer.metrics.multilabel import per_label_rows
from hf_transfer.targets import MULTI_LABEL, Target


def plot_precision_recall(scores: np.ndarray, references: np.ndarray, names: list[str], title: str,
                          path: Path) -> None:
    """One precision-recall curve per label (a label with no positive example has none)."""
    figure, axes = plt.subplots(figsize=(5.5, 5))
    for j, name in enumerate(names):
        positive = references[:, j].astype(bool)
        if not positive.any():
            continue
        order = np.argsort(-scores[:, j], kind="stable")
        hits = np.cumsum(positive[order])
        axes.plot(hits / positive.sum(), hits / np.arange(1, len(order) + 1), label=name)
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    axes.legend(fontsize="small")
    save_figure(figure, path)


def plot_cooccurrence(references: np.ndarray, names: list[str], title: str, path: Path) -> np.ndarray:
    """How often each pair of labels occurs together (the diagonal: each label's count); returns the counts."""
    matrix = references.T.astype(np.int64) @ references.astype(np.int64)
    figure, axes = plt.subplots(figsize=(1.2 + 0.5 * len(names), 1 + 0.5 * len(names)))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    for (i, j), count in np.ndenumerate(matrix):
        axes.text(j, i, str(count), ha="center", va="center", fontsize="small")
    axes.set_title(title)
    save_figure(figure, path)
    return matrix


def plot_regression(predictions: np.ndarray, references: np.ndarray, title: str, path: Path) -> None:
    """Predicted against true (the diagonal is a perfect model), and the residuals against the prediction."""
    figure, (scatter, residuals) = plt.subplots(1, 2, figsize=(10, 4.5))
    low, high = float(min(references.min(), predictions.min())), float(max(references.max(), predictions.max()))
    scatter.scatter(references, predictions, s=10, alpha=0.6)
    scatter.plot([low, high], [low, high], color="grey", linestyle="--")
    scatter.set(xlabel="true", ylabel="predicted", title=title)
    residuals.scatter(predictions, predictions - references, s=10, alpha=0.6)
    residuals.axhline(0, color="grey", linestyle="--")
    residuals.set(xlabel="predicted", ylabel="predicted - true", title="Residuals")
    save_figure(figure, path)


def write_target_report(output_dir: Path, target: Target, results: dict, split_name: str, split_source: str,
                        scores: np.ndarray, references: np.ndarray, predictions: np.ndarray, names: list[str],
                        summary: dict, curves: TrainingCurves | None, sections: list[str] = (),
                        warnings: list[str] = ()) -> list[dict]:
    """The report for `split_name`: metrics with intervals, per-label rows and plots (multi-label), the scatter and
    residual plots (regression), the learning curve; returns the per-label rows (none for a regression)."""
    output_dir = Path(output_dir)
    prefixes = [p for p in ("eval", "test") if any(k.startswith(f"{p}_") for k in results)]
    title = f"{split_name} split ({len(references)} examples)"
    lines = [f"# Evaluation report: {summary['model']}", ""]
    lines += [f"- **{key}**: {value}" for key, value in summary.items() if key != "model"]
    lines += warnings_section(list(warnings))
    lines += ["", "## Results", "", "| metric | " + " | ".join(prefixes) + " |", "|---|" + "---:|" * len(prefixes)]
    lines += [f"| {metric} | " + " | ".join(with_interval(results, f"{p}_{metric}") for p in prefixes) + " |"
              for metric in target.metric_names()]
    rows = []
    if target.problem_type == MULTI_LABEL:
        rows = per_label_rows(scores, references, predictions, names)
        thresholds = results.get("decision_thresholds") or [0.5] * len(names)
        lines += ["", "f1_micro pools every yes/no decision; f1_macro averages the labels; f1_samples averages the "
                  "examples; map is the mean average precision over the labels that occur; subset_accuracy counts "
                  "examples with every label right; hamming_loss is the share of wrong yes/no decisions.",
                  "", f"## Per label ({split_name}: {split_source})", "",
                  "| label | threshold | precision | recall | f1 | average precision | support |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['label']} | {t:.3f} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | "
                  f"{format_value(r['average_precision'])} | {r['support']} |" for r, t in zip(rows, thresholds)]
        plot_precision_recall(scores, references, names, f"Precision-recall, {title}",
                              output_dir / "precision_recall.png")
        plot_cooccurrence(references, names, f"Labels together, {title}", output_dir / "label_cooccurrence.png")
        lines += ["", "## Precision-recall per label", "", "![precision-recall](precision_recall.png)", "",
                  "## Label co-occurrence", "", "How many examples hold both labels (diagonal: each label's count).",
                  "", "![label co-occurrence](label_cooccurrence.png)"]
    else:
        plot_regression(predictions, references, f"Predicted against true, {title}", output_dir / "regression.png")
        lines += ["", f"Errors are in the target's own units ({names[0]!r}). r2 compares with predicting the split's "
                  "mean (0: no better; 1: perfect).", "", f"## Predictions ({split_name}: {split_source})", "",
                  "![predicted against true, and residuals](regression.png)"]
    lines += sections
    lines += learning_curve_section(output_dir, curves)
    lines += validation_history_section(curves.history if curves else [], target.metric_names())
    atomic_write_text(output_dir / "eval_report.md", "\n".join(lines) + "\n")
    return rows
