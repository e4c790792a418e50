"""Load a trained output folder back: predict on new text, or score it on a labelled file."""

from pathlib import Path

import torch
import yaml
from peft import PeftModel
import transformers
from transformers import AutoConfig

from hf_transfer.builtin import resolve_model
from hf_transfer.config import UsageError
from hf_transfer.data import LABEL_COLUMN_GUESSES, guess_column, load_file
from hf_transfer.io import atomic_write_json
from hf_transfer.metrics import classification_metrics
from hf_transfer.metrics.report import write_report
from hf_transfer.modalities.image import IMAGE_COLUMN_GUESSES, predict_images, resolve_image_paths
from hf_transfer.modalities.text import TEXT_COLUMN_GUESSES
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
    return model.eval(), processor, settings


@torch.no_grad()
def predict_texts(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> list[dict]:
    """Label and class probabilities for each text."""
    id2label = model.config.id2label
    predictions = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length, padding=True,
                          return_tensors="pt")
        probabilities = model(**batch).logits.float().softmax(-1)
        for text, row in zip(texts[start:start + batch_size], probabilities.tolist()):
            best = max(range(len(row)), key=row.__getitem__)
            predictions.append({"text": text, "label": id2label[best], "score": row[best],
                                "scores": {id2label[i]: p for i, p in enumerate(row)}})
    return predictions


def evaluate_folder(output_dir: str | Path, test_file: str, report_dir: str | Path,
                    text_column: str | None = None, label_column: str | None = None,
                    image_column: str | None = None) -> dict:
    """Score a trained folder on a labelled file; writes all_results.json, report and plots to `report_dir`."""
    model, tokenizer, settings = load_trained(output_dir)
    dataset = load_file(test_file)
    columns = dataset.column_names
    label = guess_column(columns, label_column or settings.get("label_column"), LABEL_COLUMN_GUESSES, "label",
                         test_file)
    label2id = {str(name): i for name, i in model.config.label2id.items()}
    unknown = sorted({str(v) for v in dataset[label]} - set(label2id))
    if unknown:
        raise UsageError(f"{test_file}: label(s) {', '.join(map(repr, unknown))} were not trained on "
                         f"(the model knows {', '.join(label2id)})")
    if settings["task"] == "image-classification":
        image = guess_column(columns, image_column or settings.get("image_column"), IMAGE_COLUMN_GUESSES, "image",
                             test_file)
        predictions = predict_images(model, tokenizer,
                                     resolve_image_paths(dataset[image], Path(test_file).parent, test_file))
    else:
        text = guess_column(columns, text_column or settings.get("text_column"), TEXT_COLUMN_GUESSES, "text",
                            test_file)
        predictions = predict_texts(model, tokenizer, dataset[text], settings["max_seq_length"])
    names = [model.config.id2label[i] for i in range(len(label2id))]
    probabilities = torch.tensor([[p["scores"][n] for n in names] for p in predictions]).numpy()
    references = torch.tensor([label2id[str(v)] for v in dataset[label]]).numpy()
    results = {f"test_{k}": v for k, v in classification_metrics(probabilities, references).items()}
    results["test_samples"] = len(references)
    report_dir = Path(report_dir)
    summary = {"model": str(output_dir), "strategy": settings["strategy"], "evaluated on": test_file}
    write_report(report_dir, results, "test", test_file, probabilities, references, names, summary, [])
    atomic_write_json(report_dir / "all_results.json", results)
    return results
