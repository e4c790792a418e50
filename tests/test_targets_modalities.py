"""Multi-label and regression beyond text: images and audio end to end, a resume that is bit-exact, and two-process
DDP (tiny models; data whose targets are plain in the inputs: colours in an image, tones in a clip)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from fixtures import AUDIO_RATE, launch_two_processes, tone, write_csv
from PIL import Image
from safetensors.torch import load_file

from hf_transfer.evaluation.inference import evaluate_folder, load_trained, predict
from hf_transfer.metrics.intervals import Bootstrap
from hf_transfer.recipes import audio_classification, image_classification, sentiment
from tests.test_targets import scored_rows, tagged_rows

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CHANNELS = {"red": 0, "green": 1, "blue": 2}


def colour_image(colours: list[str], brightness: float, seed: int) -> Image.Image:
    """32 x 32 px grey at 40 % of `brightness`, each named colour's channel raised by another 50 %; a little noise."""
    pixels = np.random.default_rng(seed).integers(0, 20, size=(32, 32, 3)) + 0.4 * brightness
    for colour in colours:
        pixels[..., CHANNELS[colour]] += 0.5 * brightness
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def colour_csvs(tmp_path_factory) -> Path:
    """train.csv / test.csv of image paths with two label columns: `colours` (multi-label, `|`-separated, maybe
    empty) and `brightness` (a number, 60 to 230)."""
    root, rng = tmp_path_factory.mktemp("colours"), np.random.default_rng(0)
    for split, count in (("train", 48), ("test", 16)):
        rows = []
        for index in range(count):
            colours = [colour for colour in CHANNELS if rng.random() < 0.5]
            brightness = float(rng.uniform(60, 230))
            path = root / split / f"{index}.png"
            path.parent.mkdir(exist_ok=True)
            colour_image(colours, brightness, index).save(path)
            rows.append({"image": f"{split}/{index}.png", "colours": "|".join(colours), "brightness": brightness})
        write_csv(root / f"{split}.csv", rows)
    return root


@pytest.fixture(scope="module")
def tone_csvs(tmp_path_factory) -> Path:
    """Clips holding a low tone, a high tone, both or neither (`tones`), each at a loudness (`level`, 0.1-0.9)."""
    root, rng = tmp_path_factory.mktemp("tone-mixes"), np.random.default_rng(0)
    for split, count in (("train", 40), ("test", 12)):
        rows = []
        for index in range(count):
            present = [name for name in ("low", "high") if rng.random() < 0.5]
            level = float(rng.uniform(0.1, 0.9))
            clip = 0.02 * rng.standard_normal(round(0.3 * AUDIO_RATE))
            for name in present:
                clip = clip + level * tone({"low": 440.0, "high": 1760.0}[name], 0.3, AUDIO_RATE, seed=index)
            path = root / split / f"{index}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, clip.astype(np.float32), AUDIO_RATE)
            rows.append({"audio": f"{split}/{index}.wav", "tones": "|".join(present), "level": level})
        write_csv(root / f"{split}.csv", rows)
    return root


def check_saved_run(out: Path, test_file: Path, results: dict, inputs: list[str], problem_type: str) -> None:
    """The folder reloads; predict answers as the run scored; evaluate on the test file repeats its metrics."""
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == problem_type
    model, processor, settings = load_trained(out)
    answers = predict(model, processor, settings, inputs)
    items = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    multi_label = problem_type == "multi_label_classification"
    for answer, item in zip(answers, items):
        if multi_label:
            assert answer["scores"] == pytest.approx(item["scores"], abs=1e-5)
        else:  # the number, under the target's name
            assert answer[config["id2label"]["0"]] == pytest.approx(item["prediction"], abs=1e-3)
    again = evaluate_folder(out, str(test_file), out.parent / "evaluation", bootstrap=Bootstrap(resamples=20))
    metric = "test_f1_micro" if multi_label else "test_rmse"
    assert again[metric] == pytest.approx(results[metric], abs=1e-4)


@pytest.mark.parametrize("strategy", ["full", "lora"])
@pytest.mark.parametrize(("problem_type", "label_column"), [("multi_label_classification", "colours"),
                                                            ("regression", "brightness")])
def test_image_targets_train_save_reload_predict_and_evaluate(tiny_vit, colour_csvs, tmp_path, strategy,
                                                              problem_type, label_column):
    out = tmp_path / "out"
    results = image_classification.main({
        "model_name_or_path": str(tiny_vit), "train_file": str(colour_csvs / "train.csv"),
        "test_file": str(colour_csvs / "test.csv"), "label_column": label_column, "problem_type": problem_type,
        "strategy": strategy, "augment": "none", "num_train_epochs": 4, "per_device_train_batch_size": 8,
        "bootstrap_resamples": 20, "output_dir": str(out)})
    inputs = [str(colour_csvs / "test" / f"{index}.png") for index in range(16)]
    check_saved_run(out, colour_csvs / "test.csv", results, inputs, problem_type)
    if problem_type == "regression":
        predicted = [answer["brightness"] for answer in predict(*load_trained(out), inputs)]
        assert 0 < np.mean(predicted) < 300  # brightness units, not standardised ones


@pytest.mark.parametrize(("problem_type", "label_column"), [("multi_label_classification", "tones"),
                                                            ("regression", "level")])
def test_audio_targets_train_save_reload_predict_and_evaluate(tiny_wav2vec2, tone_csvs, tmp_path, problem_type,
                                                              label_column):
    out = tmp_path / "out"
    results = audio_classification.main({
        "model_name_or_path": str(tiny_wav2vec2), "train_file": str(tone_csvs / "train.csv"),
        "test_file": str(tone_csvs / "test.csv"), "label_column": label_column, "problem_type": problem_type,
        "strategy": "full", "num_train_epochs": 3, "per_device_train_batch_size": 8, "bootstrap_resamples": 20,
        "output_dir": str(out)})
    inputs = [str(tone_csvs / "test" / f"{index}.wav") for index in range(12)]
    check_saved_run(out, tone_csvs / "test.csv", results, inputs, problem_type)


def text_run(tiny_bert, folder: Path, problem_type: str, **settings) -> dict:
    rows, test_rows = ((tagged_rows(64, 0), tagged_rows(16, 1)) if problem_type == "multi_label_classification"
                       else (scored_rows(64, 0), scored_rows(16, 1)))
    folder.mkdir(parents=True, exist_ok=True)
    return sentiment.main({"model_name_or_path": str(tiny_bert),
                           "train_file": str(write_csv(folder / "train.csv", rows)),
                           "test_file": str(write_csv(folder / "test.csv", test_rows)), "problem_type": problem_type,
                           "output_dir": str(folder / "out"), "bootstrap_resamples": 20, "dropout": 0.1,
                           "per_device_train_batch_size": 8, **settings})


@pytest.mark.parametrize("problem_type", ["multi_label_classification", "regression"])
def test_a_target_run_resumes_bit_exactly(tiny_bert, tmp_path, problem_type):
    """Resumed from the first checkpoint inside the second epoch, with dropout on (the random state comes back too)."""
    settings = dict(strategy="full", max_train_steps=16, save_steps=4, save_total_limit=4, eval_steps=4)
    whole = text_run(tiny_bert, tmp_path / "whole", problem_type, **settings)
    saved = sorted((tmp_path / "whole" / "out" / "checkpoints").glob("step-*"), key=lambda f: int(f.name[5:]))
    checkpoint = next(folder for folder in saved if json.loads((folder / "train_state.json").read_text())["epoch"] == 1)
    shutil.copytree(checkpoint, tmp_path / "resumed" / "out" / "checkpoints" / checkpoint.name)
    resumed = text_run(tiny_bert, tmp_path / "resumed", problem_type, resume_from_checkpoint="latest", **settings)
    metric = "test_f1_micro" if problem_type == "multi_label_classification" else "test_rmse"
    assert resumed[metric] == whole[metric]
    expected, actual = (load_file(str(tmp_path / run / "out" / "model.safetensors")) for run in ("whole", "resumed"))
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("problem_type", ["multi_label_classification", "regression"])
def test_a_target_run_trains_under_two_process_ddp(tiny_bert, tmp_path, problem_type):
    rows, test_rows = ((tagged_rows(64, 0), tagged_rows(15, 1)) if problem_type == "multi_label_classification"
                       else (scored_rows(64, 0), scored_rows(15, 1)))
    launched = launch_two_processes(
        str(RECIPES / "sentiment.py"), "--model_name_or_path", str(tiny_bert),
        "--train_file", str(write_csv(tmp_path / "train.csv", rows)),
        "--test_file", str(write_csv(tmp_path / "test.csv", test_rows)), "--problem_type", problem_type,
        "--strategy", "full", "--max_train_steps", "4", "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "4", "--bootstrap_resamples", "20", "--output_dir", str(tmp_path / "out"))
    assert launched.returncode == 0, launched.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert results["num_processes"] == 2 and results["test_samples"] == 15  # DDP's padding dropped
    items = [json.loads(line) for line in (tmp_path / "out" / "test_predictions.jsonl").read_text().splitlines()]
    # Gathered back in the file's order: each line pairs a text with its own target.
    assert [item["input"] for item in items] == [row["text"] for row in test_rows]
    expected = [row["label"] for row in test_rows]
    if problem_type == "regression":
        assert [item["reference"] for item in items] == pytest.approx(expected)
    else:  # listed in the head's label order
        assert [set(item["reference"]) for item in items] == [set(filter(None, row.split("|"))) for row in expected]
