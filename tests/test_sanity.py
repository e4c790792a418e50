"""The checks that tell a run it learned nothing: each on the case it catches and on a good run, which it leaves
alone."""

import json

import numpy as np
import pytest
from fixtures import sentences, write_csv

from hf_transfer.evaluation import sanity
from hf_transfer.recipes import sentiment

NAMES = ["negative", "positive"]
REFERENCES = np.array([0, 1] * 10)
GOOD = REFERENCES.copy()
GOOD[:2] = 1 - GOOD[:2]  # 18 of 20 right
TRAIN = np.array([1, 1, 1, 0])  # positive is the most frequent class


def losses(*values):
    return [{"step": i + 1, "train_loss": value} for i, value in enumerate(values)]


CASES = [
    # (check, arguments, expected words or None)
    (sanity.one_class, ("test", np.zeros(20, int), REFERENCES, NAMES),
     "Every test prediction is `negative` (20 of 20)"),
    (sanity.one_class, ("test", GOOD, REFERENCES, NAMES), None),
    (sanity.one_class, ("test", np.zeros(4, int), np.zeros(4, int), NAMES), None),  # one class is all there is
    (sanity.chance_auc, (0.45,), "Validation ROC AUC is 0.4500"),
    (sanity.chance_auc, (0.5,), "Validation ROC AUC is 0.5000"),
    (sanity.chance_auc, (0.93,), None),
    (sanity.chance_auc, (None,), None),  # undefined: a class missing from validation
    # Always `positive` would score 0.5 on REFERENCES; predicting the opposite of each reference scores 0.
    (sanity.below_majority, ("validation", 1 - REFERENCES, REFERENCES, TRAIN, NAMES),
     "Validation accuracy 0.0000 is below 0.5000, that of always answering `positive`"),
    (sanity.below_majority, ("validation", np.ones(20, int), REFERENCES, TRAIN, NAMES), None),  # equal is no worse
    (sanity.below_majority, ("validation", GOOD, REFERENCES, TRAIN, NAMES), None),
    (sanity.below_probe, (0.61, 0.79), "Validation accuracy 0.6100 is more than 5% below 0.7900"),
    (sanity.below_probe, (0.77, 0.79), None),  # within the noise of a small split
    (sanity.below_probe, (0.61, None), None),  # no frozen features to fit a probe on
    (sanity.loss_did_not_fall, (losses(0.69, 0.69, 0.70, 0.69, 0.68, 0.70, 0.69, 0.69),),
     "The training loss did not fall: 0.6900 over the first 2 logged values, 0.6900 over the last 2"),
    (sanity.loss_did_not_fall, (losses(0.69, 0.80),),
     "0.6900 over the first logged value, 0.8000 over the last logged value"),
    (sanity.loss_did_not_fall, (losses(0.69, 0.5, 0.4, 0.3, 0.35, 0.2, 0.25, 0.1),), None),
    (sanity.loss_did_not_fall, (losses(0.69),), None),  # one logged value: nothing to compare
    # A head fitted first starts near its lowest loss: flat is fine, doubled is not.
    (sanity.loss_did_not_fall, (losses(0.10, 0.14, 0.12, 0.13), True), None),
    (sanity.loss_did_not_fall, (losses(0.10, 0.30, 0.35, 0.40), True), "did not fall: 0.1000"),
]


@pytest.mark.parametrize("check, arguments, expected", CASES,
                         ids=[f"{case[0].__name__}-{i}" for i, case in enumerate(CASES)])
def test_each_check_warns_on_its_case_only(check, arguments, expected):
    warning = check(*arguments)
    if expected is None:
        assert warning is None
    else:
        assert expected in warning
        assert "Likely cause:" in warning and "Next step:" in warning


def test_a_good_run_gets_no_warning():
    outcomes = {"validation": (GOOD, REFERENCES), "test": (GOOD, REFERENCES)}
    assert sanity.classification_warnings(outcomes, 0.93, TRAIN, NAMES, losses(0.7, 0.5, 0.3, 0.2), 0.85) == []
    assert sanity.transcription_warnings(losses(3.1, 2.0, 1.2, 0.9)) == []


def test_a_constant_predictor_gets_every_warning_that_applies():
    constant = np.zeros(20, int)  # always `negative`, the less frequent training class
    outcomes = {"validation": (constant, REFERENCES), "test": (constant, REFERENCES)}
    found = sanity.classification_warnings(outcomes, 0.47, TRAIN, NAMES, losses(0.69, 0.69), 0.9)
    assert [warning.split(" ")[0:2] for warning in found] == [
        ["Every", "validation"], ["Every", "test"], ["Validation", "ROC"], ["Validation", "accuracy"],
        ["The", "training"]]
    [transcription] = sanity.transcription_warnings(losses(3.1, 3.2))
    assert transcription.startswith("The training loss did not fall: 3.1000 over the first logged value, 3.2000")


def test_the_probe_fits_on_training_features_and_scores_held_out_ones():
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    features = rng.normal(size=(40, 3)) + labels[:, None] * 4
    assert sanity.linear_probe_accuracy(features[:30], labels[:30], features[30:], labels[30:]) == 1.0


def train(tiny_bert, tmp_path, labels=("negative", "positive"), **settings):
    """The sentiment recipe on reviews whose labels cycle through `labels`; returns its results and its folder."""
    output_dir = tmp_path / "out"
    results = sentiment.main({"model_name_or_path": str(tiny_bert),
                              "train_file": str(write_csv(tmp_path / "train.csv", sentences(160, labels))),
                              "test_file": str(write_csv(tmp_path / "test.csv", sentences(40, seed=1))),
                              "output_dir": str(output_dir), "per_device_train_batch_size": 16, **settings})
    return results, output_dir


@pytest.mark.parametrize("labels, strategy, expected", [
    # The tiny model untrained (a learning rate of 1e-12) answers `negative` to every review.
    (("negative", "positive"), "lora", "Every test prediction is `negative` (40 of 40)"),
    # Three positive reviews to one negative: always answering `positive` beats it on the held-out validation rows.
    (("positive", "positive", "positive", "negative"), "lora",
     "that of always answering `positive` (the training split"),
    # A head on cached features: a logistic regression on them separates the reviews.
    (("negative", "positive"), "feature_extraction", "1.0000, that of a logistic regression on the same frozen"),
])
def test_a_run_that_learned_nothing_is_told_so_on_the_console_in_the_report_and_on_the_card(
        tiny_bert, tmp_path, capsys, labels, strategy, expected):
    results, output_dir = train(tiny_bert, tmp_path, labels, strategy=strategy, learning_rate=1e-12,
                                max_train_steps=2, logging_steps=1, fit_head_first=False)  # a head left random
    [warning] = [w for w in results["warnings"] if expected in w]
    assert json.loads((output_dir / "all_results.json").read_text())["warnings"] == results["warnings"]
    assert f"warning: {warning}" in capsys.readouterr().out
    assert warning in (output_dir / "eval_report.md").read_text()
    assert warning in (output_dir / "README.md").read_text()


def test_a_run_that_learned_is_not_warned(tiny_bert, tmp_path, capsys):
    results, output_dir = train(tiny_bert, tmp_path, strategy="full", learning_rate=5e-3, max_train_steps=16,
                                logging_steps=2, warmup_ratio=0.0)
    assert results["test_accuracy"] > 0.9 and results["warnings"] == []
    assert "warning:" not in capsys.readouterr().out
    assert "## Warnings" not in (output_dir / "eval_report.md").read_text()
    assert "## Warnings" not in (output_dir / "README.md").read_text()
