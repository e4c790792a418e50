"""What a run leaves in `--output_dir`: a loadable model, `all_results.json`, the report, plots and a card."""

import copy
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
from accelerate import Accelerator
from safetensors import SafetensorError

from hf_transfer.config import RunConfig, UsageError, save_config
from hf_transfer.data.splits import LabelledSplits, guess_column
from hf_transfer.evaluation.item_predictions import write_items
from hf_transfer.evaluation.operating_point import choose_decision
from hf_transfer.evaluation.report import TrainingCurves, write_report, write_transcription_report
from hf_transfer.evaluation.report_sections import (
    calibration_section,
    groups_section,
    intervals_note,
    operating_point_section,
    selection_note,
)
from hf_transfer.evaluation.sanity import classification_warnings, target_warnings, transcription_warnings
from hf_transfer.evaluation.scoring import score_classification, score_target, score_transcription
from hf_transfer.evaluation.target_report import write_target_report
from hf_transfer.io import atomic_save_files, atomic_write_json
from hf_transfer.metrics.intervals import Bootstrap
from hf_transfer.metrics.multilabel import best_f1_thresholds
from hf_transfer.models.heads import MultiHeadModel, save_heads_spec
from hf_transfer.models.loading import base_model_id
from hf_transfer.models.strategies import is_adapter
from hf_transfer.publish.cards import CardContext, save_card
from hf_transfer.publish.hub import push_folder
from hf_transfer.targets import MULTI_LABEL, target_for
from hf_transfer.tasks import Task
from hf_transfer.training.loop import TrainState
from hf_transfer.training.run_folder import mark_complete

PREFIX = {"validation": "eval", "test": "test", "target_test": "target_test"}  # result keys of each split


def save_model(model, processor, output_dir: Path, hub_base_model: str | None) -> None:
    """Adapter + head + config for LoRA (so `config.json` carries the labels), the full model otherwise."""

    def save(folder: Path) -> None:
        if is_adapter(model):
            # No strategy resizes embeddings; peft's "auto" would look for them whenever the vocabulary changed
            # (a CTC head) and fail on models without input embeddings (Wav2Vec2).
            model.save_pretrained(folder, save_embedding_layers=False)
            model.get_base_model().config.save_pretrained(folder)
            if isinstance(model.get_base_model(), MultiHeadModel):  # the adapter holds the heads, not their labels
                save_heads_spec(model.get_base_model(), folder)
            if hub_base_model:
                # Point the adapter at the Hub checkpoint, not the local folder it was read from.
                adapter_config = copy.copy(model.peft_config["default"])
                adapter_config.base_model_name_or_path = hub_base_model
                adapter_config.save_pretrained(folder)
        else:
            model.save_pretrained(folder)
        processor.save_pretrained(folder)

    try:
        atomic_save_files(output_dir, save)
    except (OSError, SafetensorError) as error:  # a full disk, most often: safetensors says so in its own error
        raise UsageError(f"writing the trained model to {output_dir} failed ({error}); the folder is left unfinished. "
                         "Free some space (or fix the folder's permissions) and train again") from None


def check_finite_scores(accelerator: Accelerator, model, processor, run: RunConfig, data: LabelledSplits,
                        predictions: dict) -> None:
    """Scores that are NaN or infinite (an input the model overflows on) can't be scored or reported: the trained
    model is saved first, so that the error loses no training, and the examples are named."""
    for split, (scores, _) in predictions.items():
        bad = np.flatnonzero(~np.isfinite(scores.reshape(len(scores), -1)).all(axis=1))
        if len(bad):
            output_dir = Path(run.train.output_dir)
            if accelerator.is_main_process:
                save_model(accelerator.unwrap_model(model), processor, output_dir, base_model_id(run.model))
            raise UsageError(f"{len(bad)} example(s) of the {split} split got NaN or infinite scores, the first at "
                             f"{data.row_name(split, int(bad[0]))}: check those inputs. Nothing was scored; the "
                             f"trained model is saved in {output_dir}, a run not marked complete")


def item_inputs(dataset: datasets.Dataset, settings: dict, task: Task) -> list[str]:
    """What identifies each item for `compare`: its text (and text pair) or its file path."""
    column = guess_column(dataset.column_names, settings.get(f"{task.input_kind}_column"), task.column_guesses,
                          task.input_kind, "the data")
    feature = dataset.features[column]
    if isinstance(feature, (datasets.Image, datasets.Audio)):  # Hub media: the stored path, not decoded pixels
        dataset = dataset.cast_column(column, type(feature)(decode=False))
    values = [v if isinstance(v, str) else (v or {}).get("path") or f"row {i}" for i, v in enumerate(dataset[column])]
    pair = settings.get("text_pair_column")
    if pair and pair in dataset.column_names:
        values = [f"{text} || {second}" for text, second in zip(values, dataset[pair])]
    return values


def item_groups(dataset: datasets.Dataset, column: str | None) -> list[str] | None:
    return [str(v) for v in dataset[column]] if column and column in dataset.column_names else None


def write_outputs(accelerator: Accelerator, model, processor, run: RunConfig, task: Task, data: LabelledSplits,
                  predictions: dict, state: TrainState, parameter_counts: tuple[int, int],
                  extra_details: dict[str, str] | None = None, probe_accuracy: float | None = None) -> dict:
    """Classification: choose the operating point on validation, score each split's (probabilities, references)
    with it, check that the model learned something (`probe_accuracy`: a linear probe's on validation, when the
    run had frozen features to fit one on) and write everything; returns the results."""
    results = _run_results(accelerator, data, state)
    evaluation, settings = run.evaluation, run.to_dict()
    bootstrap = Bootstrap(evaluation.confidence_level, evaluation.bootstrap_resamples)
    decision = choose_decision(evaluation, *predictions["validation"])
    decision.save_to(accelerator.unwrap_model(model).config)  # travels in config.json to predict and evaluate
    scored = {}
    for split, (probabilities, references) in predictions.items():
        dataset = data.splits[split]
        scored[split] = score_classification(probabilities, references, decision, data.label_names,
                                             item_inputs(dataset, settings, task),
                                             item_groups(dataset, run.data.group_column), bootstrap)
        results.update({f"{PREFIX[split]}_{k}": v for k, v in scored[split].results.items()})
        results[f"{PREFIX[split]}_samples"] = len(references)
    if decision.threshold is not None:
        results["decision_threshold"] = decision.threshold
    if decision.temperature != 1.0:
        results["calibration_temperature"] = decision.temperature
    outcomes = {split: (scores.predictions, scores.references) for split, scores in scored.items()}
    results["warnings"] = classification_warnings(outcomes, results.get("eval_roc_auc"), data.splits["train"]["labels"],
                                                  data.label_names, state.train_losses, probe_accuracy,
                                                  bool(run.strategy.fit_head_first))
    report_split = "test" if "test" in predictions else "validation"

    def report(output_dir: Path, summary: dict) -> dict:
        best, prefix = scored[report_split], PREFIX[report_split]
        sections = (intervals_note(bootstrap, len(best.references))
                    + selection_note("test" in predictions, decision)
                    + operating_point_section(output_dir, best.probabilities, best.references, best.predictions,
                                              decision, data.label_names)
                    + calibration_section(output_dir, best.probabilities, best.references, results, prefix, decision)
                    + groups_section(best.group_rows, run.data.group_column, results, prefix, "accuracy"))
        per_class = write_report(output_dir, results, report_split, data.sources[report_split], best.probabilities,
                                 best.references, data.label_names, summary, _training_curves(run, state),
                                 best.predictions, sections, results["warnings"])
        for split, split_scores in scored.items():
            write_items(output_dir, split, split_scores.items)
        return {"per_class": per_class, "report_split": report_split, "group_rows": best.group_rows}

    publish(accelerator, model, processor, run, task, data, state, results, parameter_counts, extra_details, report)
    return results


def write_target_outputs(accelerator: Accelerator, model, processor, run: RunConfig, task: Task,
                         data: LabelledSplits, predictions: dict, state: TrainState, parameter_counts: tuple[int, int],
                         extra_details: dict[str, str] | None = None) -> dict:
    """Multi-label and regression: each split's (scores, references) scored with the target's metrics and their
    intervals; a multi-label model's thresholds, one per label, chosen on validation (--decision_threshold auto) and
    saved in config.json; then everything written."""
    results = _run_results(accelerator, data, state)
    target = target_for(data.problem_type)
    bootstrap = Bootstrap(run.evaluation.confidence_level, run.evaluation.bootstrap_resamples)
    thresholds = None
    if data.problem_type == MULTI_LABEL:
        thresholds = (best_f1_thresholds(*predictions["validation"]) if run.evaluation.decision_threshold == "auto"
                      else [0.5] * len(data.label_names))
        accelerator.unwrap_model(model).config.decision_thresholds = thresholds  # for predict and evaluate
        results["decision_thresholds"] = thresholds
    settings, scored = run.to_dict(), {}
    for split, (scores, references) in predictions.items():
        scored[split] = score_target(target, scores, references, thresholds, data.label_names,
                                     item_inputs(data.splits[split], settings, task), bootstrap)
        results.update({f"{PREFIX[split]}_{k}": v for k, v in scored[split].results.items()})
        results[f"{PREFIX[split]}_samples"] = len(references)
    results["warnings"] = target_warnings(data.problem_type, results, state.train_losses,
                                          bool(run.strategy.fit_head_first))
    report_split = "test" if "test" in predictions else "validation"

    def report(output_dir: Path, summary: dict) -> dict:
        best = scored[report_split]
        sections = (intervals_note(bootstrap, len(best.references))
                    + selection_note("test" in predictions,
                                   per_label_thresholds=run.evaluation.decision_threshold == "auto"))
        per_label = write_target_report(output_dir, target, results, report_split, data.sources[report_split],
                                        best.probabilities, best.references, best.predictions, data.label_names,
                                        summary, _training_curves(run, state), sections, results["warnings"])
        for split, split_scores in scored.items():
            write_items(output_dir, split, split_scores.items)
        return {"per_class": per_label, "report_split": report_split, "group_rows": []}

    publish(accelerator, model, processor, run, task, data, state, results, parameter_counts, extra_details, report)
    return results


def write_transcription_outputs(accelerator: Accelerator, model, processor, run: RunConfig, task: Task,
                                data: LabelledSplits, transcripts: dict, state: TrainState,
                                parameter_counts: tuple[int, int], extra_details: dict[str, str] | None = None,
                                extra_results: dict[str, float] | None = None, num_examples: int = 10) -> dict:
    """Speech recognition: score each split's {index: predicted transcript} with WER/CER and write everything;
    `extra_results` (the zero-shot error rates) are reported beside them."""
    results = {**_run_results(accelerator, data, state), **(extra_results or {}),
               "warnings": transcription_warnings(state.train_losses)}
    settings = run.to_dict()
    bootstrap = Bootstrap(run.evaluation.confidence_level, run.evaluation.bootstrap_resamples)
    scored = {}
    for split, predicted in transcripts.items():
        dataset = data.splits[split]
        references = dataset["transcript"]
        scored[split] = score_transcription([predicted[i] for i in range(len(references))], references,
                                            item_inputs(dataset, settings, task),
                                            item_groups(dataset, run.data.group_column), bootstrap)
        results.update({f"{PREFIX[split]}_{k}": v for k, v in scored[split].results.items()})
        results[f"{PREFIX[split]}_samples"] = len(references)
    report_split = "test" if "test" in transcripts else "validation"
    references = data.splits[report_split]["transcript"]
    examples = [{"split": report_split, "reference": references[i], "prediction": transcripts[report_split][i]}
                for i in range(min(num_examples, len(references)))]

    def report(output_dir: Path, summary: dict) -> dict:
        best = scored[report_split]
        sections = (intervals_note(bootstrap, len(references), "utterances")
                    + selection_note("test" in transcripts)
                    + groups_section(best.group_rows, run.data.group_column, results, PREFIX[report_split], "wer"))
        write_transcription_report(output_dir, results, examples, summary, _training_curves(run, state), sections,
                                   results["warnings"])
        for split, split_scores in scored.items():
            write_items(output_dir, split, split_scores.items)
        return {"per_class": [], "report_split": report_split, "examples": examples, "group_rows": best.group_rows}

    publish(accelerator, model, processor, run, task, data, state, results, parameter_counts, extra_details, report)
    return results


def _training_curves(run: RunConfig, state: TrainState) -> TrainingCurves:
    return TrainingCurves(state.train_losses, state.history, run.train.metric_for_best_model)


def _run_results(accelerator: Accelerator, data: LabelledSplits, state: TrainState) -> dict:
    return {"train_samples": len(data.splits["train"]), "train_steps": state.step, "best_step": state.best_step,
            "train_loss": state.train_losses[-1]["train_loss"], "num_processes": accelerator.num_processes}


def publish(accelerator: Accelerator, model, processor, run: RunConfig, task: Task, data: LabelledSplits,
            state: TrainState, results: dict, parameter_counts: tuple[int, int], extra_details: dict[str, str] | None,
            report: Callable[[Path, dict], dict]) -> None:
    """On the main process: model, settings, the task's report (`report` returns its card fields), results, card;
    then the push when asked."""
    output_dir = Path(run.train.output_dir)
    for warning in results["warnings"]:  # a run can finish cleanly and have learned nothing
        accelerator.print(f"warning: {warning}")
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        hub_base_model = base_model_id(run.model)
        save_model(unwrapped, processor, output_dir, hub_base_model)
        save_config(run, output_dir / "run_config.yaml")
        summary = {
            "model": run.hub.hub_model_id or output_dir.name,
            "base model": hub_base_model or run.model.model_name_or_path or f"from scratch ({run.model.config_name})",
            "strategy": run.strategy.strategy,
            "trainable parameters": f"{parameter_counts[0]:,} of {parameter_counts[1]:,}",
            "training examples": f"{len(data.splits['train']):,}",
            "best validation step": f"{state.best_step} of {state.step}",
            **(extra_details or {}),
        }
        card_fields = report(output_dir, summary)
        atomic_write_json(output_dir / "all_results.json", results)
        atomic_write_json(output_dir / "train_log.json", {"train": state.train_losses, "eval": state.history})
        if run.hub.write_card:
            save_card(CardContext(
                settings=run.to_dict(), repo_id=run.hub.hub_model_id or str(output_dir), base_model=hub_base_model,
                pipeline_tag=task.pipeline_tag, modality=task.modality, auto_class=task.auto_model.__name__,
                processor_class=task.processor_class, label_names=data.label_names, results=results,
                split_sizes={k: len(v) for k, v in data.splits.items()}, split_sources=data.sources,
                trainable=parameter_counts[0], total=parameter_counts[1], is_adapter=is_adapter(unwrapped),
                extra_details=extra_details, problem_type=data.problem_type, warnings=results["warnings"],
                **card_fields,
            ), output_dir)
        mark_complete(output_dir)  # last: a folder without it is an unfinished run
        accelerator.print(f"Wrote model, report{' and card' if run.hub.write_card else ''} to {output_dir}")
    accelerator.wait_for_everyone()
    if run.hub.push_to_hub and accelerator.is_main_process:
        hub = run.hub
        url = push_folder(output_dir, hub.hub_model_id, private=hub.hub_private, revision=hub.hub_revision,
                          token=hub.hub_token, merge_adapter=hub.merge_adapter)
        accelerator.print(f"Pushed to {url}")
