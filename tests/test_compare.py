"""`hf-transfer compare` on fabricated prediction files with a known difference."""

import json

import numpy as np
import pytest

from hf_transfer.cli import main
from hf_transfer.config import UsageError
from hf_transfer.evaluation.compare import compare_runs
from hf_transfer.evaluation.item_predictions import (
    classification_items,
    multilabel_items,
    regression_items,
    transcription_items,
    write_items,
)
from hf_transfer.io import atomic_write_json
from hf_transfer.metrics.intervals import error_counts
from hf_transfer.training.run_folder import RUN_RECORD

NAMES = ["ant", "bee"]


def write_run(folder, wrong: set[int], count=120):
    """A run right on every item but those in `wrong`; references alternate ant/bee."""
    folder.mkdir()
    references = np.arange(count) % 2
    predictions = np.array([1 - r if i in wrong else r for i, r in enumerate(references)])
    probabilities = np.where(np.eye(2)[predictions] == 1, 0.8, 0.2)
    write_items(folder, "test", classification_items([f"img{i}.jpg" for i in range(count)], probabilities,
                                                     references, predictions, NAMES, None))
    return folder


def test_compare_finds_the_known_difference(tmp_path, capsys):
    # A misses items 0-5, B misses 0-5 and 6-35: A - B = 30 / 120 = 0.25 in accuracy, 30 items only A gets right.
    run_a = write_run(tmp_path / "a", set(range(6)))
    run_b = write_run(tmp_path / "b", set(range(36)))
    result = compare_runs(run_a, run_b)
    accuracy = result["differences"][0]
    assert accuracy["metric"] == "accuracy"
    assert (accuracy["value_a"], accuracy["value_b"]) == pytest.approx((0.95, 0.7))
    assert accuracy["difference"] == pytest.approx(0.25)
    assert 0.15 < accuracy["ci_low"] < 0.25 < accuracy["ci_high"] < 0.35
    assert accuracy["share_a_better"] == 1.0
    assert (result["mcnemar"]["only_a"], result["mcnemar"]["only_b"]) == (30, 0)
    assert result["mcnemar"]["p_value"] < 1e-6  # chi-square (29^2 / 30 = 28.0)
    assert [d["metric"] for d in result["differences"]] == ["accuracy", "f1_macro", "roc_auc"]
    main(["compare", str(run_a), str(run_b)])
    out = capsys.readouterr().out
    assert "| accuracy | 0.9500 | 0.7000 | +0.2500 |" in out and "30 items only A got right, 0 only B" in out


def test_compare_refuses_an_unfinished_run(tmp_path):
    run_a = write_run(tmp_path / "a", set())
    run_b = write_run(tmp_path / "b", set(range(6)))
    # What a kill during the final write leaves: predictions written, the record still says the run is under way.
    atomic_write_json(run_b / RUN_RECORD, {"complete": False, "recipe": "image_classification"})
    for b in (run_b, run_b / "test_predictions.jsonl"):
        with pytest.raises(UsageError, match="unfinished run"):
            compare_runs(run_a, b)


def test_compare_refuses_different_items(tmp_path):
    run_a = write_run(tmp_path / "a", set())
    run_b = write_run(tmp_path / "b", set(), count=100)
    with pytest.raises(UsageError, match="has 120 items and .* 100"):
        compare_runs(run_a, run_b)
    lines = (run_b / "test_predictions.jsonl").read_text().splitlines()
    run_c = write_run(tmp_path / "c", set())
    item = json.loads(lines[3])
    item["reference"] = "ant"
    lines = (run_c / "test_predictions.jsonl").read_text().splitlines()
    lines[3] = json.dumps(item)
    (run_c / "test_predictions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match="item 3 differs in its reference: 'bee' in .*a/test_predictions.jsonl"):
        compare_runs(run_a, run_c)
    with pytest.raises(UsageError, match="no test_predictions.jsonl"):
        compare_runs(run_a, tmp_path)


def test_compare_speech_runs_by_utterance(tmp_path):
    references = ["one two three four"] * 50
    for name, wrong in (("a", 2), ("b", 10)):
        predictions = ["one two three for"] * wrong + references[wrong:]
        (tmp_path / name).mkdir()
        write_items(tmp_path / name, "test", transcription_items(
            [f"{i}.wav" for i in range(50)], predictions, references, error_counts(predictions, references), None))
    wer = compare_runs(tmp_path / "a", tmp_path / "b")["differences"][0]
    assert wer["metric"] == "wer" and wer["difference"] == pytest.approx((2 - 10) / 200)
    assert wer["share_a_better"] > 0.99 and "mcnemar" not in compare_runs(tmp_path / "a", tmp_path / "b")


def write_multilabel_run(folder, missed: set[int], count=100):
    """Items carry `ant`, `bee` or both; the run misses the `bee` of every item in `missed` that has one."""
    folder.mkdir()
    references = np.array([[i % 2 == 0, i % 3 != 0] for i in range(count)])
    predictions = references.copy()
    predictions[sorted(missed), 1] = False
    scores = np.where(predictions, 0.9, 0.1)
    write_items(folder, "test", multilabel_items([f"img{i}.jpg" for i in range(count)], scores, references,
                                                 predictions, NAMES))
    return folder


def test_compare_multilabel_runs_on_their_own_metrics(tmp_path):
    run_a = write_multilabel_run(tmp_path / "a", set())
    run_b = write_multilabel_run(tmp_path / "b", set(range(40)))
    differences = {d["metric"]: d for d in compare_runs(run_a, run_b)["differences"]}
    assert set(differences) == {"f1_micro", "f1_macro", "f1_samples", "map", "subset_accuracy", "hamming_loss"}
    assert differences["f1_micro"]["value_a"] == 1.0 and differences["f1_micro"]["ci_low"] > 0
    # Lower is better for the Hamming loss: A, which misses nothing, is ahead in every resample.
    assert differences["hamming_loss"]["difference"] < 0 and differences["hamming_loss"]["share_a_better"] == 1.0


def test_compare_regression_runs_lower_error_wins(tmp_path):
    references = np.linspace(0, 10, 80)
    for name, noise in (("a", 0.1), ("b", 2.0)):
        (tmp_path / name).mkdir()
        errors = noise * np.random.default_rng(0).standard_normal(80)
        write_items(tmp_path / name, "test", regression_items([f"x{i}" for i in range(80)], references + errors,
                                                              references))
    result = compare_runs(tmp_path / "a", tmp_path / "b")
    differences = {d["metric"]: d for d in result["differences"]}
    assert differences["rmse"]["difference"] < 0 and differences["rmse"]["ci_high"] < 0
    assert differences["rmse"]["share_a_better"] == 1.0 and differences["r2"]["share_a_better"] == 1.0
    assert "mcnemar" not in result


def test_compare_refuses_runs_of_different_tasks(tmp_path):
    run_a = write_multilabel_run(tmp_path / "a", set(), count=120)
    run_b = write_run(tmp_path / "b", set())
    with pytest.raises(UsageError, match="multi-label predictions .* single-label ones"):
        compare_runs(run_a, run_b)
