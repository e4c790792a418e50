"""Output folders: one run each, a completion record written last, resumes that check whose checkpoint it is."""

import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from datasets import ClassLabel, Dataset, DatasetDict
from fixtures import sentences, write_csv
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from hf_transfer import cli
from hf_transfer.config import TrainArgs, UsageError, parse
from hf_transfer.data.splits import LabelledSplits
from hf_transfer.evaluation.inference import evaluate_folder, load_trained, predict
from hf_transfer.io import atomic_save_files, atomic_write_json
from hf_transfer.publish.hub import push_folder
from hf_transfer.recipes import sentiment
from hf_transfer.training.folder_lock import LOCK
from hf_transfer.training.loop import Loop, TrainingDiverged
from hf_transfer.training.run_folder import (
    RUN_RECORD,
    differences,
    fingerprint,
    finish_command,
    mark_complete,
    read_record,
)


def train(tiny_bert, sentiment_files, output_dir, **overrides) -> dict:
    return sentiment.main({
        "model_name_or_path": str(tiny_bert), "train_file": str(sentiment_files["train"]),
        "test_file": str(sentiment_files["test"]), "output_dir": str(output_dir), "learning_rate": 5e-3,
        "per_device_train_batch_size": 16, "max_train_steps": 4, "logging_steps": 2, "warmup_ratio": 0.0,
        **overrides,
    })


def test_a_folder_of_another_run_is_refused_and_overwriting_deletes_its_files(tiny_bert, sentiment_files, tmp_path):
    train(tiny_bert, sentiment_files, tmp_path, strategy="lora")
    with pytest.raises(UsageError, match="is not empty: it holds .*--overwrite_output_dir"):
        train(tiny_bert, sentiment_files, tmp_path, strategy="full")
    assert (tmp_path / "adapter_config.json").is_file()  # the refusal changed nothing

    train(tiny_bert, sentiment_files, tmp_path, strategy="full", overwrite_output_dir=True)
    assert not (tmp_path / "adapter_config.json").exists()  # the LoRA run's adapter would be loaded instead
    model, _, settings = load_trained(tmp_path)
    assert settings["strategy"] == "full" and type(model).__name__ == "BertForSequenceClassification"


def test_overwriting_never_deletes_a_folder_that_is_not_a_run(tiny_bert, sentiment_files, tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(UsageError, match="not an hf_transfer run's .*thesis.tex"):
        train(tiny_bert, sentiment_files, tmp_path, overwrite_output_dir=True)
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_overwriting_deletes_only_what_the_run_wrote_and_says_what_it_kept(tiny_bert, sentiment_files, tmp_path,
                                                                           capsys):
    train(tiny_bert, sentiment_files, tmp_path, strategy="lora", save_steps=2)
    record = read_record(tmp_path)
    assert "checkpoints/step-2/model.safetensors" in record["files"] and "checkpoints" in record["folders"]
    (tmp_path / "shift").mkdir()  # another command's output, nested under the run as the README's examples do
    (tmp_path / "shift" / "shift.json").write_text("{}")
    (tmp_path / "notes.md").write_text("what I tried")
    nested = tmp_path / "shift" / "run"
    shutil.copytree(tmp_path, nested, ignore=shutil.ignore_patterns("shift"))  # a whole run, nested
    capsys.readouterr()

    train(tiny_bert, sentiment_files, tmp_path, strategy="full", overwrite_output_dir=True)
    assert "Kept in" in capsys.readouterr().out and read_record(tmp_path)["kept"] == ["notes.md", "shift"]
    assert (tmp_path / "notes.md").read_text() == "what I tried" and (tmp_path / "shift" / "shift.json").is_file()
    assert read_record(nested)["complete"] and (nested / "adapter_config.json").is_file()
    assert not (tmp_path / "adapter_config.json").exists() and not (tmp_path / "checkpoints").exists()
    assert not any(name.startswith(("notes", "shift")) for name in read_record(tmp_path)["files"])

    # A run killed before its first checkpoint: overwriting it still keeps what the first run kept.
    atomic_write_json(tmp_path / RUN_RECORD, {**read_record(tmp_path), "complete": False})
    train(tiny_bert, sentiment_files, tmp_path, strategy="lora", overwrite_output_dir=True)
    assert (tmp_path / "notes.md").is_file() and read_record(nested)["complete"]
    assert (tmp_path / "adapter_config.json").is_file()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_bert, sentiment_files):
    """A finished full fine-tuning run with checkpoints at steps 2 and 4."""
    folder = tmp_path_factory.mktemp("finished") / "out"
    train(tiny_bert, sentiment_files, folder, strategy="full", save_steps=2, save_total_limit=2)
    return folder


def test_an_unfinished_folder_is_refused_with_the_command_that_finishes_it(finished, sentiment_files, tmp_path):
    folder = tmp_path / "out"
    shutil.copytree(finished, folder)
    expected = json.loads((folder / "all_results.json").read_text())
    record = read_record(folder)
    # What a kill during the final write leaves: the record still says the run is under way.
    atomic_write_json(folder / RUN_RECORD, {**record, "complete": False})
    command = finish_command(folder)
    assert command[:3] == ["hf-transfer", "train", "sentiment"] and command[-2:] == ["--resume_from_checkpoint",
                                                                                     "latest"]
    refusal = f"unfinished run.*Finish it with: {shlex.join(command)}".replace("[", r"\[")
    with pytest.raises(UsageError, match=refusal):
        load_trained(folder)
    with pytest.raises(UsageError, match="unfinished run"):
        evaluate_folder(folder, str(sentiment_files["test"]), tmp_path / "report")
    with pytest.raises(UsageError, match="unfinished run"):
        push_folder(folder, "user/never-pushed")

    cli.main(command[1:])  # the printed command, as a user would paste it
    assert read_record(folder)["complete"]
    assert json.loads((folder / "all_results.json").read_text()) == expected
    model, tokenizer, settings = load_trained(folder)
    assert predict(model, tokenizer, settings, ["the film was great and lovely"])[0]["label"] in ("negative",
                                                                                                 "positive")


def test_evaluate_reads_integer_class_labels_as_training_does(finished, sentiment_files, tmp_path):
    """A split saved from the Hub (`to_parquet`) stores its labels as ClassLabel ids; training reads them by name."""
    by_id = Dataset.from_csv(str(sentiment_files["test"]))
    by_id = by_id.cast_column("label", ClassLabel(names=["negative", "positive"]))
    assert isinstance(by_id[0]["label"], int)
    by_id.to_parquet(tmp_path / "test.parquet")
    expected = evaluate_folder(finished, str(sentiment_files["test"]), tmp_path / "by_name")
    results = evaluate_folder(finished, str(tmp_path / "test.parquet"), tmp_path / "by_id")
    assert results["test_accuracy"] == expected["test_accuracy"] and results["test_samples"] == 40


def test_evaluate_never_writes_its_report_into_a_run_folder(finished, sentiment_files, tmp_path):
    before = read_record(finished)
    for report_dir in (finished, finished / "checkpoints" / "step-4"):
        with pytest.raises(UsageError, match="--report_dir .* holds a training run"):
            evaluate_folder(finished, str(sentiment_files["test"]), report_dir)
    assert read_record(finished) == before


def test_a_file_changed_after_the_run_finished_is_refused(finished, tmp_path):
    folder = tmp_path / "out"
    shutil.copytree(finished, folder)
    (folder / "all_results.json").write_text("{}")
    with pytest.raises(UsageError, match="all_results.json changed"):
        load_trained(folder)


def test_a_swapped_weights_file_is_refused(finished, tmp_path):
    folder = tmp_path / "out"
    shutil.copytree(finished, folder)
    weights = load_file(str(folder / "model.safetensors"))
    save_file({name: torch.zeros_like(value) for name, value in weights.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    assert (folder / "model.safetensors").stat().st_size == (finished / "model.safetensors").stat().st_size
    with pytest.raises(UsageError, match="model.safetensors changed"):
        load_trained(folder)


def test_a_second_run_into_a_folder_in_use_fails_at_once(tiny_bert, sentiment_files, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    lock = {"pid": os.getppid(), "host": socket.gethostname(), "started": "2025-01-01 10:00:00"}  # alive
    (folder / LOCK).write_text(json.dumps(lock))
    with pytest.raises(UsageError, match=f"in use: another run \\(process {os.getppid()} on .* delete .*{LOCK}"):
        train(tiny_bert, sentiment_files, folder, overwrite_output_dir=True)
    assert sorted(p.name for p in folder.iterdir()) == [LOCK]  # nothing read, nothing written

    ended = subprocess.Popen(["true"])
    ended.wait()  # a process that has ended (a killed run): its lock is stale
    (folder / LOCK).write_text(json.dumps({**lock, "pid": ended.pid}))
    train(tiny_bert, sentiment_files, folder)
    assert read_record(folder)["complete"] and not (folder / LOCK).exists()  # taken over, then let go
    with pytest.raises(UsageError, match="is not empty"):
        train(tiny_bert, sentiment_files, folder)
    assert not (folder / LOCK).exists()  # a refused run lets go of the lock too


@pytest.mark.parametrize("change, named", [
    ({"learning_rate": 1e-3}, "settings.learning_rate: 0.005 -> 0.001"),
    ({"strategy": "lora"}, "settings.strategy: 'full' -> 'lora'"),
    ({"train_file": "other"}, "data.files.train_file.bytes"),
])
def test_resume_refuses_the_checkpoint_of_another_run(finished, tiny_bert, sentiment_files, tmp_path, change, named):
    folder = tmp_path / "out"
    shutil.copytree(finished / "checkpoints", folder / "checkpoints")
    files = dict(sentiment_files)
    if change.get("train_file"):
        changed = tmp_path / "train.csv"
        changed.write_text(sentiment_files["train"].read_text() + "the film was great and superb,positive\n")
        files["train"], change = changed, {}
    with pytest.raises(UsageError, match="belongs to another run: .*" + re.escape(named)):
        train(tiny_bert, files, folder, **{"strategy": "full", "save_steps": 2, "resume_from_checkpoint": "latest",
                                           **change})


def test_the_resume_fingerprint_sees_a_change_at_the_end_of_a_big_file(tiny_bert, tmp_path):
    train_file = write_csv(tmp_path / "train.csv", sentences(4000))
    assert train_file.stat().st_size > 2 * 65536
    run = parse([], {"model_name_or_path": str(tiny_bert), "train_file": str(train_file)})
    data = LabelledSplits(DatasetDict(), ["negative", "positive"], {})
    before = fingerprint(run, data)
    text = train_file.read_bytes()
    last_row = text.rstrip()
    label = last_row.rsplit(b",", 1)[1]
    flipped = {b"positive": b"negative", b"negative": b"positive"}[label]  # the same size: the last row relabelled
    train_file.write_bytes(last_row[:-len(label)] + flipped + text[len(last_row):])
    assert train_file.stat().st_size == len(text)
    assert any(line.startswith("data.files.train_file.") for line in differences(before, fingerprint(run, data)))


def test_files_and_folders_get_the_users_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "results.json", {"a": 1})

        def save(folder):
            (folder / "model.safetensors").write_bytes(b"weights")
            os.chmod(folder / "model.safetensors", 0o600)  # as safetensors' save_file leaves it
            (folder / "sub").mkdir()

        atomic_save_files(tmp_path / "model", save)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model" / "model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model" / "sub").stat().st_mode) == 0o755


def test_a_trained_folder_is_readable_by_the_group(finished):
    for name in ("model.safetensors", "all_results.json", "run_config.yaml", "README.md", RUN_RECORD):
        assert stat.S_IMODE((finished / name).stat().st_mode) & 0o044 == 0o044, name
    checkpoint = finished / "checkpoints" / "step-4"
    for path in checkpoint.iterdir():  # safetensors writes its weights 0600; a teammate resumes from them
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path.name


def test_pickle_weights_load_only_with_allow_pickle(finished, tmp_path):
    folder = tmp_path / "out"
    shutil.copytree(finished, folder)
    weights = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    mark_complete(folder)  # as if the run had written pickle weights
    with pytest.raises(UsageError, match=r"only pickle weights \(pytorch_model.bin\).*--allow_pickle"):
        load_trained(folder)
    with pytest.raises(SystemExit, match="--allow_pickle"):
        cli.main(["predict", str(folder), "the film was great"])
    model, _, _ = load_trained(folder, allow_pickle=True)
    torch.testing.assert_close(model.state_dict()["classifier.weight"], weights["classifier.weight"])


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.layer(x)


def test_a_nan_loss_stops_training_at_its_step(tmp_path):
    args = TrainArgs(output_dir=str(tmp_path), max_train_steps=20, logging_steps=5, learning_rate=0.1,
                     warmup_ratio=0.0, lr_scheduler_type="constant", save_steps=10)
    model = Linear()
    loader = DataLoader(torch.randn(64, 2), batch_size=2)
    calls = []

    def compute_loss(model, batch, progress):
        calls.append(1)
        loss = model(batch).pow(2).mean()
        return loss * float("nan") if len(calls) == 3 else loss

    loop = Loop(Accelerator(cpu=True), model, torch.optim.SGD(model.parameters(), lr=0.1), loader, compute_loss,
                lambda model: {"accuracy": 1.0}, args, tmp_path)
    with pytest.raises(TrainingDiverged, match=r"NaN or infinite at step 3 \(learning rate 0.1\).*--learning_rate"
                                               r".*bf16.*--max_grad_norm"):
        loop.fit()
    assert len(calls) == 5  # found at the first logging step, not an epoch later
    assert not (tmp_path / "checkpoints").exists()  # nothing diverged was saved


def test_a_disk_without_room_for_the_weights_is_refused_before_training(tiny_bert, sentiment_files, tmp_path,
                                                                        monkeypatch):
    from hf_transfer.training import run_folder

    monkeypatch.setattr(run_folder, "free_bytes", lambda folder: 1000)
    with pytest.raises(UsageError, match=r"--output_dir .*out: 1 kB free on its disk, but this run writes up to "
                                         r"[\d.]+ MB .*free some space or choose another --output_dir"):
        train(tiny_bert, sentiment_files, tmp_path / "out", strategy="full", save_steps=2)
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_a_failed_write_of_the_weights_is_a_message_not_a_traceback(tiny_bert, sentiment_files, tmp_path,
                                                                     monkeypatch):
    from safetensors import SafetensorError

    def disk_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, message: \"No space left on device\" })")

    monkeypatch.setattr("transformers.modeling_utils.safe_save_file", disk_full)
    with pytest.raises(UsageError, match=r"writing the trained model to .*out failed \(.*No space left on device"):
        train(tiny_bert, sentiment_files, tmp_path / "out", strategy="full")
    assert read_record(tmp_path / "out")["complete"] is False


def test_nan_scores_on_the_test_split_keep_the_trained_weights_and_name_the_row(tiny_bert, sentiment_files, tmp_path,
                                                                                 monkeypatch):
    """A test input the model overflows on: the error names its row, and the training is not lost."""
    from hf_transfer import recipe

    def nan_on_test(accelerator, model, loader, scores):
        probabilities, references = real(accelerator, model, loader, scores)
        if len(references) == 40:  # the test split (validation holds 16)
            probabilities[3] = np.nan
        return probabilities, references

    real = recipe.predict
    monkeypatch.setattr(recipe, "predict", nan_on_test)
    with pytest.raises(UsageError, match=r"1 example\(s\) of the test split got NaN or infinite scores, the first at "
                                         r".*test.csv: data row \d+ .*the trained model is saved in"):
        train(tiny_bert, sentiment_files, tmp_path / "out", strategy="full")
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert read_record(tmp_path / "out")["complete"] is False
