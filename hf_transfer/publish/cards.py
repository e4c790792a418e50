"""Model cards rendered from the Jinja templates in `model_cards/`, offline (no `card.validate()`)."""

import importlib.metadata
import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_transfer.evaluation.report import with_interval
from hf_transfer.io import atomic_write_json, atomic_write_text
from hf_transfer.metrics.calibration import BINS
from hf_transfer.targets import MULTI_LABEL, REGRESSION, SINGLE_LABEL

METRIC_NAMES = {"accuracy": "Accuracy", "f1": "F1", "f1_macro": "F1 (macro)", "f1_weighted": "F1 (weighted)",
                "precision_macro": "Precision (macro)", "recall_macro": "Recall (macro)", "roc_auc": "ROC AUC",
                "f1_micro": "F1 (micro)", "f1_samples": "F1 (samples)", "map": "Mean average precision",
                "subset_accuracy": "Subset accuracy", "hamming_loss": "Hamming loss",
                "mse": "MSE", "rmse": "RMSE", "mae": "MAE", "r2": "R²", "pearson": "Pearson r",
                "spearman": "Spearman ρ",
                "wer": "WER", "cer": "CER"}
# model-index metric types that are not the name's first word (`f1_macro` is type f1, config macro).
WHOLE_METRIC_TYPES = ("roc_auc", "subset_accuracy", "hamming_loss")
STRATEGY_TEXT = {
    "full": "full fine-tuning (every weight trained)",
    "feature_extraction": "feature extraction (backbone frozen, new head trained)",
    "partial": "top layers only",
    "lora": "LoRA adapters",
}
HYPERPARAMETERS = ("learning_rate", "num_train_epochs", "max_train_steps", "per_device_train_batch_size",
                   "gradient_accumulation_steps", "lr_scheduler_type", "warmup_ratio", "weight_decay",
                   "label_smoothing", "class_weights", "mixed_precision", "seed")
VERSIONED = ("hf-transfer-kit", "transformers", "peft", "torch", "accelerate", "datasets")


CONTEXT_FILE = "card_context.json"


@dataclass
class CardContext:
    """What the card says about one run; saved as JSON beside the card so a push can re-render it for its repo."""

    settings: dict  # the run's flat settings (`RunConfig.to_dict()`)
    repo_id: str  # the Hub repo, or the output folder before a push
    base_model: str | None
    pipeline_tag: str
    modality: str  # "text", "images", "audio clips"
    auto_class: str
    processor_class: str
    label_names: list[str]
    results: dict
    per_class: list[dict]
    report_split: str
    split_sizes: dict[str, int]
    split_sources: dict[str, str]
    trainable: int
    total: int
    is_adapter: bool
    extra_details: dict[str, str] | None = None  # modality details: image size, sampling rate...
    examples: list[dict] | None = None  # speech recognition: reference and predicted transcripts
    group_rows: list[dict] | None = None  # per-group scores on the report split, with --group_column
    problem_type: str = SINGLE_LABEL
    warnings: list[str] | None = None  # `evaluation.sanity`: signs that the model learned nothing
    space: str | None = None  # the Gradio Space that demos the model (`hf-transfer push --space`)


def _strategy_text(settings: dict) -> str:
    strategy = settings["strategy"]
    text = STRATEGY_TEXT[strategy]
    if strategy == "partial":
        text += f" (the top {settings['unfreeze_layers']} encoder layers and the head)"
    if strategy == "lora":
        targets = ", ".join(settings["lora_target_modules"])
        text += (f" (r={settings['lora_r']}, alpha={settings['lora_alpha']:g}, dropout={settings['lora_dropout']}, "
                 f"on {targets})")
    if (settings.get("layerwise_lr_decay") or 1) < 1 and strategy in ("full", "partial"):
        text += f", layer-wise learning-rate decay {settings['layerwise_lr_decay']}"
    return text


def _origin(settings: dict, base_model: str | None, is_adapter: bool) -> str:
    """The card's first words: what the model is made of, by its strategy. A frozen backbone was not fine-tuned."""
    if not base_model:
        return "A model trained from scratch"
    link = f"[{base_model}](https://huggingface.co/{base_model})"
    strategy = settings["strategy"]
    if strategy == "lora":
        return f"A LoRA adapter for {link}" + ("" if is_adapter else ", merged into its weights,")
    if strategy == "feature_extraction":
        return f"A new head trained on the frozen features of {link}"
    if strategy == "partial":
        return f"A version of {link} with its top {settings['unfreeze_layers']} layers fine-tuned under a new head"
    return f"A fine-tuned version of {link}"


def _versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _results_table(results: dict) -> dict:
    splits = [s for s in ("zero_shot_eval", "zero_shot_test", "eval", "test")
              if any(f"{s}_{metric}" in results for metric in METRIC_NAMES)]
    rows = [{"metric": metric, "cells": [with_interval(results, f"{s}_{metric}") for s in splits]}
            for metric in METRIC_NAMES if any(f"{s}_{metric}" in results for s in splits)]
    names = {"eval": "validation", "zero_shot_eval": "validation, zero-shot", "zero_shot_test": "test, zero-shot"}
    return {"splits": [names.get(s, s) for s in splits], "rows": rows}


def _trust_lines(ctx: CardContext, prefix: str) -> list[str]:
    """How sure the numbers are, what was chosen where, calibration and the worst group, as card sentences."""
    results, settings = ctx.results, ctx.settings
    split = "test" if prefix == "test" else "validation"
    lines = []
    if any(key.endswith("_ci_low") for key in results):
        items = "utterances" if f"{prefix}_wer" in results else "items"
        lines.append(f"Brackets give {settings['confidence_level']:.0%} bootstrap intervals over the "
                     f"{results[f'{prefix}_samples']:,} {split} {items} ({settings['bootstrap_resamples']} resamples).")
    chosen = ["the best checkpoint"] + (["the decision threshold"] if "decision_threshold" in results else []) + (
        ["the temperature"] if "calibration_temperature" in results else [])
    chosen_text = f"{', '.join(chosen[:-1]) + ' and ' if len(chosen) > 1 else ''}{chosen[-1]}"
    lines.append(f"{chosen_text[0].upper()}{chosen_text[1:]} came from the validation split"
                 + ("; the test split was used once, for reporting." if prefix == "test" else
                    "; there is no test split, so these validation scores are optimistic."))
    if f"{prefix}_ece" in results:
        before = results.get(f"{prefix}_ece_before_calibration")
        lines.append(f"Expected calibration error on the {split} split: {results[f'{prefix}_ece']:.4f} "
                     f"({BINS} equal-width bins of the top-class probability)"
                     + (f", {before:.4f} before temperature scaling." if before is not None else "."))
    if ctx.group_rows:
        metric = "wer" if f"{prefix}_wer" in results else "accuracy"
        lines.append(f"Per {settings['group_column']} on the {split} split: the worst is "
                     f"`{results[f'{prefix}_worst_group']}` ({metric} {results[f'{prefix}_worst_group_{metric}']:.4f}),"
                     f" {results[f'{prefix}_group_{metric}_gap']:.4f} from the best.")
    return lines


def _eval_results(ctx: CardContext) -> list[EvalResult]:
    settings = ctx.settings
    dataset_name = settings["dataset_name"] or Path(settings["train_file"] or settings["train_dir"]).name
    evals = []
    for prefix, split in (("eval", "validation"), ("test", "test")):
        for metric, pretty in METRIC_NAMES.items():
            value = ctx.results.get(f"{prefix}_{metric}")
            if value is None:
                continue
            evals.append(EvalResult(
                task_type=ctx.pipeline_tag, dataset_type=dataset_name, dataset_name=dataset_name,
                dataset_config=settings["dataset_config_name"], dataset_split=split,
                metric_type=metric if metric in WHOLE_METRIC_TYPES else metric.split("_")[0],
                metric_name=pretty, metric_value=round(value, 4),
                metric_config=(metric.split("_")[1] if metric.startswith(("f1_", "precision_", "recall_"))
                               and metric not in WHOLE_METRIC_TYPES else None),
            ))
    return evals


def _decision(results: dict, label_names: list[str]) -> dict | None:
    """The saved operating point, when it differs from the plain top class (or, multi-label, from 0.5 everywhere)."""
    thresholds = results.get("decision_thresholds")
    if thresholds and all(t == 0.5 for t in thresholds):
        thresholds = None
    if "decision_threshold" not in results and "calibration_temperature" not in results and not thresholds:
        return None
    return {"temperature": results.get("calibration_temperature"), "threshold": results.get("decision_threshold"),
            "thresholds": thresholds and {name: round(t, 4) for name, t in zip(label_names, thresholds)}}


def render_card(ctx: CardContext) -> ModelCard:
    settings = ctx.settings
    dataset_name = settings["dataset_name"]
    datasets = dataset_name if dataset_name and not dataset_name.startswith("builtin:") else None
    card_data = ModelCardData(
        model_name=ctx.repo_id.rsplit("/", 1)[-1],
        base_model=ctx.base_model,
        library_name="peft" if ctx.is_adapter else "transformers",
        pipeline_tag=ctx.pipeline_tag,
        datasets=[datasets] if datasets else None,
        language=settings["language"],
        license=settings["license"],
        tags=["hf_transfer", ctx.pipeline_tag, settings["strategy"]] + (["lora"] if ctx.is_adapter else []),
        metrics=sorted({e.metric_type for e in _eval_results(ctx)}),
        eval_results=_eval_results(ctx) or None,
    )
    split = "test" if any(k.startswith("test_") for k in ctx.results) else "eval"
    split_name = "test" if split == "test" else "validation"
    if f"{split}_accuracy" in ctx.results:
        headline = f"{ctx.results[f'{split}_accuracy']:.1%} accuracy on its {split_name} split"
    elif f"{split}_f1_micro" in ctx.results:
        headline = f"a micro-averaged F1 of {ctx.results[f'{split}_f1_micro']:.3f} on its {split_name} split"
    elif f"{split}_rmse" in ctx.results:
        headline = f"an RMSE of {ctx.results[f'{split}_rmse']:.4g} on its {split_name} split"
    else:
        headline = f"a word error rate of {ctx.results[f'{split}_wer']:.1%} on its {split_name} split"
    names = ", ".join(ctx.label_names)
    what_it_does = {
        SINGLE_LABEL: f"classifies {ctx.modality} into {len(ctx.label_names)} labels: {names}",
        MULTI_LABEL: f"tags {ctx.modality} with any of {len(ctx.label_names)} labels (several or none each): {names}",
        REGRESSION: f"predicts `{names}`, a number, from {ctx.modality}",
    }[ctx.problem_type]
    data_lines = [f"{name}: {ctx.split_sizes[name]:,} examples from `{ctx.split_sources[name]}`"
                  for name in ("train", "validation", "test") if name in ctx.split_sizes]
    if ctx.label_names:
        data_lines.append(f"labels: {', '.join(ctx.label_names)}")
    data_lines += [f"{key}: {value}" for key, value in (ctx.extra_details or {}).items()]
    limitations = [f"Trained on {ctx.split_sizes['train']:,} examples; expect lower accuracy on {ctx.modality} "
                   "unlike them (other domains, speakers, styles or languages)."]
    if ctx.problem_type == REGRESSION:
        limitations.append("Predictions outside the range of the training targets are extrapolations; check the "
                           "residual plot in `eval_report.md` for where the errors grow.")
    elif ctx.per_class:
        smallest = min(ctx.per_class, key=lambda row: row["f1"])
        limitations += [
            f"The weakest {'label' if ctx.problem_type == MULTI_LABEL else 'class'} on the {ctx.report_split} split "
            f"is `{smallest['label']}` (F1 {smallest['f1']:.3f}).",
            "The model knows only the labels above: every input gets one of them, even when none applies."
            if ctx.problem_type == SINGLE_LABEL else "The model knows only the labels above.",
        ]
    elif ctx.auto_class == "AutoModelForCTC":
        limitations.append("It spells only the characters of its training transcripts, with greedy CTC decoding "
                           "and no language model.")
    else:
        limitations.append("It writes transcripts as it was trained to: normalised (see the data settings), "
                           "decoded greedily.")
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resources.files("hf_transfer.model_cards"))),
                                     keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    pooling = settings.get("pooling", "model")
    if ctx.pipeline_tag == "automatic-speech-recognition":
        template = environment.get_template("speech_recognition.md")
    elif pooling != "model":
        template = environment.get_template("pooled_head.md")
    else:
        template = environment.get_template("adapter.md" if ctx.is_adapter else "full_model.md")
    text = template.render(
        card_data=card_data.to_yaml(), model_name=card_data.model_name, repo_id=ctx.repo_id,
        base_model=ctx.base_model, modality=ctx.modality, label_names=ctx.label_names, headline=headline,
        pipeline_tag=ctx.pipeline_tag, auto_class=ctx.auto_class, processor_class=ctx.processor_class,
        results_table=_results_table(ctx.results), per_class=ctx.per_class, report_split=ctx.report_split,
        strategy_text=_strategy_text(settings), trainable=ctx.trainable, total=ctx.total, data_lines=data_lines,
        hyperparameters={k: settings[k] for k in HYPERPARAMETERS if settings.get(k) is not None},
        limitations=limitations, versions=_versions(), is_adapter=ctx.is_adapter, examples=ctx.examples or [],
        trust_lines=_trust_lines(ctx, split), group_rows=ctx.group_rows or [],
        group_column=settings.get("group_column"),
        decision=_decision(ctx.results, ctx.label_names), pooling=pooling, what_it_does=what_it_does,
        problem_type=ctx.problem_type, warnings=ctx.warnings or [], space=ctx.space,
        merged=settings["strategy"] == "lora" and not ctx.is_adapter,  # `push --merge_adapter`: see merge.py
        origin=_origin(settings, ctx.base_model, ctx.is_adapter),
    )
    return ModelCard(text)


def save_card(ctx: CardContext, output_dir: Path) -> None:
    """The card as README.md, and what it was rendered from, so `retarget_card` can redo it for a Hub repo."""
    atomic_write_json(output_dir / CONTEXT_FILE, asdict(ctx))
    atomic_write_text(output_dir / "README.md", str(render_card(ctx)))


def retarget_card(output_dir: Path, repo_id: str, merged: bool = False, space: str | None = None) -> str:
    """The folder's card re-rendered to name `repo_id` (usage snippet, model-index) and link to the `space` that
    demos it; `merged` for an adapter that was folded into its base weights, which loads as a plain transformers
    model."""
    ctx = CardContext(**json.loads((Path(output_dir) / CONTEXT_FILE).read_text()))
    ctx.repo_id, ctx.space = repo_id, space
    ctx.is_adapter = ctx.is_adapter and not merged
    return str(render_card(ctx))
