"""Grouped splits keep each group (speaker, patient, site) on one side; per-group metrics find the worst group."""

import random

import pytest
from fixtures import sentences, write_csv

from hf_transfer.config import DataArgs, UsageError
from hf_transfer.data.splits import load_labelled_splits


def grouped_rows(num_groups=12, per_group=15, seed=0):
    rows, rng = [], random.Random(seed)
    for g in range(num_groups):
        for row in sentences(per_group, labels=("negative", "positive", "neutral"), seed=g):
            rows.append({**row, "speaker": f"s{g:02d}"})
    rng.shuffle(rows)
    return rows


@pytest.mark.parametrize("budget", [None, 5])
def test_grouped_validation_split_puts_no_group_on_both_sides(tmp_path, budget):
    path = write_csv(tmp_path / "train.csv", grouped_rows())
    args = DataArgs(train_file=str(path), group_column="speaker", validation_split_percentage=20,
                    samples_per_class=budget)
    data = load_labelled_splits(args, seed=3)
    train, validation = set(data.splits["train"]["speaker"]), set(data.splits["validation"]["speaker"])
    assert train and validation and not train & validation
    assert len(validation) in (2, 3)  # about 20 % of 12 groups
    assert len(set(data.splits["validation"]["labels"])) == 3  # stratified as far as groups allow
    if budget:
        assert sorted(data.splits["train"]["labels"]) == [0] * 5 + [1] * 5 + [2] * 5
    assert data.splits["validation"]["text"] == load_labelled_splits(args, seed=3).splits["validation"]["text"]


def test_given_splits_that_share_groups_with_train_are_flagged(tmp_path):
    rows = grouped_rows(num_groups=4)
    train = write_csv(tmp_path / "train.csv", [r for r in rows if r["speaker"] != "s03"])
    test = write_csv(tmp_path / "test.csv", [r for r in rows if r["speaker"] in ("s00", "s03")][:20])
    with pytest.warns(UserWarning,
                      match="test.csv: 1 speaker group\\(s\\) of the test split also appear in train \\(s00\\)"):
        load_labelled_splits(DataArgs(train_file=str(train), test_file=str(test), group_column="speaker"), seed=0)


@pytest.mark.parametrize("rows, message", [
    ([{"text": "good", "label": "a"}, {"text": "bad", "label": "b"}] * 5, "no group column 'speaker'"),
    ([{"text": "good", "label": "a", "speaker": "x"}, {"text": "bad", "label": "b", "speaker": ""}] * 5,
     r"train.csv: data row 2 \(counted from 1, header not counted\): the group column 'speaker' is empty"),
    ([{"text": "good", "label": "a", "speaker": "x"}, {"text": "bad", "label": "b", "speaker": "x"}] * 5,
     "has 1 group"),
])
def test_bad_group_column(tmp_path, rows, message):
    path = write_csv(tmp_path / "train.csv", rows)
    with pytest.raises(UsageError, match=message):
        load_labelled_splits(DataArgs(train_file=str(path), group_column="speaker"), seed=0)


def test_per_group_metrics_on_a_fabricated_table():
    import numpy as np

    from hf_transfer.metrics.groups import classification_groups, group_summary, transcription_groups
    from hf_transfer.metrics.intervals import error_counts

    # Speaker a: 4 of 4 right; b: 1 of 2; c: 2 of 4.
    groups = ["a", "b", "c", "a", "c", "a", "b", "c", "a", "c"]
    references = np.array([0, 1, 0, 1, 1, 0, 0, 1, 1, 0])
    predictions = np.array([0, 1, 1, 1, 0, 0, 1, 1, 1, 0])
    rows = classification_groups(np.eye(2)[predictions], references, predictions, groups)
    assert [(r["group"], r["count"], r["accuracy"]) for r in rows] == [("a", 4, 1.0), ("b", 2, 0.5), ("c", 4, 0.5)]
    assert rows[0]["f1_macro"] == 1.0 and rows[1]["f1_macro"] == pytest.approx(1 / 3)  # b: F1 0 and 2/3
    assert group_summary(rows, "accuracy") == {"worst_group": "b", "worst_group_accuracy": 0.5,
                                               "best_group_accuracy": 1.0, "group_accuracy_gap": 0.5}
    counts = error_counts(["one two", "three", "four five six"], ["one too", "three", "four five six"])
    speech = transcription_groups(counts, ["x", "y", "y"])
    assert [(r["group"], r["wer"]) for r in speech] == [("x", 0.5), ("y", 0.0)]
    assert group_summary(speech, "wer", lower_is_better=True)["worst_group"] == "x"


def test_speech_report_gives_intervals_and_the_worst_speaker(tmp_path):
    from hf_transfer.evaluation.report import write_transcription_report
    from hf_transfer.evaluation.report_sections import groups_section, intervals_note
    from hf_transfer.evaluation.scoring import score_transcription
    from hf_transfer.metrics.intervals import Bootstrap

    references = ["one", "two", "three", "four"] * 5
    predictions = ["one", "too", "three", "four"] * 5  # speaker b says every "two"
    speakers = ["a", "b", "a", "a"] * 5
    scored = score_transcription(predictions, references, [f"{i}.wav" for i in range(20)], speakers, Bootstrap())
    results = {f"test_{k}": v for k, v in scored.results.items()}
    assert results["test_wer"] == 0.25 and results["test_worst_group"] == "b" and results["test_group_wer_gap"] == 1.0
    assert results["test_wer_ci_low"] < 0.25 < results["test_wer_ci_high"]
    sections = intervals_note(Bootstrap(), 20, "utterances") + groups_section(scored.group_rows, "speaker", results,
                                                                              "test", "wer")
    write_transcription_report(tmp_path, results, [], {"model": "m"}, None, sections)
    report = (tmp_path / "eval_report.md").read_text()
    assert "| wer | 0.2500 [" in report and "Worst speaker: **b** (wer 1.0000)" in report
    assert scored.items[1] == {"id": 1, "input": "1.wav", "group": "b", "reference": "two", "prediction": "too",
                               "word_errors": 1, "words": 1, "char_errors": 1, "chars": 3}
