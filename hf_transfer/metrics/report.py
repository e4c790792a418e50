"""The evaluation report a person reads: eval_report.md, confusion_matrix.png, roc_curve.png."""

from io import BytesIO
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as sk  # noqa: E402

from hf_transfer.io import atomic_write_bytes, atomic_write_text  # noqa: E402

HEADLINE = ("accuracy", "f1", "f1_macro", "f1_weighted", "precision_macro", "recall_macro", "roc_auc")


def per_class_rows(probabilities: np.ndarray, references: np.ndarray, names: list[str]) -> list[dict]:
    predictions = probabilities.argmax(axis=1)
    precision, recall, f1, support = sk.precision_recall_fscore_support(
        references, predictions, labels=list(range(len(names))), zero_division=0)
    return [{"label": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, support)]


def save_figure(figure, path: Path) -> None:
    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def plot_confusion_matrix(probabilities, references, names: list[str], title: str, path: Path) -> np.ndarray:
    matrix = sk.confusion_matrix(references, probabilities.argmax(axis=1), labels=list(range(len(names))))
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


def _format(value) -> str:
    return "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def write_report(output_dir: Path, results: dict, split_name: str, split_source: str, probabilities, references,
                 names: list[str], summary: dict, history: list[dict]) -> list[dict]:
    """Write the report and both plots for `split_name` (the test split when there is one); return per-class rows."""
    output_dir = Path(output_dir)
    title = f"{split_name} split ({len(references)} examples)"
    matrix = plot_confusion_matrix(probabilities, references, names, f"Confusion matrix, {title}",
                                   output_dir / "confusion_matrix.png")
    plot_roc_curve(probabilities, references, names, f"ROC, {title}", output_dir / "roc_curve.png")
    rows = per_class_rows(probabilities, references, names)

    prefixes = [p for p in ("eval", "test") if any(k.startswith(f"{p}_") for k in results)]
    lines = [f"# Evaluation report: {summary['model']}", ""]
    lines += [f"- **{key}**: {value}" for key, value in summary.items() if key != "model"]
    lines += ["", "## Results", "", "| metric | " + " | ".join(prefixes) + " |",
              "|---|" + "---:|" * len(prefixes)]
    for metric in HEADLINE:
        if any(f"{p}_{metric}" in results for p in prefixes):
            lines.append(f"| {metric} | " + " | ".join(_format(results.get(f"{p}_{metric}")) for p in prefixes) + " |")
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
    if history:
        metric_keys = [f"eval_{m}" for m in HEADLINE if f"eval_{m}" in history[0]]
        lines += ["", "## Validation during training", "",
                  "| step | epoch | " + " | ".join(k.removeprefix("eval_") for k in metric_keys) + " |",
                  "|---:|---:|" + "---:|" * len(metric_keys)]
        lines += [f"| {h['step']} | {h['epoch']} | " + " | ".join(_format(h.get(k)) for k in metric_keys) + " |"
                  for h in history]
    atomic_write_text(output_dir / "eval_report.md", "\n".join(lines) + "\n")
    return rows


def write_transcription_report(output_dir: Path, results: dict, examples: list[dict], summary: dict,
                               history: list[dict]) -> None:
    """eval_report.md for speech recognition: WER/CER per split, example transcripts, the validation curve."""
    prefixes = [p for p in ("eval", "test") if f"{p}_wer" in results]
    lines = [f"# Evaluation report: {summary['model']}", ""]
    lines += [f"- **{key}**: {value}" for key, value in summary.items() if key != "model"]
    lines += ["", "## Results", "", "| metric | " + " | ".join(prefixes) + " |", "|---|" + "---:|" * len(prefixes)]
    lines += [f"| {metric} | " + " | ".join(f"{results[f'{p}_{metric}']:.4f}" for p in prefixes) + " |"
              for metric in ("wer", "cer")]
    lines += ["", "WER and CER count edits (substitutions, deletions, insertions) per reference word or character, "
              "summed over the split. Greedy CTC decoding, no language model.", "",
              f"## Example transcripts ({examples[0]['split'] if examples else 'none'})", "",
              "| reference | prediction |", "|---|---|"]
    lines += [f"| {e['reference']} | {e['prediction']}{'' if e['prediction'] == e['reference'] else ' ✗'} |"
              for e in examples]
    if history:
        lines += ["", "## Validation during training", "", "| step | epoch | wer | cer |", "|---:|---:|---:|---:|"]
        lines += [f"| {h['step']} | {h['epoch']} | {h['eval_wer']:.4f} | {h['eval_cer']:.4f} |" for h in history]
    atomic_write_text(output_dir / "eval_report.md", "\n".join(lines) + "\n")
