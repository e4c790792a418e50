"""Multi-label and regression targets: encoding, metrics, thresholds, and runs that train, save, reload, predict and
evaluate (tiny models, data whose labels show in the words)."""

import json
import math
import random

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from hf_transfer.cli import main as cli
from hf_transfer.config import UsageError
from hf_transfer.evaluation.inference import evaluate_folder, load_trained, predict
from hf_transfer.metrics.intervals import Bootstrap
from hf_transfer.metrics.multilabel import best_f1_thresholds, multilabel_metrics
from hf_transfer.metrics.regression import regression_metrics
from hf_transfer.recipes import sentiment
from hf_transfer.targets import MultiLabel, Regression, SingleLabel, Standardiser, lower_is_better
from tests.fixtures import write_csv

TAGS = {"fruit": ["apple", "pear", "plum"], "metal": ["iron", "zinc", "gold"], "bird": ["crow", "wren", "owl"]}


def tagged_rows(count: int, seed: int) -> list[dict]:
    """Texts naming things of 0 to 3 kinds; the labels are those kinds, `|`-separated (empty when none)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        kinds = [kind for kind in TAGS if rng.random() < 0.45]
        words = [rng.choice(TAGS[kind]) for kind in kinds] + ["and", "the"] * (3 - len(kinds))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": "|".join(kinds)})
    return rows


def scored_rows(count: int, seed: int) -> list[dict]:
    """Texts with 0 to 4 times `very`; the target is 40 + 12.5 per `very` (in units far from 0 and 1)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        very = rng.randrange(5)
        rows.append({"text": " ".join(["the", "film", "was"] + ["very"] * very + ["good"]),
                     "label": 40 + 12.5 * very + rng.uniform(-0.5, 0.5)})
    return rows


# --- encoding ---------------------------------------------------------------------------------------------------
def cells(values, column="label"):
    from hf_transfer.targets import Cells
    return Cells(values, lambda index: f"data.csv: data row {index + 1}", column, "data.csv")


def test_multi_label_cells_split_at_the_separator_lists_are_labels_and_empty_is_none():
    target = MultiLabel("|")
    train = cells(["a|b", ["c"], "", None, float("nan"), " b "])
    names = target.label_names(train, None)
    assert names == ["a", "b", "c"]
    assert target.encode(train, names, "train") == [[1, 1, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0]]
    with pytest.raises(UsageError, match=r"data row 2: label 'd' in the test split never appears"):
        target.encode(cells(["a", "a|d"]), names, "test")
    with pytest.raises(UsageError, match=r"data row 1: .* has an empty label between separators"):
        target.encode(cells(["a||b"]), names, "train")


@pytest.mark.parametrize(("value", "message"), [
    ("high", r"data row 2: the target 'high' .* is not a number"),
    (float("nan"), r"data row 2: the target .* is empty"),
    (float("inf"), r"data row 2: the target .* is inf"),
    ([1.0], r"data row 2: the target \[1.0\] .* is not a number"),
])
def test_bad_regression_targets_name_their_row(value, message):
    with pytest.raises(UsageError, match=message):
        Regression().encode(cells([1.5, value]), ["label"], "train")


def test_single_label_refuses_fractions_and_lists_and_points_at_the_right_problem_type():
    with pytest.raises(UsageError, match=r"data row 2: the label 2.5 .* --problem_type regression"):
        SingleLabel().label_names(cells([1.0, 2.5]), None)
    with pytest.raises(UsageError, match=r"data row 1: .* holds a list; .* multi_label_classification"):
        SingleLabel().label_names(cells([["a", "b"], ["a"]]), None)
    assert SingleLabel().label_names(cells([1.0, 0.0, 1.0]), None) == ["0", "1"]  # pandas' floats for ints


def test_metric_directions_are_declared_not_guessed():
    assert lower_is_better("eval_rmse") and lower_is_better("test_hamming_loss") and lower_is_better("wer")
    assert not lower_is_better("eval_r2") and not lower_is_better("f1_micro") and not lower_is_better("map")


# --- metrics ------------------------------------------------------------------------------------------------------
def test_multi_label_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    references = (rng.random((60, 4)) < 0.4).astype(int)
    scores = np.clip(references * 0.5 + rng.random((60, 4)) * 0.6, 0, 1)
    predictions = (scores >= 0.5).astype(int)
    ours = multilabel_metrics(scores, references, predictions)
    assert ours["f1_micro"] == pytest.approx(sk.f1_score(references, predictions, average="micro"))
    assert ours["f1_macro"] == pytest.approx(sk.f1_score(references, predictions, average="macro", zero_division=0))
    assert ours["f1_samples"] == pytest.approx(sk.f1_score(references, predictions, average="samples",
                                                           zero_division=1))
    assert ours["map"] == pytest.approx(sk.average_precision_score(references, scores, average="macro"))
    assert ours["subset_accuracy"] == pytest.approx(sk.accuracy_score(references, predictions))
    assert ours["hamming_loss"] == pytest.approx(sk.hamming_loss(references, predictions))


def test_regression_metrics_match_scipy_and_sklearn():
    rng = np.random.default_rng(1)
    references = rng.normal(50, 10, 80)
    predictions = references + rng.normal(0, 3, 80)
    ours = regression_metrics(predictions, references)
    assert ours["rmse"] == pytest.approx(math.sqrt(sk.mean_squared_error(references, predictions)))
    assert ours["mae"] == pytest.approx(sk.mean_absolute_error(references, predictions))
    assert ours["r2"] == pytest.approx(sk.r2_score(references, predictions))
    assert ours["pearson"] == pytest.approx(np.corrcoef(predictions, references)[0, 1])
    assert regression_metrics(np.full(5, 2.0), np.arange(5.0))["pearson"] is None  # a constant prediction


def test_per_label_thresholds_maximise_each_labels_f1():
    scores = np.array([[0.9, 0.2], [0.6, 0.3], [0.4, 0.35], [0.1, 0.1]])
    references = np.array([[1, 1], [1, 1], [0, 1], [0, 0]])
    thresholds = best_f1_thresholds(scores, references)
    assert thresholds[0] == pytest.approx(0.5)  # between 0.6 (positive) and 0.4 (negative)
    assert thresholds[1] == pytest.approx(0.15)  # all three positives, not the 0.1 negative
    assert best_f1_thresholds(scores, np.zeros((4, 2)), default=0.5) == [0.5, 0.5]  # no positive: the default


def test_standardiser_folded_into_a_layer_gives_the_same_numbers_in_units():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 1)
    features = torch.randn(5, 3)
    standardiser = Standardiser.of([10.0, 30.0, 50.0])
    expected = standardiser.in_units(layer(features))
    standardiser.fold_into(layer)
    torch.testing.assert_close(layer(features), expected)


# --- runs ---------------------------------------------------------------------------------------------------------
def train(tiny_bert, folder, rows, test_rows, **settings):
    train_file = write_csv(folder / "train.csv", rows)
    test_file = write_csv(folder / "test.csv", test_rows)
    config = {"model_name_or_path": str(tiny_bert), "train_file": str(train_file), "test_file": str(test_file),
              "output_dir": str(folder / "out"), "learning_rate": 5e-3, "num_train_epochs": 6,
              "per_device_train_batch_size": 16, "bootstrap_resamples": 50, **settings}
    return sentiment.main(config), test_file


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_multi_label_trains_saves_and_predicts_as_evaluated(tiny_bert, tmp_path, strategy):
    results, test_file = train(tiny_bert, tmp_path, tagged_rows(240, 0), tagged_rows(40, 1), strategy=strategy,
                               problem_type="multi_label_classification", decision_threshold="auto",
                               learning_rate=3e-2 if strategy == "lora" else 5e-3)
    for key in ("f1_micro", "f1_macro", "f1_samples", "map", "subset_accuracy", "hamming_loss"):
        assert results[f"test_{key}_ci_low"] <= results[f"test_{key}"] <= results[f"test_{key}_ci_high"], key
    assert results["test_f1_micro"] > 0.7  # the kinds show in the words
    assert len(results["decision_thresholds"]) == 3
    out = tmp_path / "out"
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["decision_thresholds"] == results["decision_thresholds"]
    for name in ("eval_report.md", "precision_recall.png", "label_cooccurrence.png", "README.md"):
        assert (out / name).is_file(), name
    assert "Per label" in (out / "eval_report.md").read_text()
    assert "thresholds = {" in (out / "README.md").read_text()  # the card applies the thresholds

    # predict gives the labels at or above their thresholds; evaluate on the test file repeats the run's scores.
    model, processor, settings = load_trained(out)
    texts = [row["text"] for row in tagged_rows(40, 1)]
    answers = predict(model, processor, settings, texts)
    for answer in answers:
        on = [name for name, threshold in zip(config["id2label"].values(), config["decision_thresholds"])
              if answer["scores"][name] >= threshold]
        assert answer["labels"] == on
    again = evaluate_folder(out, str(test_file), tmp_path / "evaluation", bootstrap=Bootstrap(resamples=50))
    assert again["test_f1_micro"] == pytest.approx(results["test_f1_micro"], abs=1e-6)
    assert again["test_map"] == pytest.approx(results["test_map"], abs=1e-4)


def test_multi_label_pipeline_gives_the_scores_predict_gives(tiny_bert, tmp_path):
    from transformers import pipeline

    train(tiny_bert, tmp_path, tagged_rows(120, 0), tagged_rows(20, 1), strategy="full",
          problem_type="multi_label_classification", num_train_epochs=2)
    out = tmp_path / "out"
    model, processor, settings = load_trained(out)
    text = tagged_rows(1, 5)[0]["text"]
    ours = predict(model, processor, settings, [text])[0]["scores"]
    theirs = {s["label"]: s["score"] for s in pipeline("text-classification", model=str(out))(text, top_k=None)}
    assert theirs == pytest.approx(ours, abs=1e-5)  # config.json's problem_type makes pipeline() use the sigmoid


@pytest.mark.parametrize("strategy", ["full", "feature_extraction", "lora"])
def test_regression_answers_in_the_users_units(tiny_bert, tmp_path, strategy, capsys):
    rows = scored_rows(240, 0)
    results, test_file = train(tiny_bert, tmp_path, rows, scored_rows(40, 1), strategy=strategy,
                               learning_rate=3e-2 if strategy == "lora" else 5e-3)
    assert "training a regression" in capsys.readouterr().out  # implied by a column of fractions
    for key in ("mse", "rmse", "mae", "r2", "pearson", "spearman"):
        assert results[f"test_{key}_ci_low"] <= results[f"test_{key}"] <= results[f"test_{key}_ci_high"], key
    if strategy != "feature_extraction":  # a random tiny backbone's frozen features don't count words
        assert results["test_rmse"] < 0.5 * np.std([row["label"] for row in rows])  # far better than the mean
    out = tmp_path / "out"
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "label"}
    assert (out / "regression.png").is_file()
    model, processor, settings = load_trained(out)
    answers = predict(model, processor, settings, [row["text"] for row in scored_rows(40, 1)])
    assert 25 < np.mean([answer["label"] for answer in answers]) < 80  # the units came back (mean ~65)
    again = evaluate_folder(out, str(test_file), tmp_path / "evaluation", bootstrap=Bootstrap(resamples=50))
    assert again["test_rmse"] == pytest.approx(results["test_rmse"], rel=1e-4)


def test_regression_pipeline_gives_the_number_predict_gives(tiny_bert, tmp_path):
    from transformers import pipeline

    train(tiny_bert, tmp_path, scored_rows(120, 0), scored_rows(20, 1), strategy="full", num_train_epochs=2,
          problem_type="regression")
    out = tmp_path / "out"
    model, processor, settings = load_trained(out)
    text = scored_rows(1, 5)[0]["text"]
    ours = predict(model, processor, settings, [text])[0]["label"]
    assert pipeline("text-classification", model=str(out))(text)[0]["score"] == pytest.approx(ours, rel=1e-5)


def test_predict_on_the_command_line_prints_labels_and_numbers(tiny_bert, tmp_path, capsys):
    train(tiny_bert, tmp_path, tagged_rows(120, 0), tagged_rows(20, 1), strategy="full", num_train_epochs=1,
          problem_type="multi_label_classification")
    capsys.readouterr()
    cli(["predict", str(tmp_path / "out"), "apple and iron"])
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(answer["scores"]) == set(TAGS) and isinstance(answer["labels"], list)


@pytest.mark.parametrize(("settings", "message"), [
    ({"problem_type": "single_label_classification"}, r"train.csv: data row \d+ .*: the label .* has a fraction"),
    ({"problem_type": "regression", "class_weights": "auto"}, "--class_weights and --label_smoothing are for"),
    ({"problem_type": "regression", "decision_threshold": "auto"}, "a regression predicts a number"),
    ({"problem_type": "regression", "samples_per_class": 4}, "--samples_per_class counts examples per class"),
])
def test_regression_settings_that_make_no_sense_are_refused_before_training(tiny_bert, tmp_path, settings,
                                                                            message):
    with pytest.raises(UsageError, match=message):
        train(tiny_bert, tmp_path, scored_rows(40, 0), scored_rows(10, 1), max_train_steps=1, **settings)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_label_list_in_a_single_label_run_is_refused(tiny_bert, tmp_path):
    rows = [{"text": f"text {i}", "label": ["a", "b"] if i == 3 else ["a"]} for i in range(20)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    with pytest.raises(UsageError, match=r"train.jsonl: data row 1 .*: the label cell .* holds a list"):
        sentiment.main({"model_name_or_path": str(tiny_bert), "train_file": str(tmp_path / "train.jsonl"),
                        "output_dir": str(tmp_path / "out"), "max_train_steps": 1})
