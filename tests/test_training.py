"""The sentiment recipe end to end on a tiny model: strategies, resume, early stopping, reload."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from hf_transfer.evaluation.inference import load_trained
from hf_transfer.recipes import sentiment


def run(tiny_bert, sentiment_files, output_dir, **overrides):
    config = {
        "model_name_or_path": str(tiny_bert), "train_file": str(sentiment_files["train"]),
        "test_file": str(sentiment_files["test"]), "output_dir": str(output_dir), "learning_rate": 5e-3,
        "per_device_train_batch_size": 16, "max_train_steps": 16, "logging_steps": 2, "warmup_ratio": 0.0,
        **overrides,
    }
    results = sentiment.main(config)
    return results, json.loads((output_dir / "all_results.json").read_text())


@pytest.mark.parametrize("strategy", ["full", "feature_extraction", "partial", "lora"])
def test_every_strategy_trains_and_its_loss_falls(tiny_bert, sentiment_files, tmp_path, strategy):
    # Adapters on a random tiny backbone need a higher rate to move within 16 steps.
    results, saved = run(tiny_bert, sentiment_files, tmp_path, strategy=strategy, unfreeze_layers=1,
                         learning_rate=3e-2 if strategy == "lora" else 5e-3)
    assert results == saved
    state = json.loads(json.dumps(results))
    assert state["train_steps"] == 16
    assert state["eval_samples"] == 16 and state["test_samples"] == 40  # 10% of 160 held out; all of test
    for name in ("README.md", "eval_report.md", "confusion_matrix.png", "roc_curve.png", "run_config.yaml",
                 "tokenizer.json", "config.json"):
        assert (tmp_path / name).is_file(), name
    model_file = "adapter_model.safetensors" if strategy == "lora" else "model.safetensors"
    assert (tmp_path / model_file).is_file()
    assert not (tmp_path / "checkpoints").exists()  # the best weights' scratch copy is cleaned up
    losses = [entry["train_loss"] for entry in json.loads((tmp_path / "train_log.json").read_text())["train"]]
    assert len(losses) == 8
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def weights(output_dir):
    name = "adapter_model.safetensors" if (output_dir / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(str(output_dir / name))


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_resume_continues_the_same_run(tiny_bert, sentiment_files, tmp_path, strategy):
    """Resumed inside the first epoch and inside the second (144 training examples: 9 batches an epoch), where the
    order must be the second epoch's (accelerate before 1.15 drew the first's again)."""
    settings = dict(strategy=strategy, max_train_steps=16, save_steps=4, save_total_limit=4, eval_steps=4,
                    dropout=0.1)  # dropout on: resuming must restore the random state too
    whole, _ = run(tiny_bert, sentiment_files, tmp_path / "whole", **settings)
    expected = weights(tmp_path / "whole")
    for step, epoch in ((4, 0), (12, 1)):
        checkpoint = tmp_path / "whole" / "checkpoints" / f"step-{step}"
        assert json.loads((checkpoint / "train_state.json").read_text())["epoch"] == epoch
        # An interrupted run: only what was on disk at that step survives.
        folder = tmp_path / f"resumed-{step}"
        shutil.copytree(checkpoint, folder / "checkpoints" / checkpoint.name)
        resumed, _ = run(tiny_bert, sentiment_files, folder, resume_from_checkpoint="latest", **settings)
        assert resumed == whole, step
        actual = weights(folder)
        assert expected.keys() == actual.keys()
        for name in expected:
            torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=f"step {step}: {name}")


def test_resume_from_a_folder_that_is_not_a_checkpoint_is_refused(tiny_bert, sentiment_files, tmp_path):
    from hf_transfer.config import UsageError

    with pytest.raises(UsageError, match="not a checkpoint folder"):
        run(tiny_bert, sentiment_files, tmp_path, resume_from_checkpoint=str(tmp_path))


def test_early_stopping_stops_when_the_metric_stalls(tiny_bert, sentiment_files, tmp_path):
    results, _ = run(tiny_bert, sentiment_files, tmp_path, strategy="full", learning_rate=1e-12, eval_steps=1,
                     early_stopping_patience=2, metric_for_best_model="f1_macro")
    assert results["train_steps"] == 3  # best at step 1, then two evaluations without improvement
    assert results["best_step"] == 1


def test_reload_gives_the_predictions_of_the_end_of_training(tiny_bert, sentiment_files, tmp_path):
    """LoRA save -> load: same logits, head included (a random head after reload is peft's classic bug)."""
    run(tiny_bert, sentiment_files, tmp_path, strategy="lora", learning_rate=3e-2, lora_dropout=0.0)
    model, tokenizer, _ = load_trained(tmp_path)
    batch = tokenizer(["the film was great and lovely", "this app was awful and broken"], return_tensors="pt",
                      padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
        base_logits = model.get_base_model()(**batch).logits  # still adapted: peft injects in place
        with model.disable_adapter():
            plain_logits = model(**batch).logits
    # The saved test predictions came from the in-memory model at the end of training: compare scores.
    results = json.loads((tmp_path / "all_results.json").read_text())
    from hf_transfer.evaluation.inference import evaluate_folder

    again = evaluate_folder(tmp_path, str(sentiment_files["test"]), tmp_path / "evaluation")
    assert again["test_roc_auc"] == pytest.approx(results["test_roc_auc"], abs=1e-6)
    assert again["test_accuracy"] == results["test_accuracy"]
    torch.testing.assert_close(logits, base_logits)
    assert not torch.allclose(logits, plain_logits, atol=1e-3)  # the adapter and head really changed the model
    head = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert any("classifier" in name for name in head)


def test_class_weights_auto_and_label_smoothing_run(tiny_bert, sentiment_files, tmp_path):
    results, _ = run(tiny_bert, sentiment_files, tmp_path, strategy="full", class_weights="auto",
                     label_smoothing=0.1, max_train_steps=4)
    assert results["train_steps"] == 4


def test_tensorboard_logging_writes_events(tiny_bert, sentiment_files, tmp_path):
    run(tiny_bert, sentiment_files, tmp_path, strategy="full", report_to="tensorboard", max_train_steps=4)
    assert list(tmp_path.rglob("events.out.tfevents.*"))


def test_sentence_pair_model_is_scored_on_both_columns(tiny_bert, tmp_path):
    """A pair classifier reads its second column when scored again; `predict` of single texts is refused."""
    from fixtures import sentences, write_csv

    from hf_transfer.cli import main as cli
    from hf_transfer.evaluation.inference import evaluate_folder

    def pairs(count, seed):  # the label shows in the second sentence only
        return [{"premise": "a review", "hypothesis": row["text"], "label": row["label"]}
                for row in sentences(count, seed=seed)]

    train, test = write_csv(tmp_path / "train.csv", pairs(80, 0)), write_csv(tmp_path / "test.csv", pairs(24, 1))
    results = sentiment.main({"model_name_or_path": str(tiny_bert), "train_file": str(train), "test_file": str(test),
                              "text_column": "premise", "text_pair_column": "hypothesis", "strategy": "full",
                              "output_dir": str(tmp_path / "out"), "learning_rate": 5e-3, "max_train_steps": 8})
    again = evaluate_folder(tmp_path / "out", str(test), tmp_path / "evaluation")
    assert again["test_roc_auc"] == pytest.approx(results["test_roc_auc"], abs=1e-6)
    with pytest.raises(SystemExit, match="classifies text pairs"):
        cli(["predict", str(tmp_path / "out"), "one sentence"])


def test_precision_is_the_launchers_unless_given_and_can_change_between_runs(tiny_bert, sentiment_files, tmp_path,
                                                                              monkeypatch):
    """Two runs in one process (a notebook kernel) with different precisions; no flag means the launcher's."""
    import yaml

    def precision(output_dir):
        return yaml.safe_load((output_dir / "run_config.yaml").read_text())["mixed_precision"]

    run(tiny_bert, sentiment_files, tmp_path / "fp32", strategy="full", max_train_steps=2, mixed_precision="no")
    run(tiny_bert, sentiment_files, tmp_path / "bf16", strategy="full", max_train_steps=2, mixed_precision="bf16")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    run(tiny_bert, sentiment_files, tmp_path / "launcher", strategy="full", max_train_steps=2)
    assert [precision(tmp_path / name) for name in ("fp32", "bf16", "launcher")] == ["no", "bf16", "bf16"]


def test_early_stop_before_the_first_logged_loss_still_saves_everything(tiny_bert, sentiment_files, tmp_path):
    results, _ = run(tiny_bert, sentiment_files, tmp_path, strategy="full", learning_rate=1e-12, eval_steps=1,
                     early_stopping_patience=2, logging_steps=100)
    assert results["train_steps"] == 3
    assert results["train_loss"] == pytest.approx(0.69, abs=0.05)  # the mean over the 3 steps run: two classes
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "README.md").is_file()
    assert [entry["step"] for entry in json.loads((tmp_path / "train_log.json").read_text())["train"]] == [3]


@pytest.mark.parametrize("metric, message", [
    ("f1_score", r"--metric_for_best_model f1_score: not among this task.s metrics \(accuracy, "),
    ("wer", "--metric_for_best_model wer: not among"),
    ("roc_auc", "ROC AUC is undefined on .*val.csv: class.*'positive' have no example there; pick another"),
])
def test_metric_for_best_model_is_checked_before_training(tiny_bert, sentiment_files, tmp_path, metric, message,
                                                          monkeypatch):
    from fixtures import sentences, write_csv

    from hf_transfer.config import UsageError
    from hf_transfer.training.loop import Loop

    validation = write_csv(tmp_path / "val.csv", [row for row in sentences(20) if row["label"] == "negative"])
    monkeypatch.setattr(Loop, "fit", lambda self: pytest.fail("training started"))
    with pytest.raises(UsageError, match=message):
        run(tiny_bert, sentiment_files, tmp_path / "out", validation_file=str(validation),
            metric_for_best_model=metric)


def test_a_run_shows_its_own_lines_and_plots_its_learning_curve(sentiment_files, tmp_path):
    """A checkpoint with a 3-label head trained on 2 labels: one line about the new head, not transformers' table."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from fixtures import make_tiny_model

    checkpoint = make_tiny_model(tmp_path / "three-labels", num_labels=3)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "hf-transfer"), "train", "sentiment",
         "--model_name_or_path", str(checkpoint),
         "--train_file", str(sentiment_files["train"]), "--output_dir", str(tmp_path / "out"), "--strategy", "full",
         "--max_train_steps", "4", "--eval_steps", "2", "--logging_steps", "1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    assert "new head: classifier (2 labels), initialised" in done.stdout
    assert "LOAD REPORT" not in done.stdout + done.stderr
    assert "Warning" not in done.stderr
    assert (tmp_path / "out" / "learning_curve.png").is_file()
    assert "![learning curve](learning_curve.png)" in (tmp_path / "out" / "eval_report.md").read_text()


def test_library_output_is_quiet_inside_and_restored_after():
    import transformers

    from hf_transfer.console import library_output

    before = transformers.logging.get_verbosity()
    with library_output(verbose=False):
        assert transformers.logging.get_verbosity() == transformers.logging.ERROR
    assert transformers.logging.get_verbosity() == before
    with library_output(verbose=True):
        assert transformers.logging.get_verbosity() == before


@pytest.mark.parametrize("cpus, local_processes, start_method, given, expected", [
    (2, 1, "fork", None, 0),  # a spare core is worth more than a worker process
    (4, 1, "fork", None, 3),
    (16, 1, "fork", None, 4),
    (16, 8, "fork", None, 0),  # 8 processes on 16 CPUs: one spare each
    (16, 1, "spawn", None, 0),  # spawn can't pickle the collators
    (2, 1, "fork", 3, 3),  # the flag wins
])
def test_dataloader_workers_are_sized_from_the_cpus(monkeypatch, cpus, local_processes, start_method, given,
                                                     expected):
    import multiprocessing
    import os

    from hf_transfer.config import TrainArgs
    from hf_transfer.training.loop import dataloader_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda: start_method)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_processes))
    assert dataloader_workers(TrainArgs(dataloader_num_workers=given)) == expected


def test_predict_and_evaluate_run_on_the_gpu_when_there_is_one(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    from hf_transfer.evaluation.inference import inference_device
    from hf_transfer.evaluation.inference import predict as predict_texts

    run(tiny_bert, sentiment_files, tmp_path, strategy="lora", max_train_steps=2)
    model, tokenizer, settings = load_trained(tmp_path)
    assert model.device == inference_device()
    assert predict_texts(model, tokenizer, settings, ["the film was great"])[0]["label"] in ("negative", "positive")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert inference_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert inference_device() == torch.device("cpu")


def test_batches_copy_to_the_device_without_the_host_waiting(tmp_path):
    from hf_transfer.config import TrainArgs
    from hf_transfer.training.loop import new_accelerator

    accelerator = new_accelerator(TrainArgs(output_dir=str(tmp_path)), str(tmp_path), cpu=True)
    assert accelerator.dataloader_config.non_blocking and accelerator.non_blocking
