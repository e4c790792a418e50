"""Everything that can be checked before training is: images of every split, model folders, lengths, trackers."""

import importlib.util
import shutil

import pytest

from hf_transfer.config import TrainArgs, UsageError
from hf_transfer.recipes import image_classification, sentiment


def train_images(tiny_vit, output_dir, **overrides) -> dict:
    return image_classification.main({
        "model_name_or_path": str(tiny_vit), "output_dir": str(output_dir), "learning_rate": 5e-3,
        "per_device_train_batch_size": 8, "max_train_steps": 2, "warmup_ratio": 0.0, **overrides})


@pytest.fixture
def broken_test_dir(images, tmp_path):
    """A copy of the validation folders as a test set, one of its images cut in half."""
    test_dir = tmp_path / "test"
    shutil.copytree(images / "val", test_dir)
    broken = test_dir / "red" / "3.png"
    broken.write_bytes(broken.read_bytes()[:200])
    return test_dir


def test_a_corrupt_test_image_stops_the_run_before_training(tiny_vit, images, broken_test_dir, tmp_path):
    with pytest.raises(UsageError, match=r"1 image\(s\) of the test split can't be used: can't read image "
                                         r".*red/3.png.*--bad_images skip"):
        train_images(tiny_vit, tmp_path / "out", train_dir=str(images / "train"),
                     validation_dir=str(images / "val"), test_dir=str(broken_test_dir))
    assert not (tmp_path / "out").exists()  # refused before the output folder was even claimed


def test_bad_images_skip_leaves_the_corrupt_image_out(tiny_vit, images, broken_test_dir, tmp_path):
    results = train_images(tiny_vit, tmp_path / "out", train_dir=str(images / "train"),
                           validation_dir=str(images / "val"), test_dir=str(broken_test_dir), bad_images="skip")
    assert results["test_samples"] == 15  # 16 less the corrupt one


def test_a_corrupt_training_image_is_named(tiny_vit, images, tmp_path):
    train_dir = tmp_path / "train"
    shutil.copytree(images / "train", train_dir)
    (train_dir / "blue" / "0.png").write_text("not a png")
    with pytest.raises(UsageError, match=r"of the train split can't be used: can't read image .*blue/0.png"):
        train_images(tiny_vit, tmp_path / "out", train_dir=str(train_dir), validation_dir=str(images / "val"))


def train_text(tiny_bert, sentiment_files, output_dir, **overrides) -> dict:
    return sentiment.main({"model_name_or_path": str(tiny_bert), "train_file": str(sentiment_files["train"]),
                           "output_dir": str(output_dir), "max_train_steps": 2, **overrides})


@pytest.mark.parametrize("make_folder, message", [
    (lambda p: str(p / "no-such-model"), "--model_name_or_path .*no-such-model: no such folder"),
    (lambda p: str(p), "the folder is not a model checkpoint, it has no config.json and no weights"),
    (lambda p: (p / "config.json").write_text("{}") and str(p), "it has no weights \\(model.safetensors"),
], ids=["missing", "empty", "config only"])
def test_a_bad_local_model_folder_says_what_is_wrong(sentiment_files, tmp_path, make_folder, message):
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(UsageError, match=message):
        train_text(folder, sentiment_files, tmp_path / "out", model_name_or_path=make_folder(folder))


def test_a_max_seq_length_beyond_the_positions_is_refused(tiny_bert, sentiment_files, tmp_path):
    with pytest.raises(UsageError, match="--max_seq_length 512 is beyond this bert model's 128 positions"):
        train_text(tiny_bert, sentiment_files, tmp_path / "out", max_seq_length=512)


def test_a_tracker_that_is_not_installed_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name))
    with pytest.raises(UsageError, match=r"tensorboard is not installed; pip install 'hf-transfer-kit\[tensorboard\]'"):
        TrainArgs(report_to="tensorboard")


def test_a_folder_left_by_a_run_stopped_before_training_can_be_used_again(tiny_bert, sentiment_files, tmp_path):
    with pytest.raises(UsageError, match="--max_seq_length"):
        train_text(tiny_bert, sentiment_files, tmp_path / "out", max_seq_length=512)
    results = train_text(tiny_bert, sentiment_files, tmp_path / "out")  # no --overwrite_output_dir needed
    assert results["train_steps"] == 2


def test_the_output_folder_is_test_written_before_training(tiny_bert, sentiment_files, tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(UsageError, match="--output_dir .*taken/out: .*taken is a file, not a folder"):
        train_text(tiny_bert, sentiment_files, tmp_path / "taken" / "out")

