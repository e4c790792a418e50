"""A run that chooses its operating point on validation: intervals, threshold, temperature and groups travel to
all_results.json, the report, the card, `predict`, `evaluate` and `pipeline()`."""

import json

import numpy as np
import pytest
from fixtures import sentences, write_csv
from transformers import pipeline

from hf_transfer.cli import main as cli
from hf_transfer.evaluation.inference import evaluate_folder, load_trained, predict
from hf_transfer.recipes import sentiment


def with_sites(rows, sites):
    """Rows tagged with a site each, and every 7th label flipped: scores that can't all be certain, so the
    temperature and the threshold land inside (0, 1). 7 is prime to the site counts: no site is all flipped."""
    flip = {"positive": "negative", "negative": "positive"}
    return [{**row, "label": flip[row["label"]] if i % 7 == 3 else row["label"], "site": sites[i % len(sites)]}
            for i, row in enumerate(rows)]


@pytest.fixture(scope="module")
def trusted_run(tiny_bert, tmp_path_factory):
    folder = tmp_path_factory.mktemp("trust")
    train = write_csv(folder / "train.csv", with_sites(sentences(200), [f"s{i}" for i in range(10)]))
    test = write_csv(folder / "test.csv", with_sites(sentences(60, seed=1), ["north", "south", "east"]))
    results = sentiment.main({
        "model_name_or_path": str(tiny_bert), "train_file": str(train), "test_file": str(test),
        "output_dir": str(folder / "out"), "strategy": "full", "learning_rate": 5e-3, "max_train_steps": 60,
        "per_device_train_batch_size": 16, "warmup_ratio": 0.0, "group_column": "site",
        "decision_threshold": "auto", "target_recall": 0.9, "calibrate": "temperature", "bootstrap_resamples": 200,
    })
    return folder, results


def test_results_hold_intervals_operating_point_and_groups(trusted_run):
    folder, results = trusted_run
    out = folder / "out"
    for metric in ("accuracy", "f1_macro", "roc_auc"):
        assert results[f"test_{metric}_ci_low"] <= results[f"test_{metric}"] <= results[f"test_{metric}_ci_high"]
    assert 0 < results["decision_threshold"] < 1 and results["calibration_temperature"] > 0
    assert results["eval_recall"] >= 0.9  # the goal, met on validation where it was chosen
    assert results["test_ece"] < results["test_ece_before_calibration"]
    assert results["test_worst_group"] in ("north", "south", "east")
    assert results["test_group_accuracy_gap"] == pytest.approx(
        results["test_best_group_accuracy"] - results["test_worst_group_accuracy"])
    assert "test_ece" in results and "test_ece_before_calibration" in results
    config = json.loads((out / "config.json").read_text())
    assert config["decision_threshold"] == results["decision_threshold"]
    assert config["calibration_temperature"] == results["calibration_temperature"]
    report = (out / "eval_report.md").read_text()
    assert "The test split was used once, for this report" in report
    assert f"at least **{results['decision_threshold']:.4f}**, chosen for recall >= 0.9" in report
    assert "## Per site" in report and "## Calibration" in report
    assert (out / "operating_point.png").is_file() and (out / "reliability_diagram.png").is_file()
    card = (out / "README.md").read_text()
    assert f"{results['test_accuracy']:.4f} [{results['test_accuracy_ci_low']:.4f}, " in card
    assert "Per site on the test split: the worst is" in card and "| north |" in card
    items = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    assert len(items) == 60 and {"input", "reference", "prediction", "probabilities", "group"} <= set(items[0])
    assert np.mean([i["prediction"] == i["reference"] for i in items]) == pytest.approx(results["test_accuracy"])
    threshold = results["decision_threshold"]  # the threshold, not the top class, decides
    assert [i["prediction"] for i in items] == [
        "positive" if i["probabilities"]["positive"] >= threshold else "negative" for i in items]


def test_predict_evaluate_and_pipeline_apply_the_saved_operating_point(trusted_run, capsys):
    folder, results = trusted_run
    out = folder / "out"
    items = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    texts = [item["input"] for item in items]
    model, tokenizer, settings = load_trained(out)
    predicted = predict(model, tokenizer, settings, texts)
    assert [p["label"] for p in predicted] == [item["prediction"] for item in items]
    assert [p["scores"]["positive"] for p in predicted] == pytest.approx(
        [item["probabilities"]["positive"] for item in items], abs=1e-5)
    again = evaluate_folder(out, str(folder / "test.csv"), folder / "evaluation", group_column="site")
    assert again["test_accuracy"] == results["test_accuracy"]
    assert again["test_worst_group"] == results["test_worst_group"]
    # The card's recipe for pipeline() users: raise the scores to 1 / T, renormalise, apply the threshold.
    classifier = pipeline("text-classification", model=str(out))
    temperature, threshold = results["calibration_temperature"], results["decision_threshold"]
    labels = []
    for text in texts:
        scores = {s["label"]: s["score"] ** (1 / temperature) for s in classifier(text, top_k=2)}
        scores = {label: score / sum(scores.values()) for label, score in scores.items()}
        labels.append("positive" if scores["positive"] >= threshold else "negative")
    assert labels == [p["label"] for p in predicted]
    card = (out / "README.md").read_text()
    assert f"temperature, threshold = {temperature}, {threshold}" in card
    assert 'label = "positive" if scores["positive"] >= threshold else "negative"' in card
    cli(["predict", str(out), texts[0]])
    assert json.loads(capsys.readouterr().out)["label"] == items[0]["prediction"]
    # A threshold above every test score turns every prediction negative: predict applies the model's.
    model.config.decision_threshold = max(item["probabilities"]["positive"] for item in items) + 1e-3
    assert {p["label"] for p in predict(model, tokenizer, settings, texts)} == {"negative"}
