"""Defaults chosen by strategy and backbone (training/defaults.py), and the head fitted first (--fit_head_first)."""

import numpy as np
import pytest
import torch
import yaml
from sklearn.linear_model import LogisticRegression
from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

from hf_transfer.recipes import sentiment
from hf_transfer.training.defaults import BATCHNORM_CNN, TRANSFORMER, backbone_family, schedule_for
from hf_transfer.training.features import FeatureDataset, HeadOnFeatures, fit_head


def test_backbone_family_tells_batchnorm_cnns_from_transformers(tiny_bert, tiny_efficientnet, tiny_vit):
    assert backbone_family(AutoModelForSequenceClassification.from_pretrained(tiny_bert)) == TRANSFORMER
    assert backbone_family(AutoModelForImageClassification.from_pretrained(tiny_vit)) == TRANSFORMER
    assert backbone_family(AutoModelForImageClassification.from_pretrained(tiny_efficientnet)) == BATCHNORM_CNN


@pytest.mark.parametrize("strategy", ["full", "partial"])
def test_full_fine_tuning_rates_follow_the_backbone(strategy):
    """The trial's failure: a head's rate (5e-3) for full fine-tuning wrecked the pretrained features."""
    transformer, cnn = schedule_for(strategy, TRANSFORMER, True), schedule_for(strategy, BATCHNORM_CNN, True)
    assert transformer.learning_rate <= 5e-5 < cnn.learning_rate <= 1e-3
    assert transformer.fit_head_first and cnn.fit_head_first
    assert not schedule_for(strategy, TRANSFORMER, pretrained=False).fit_head_first  # no features worth fitting on


def test_unset_settings_are_chosen_recorded_and_given_ones_kept(tiny_bert, sentiment_files, tmp_path):
    common = {"model_name_or_path": str(tiny_bert), "train_file": str(sentiment_files["train"]),
              "test_file": str(sentiment_files["test"]), "strategy": "lora", "max_train_steps": 2}
    sentiment.main({**common, "output_dir": str(tmp_path / "chosen")})
    saved = (tmp_path / "chosen" / "run_config.yaml").read_text()
    settings = yaml.safe_load(saved)
    lora = schedule_for("lora", TRANSFORMER, True)
    assert (settings["learning_rate"], settings["warmup_ratio"], settings["fit_head_first"]) == (
        lora.learning_rate, lora.warmup_ratio, True)
    assert saved.startswith("# Chosen by hf_transfer: --learning_rate 0.001")
    assert "LoRA: the adapters start at zero" in (tmp_path / "chosen" / "eval_report.md").read_text()

    sentiment.main({**common, "learning_rate": 2e-4, "fit_head_first": False, "output_dir": str(tmp_path / "given")})
    saved = (tmp_path / "given" / "run_config.yaml").read_text()
    assert yaml.safe_load(saved)["learning_rate"] == 2e-4 and yaml.safe_load(saved)["fit_head_first"] is False
    assert "--learning_rate" not in saved.split("\n", 1)[0] and "--fit_head_first" not in saved.split("\n", 1)[0]


def test_fit_head_reaches_the_logistic_regression(tiny_bert):
    """The fitted head answers as scikit-learn's logistic regression (C = 1) on the same features does."""
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, model.config.hidden_size, generator=generator)
    labels = (features[:, :3].sum(dim=1) + 0.5 * torch.randn(200, generator=generator) > 0).long()
    before = HeadOnFeatures(model).eval()(features).logits.argmax(dim=1)

    loss = fit_head(model, FeatureDataset(features, labels), torch.nn.functional.cross_entropy)

    after = HeadOnFeatures(model).eval()(features).logits.argmax(dim=1)
    probe = LogisticRegression(C=1.0, max_iter=5000).fit(features.numpy(), labels.numpy())
    assert np.mean(after.numpy() == probe.predict(features.numpy())) >= 0.98
    assert (after == labels).float().mean() > (before == labels).float().mean() + 0.2
    assert loss < 0.5 and model.classifier.weight.grad is None  # no gradient left for the optimizer to apply


def test_training_starts_from_the_fitted_head(tiny_bert, sentiment_files, tmp_path, capsys):
    """With a rate too small to move anything, the trained model is the fitted head: better than its random start."""
    common = {"model_name_or_path": str(tiny_bert), "train_file": str(sentiment_files["train"]),
              "validation_file": str(sentiment_files["train"]), "strategy": "full", "learning_rate": 1e-12,
              "max_train_steps": 1}
    fitted = sentiment.main({**common, "output_dir": str(tmp_path / "fitted")})
    assert "head fitted on the frozen features of" in capsys.readouterr().out
    random_head = sentiment.main({**common, "fit_head_first": False, "output_dir": str(tmp_path / "random")})
    assert fitted["eval_accuracy"] > random_head["eval_accuracy"]
