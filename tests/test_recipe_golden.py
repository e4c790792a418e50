"""Each recipe's few-step run on its tiny model, against a recorded one: the loss curve and the test predictions.

They guard refactors of the recipes and the loop: the same settings must give the same numbers. After a change
that is meant to change them (a new default, another augmentation), record them again and say why in the commit:

    HF_TRANSFER_REGENERATE_GOLDEN=1 python -m pytest -q tests/test_recipe_golden.py
"""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import make_tiny_model, make_tiny_vit

from hf_transfer.evaluation.inference import load_trained, predict
from hf_transfer.recipes import audio_classification, image_classification, sentiment, speech_recognition

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = os.environ.get("HF_TRANSFER_REGENERATE_GOLDEN") == "1"
# Tight, but not bit-exact: another CPU (AVX2 / AVX-512 kernels) may round differently.
TOLERANCE = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def seeded_models(tmp_path_factory) -> dict[str, Path]:
    """The session's tiny BERT and ViT start from unseeded weights: these are the same in every session."""
    torch.manual_seed(0)
    bert = make_tiny_model(tmp_path_factory.mktemp("golden-bert"))
    torch.manual_seed(0)
    return {"bert": bert, "vit": make_tiny_vit(tmp_path_factory.mktemp("golden-vit"))}


def _csv_column(path: Path, column: str) -> list[str]:
    with open(path, newline="") as handle:
        return [row[column] for row in csv.DictReader(handle)]


def sentiment_run(request, output_dir):
    files = request.getfixturevalue("sentiment_files")
    results = sentiment.main({"model_name_or_path": str(request.getfixturevalue("seeded_models")["bert"]),
                              "train_file": str(files["train"]), "test_file": str(files["test"]),
                              "strategy": "lora", "learning_rate": 3e-2, "per_device_train_batch_size": 16,
                              "max_train_steps": 6, "logging_steps": 1, "eval_steps": 3, "dropout": 0.1,
                              "output_dir": str(output_dir)})
    return results, _csv_column(files["test"], "text")


def image_run(request, output_dir):
    images = request.getfixturevalue("images")
    vit = request.getfixturevalue("seeded_models")["vit"]
    results = image_classification.main({"model_name_or_path": str(vit),
                                         "train_dir": str(images / "train"), "validation_dir": str(images / "val"),
                                         "strategy": "full", "augment": "randaugment", "mixup_alpha": 0.2,
                                         "learning_rate": 5e-3, "per_device_train_batch_size": 8,
                                         "max_train_steps": 6, "logging_steps": 1, "eval_steps": 3,
                                         "output_dir": str(output_dir)})
    return results, sorted(str(path) for path in (images / "val").rglob("*.png"))


def audio_run(request, output_dir):
    tones = request.getfixturevalue("tones")
    results = audio_classification.main({"model_name_or_path": str(request.getfixturevalue("tiny_wav2vec2")),
                                         "train_dir": str(tones / "train"), "test_dir": str(tones / "test"),
                                         "max_duration_seconds": 0.25, "validation_split_percentage": 25,
                                         "strategy": "full", "learning_rate": 5e-3,
                                         "per_device_train_batch_size": 8, "max_train_steps": 6,
                                         "logging_steps": 1, "eval_steps": 3, "output_dir": str(output_dir)})
    return results, sorted(str(path) for path in (tones / "test").rglob("*.*"))


def speech_run(request, output_dir):
    data = request.getfixturevalue("speech_data")
    results = speech_recognition.main({"model_name_or_path": str(data / "tiny-wav2vec2"),
                                       "train_file": str(data / "train.csv"), "test_file": str(data / "test.csv"),
                                       "strategy": "full", "freeze_feature_encoder": False, "learning_rate": 3e-3,
                                       "per_device_train_batch_size": 8, "max_train_steps": 6, "logging_steps": 1,
                                       "eval_steps": 3, "output_dir": str(output_dir)})
    return results, [str(data / path) for path in _csv_column(data / "test.csv", "path")]


RUNS = {"sentiment": sentiment_run, "image_classification": image_run, "audio_classification": audio_run,
        "speech_recognition": speech_run}


def record(run, request, output_dir) -> dict:
    """What the run leaves: its logged losses, validation curve, results and test predictions."""
    results, inputs = run(request, output_dir)
    log = json.loads((output_dir / "train_log.json").read_text())
    model, processor, settings = load_trained(output_dir)
    predictions = predict(model, processor, settings, inputs)
    return {
        "train_loss": [entry["train_loss"] for entry in log["train"]],
        "eval": [{k: v for k, v in entry.items() if k.startswith("eval_")} for entry in log["eval"]],
        "results": {k: v for k, v in results.items() if isinstance(v, float)},
        # Class probabilities in label order, or transcripts.
        "predictions": [p["transcript"] if "transcript" in p else [p["scores"][name] for name in sorted(p["scores"])]
                        for p in predictions],
    }


def assert_matches(actual, expected, where: str) -> None:
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected), where
        for key in expected:
            assert_matches(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for i, (got, want) in enumerate(zip(actual, expected)):
            assert_matches(got, want, f"{where}[{i}]")
    elif isinstance(expected, float):
        np.testing.assert_allclose(actual, expected, err_msg=where, **TOLERANCE)
    else:
        assert actual == expected, where


@pytest.mark.slow  # a few seconds to half a minute each on 2 cores
@pytest.mark.parametrize("recipe", RUNS)
def test_recipe_reproduces_its_recorded_run(recipe, request, tmp_path):
    recorded = record(RUNS[recipe], request, tmp_path)
    path = GOLDEN / f"{recipe}.json"
    if REGENERATE:
        path.write_text(json.dumps(recorded, indent=1) + "\n")
    assert path.is_file(), f"no recorded run in {path}: HF_TRANSFER_REGENERATE_GOLDEN=1 records it"
    assert_matches(recorded, json.loads(path.read_text()), recipe)
