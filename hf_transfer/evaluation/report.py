"""The evaluation report a person reads: eval_report.md, confusion_matrix.png, roc_curve.png, learning_curve.png."""

from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as sk  # noqa: E402

from hf_transfer.io import atomic_write_bytes, atomic_write_text  # noqa: E402

HEADLINE = ("accuracy", "f1", "f1_macro", "f1_weighted", "precision_macro", "recall_macro", "roc_auc")


def per_class_rows(probabilities: np.ndarray, references: np.ndarray, names: list[str],
                   predictions: np.ndarray | None = None) -> list[dict]:
    predictions = probabilities.argmax(axis=1) if predictions is None else predictions
    precision, recall, f1, support = sk.precision_recall_fscore_support(
        references, predictions, labels=list(range(len(names))), zero_division=0)
    return [{"label": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, support)]


def save_figure(figure, path: Path) -> None:
    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def plot_confusion_matrix(probabilities, references, names: list[str], title: str, path: Path,
                          predictions: np.ndarray | None = None) -> np.ndarray:
    predictions = probabilities.argmax(axis=1) if predictions is None else predictions
    matrix = sk.confusion_matrix(references, predictions, labels=list(range(len(names))))
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.6 * len(names) + 2.5)
    figure, axes = plt.subplots(figsize=(size, size * 0.85))
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = range(len(names))
    axes.set_xticks(ticks, names, rotation=45 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    axes.set_yticks(ticks, names)
    axes.set_xlabel("predicted label")
    axes.set_ylabel("true label")
    axes.set_title(title)
    for i in ticks:
        for j in ticks:
            axes.text(j, i, f"{matrix[i, j]}\n{rates[i, j]:.0%}", ha="center", va="center", fontsize=9,
                      color="white" if rates[i, j] > 0.5 else "black")
    save_figure(figure, path)
    return matrix


def plot_roc_curve(probabilities, references, names: list[str], title: str, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(5.5, 5))
    # Binary: one curve for the positive class. More classes: one-vs-rest, one curve each.
    classes = [1] if len(names) == 2 else range(len(names))
    for label in classes:
        truth = references == label
        if truth.all() or not truth.any():
            continue  # a class absent from the references has no ROC curve
        fpr, tpr, _ = sk.roc_curve(truth, probabilities[:, label])
        axes.plot(fpr, tpr, label=f"{names[label]} (AUC {sk.auc(fpr, tpr):.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize=8)
    save_figure(figure, path)


@dataclass
class TrainingCurves:
    """What train_log.json holds: the logged training losses, the evaluations, and the metric that picked the best."""

    train_losses: list[dict] = field(default_factory=list)  # {"step", "train_loss", "learning_rate"}
    history: list[dict] = field(default_factory=list)  # {"step", "epoch", "eval_<metric>"...}
    metric: str = "accuracy"


def plot_learning_curve(curves: TrainingCurves, path: Path) -> None:
    """Training loss (left axis) and the validation metric (right axis) against the optimizer step."""
    key = curves.metric if curves.metric.startswith("eval_") else f"eval_{curves.metric}"
    figure, loss_axes = plt.subplots(figsize=(6.5, 4))
    if curves.train_losses:
        loss_axes.plot([entry["step"] for entry in curves.train_losses],
                       [entry["train_loss"] for entry in curves.train_losses], color="tab:blue", label="training loss")
    loss_axes.set_xlabel("optimizer step")
    loss_axes.set_ylabel("training loss", color="tab:blue")
    evaluations = [entry for entry in curves.history if entry.get(key) is not None]
    if evaluations:
        metric_axes = loss_axes.twinx()
        metric_axes.plot([entry["step"] for entry in evaluations], [entry[key] for entry in evaluations],
                         color="tab:orange", marker="o", label=f"validation {key.removeprefix('eval_')}")
        metric_axes.set_ylabel(f"validation {key.removeprefix('eval_')}", color="tab:orange")
    loss_axes.set_title("Learning curve")
    save_figure(figure, path)


def learning_curve_section(output_dir: Path, curves: TrainingCurves | None) -> list[str]:
    if curves is None or not (curves.train_losses or curves.history):
        return []
    plot_learning_curve(curves, output_dir / "learning_curve.png")
    return ["", "## Learning curve", "", "![learning curve](learning_curve.png)"]


def warnings_section(warnings: list[str]) -> list[str]:
    """At the top, under the run's summary: what says the numbers below come from a model that learned nothing."""
    if not warnings:
        return []
    return ["", "## Warnings", ""] + [f"- **Warning:** {warning}" for warning in warnings]


def format_value(value) -> str:
    return "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def validation_history_section(history: list[dict], metrics) -> list[str]:
    """A table of each evaluation during training: step, epoch and those of `metrics` it holds."""
    if not history:
        return []
    keys = [f"eval_{m}" for m in metrics if f"eval_{m}" in history[0]]
    lines = ["", "## Validation during training", "",
             "| step | epoch | " + " | ".join(k.removeprefix("eval_") for k in keys) + " |",
             "|---:|---:|" + "---:|" * len(keys)]
    return lines + [f"| {h['step']} | {h['epoch']} | " + " | ".join(format_value(h.get(k)) for k in keys) + " |"
                    for h in history]


def with_interval(results: dict, key: str) -> str:
    """`0.9031 [0.8834, 0.9212]` when the results hold a bootstrap interval for `key`."""
    if results.get(f"{key}_ci_low") is None:
        return format_value(results.get(key))
    return f"{results[key]:.4f} [{results[f'{key}_ci_low']:.4f}, {results[f'{key}_ci_high']:.4f}]"


def write_report(output_dir: Path, results: dict, split_name: str, split_source: str, probabilities, references,
                 names: list[str], summary: dict, curves: TrainingCurves | None,
                 predictions: np.ndarray | None = None, sections: list[str] = (),
                 warnings: list[str] = ()) -> list[dict]:
    """Write the report and its plots for `split_name` (the test split when there is one), with the learning curve
    when `curves` come from training; return per-class rows.

    `predictions` are the decided labels (top class by default); `sections` are markdown lines added after the
    ROC curve (intervals, operating point, calibration, groups); `warnings` (`evaluation.sanity`) go first."""
    history = curves.history if curves else []
    output_dir = Path(output_dir)
    title = f"{split_name} split ({len(references)} examples)"
    matrix = plot_confusion_matrix(probabilities, references, names, f"Confusion matrix, {title}",
                                   output_dir / "confusion_matrix.png", predictions)
    plot_roc_curve(probabilities, references, names, f"ROC, {title}", output_dir / "roc_curve.png")
    rows = per_class_rows(probabilities, references, names, predictions)

    prefixes = [p for p in ("eval", "test") if any(k.startswith(f"{p}_") for k in results)]
    lines = [f"# Evaluation report: {summary['model']}", ""]
    lines += [f"- **{key}**: {value}" for key, value in summary.items() if key != "model"]
    lines += warnings_section(warnings)
    lines += ["", "## Results", "", "| metric | " + " | ".join(prefixes) + " |",
              "|---|" + "---:|" * len(prefixes)]
    for metric in HEADLINE:
        if any(f"{p}_{metric}" in results for p in prefixes):
            cells = " | ".join(with_interval(results, f"{p}_{metric}") for p in prefixes)
            lines.append(f"| {metric} | {cells} |")
    lines += ["", "Macro averages weigh every class equally; weighted ones follow the class sizes. "
              + ("`f1`, `precision` and `recall` are for the positive class "
                 f"`{names[1]}`." if len(names) == 2 else "")]
    lines += ["", f"## Per class ({split_name}: {split_source})", "",
              "| label | precision | recall | f1 | support |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['label']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['support']} |"
              for r in rows]
    lines += ["", "## Confusion matrix", "", "Rows are true labels, columns predicted labels.", "",
              "| true \\ predicted | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| **{name}** | " + " | ".join(str(v) for v in matrix[i]) + " |" for i, name in enumerate(names)]
    lines += ["", "![confusion matrix](confusion_matrix.png)", "", "## ROC curve", "", "![ROC curve](roc_curve.png)"]
    lines += sections
    lines += learning_curve_section(output_dir, curves)
    lines += validation_history_section(history, HEADLINE)
    atomic_write_text(output_dir / "eval_report.md", "\n".join(lines) + "\n")
    return rows


def write_transcription_report(output_dir: Path, results: dict, examples: list[dict], summary: dict,
                               curves: TrainingCurves | None, sections: list[str] = (),
                               warnings: list[str] = ()) -> None:
    """eval_report.md for speech recognition: WER/CER per split, example transcripts, the validation curve."""
    history = curves.history if curves else []
    prefixes = [p for p in ("zero_shot_eval", "zero_shot_test", "eval", "test") if f"{p}_wer" in results]
    lines = [f"# Evaluation report: {summary['model']}", ""]
    lines += [f"- **{key}**: {value}" for key, value in summary.items() if key != "model"]
    lines += warnings_section(warnings)
    lines += ["", "## Results", "", "| metric | " + " | ".join(prefixes) + " |", "|---|" + "---:|" * len(prefixes)]
    lines += [f"| {metric} | " + " | ".join(with_interval(results, f"{p}_{metric}") for p in prefixes) + " |"
              for metric in ("wer", "cer")]
    lines += ["", "WER and CER count edits (substitutions, deletions, insertions) per reference word or character, "
              "summed over the split. zero_shot: the checkpoint before training.", "",
              f"## Example transcripts ({examples[0]['split'] if examples else 'none'})", "",
              "| reference | prediction |", "|---|---|"]
    lines += [f"| {e['reference']} | {e['prediction']}{'' if e['prediction'] == e['reference'] else ' ✗'} |"
              for e in examples]
    lines += sections
    if history:
        lines += ["", "## Validation during training", "", "| step | epoch | wer | cer |", "|---:|---:|---:|---:|"]
        lines += [f"| {h['step']} | {h['epoch']} | {h['eval_wer']:.4f} | {h['eval_cer']:.4f} |" for h in history]
    lines += learning_curve_section(Path(output_dir), curves)
    atomic_write_text(output_dir / "eval_report.md", "\n".join(lines) + "\n")
