"""Load a trained output folder back: predict on new inputs, or score it on a labelled file or class folder."""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
import yaml
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel

from hf_transfer.config import UsageError
from hf_transfer.data.splits import (
    LABEL_COLUMN_GUESSES,
    guess_column,
    label_names_in,
    load_class_folder,
    load_file,
    resolve_paths,
    row_name,
)
from hf_transfer.evaluation.item_predictions import write_items
from hf_transfer.evaluation.operating_point import Decision
from hf_transfer.evaluation.report import write_report, write_transcription_report
from hf_transfer.evaluation.report_sections import (
    calibration_section,
    groups_section,
    intervals_note,
    operating_point_section,
)
from hf_transfer.evaluation.scoring import score_classification, score_target, score_transcription
from hf_transfer.evaluation.target_report import write_target_report
from hf_transfer.io import atomic_write_json
from hf_transfer.metrics.intervals import Bootstrap
from hf_transfer.modalities.audio import AUDIO_LAYOUT, clip_lengths
from hf_transfer.modalities.image import IMAGE_LAYOUT
from hf_transfer.modalities.transcripts import TRANSCRIPT_COLUMN_GUESSES, SpeechArgs, normalize, normalized_transcripts
from hf_transfer.models.builtin import resolve_model
from hf_transfer.models.heads import MultiHeadModel, is_multi_head
from hf_transfer.targets import MULTI_LABEL, REGRESSION, SINGLE_LABEL, Cells, target_for
from hf_transfer.tasks import TASKS, Task, task_for
from hf_transfer.training.run_folder import refuse_run_folder, require_complete


def read_run_config(output_dir: str | Path, require_finished: bool = True) -> dict:
    """The settings of the finished run in `output_dir` (an unfinished one is refused, naming how to finish it).
    `require_finished=False` is for a Hub snapshot: push checked the run, and the local record stays behind."""
    path = Path(output_dir) / "run_config.yaml"
    if not Path(output_dir).is_dir():
        raise UsageError(f"no such folder: {output_dir}")
    if not path.is_file():
        raise UsageError(f"{output_dir} is not an hf_transfer output folder (no run_config.yaml)")
    if require_finished:
        require_complete(output_dir)
    return yaml.safe_load(path.read_text())


def inference_device() -> torch.device:
    """Where `predict` and `evaluate` run: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_weights_format(folder: Path, allow_pickle: bool) -> bool:
    """True when `folder`'s weights are safetensors; pickle-only weights are refused unless `allow_pickle`
    (unpickling runs code from the file)."""
    if any(folder.glob("*.safetensors")):
        return True
    pickled = sorted(p.name for p in folder.glob("*.bin"))
    if not pickled:
        raise UsageError(f"{folder} holds no weights (no .safetensors file)")
    if not allow_pickle:
        raise UsageError(f"{folder} holds only pickle weights ({', '.join(pickled)}), which can run code when "
                         "loaded. Convert them to safetensors, or pass --allow_pickle if you trust whoever wrote them")
    return False


def load_trained(output_dir: str | Path, allow_pickle: bool = False, require_finished: bool = True,
                 head: str | None = None, trust_remote_code: bool = False):
    """(model in eval mode on `inference_device()`, tokenizer or processor, run settings) from a folder a recipe
    wrote.

    The folder holds an adapter + head (LoRA) or a full model; the task recorded in run_config.yaml, and for
    speech recognition the model (encoder-decoder or not), say which Auto classes rebuild it. Its weights are read
    from safetensors; pickle `.bin` files only with `allow_pickle`. `require_finished`: see `read_run_config`.
    A model with several heads (`hf_transfer.models.heads`) predicts with the one named `head`. A model trained
    with --trust_remote_code loads only with `trust_remote_code`: its folder's Python files run.
    """
    folder = Path(output_dir)
    settings = read_run_config(folder, require_finished)
    safetensors = check_weights_format(folder, allow_pickle)
    if settings.get("trust_remote_code") and not trust_remote_code:
        code = ", ".join(sorted(p.name for p in folder.glob("*.py"))) or "the Hub repo's code"
        raise UsageError(f"{folder} was trained with --trust_remote_code: loading it runs its model's own Python code "
                         f"({code}); pass --trust_remote_code if you trust it")
    remote = {"trust_remote_code": True} if trust_remote_code else {}
    config = AutoConfig.from_pretrained(folder, **remote)
    task = task_for(settings["task"], config)
    if (folder / "adapter_config.json").is_file():
        if not settings.get("model_name_or_path"):
            raise UsageError(f"{folder} holds a LoRA adapter for a randomly initialised model (--config_name) whose "
                             "base weights were not saved, so it can't be reloaded; train with --strategy full instead")
        # Base weights come from where training read them; on another machine (an output downloaded from the Hub)
        # that folder may be missing, and the Hub id the adapter names is used.
        base_path = resolve_model(settings["model_name_or_path"])[0]
        if not Path(base_path).exists():
            base_path = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        if is_multi_head(folder):
            base = MultiHeadModel.from_spec(AutoModel.from_pretrained(base_path, config=config), folder)
        else:
            # The base checkpoint's head may have another size (labels, CTC vocabulary): the adapter's saved head
            # replaces it right after.
            base = task.auto_model.from_pretrained(base_path, config=config, ignore_mismatched_sizes=True, **remote)
        model = PeftModel.from_pretrained(base, folder)
    elif is_multi_head(folder):
        model = MultiHeadModel.from_pretrained(folder)
    else:
        model = task.auto_model.from_pretrained(folder, use_safetensors=safetensors, **remote)
    processor = getattr(transformers, task.processor_class).from_pretrained(folder, **remote)
    return _one_head(model.to(inference_device()).eval(), head, folder), processor, settings


def _one_head(model, head: str | None, folder: Path):
    """`model` itself, or for a model with several heads the one named `head`."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    heads = list(base.labels) if isinstance(base, MultiHeadModel) else []
    if len(heads) < 2:
        if head and head not in heads:
            raise UsageError(f"--head {head}: {folder} has one head, its task's")
        return model
    if not head:
        raise UsageError(f"{folder} has several heads ({', '.join(heads)}): name one with --head")
    return base.head(head)


def _batch_predictor(task: Task, model, processor, settings: dict) -> Callable[[list[str], list[str] | None],
                                                                              list[dict]]:
    """(a batch of inputs, their text pairs or None) -> predictions, preprocessed as the run evaluated."""
    kind = task.input_kind
    if task.transcribe is not None:
        return lambda paths, _: [{kind: path, "transcript": text}
                                 for path, text in zip(paths, task.transcribe(model, processor, paths))]
    logits_of = task.logits(model, processor, settings)
    id2label = model.config.id2label
    target = target_for(model.config.problem_type or SINGLE_LABEL)
    if target.problem_type == MULTI_LABEL:
        thresholds = model.config.decision_thresholds  # one per label, chosen on validation

        def tag(batch: list[str], pairs: list[str] | None) -> list[dict]:
            scores = target.scores(logits_of(batch, pairs).float()).numpy()
            return [{kind: item, "labels": [id2label[i] for i in np.flatnonzero(on)],
                     "scores": {id2label[i]: float(p) for i, p in enumerate(row)}}
                    for item, row, on in zip(batch, scores, target.decide(scores, thresholds))]
        return tag
    if target.problem_type == REGRESSION:
        return lambda batch, pairs: [{kind: item, id2label[0]: float(value)} for item, value in
                                     zip(batch, target.scores(logits_of(batch, pairs).float()).tolist())]
    decision = Decision.from_config(model.config)  # the temperature and threshold chosen on validation, if any

    def classify(batch: list[str], pairs: list[str] | None) -> list[dict]:
        probabilities = decision.calibrated(logits_of(batch, pairs).float().softmax(-1).numpy())
        predictions = []
        for item, row, best in zip(batch, probabilities.tolist(), decision.predict(probabilities).tolist()):
            predictions.append({kind: item, "label": id2label[best], "score": row[best],
                                "scores": {id2label[i]: p for i, p in enumerate(row)}})
        return predictions

    return classify


def _looks_like_a_file(text: str) -> bool:
    """A file that exists, or a name with an image or audio file's extension: a text model would classify the path's
    characters as if they were a review."""
    name = text.strip()
    if Path(name).suffix.lower() in IMAGE_LAYOUT.extensions + AUDIO_LAYOUT.extensions and " " not in name:
        return True
    try:
        return Path(name).is_file()
    except OSError:  # a long text is a name too long for the file system
        return False


@torch.inference_mode()
def predict(model, processor, settings: dict, inputs: list[str], pairs: list[str] | None = None) -> list[dict]:
    """One prediction per input (a text, or an image or audio file path), in the inputs' order: label and class
    probabilities, or for speech recognition the transcript. Batches of the run's evaluation batch size hold inputs
    of similar size, longest first (little padding, and a batch too large for memory fails at once)."""
    task = task_for(settings["task"], model.config)
    kind = task.input_kind
    if task.reads_files:
        for path in inputs:
            if not Path(path).is_file():
                raise UsageError(f"no {kind} file {path!r}: an {kind} model takes {kind} file paths "
                                 "(a text model, texts)")
    else:
        for text in inputs:
            if _looks_like_a_file(text):
                raise UsageError(f"{text!r} is a file path, but a text model classifies the text itself: give the "
                                 "text (an image or audio file needs a model trained on images or audio)")
    order = list(range(len(inputs)))
    if kind == "text":  # longest first, so that each batch pads little
        order.sort(key=lambda i: -(len(inputs[i]) + len(pairs[i] if pairs else "")))
    elif settings["task"] == "audio-classification":  # longest first, as the run evaluated
        lengths = clip_lengths(inputs, processor.sampling_rate, settings["max_duration_seconds"])
        order.sort(key=lambda i: -lengths[i])
    predict_batch = _batch_predictor(task, model, processor, settings)
    batch_size = settings["per_device_eval_batch_size"]
    predictions = [None] * len(inputs)
    with tqdm(total=len(inputs), desc="Predicting", unit=kind) as progress:  # on stderr, as training's
        for start in range(0, len(inputs), batch_size):
            batch = order[start:start + batch_size]
            found = predict_batch([inputs[i] for i in batch], pairs and [pairs[i] for i in batch])
            for i, prediction in zip(batch, found):
                predictions[i] = prediction
            progress.update(len(batch))
    return predictions


def timed_predict(model, processor, settings: dict, inputs: list[str],
                  pairs: list[str] | None = None) -> tuple[list[dict], float]:
    """`predict`, and its throughput in inputs per second."""
    start = time.perf_counter()
    predictions = predict(model, processor, settings, inputs, pairs)
    return predictions, len(inputs) / max(time.perf_counter() - start, 1e-9)


def evaluate_folder(output_dir: str | Path, test_file: str | None, report_dir: str | Path,
                    test_dir: str | None = None, columns: dict[str, str | None] | None = None,
                    group_column: str | None = None, bootstrap: Bootstrap = Bootstrap(),
                    allow_pickle: bool = False, head: str | None = None, trust_remote_code: bool = False) -> dict:
    """Score a trained folder on a labelled file (or, for image and audio classifiers, a folder of class
    subfolders); writes all_results.json, test_predictions.jsonl, the report and plots to `report_dir` and
    returns the results.

    `columns` names the data's columns as training's settings do (`text_column`, `audio_column`, `label_column`,
    `transcript_column`...); unnamed ones are those training used, then the usual names. `group_column` names
    who or where each row comes from (speaker, patient, site): the report scores each group. `head`: which head
    of a model with several. `trust_remote_code`: see `load_trained`.
    """
    refuse_run_folder(report_dir, "--report_dir")
    model, processor, settings = load_trained(output_dir, allow_pickle, head=head, trust_remote_code=trust_remote_code)
    task, inputs = settings["task"], TASKS[settings["task"]]
    kind = inputs.input_kind
    if bool(test_file) == bool(test_dir):
        raise UsageError("give --test_file or --test_dir (one of them)")
    if test_dir and inputs.layout is None:
        raise UsageError(f"--test_dir reads class folders, for image and audio classifiers; score this {task} model "
                         "with --test_file")
    columns = {name: value for name, value in (columns or {}).items() if value}
    target = "transcript" if task == "automatic-speech-recognition" else "label"
    known = {f"{kind}_column", f"{target}_column"} | ({"text_pair_column"} if kind == "text" else set())
    stray = sorted(set(columns) - known)
    if stray:
        raise UsageError(f"--{stray[0]} does not apply to this {task} model (it reads {', '.join(sorted(known))})")
    settings = {**settings, **columns}  # the user's column names win over training's
    dataset = load_class_folder(test_dir, inputs.layout) if test_dir else load_file(test_file)
    source = test_file or test_dir
    column = guess_column(dataset.column_names, settings.get(f"{kind}_column"), inputs.column_guesses,
                          kind, source)
    values = dataset[column]
    if inputs.reads_files and test_file:  # relative paths are read from the file's folder, as in training
        values = resolve_paths(values, Path(test_file).parent, source, kind)
    groups = None
    if group_column:
        groups = [str(v) for v in dataset[guess_column(dataset.column_names, group_column, (), "group", source)]]
    report_dir = Path(report_dir)
    summary = {"model": str(output_dir), "strategy": settings["strategy"], "evaluated on": source}
    problem_type = getattr(model.config, "problem_type", None) or SINGLE_LABEL
    score = (_score_transcripts if target == "transcript" else _score_labels if problem_type == SINGLE_LABEL
             else _score_targets)
    evaluation = Evaluation(source, report_dir, summary, groups, group_column, bootstrap)
    results = score(model, processor, settings, dataset, values, evaluation)
    atomic_write_json(report_dir / "all_results.json", results)
    return results


@dataclass(frozen=True)
class Evaluation:
    """Where the data came from and where its report goes, for `_score_labels` and `_score_transcripts`."""

    source: str
    report_dir: Path
    summary: dict
    groups: list[str] | None
    group_column: str | None
    bootstrap: Bootstrap


def _score_labels(model, processor, settings, dataset, values, evaluation: Evaluation) -> dict:
    source = evaluation.source
    label = guess_column(dataset.column_names, settings.get("label_column"), LABEL_COLUMN_GUESSES, "label", source)
    label2id = {str(name): i for name, i in model.config.label2id.items()}
    labels = label_names_in(dataset, label)
    unknown = sorted(set(labels) - set(label2id))
    if unknown:
        raise UsageError(f"{source}: label(s) {', '.join(map(repr, unknown))} were not trained on "
                         f"(the model knows {', '.join(label2id)})")
    pair_column = settings.get("text_pair_column")
    pairs = dataset[guess_column(dataset.column_names, pair_column, (), "text pair", source)] if pair_column else None
    predictions, per_second = timed_predict(model, processor, settings, values, pairs)  # the saved temperature applied
    names = [model.config.id2label[i] for i in range(len(label2id))]
    probabilities = torch.tensor([[p["scores"][n] for n in names] for p in predictions]).numpy()
    references = torch.tensor([label2id[name] for name in labels]).numpy()
    decision = Decision.from_config(model.config)
    inputs = values if pairs is None else [f"{text} || {pair}" for text, pair in zip(values, pairs)]
    scored = score_classification(probabilities, references, Decision(threshold=decision.threshold), names, inputs,
                                  evaluation.groups, evaluation.bootstrap)
    results = {f"test_{k}": v for k, v in scored.results.items()}
    results["test_samples"] = len(references)
    for key, value in (("calibration_temperature", decision.temperature), ("decision_threshold", decision.threshold)):
        if value not in (None, 1.0):
            results[key] = evaluation.summary[key.replace("_", " ")] = value
    results["test_samples_per_second"] = per_second
    report_dir = evaluation.report_dir
    sections = (intervals_note(evaluation.bootstrap, len(references))
                + operating_point_section(report_dir, probabilities, references, scored.predictions, decision, names)
                + calibration_section(report_dir, probabilities, references, results, "test", Decision())
                + groups_section(scored.group_rows, evaluation.group_column, results, "test", "accuracy"))
    write_report(report_dir, results, "test", source, probabilities, references, names, evaluation.summary, None,
                 scored.predictions, sections)
    write_items(report_dir, "test", scored.items)
    return results


def _score_targets(model, processor, settings, dataset, values, evaluation: Evaluation) -> dict:
    """A multi-label or regression model on a labelled file: labels encoded as training encoded them."""
    source = evaluation.source
    if evaluation.groups:
        raise UsageError(f"--group_column: per-group scores are for single-label classification so far, not "
                         f"{model.config.problem_type}")
    target = target_for(model.config.problem_type, settings.get("label_separator") or "|")
    label = guess_column(dataset.column_names, settings.get("label_column"), LABEL_COLUMN_GUESSES, "label", source)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    references = np.asarray(target.encode(
        Cells(dataset[label], lambda index: row_name(source, index + 1), label, source), names, "test"))
    pair_column = settings.get("text_pair_column")
    pairs = dataset[guess_column(dataset.column_names, pair_column, (), "text pair", source)] if pair_column else None
    predictions, per_second = timed_predict(model, processor, settings, values, pairs)
    if target.problem_type == MULTI_LABEL:
        scores = np.asarray([[p["scores"][n] for n in names] for p in predictions])
    else:
        scores = np.asarray([p[names[0]] for p in predictions])
    inputs = values if pairs is None else [f"{text} || {pair}" for text, pair in zip(values, pairs)]
    thresholds = getattr(model.config, "decision_thresholds", None)
    scored = score_target(target, scores, references, thresholds, names, inputs, evaluation.bootstrap)
    results = {f"test_{k}": v for k, v in scored.results.items()}
    results.update(test_samples=len(references), test_samples_per_second=per_second)
    if thresholds:
        results["decision_thresholds"] = thresholds
    write_target_report(evaluation.report_dir, target, results, "test", source, scores, references,
                        scored.predictions, names, evaluation.summary, None,
                        intervals_note(evaluation.bootstrap, len(references)))
    write_items(evaluation.report_dir, "test", scored.items)
    return results


def _score_transcripts(model, processor, settings, dataset, paths, evaluation: Evaluation,
                       num_examples: int = 10) -> dict:
    source = evaluation.source
    column = guess_column(dataset.column_names, settings.get("transcript_column"), TRANSCRIPT_COLUMN_GUESSES,
                          "transcript", source)
    # References and predictions normalised as in training (case, punctuation).
    speech = SpeechArgs(lowercase=settings["lowercase"], strip_punctuation=settings["strip_punctuation"])
    references = normalized_transcripts(dataset[column], speech, column, source)
    predictions, per_second = timed_predict(model, processor, settings, paths)
    predicted = [normalize(p["transcript"], speech) for p in predictions]
    scored = score_transcription(predicted, references, paths, evaluation.groups, evaluation.bootstrap)
    results = {f"test_{k}": v for k, v in scored.results.items()}
    results["test_samples"] = len(references)
    results["test_samples_per_second"] = per_second
    examples = [{"split": "test", "reference": r, "prediction": p}
                for r, p in list(zip(references, predicted))[:num_examples]]
    sections = (intervals_note(evaluation.bootstrap, len(references), "utterances")
                + groups_section(scored.group_rows, evaluation.group_column, results, "test", "wer"))
    write_transcription_report(evaluation.report_dir, results, examples, evaluation.summary, None, sections)
    write_items(evaluation.report_dir, "test", scored.items)
    return results
