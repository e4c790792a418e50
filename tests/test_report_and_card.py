import numpy as np
import pytest
import yaml
from PIL import Image
from sklearn import metrics as sk

from hf_transfer.config import parse
from hf_transfer.evaluation.report import TrainingCurves, write_report
from hf_transfer.metrics import classification_metrics
from hf_transfer.publish.cards import CardContext, render_card

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("num_labels", [2, 4])
def test_metrics_agree_with_sklearn(num_labels):
    probabilities = RNG.dirichlet(np.ones(num_labels), size=200).astype(np.float32)
    references = RNG.integers(0, num_labels, size=200)
    predictions = probabilities.argmax(1)
    results = classification_metrics(probabilities, references)
    assert results["accuracy"] == pytest.approx(sk.accuracy_score(references, predictions))
    assert results["f1_macro"] == pytest.approx(sk.f1_score(references, predictions, average="macro"))
    assert results["recall_weighted"] == pytest.approx(sk.recall_score(references, predictions, average="weighted"))
    if num_labels == 2:
        assert results["f1"] == pytest.approx(sk.f1_score(references, predictions))
        assert results["roc_auc"] == pytest.approx(sk.roc_auc_score(references, probabilities[:, 1]), rel=1e-5)
    else:
        assert "f1" not in results
        assert results["roc_auc"] == pytest.approx(sk.roc_auc_score(references, probabilities, multi_class="ovr"),
                                                   rel=1e-5)


def test_roc_auc_is_left_out_when_a_class_is_missing():
    probabilities = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1]], dtype=np.float32)
    assert classification_metrics(probabilities, np.array([0, 1]))["roc_auc"] is None


def _context(tmp_path, results, per_class, strategy="lora", **settings):
    run = parse([], {"model_name_or_path": "/some/local/folder", "train_file": "reviews.csv", "strategy": strategy,
                     "lora_target_modules": ["query", "value"], "language": "en", "license": "apache-2.0",
                     **settings})
    return CardContext(
        settings=run.to_dict(), repo_id="user/tiny-sentiment", base_model="google-bert/bert-base-uncased",
        pipeline_tag="text-classification", modality="text", auto_class="AutoModelForSequenceClassification",
        processor_class="AutoTokenizer", label_names=["negative", "positive"], results=results,
        per_class=per_class, report_split="test", split_sizes={"train": 90, "validation": 10, "test": 40},
        split_sources={"train": "reviews.csv", "validation": "reviews.csv (10% held out)", "test": "test.csv"},
        trainable=3138, total=1005555, is_adapter=strategy == "lora")


def test_report_plots_and_card(tmp_path):
    probabilities = RNG.dirichlet([1, 1], size=40).astype(np.float32)
    references = np.arange(40) % 2
    results = {f"test_{k}": v for k, v in classification_metrics(probabilities, references).items()}
    results.update({f"eval_{k}": v for k, v in classification_metrics(probabilities[:10], references[:10]).items()})
    per_class = write_report(tmp_path, results, "test", "test.csv", probabilities, references,
                             ["negative", "positive"], {"model": "tiny", "strategy": "lora"},
                             TrainingCurves([{"step": 5, "train_loss": 0.7, "learning_rate": 1e-4}],
                                            [{"step": 5, "epoch": 0, "eval_accuracy": 0.5}], "accuracy"))
    assert [row["support"] for row in per_class] == [20, 20]
    report = (tmp_path / "eval_report.md").read_text()
    assert f"| accuracy | {results['eval_accuracy']:.4f} | {results['test_accuracy']:.4f} |" in report
    assert "| **negative** |" in report
    assert "![learning curve](learning_curve.png)" in report
    for plot in ("confusion_matrix.png", "roc_curve.png", "learning_curve.png"):
        assert Image.open(tmp_path / plot).size[0] > 300

    card = str(render_card(_context(tmp_path, results, per_class)))
    front_matter = yaml.safe_load(card.split("---")[1])
    assert front_matter["base_model"] == "google-bert/bert-base-uncased"
    assert front_matter["library_name"] == "peft"
    assert front_matter["pipeline_tag"] == "text-classification"
    assert front_matter["language"] == "en" and front_matter["license"] == "apache-2.0"
    assert {"hf_transfer", "lora", "text-classification"} <= set(front_matter["tags"])
    [entry] = front_matter["model-index"]
    scores = {(r["dataset"]["split"], m["type"], m.get("config")): m["value"]
              for r in entry["results"] for m in r["metrics"]}
    assert scores[("test", "accuracy", None)] == round(results["test_accuracy"], 4)
    assert scores[("validation", "f1", "macro")] == round(results["eval_f1_macro"], 4)
    assert "PeftModel.from_pretrained(base, \"user/tiny-sentiment\")" in card
    assert "More Information Needed" not in card
    assert "LoRA adapters (r=8, alpha=16, dropout=0.1, on query, value)" in card


def test_full_model_card_says_transformers_and_pipeline(tmp_path):
    probabilities = RNG.dirichlet([1, 1], size=20).astype(np.float32)
    references = np.arange(20) % 2
    results = {f"test_{k}": v for k, v in classification_metrics(probabilities, references).items()}
    per_class = [{"label": "negative", "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 10},
                 {"label": "positive", "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 10}]
    card = str(render_card(_context(tmp_path, results, per_class, strategy="full")))
    assert yaml.safe_load(card.split("---")[1])["library_name"] == "transformers"
    assert 'pipeline("text-classification", model="user/tiny-sentiment")' in card


def test_card_states_intervals_and_what_validation_chose(tmp_path):
    results = {"test_accuracy": 0.9, "test_accuracy_ci_low": 0.85, "test_accuracy_ci_high": 0.94, "test_samples": 153,
               "test_ece": 0.05}
    text = str(render_card(_context(tmp_path, results, [])))
    assert "| accuracy | 0.9000 [0.8500, 0.9400] |" in text
    assert "Brackets give 95% bootstrap intervals over the 153 test items (1000 resamples)." in text
    assert "The best checkpoint came from the validation split; the test split was used once" in text
    assert "Expected calibration error on the test split: 0.0500" in text


BASE = "[google-bert/bert-base-uncased](https://huggingface.co/google-bert/bert-base-uncased)"


@pytest.mark.parametrize("strategy, pooling, merged, first_words", [
    ("feature_extraction", "model", False, f"A new head trained on the frozen features of {BASE} that classifies"),
    ("feature_extraction", "mean", False, f"A new head trained on the frozen features of {BASE} that classifies"),
    ("partial", "model", False, f"A version of {BASE} with its top 2 layers fine-tuned under a new head that"),
    ("lora", "model", False, f"A LoRA adapter for {BASE} that classifies"),
    ("lora", "mean", False, f"A LoRA adapter for {BASE} that classifies"),
    ("lora", "model", True, f"A LoRA adapter for {BASE}, merged into its weights, that classifies"),
    ("full", "model", False, f"A fine-tuned version of {BASE} that classifies"),
])
def test_the_card_says_what_was_trained(tmp_path, strategy, pooling, merged, first_words):
    """A frozen backbone was not fine-tuned, and a LoRA model is an adapter, merged or not."""
    context = _context(tmp_path, {"test_accuracy": 0.9}, [], strategy, pooling=pooling)
    context.is_adapter = strategy == "lora" and not merged
    card = str(render_card(context))
    assert first_words in card
    if strategy != "full":
        assert "fine-tuned version" not in card
