"""`hf-transfer shift`: the proxy A-distance of a checkpoint's features, the class counts of each domain."""

import json

import pytest
from fixtures import sentences, write_csv

from hf_transfer.cli import main as cli
from hf_transfer.config import UsageError
from hf_transfer.selection.shift import FROM_SCRATCH_NOTE
from hf_transfer.selection.shift import main as shift


def run(tiny_bert, sentiment_files, target, tmp_path, model=None) -> dict:
    return shift(["--model", model or str(tiny_bert), "--train_file", str(sentiment_files["train"]),
                  "--target_train_file", str(target), "--output_dir", str(tmp_path / "shift")])


def test_a_domain_of_other_words_is_far_and_the_same_domain_is_near(tiny_bert, sentiment_files, tmp_path, capsys):
    near = write_csv(tmp_path / "near.csv", sentences(160, seed=7))
    far = write_csv(tmp_path / "far.csv", [{"text": "zebra quartz umbrella " * (i % 3 + 1)} for i in range(160)])
    same = run(tiny_bert, sentiment_files, near, tmp_path)
    other = run(tiny_bert, sentiment_files, far, tmp_path)
    assert other["proxy_a_distance"] > 1.8
    assert same["proxy_a_distance"] < 0.5
    assert same["class_counts"] == {"source": {"negative": 80, "positive": 80},
                                    "target": {"negative": 80, "positive": 80}}
    assert other["class_counts"]["target"] is None  # no label column: unknown, not guessed
    assert json.loads((tmp_path / "shift" / "shift.json").read_text()) == other
    shown = capsys.readouterr().out
    assert "proxy A-distance" in shown and "target: 160 examples; classes: labels unknown" in shown


def test_random_weights_are_measured_with_a_note(tiny_bert, sentiment_files, tmp_path, capsys):
    results = run(tiny_bert, sentiment_files, sentiment_files["test"], tmp_path, model=f"random:{tiny_bert}")
    assert results["note"] == FROM_SCRATCH_NOTE
    assert "note: random weights" in capsys.readouterr().out


def test_audio_class_folders_count_the_target_classes(tiny_wav2vec2, tones, tmp_path):
    results = shift(["--model", str(tiny_wav2vec2), "--train_dir", str(tones / "train"), "--target_train_dir",
                     str(tones / "test"), "--max_duration_seconds", "0.25", "--output_dir", str(tmp_path)])
    assert results["task"] == "audio-classification"
    assert results["examples"]["target"] == sum(results["class_counts"]["target"].values())
    assert 0 <= results["proxy_a_distance"] <= 2


def test_a_distance_below_0_is_shown_as_0_with_its_reason(tiny_bert, sentiment_files, tmp_path, capsys,
                                                          monkeypatch):
    # A domain classifier that does worse than a coin on held-out features (noise on small samples).
    monkeypatch.setattr("hf_transfer.selection.transferability.linear_probe_accuracy", lambda *_: 0.35)
    assert run(tiny_bert, sentiment_files, sentiment_files["test"], tmp_path)["proxy_a_distance"] == 0.0
    assert "no better than chance" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    ([], "give the target data"),
    (["--target_train_file", "a.csv", "--target_train_dir", "b"], "one of them"),
    (["--target_train_file", "missing.csv"], "data file not found: missing.csv"),
])
def test_bad_shift_flags_are_named(tiny_bert, sentiment_files, flags, message):
    with pytest.raises(UsageError, match=message):
        shift(["--model", str(tiny_bert), "--train_file", str(sentiment_files["train"]), *flags])


def test_the_cli_runs_shift_with_its_own_flags(tiny_bert, sentiment_files, tmp_path):
    cli(["shift", "--model", str(tiny_bert), "--train_file", str(sentiment_files["train"]), "--target_train_file",
         str(sentiment_files["test"]), "--output_dir", str(tmp_path)])
    assert (tmp_path / "shift.json").is_file()
