"""`kill -9` a tiny run at random moments; the folder must then be complete, or unfinished and finished by the
command the refusal prints, with the results of a run that was never interrupted.

By default one kill per modality; `HF_TRANSFER_FAULT_TEST=N` kills each modality N times (BENCHMARKS.md).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from hf_transfer import cli
from hf_transfer.evaluation.inference import load_trained, predict
from hf_transfer.training.run_folder import RUN_RECORD, finish_command, read_record

KILLS = int(os.environ.get("HF_TRANSFER_FAULT_TEST", "1"))
PHASES = ("training", "checkpoint", "final write")
SHARED = {"strategy": "full", "max_train_steps": 6, "save_steps": 2, "logging_steps": 2, "eval_steps": 2,
          "warmup_ratio": 0.0, "per_device_train_batch_size": 8, "save_total_limit": 2}


def text_run(tiny_bert, sentiment_files):
    return "sentiment", {"model_name_or_path": str(tiny_bert), "train_file": str(sentiment_files["train"]),
                         "test_file": str(sentiment_files["test"]), "learning_rate": 5e-3, "dropout": 0.1, **SHARED}


def image_run(tiny_vit, images):
    # No augmentation: its random stream is not part of a checkpoint, so a resumed run would crop differently.
    return "image_classification", {"model_name_or_path": str(tiny_vit), "train_dir": str(images / "train"),
                                    "validation_dir": str(images / "val"), "learning_rate": 5e-3, "augment": "none",
                                    **SHARED}


CLI = [sys.executable, "-c", "from hf_transfer.cli import main; main()"]  # `hf-transfer`, from this interpreter


def _command(recipe: str, config: Path, output_dir: Path) -> list[str]:
    return [*CLI, "train", recipe, "--config", str(config), "--output_dir", str(output_dir)]


def _wait_for(process, condition, timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.001)
    return False


def _moment(phase: str, folder: Path, rng: random.Random, run_seconds: float):
    """When to kill: a random time into the run (which takes `run_seconds` from its record to its exit), as a
    checkpoint folder appears, or during the final write."""
    if phase == "training":
        started = []

        def condition():
            if not started and (folder / RUN_RECORD).is_file():
                started.append(time.monotonic() + rng.uniform(0, 0.9 * run_seconds))
            return bool(started) and time.monotonic() >= started[0]
        return condition
    if phase == "checkpoint":
        step = rng.choice((2, 4, 6))
        return lambda: (folder / "checkpoints" / f"step-{step}").exists()
    delay = rng.uniform(0, 0.3)
    seen = []

    def condition():  # the model's scratch folder is the final write's first file
        if not seen and (any(folder.glob(".partial-*")) or (folder / "config.json").is_file()):
            seen.append(time.monotonic() + delay)
        return bool(seen) and time.monotonic() >= seen[0]
    return condition


def _weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def kill_and_check(recipe: str, settings: dict, tmp_path: Path, kills: int) -> list[str]:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(settings))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    reference = tmp_path / "reference"
    process = subprocess.Popen(_command(recipe, config, reference), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    assert _wait_for(process, (reference / RUN_RECORD).is_file)
    recorded = time.monotonic()
    assert process.wait() == 0
    run_seconds = time.monotonic() - recorded  # how long a kill "during training" may wait, on this machine
    expected, expected_weights = json.loads((reference / "all_results.json").read_text()), _weights(reference)
    outcomes = []
    for kill in range(kills):
        rng = random.Random(kill)
        phase, folder = PHASES[kill % len(PHASES)], tmp_path / f"kill-{kill}"
        process = subprocess.Popen(_command(recipe, config, folder), env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        killed = _wait_for(process, _moment(phase, folder, rng, run_seconds))
        if killed:
            process.send_signal(signal.SIGKILL)
        process.wait()
        record = read_record(folder) if folder.is_dir() else None
        if not killed:
            outcome = "not killed: the run finished first"
            assert record["complete"]
        elif record and record["complete"]:
            outcome = "complete"
        elif record:  # unfinished: the command the refusal prints
            command = finish_command(folder)
            again = "--resume_from_checkpoint latest" if "latest" in command else "--overwrite_output_dir"
            outcome = f"unfinished, finished with {again}"
            subprocess.run([*CLI, *command[1:]], check=True, env=env, capture_output=True)
        else:  # killed before the run recorded itself: nothing to finish, the same command again
            outcome = "killed before the run started, then run again"
            subprocess.run(_command(recipe, config, folder), check=True, env=env, capture_output=True)
        model, processor, saved = load_trained(folder)
        example = str(settings.get("train_dir") and next(Path(settings["train_dir"]).rglob("*.png"))
                      or "the film was great")
        assert predict(model, processor, saved, [example])[0]["label"]
        assert json.loads((folder / "all_results.json").read_text()) == expected, (phase, outcome)
        actual_weights = _weights(folder)
        assert all((actual_weights[k] == v).all() for k, v in expected_weights.items()), (phase, outcome)
        outcomes.append(f"{recipe} kill {kill} during {phase}: {outcome}")
        print(outcomes[-1])
    return outcomes


@pytest.mark.slow
def test_a_killed_text_run_is_complete_or_finishes_with_the_same_results(tiny_bert, sentiment_files, tmp_path):
    kill_and_check(*text_run(tiny_bert, sentiment_files), tmp_path, KILLS)


@pytest.mark.slow
def test_a_killed_image_run_is_complete_or_finishes_with_the_same_results(tiny_vit, images, tmp_path):
    kill_and_check(*image_run(tiny_vit, images), tmp_path, KILLS)


def test_the_command_that_finishes_a_run_is_a_cli_command():
    assert cli.build_parser().parse_known_args(["train", "sentiment", "--config", "x.yaml"])[0].recipe == "sentiment"
