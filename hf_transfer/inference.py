"""Load a trained output folder back: predict on new inputs, or score it on a labelled file or class folder."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
import yaml
from peft import PeftModel
from transformers import AutoConfig

from hf_transfer.builtin import resolve_model
from hf_transfer.config import UsageError
from hf_transfer.data import (
    LABEL_COLUMN_GUESSES,
    FolderLayout,
    guess_column,
    load_class_folder,
    load_file,
    resolve_paths,
)
from hf_transfer.io import atomic_write_json
from hf_transfer.metrics import classification_metrics, transcription_metrics
from hf_transfer.metrics.report import write_report, write_transcription_report
from hf_transfer.modalities.audio import AUDIO_COLUMN_GUESSES, AUDIO_LAYOUT, audio_logits
from hf_transfer.modalities.image import IMAGE_COLUMN_GUESSES, IMAGE_LAYOUT, image_logits
from hf_transfer.modalities.text import TEXT_COLUMN_GUESSES, text_logits
from hf_transfer.modalities.transcripts import (
    TRANSCRIPT_COLUMN_GUESSES,
    SpeechArgs,
    normalized_transcripts,
    transcribe_files,
)
from hf_transfer.tasks import TASKS


def read_run_config(output_dir: str | Path) -> dict:
    path = Path(output_dir) / "run_config.yaml"
    if not path.is_file():
        raise UsageError(f"{output_dir} is not an hf_transfer output folder (no run_config.yaml)")
    return yaml.safe_load(path.read_text())


def load_trained(output_dir: str | Path):
    """(model in eval mode, tokenizer or processor, run settings) from a folder a recipe wrote.

    The folder holds an adapter + head (LoRA) or a full model; the task recorded in run_config.yaml says which
    Auto classes rebuild it.
    """
    folder = Path(output_dir)
    settings = read_run_config(folder)
    task = TASKS[settings["task"]]
    if (folder / "adapter_config.json").is_file():
        if not settings.get("model_name_or_path"):
            raise UsageError(f"{folder} holds a LoRA adapter for a randomly initialised model (--config_name) whose "
                             "base weights were not saved, so it can't be reloaded; train with --strategy full instead")
        # Base weights come from where training read them (the adapter names the Hub id instead).
        base_path = resolve_model(settings["model_name_or_path"])[0]
        # The base checkpoint's head may have another size (labels, CTC vocabulary): the adapter's saved head
        # replaces it right after.
        base = task.auto_model.from_pretrained(base_path, config=AutoConfig.from_pretrained(folder),
                                               ignore_mismatched_sizes=True)
        model = PeftModel.from_pretrained(base, folder)
    else:
        model = task.auto_model.from_pretrained(folder)
    processor = getattr(transformers, task.processor_class).from_pretrained(folder)
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval(), processor, settings


@dataclass(frozen=True)
class Inputs:
    """What one task's model reads, and how `predict` and `evaluate` find it."""

    kind: str  # "text", "image" or "audio": the key of each prediction, and the --KIND_column setting
    column_guesses: tuple[str, ...]
    layout: FolderLayout | None = None  # class folders (`evaluate --test_dir`), for classifiers of files

    @property
    def is_file(self) -> bool:
        return self.kind != "text"


INPUTS = {
    "text-classification": Inputs("text", TEXT_COLUMN_GUESSES),
    "image-classification": Inputs("image", IMAGE_COLUMN_GUESSES, IMAGE_LAYOUT),
    "audio-classification": Inputs("audio", AUDIO_COLUMN_GUESSES, AUDIO_LAYOUT),
    "automatic-speech-recognition": Inputs("audio", AUDIO_COLUMN_GUESSES),
}


def _batch_predictor(model, processor, settings: dict) -> Callable[[list[str], list[str] | None], list[dict]]:
    """(a batch of inputs, their text pairs or None) -> predictions, preprocessed as the run evaluated."""
    task, kind = settings["task"], INPUTS[settings["task"]].kind
    if task == "automatic-speech-recognition":
        return lambda paths, _: [{kind: path, "transcript": text}
                               for path, text in zip(paths, transcribe_files(model, processor, paths))]
    if task == "text-classification":
        def logits_of(texts, pairs):
            return text_logits(model, processor, texts, settings["max_seq_length"], pairs)
    elif task == "image-classification":
        def logits_of(paths, _):
            return image_logits(model, processor, paths)
    else:
        def logits_of(paths, _):
            return audio_logits(model, processor, paths, settings["max_duration_seconds"])
    id2label = model.config.id2label

    def classify(batch: list[str], pairs: list[str] | None) -> list[dict]:
        predictions = []
        for item, row in zip(batch, logits_of(batch, pairs).float().softmax(-1).tolist()):
            best = max(range(len(row)), key=row.__getitem__)
            predictions.append({kind: item, "label": id2label[best], "score": row[best],
                                "scores": {id2label[i]: p for i, p in enumerate(row)}})
        return predictions

    return classify


def _input_size(kind: str, item: str, pair: str | None) -> int:
    """What padding follows: characters of a text (and its pair), bytes of an audio file; images are all resized
    to one size."""
    if kind == "text":
        return len(item) + len(pair or "")
    return Path(item).stat().st_size if kind == "audio" else 0


@torch.inference_mode()
def predict(model, processor, settings: dict, inputs: list[str], pairs: list[str] | None = None) -> list[dict]:
    """One prediction per input (a text, or an image or audio file path), in the inputs' order: label and class
    probabilities, or for speech recognition the transcript. Batches of the run's evaluation batch size hold inputs
    of similar size, longest first (little padding, and a batch too large for memory fails at once)."""
    kind = INPUTS[settings["task"]].kind
    if INPUTS[settings["task"]].is_file:
        for path in inputs:
            if not Path(path).is_file():
                raise UsageError(f"no {kind} file {path!r}: an {kind} model takes {kind} file paths "
                                 "(a text model, texts)")
    order = sorted(range(len(inputs)), key=lambda i: -_input_size(kind, inputs[i], pairs and pairs[i]))
    predict_batch, batch_size = _batch_predictor(model, processor, settings), settings["per_device_eval_batch_size"]
    predictions = [None] * len(inputs)
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        batch = predict_batch([inputs[i] for i in chosen], pairs and [pairs[i] for i in chosen])
        for i, prediction in zip(chosen, batch):
            predictions[i] = prediction
    return predictions


def timed_predict(model, processor, settings: dict, inputs: list[str],
                  pairs: list[str] | None = None) -> tuple[list[dict], float]:
    """`predict`, and its throughput in inputs per second."""
    start = time.perf_counter()
    predictions = predict(model, processor, settings, inputs, pairs)
    return predictions, len(inputs) / max(time.perf_counter() - start, 1e-9)


def evaluate_folder(output_dir: str | Path, test_file: str | None, report_dir: str | Path,
                    test_dir: str | None = None, columns: dict[str, str | None] | None = None) -> dict:
    """Score a trained folder on a labelled file (or, for image and audio classifiers, a folder of class
    subfolders); writes all_results.json, the report and plots to `report_dir` and returns the results.

    `columns` names the data's columns as training's settings do (`text_column`, `audio_column`, `label_column`,
    `transcript_column`...); unnamed ones are those training used, then the usual names.
    """
    model, processor, settings = load_trained(output_dir)
    task, inputs = settings["task"], INPUTS[settings["task"]]
    if bool(test_file) == bool(test_dir):
        raise UsageError("give --test_file or --test_dir (one of them)")
    if test_dir and inputs.layout is None:
        raise UsageError(f"--test_dir reads class folders, for image and audio classifiers; score this {task} model "
                         "with --test_file")
    columns = {name: value for name, value in (columns or {}).items() if value}
    target = "transcript" if task == "automatic-speech-recognition" else "label"
    known = {f"{inputs.kind}_column", f"{target}_column"} | ({"text_pair_column"} if inputs.kind == "text" else set())
    stray = sorted(set(columns) - known)
    if stray:
        raise UsageError(f"--{stray[0]} does not apply to this {task} model (it reads {', '.join(sorted(known))})")
    settings = {**settings, **columns}  # the user's column names win over training's
    dataset = load_class_folder(test_dir, inputs.layout) if test_dir else load_file(test_file)
    source = test_file or test_dir
    column = guess_column(dataset.column_names, settings.get(f"{inputs.kind}_column"), inputs.column_guesses,
                          inputs.kind, source)
    values = dataset[column]
    if inputs.is_file and test_file:  # relative paths are read from the file's folder, as in training
        values = resolve_paths(values, Path(test_file).parent, source, inputs.kind)
    report_dir = Path(report_dir)
    summary = {"model": str(output_dir), "strategy": settings["strategy"], "evaluated on": source}
    score = _score_transcripts if target == "transcript" else _score_labels
    results = score(model, processor, settings, dataset, values, source, report_dir, summary)
    atomic_write_json(report_dir / "all_results.json", results)
    return results


def _score_labels(model, processor, settings, dataset, values, source, report_dir, summary) -> dict:
    label = guess_column(dataset.column_names, settings.get("label_column"), LABEL_COLUMN_GUESSES, "label", source)
    label2id = {str(name): i for name, i in model.config.label2id.items()}
    unknown = sorted({str(v) for v in dataset[label]} - set(label2id))
    if unknown:
        raise UsageError(f"{source}: label(s) {', '.join(map(repr, unknown))} were not trained on "
                         f"(the model knows {', '.join(label2id)})")
    pair_column = settings.get("text_pair_column")
    pairs = dataset[guess_column(dataset.column_names, pair_column, (), "text pair", source)] if pair_column else None
    predictions, per_second = timed_predict(model, processor, settings, values, pairs)
    names = [model.config.id2label[i] for i in range(len(label2id))]
    probabilities = torch.tensor([[p["scores"][n] for n in names] for p in predictions]).numpy()
    references = torch.tensor([label2id[str(v)] for v in dataset[label]]).numpy()
    results = {f"test_{k}": v for k, v in classification_metrics(probabilities, references).items()}
    results["test_samples"] = len(references)
    results["test_samples_per_second"] = per_second
    write_report(report_dir, results, "test", source, probabilities, references, names, summary, [])
    return results


def _score_transcripts(model, processor, settings, dataset, paths, source, report_dir, summary,
                       num_examples: int = 10) -> dict:
    column = guess_column(dataset.column_names, settings.get("transcript_column"), TRANSCRIPT_COLUMN_GUESSES,
                          "transcript", source)
    # References normalised as the training transcripts were (case, punctuation).
    speech = SpeechArgs(lowercase=settings["lowercase"], strip_punctuation=settings["strip_punctuation"])
    references = normalized_transcripts(dataset[column], speech, column, source)
    predictions, per_second = timed_predict(model, processor, settings, paths)
    predicted = [p["transcript"] for p in predictions]
    results = {f"test_{k}": v for k, v in transcription_metrics(predicted, references).items()}
    results["test_samples"] = len(references)
    results["test_samples_per_second"] = per_second
    examples = [{"split": "test", "reference": r, "prediction": p}
                for r, p in list(zip(references, predicted))[:num_examples]]
    write_transcription_report(report_dir, results, examples, summary, [])
    return results
