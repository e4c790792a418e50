"""Domain adaptation (DANN): gradient reversal, the lambda schedule, alignment on a tiny two-domain task, and a
recipe run whose saved folder is a plain classifier."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from fixtures import sentences, write_csv
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification

from hf_transfer import recipe
from hf_transfer.config import AdaptationArgs, TrainArgs, UsageError
from hf_transfer.evaluation.inference import load_trained
from hf_transfer.recipes import audio_classification, image_classification, sentiment
from hf_transfer.selection.transferability import proxy_a_distance
from hf_transfer.training.adaptation import TARGET_TRAIN, dann_lambda, reverse_gradient
from hf_transfer.training.loop import Loop, logits_loss
from hf_transfer.training.objectives import Dann, Supervised


def test_gradient_reversal_is_the_identity_forward_and_flips_the_gradient():
    inputs = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(4, 3, dtype=torch.float64)
    outputs = reverse_gradient(inputs, 0.7)
    torch.testing.assert_close(outputs, inputs)
    (outputs * weights).sum().backward()
    torch.testing.assert_close(inputs.grad, -0.7 * weights)


def test_the_lambda_schedule_rises_from_0_to_nearly_1():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.1) == pytest.approx(2 / (1 + math.exp(-1)) - 1)  # 0.462
    assert dann_lambda(0.5) == pytest.approx(0.98661, abs=1e-5)
    assert dann_lambda(1.0) == pytest.approx(0.99991, abs=1e-5)
    values = [dann_lambda(p / 10) for p in range(11)]
    assert values == sorted(values)


def test_the_proxy_a_distance_tells_apart_shifted_and_identical_domains():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(200, 5))
    assert proxy_a_distance(source, rng.normal(size=(200, 5)) + [6, 0, 0, 0, 0]) > 1.9
    assert abs(proxy_a_distance(source, rng.normal(size=(200, 5)))) < 0.4


class Features(nn.Module):
    """A backbone and a `classifier` head, shaped as the transformers classifiers DANN hooks into."""

    base_model_prefix = "backbone"
    config = SimpleNamespace(is_encoder_decoder=False, model_type="toy")

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8))
        self.classifier = nn.Linear(8, 2)

    def forward(self, inputs, labels=None):
        return SimpleNamespace(logits=self.classifier(self.backbone(inputs)))


def two_domains(seed: int):
    """Class = sign of the first input. The target domain adds an offset to the last two inputs, which the labels
    never depend on: features that keep it tell the domains apart."""
    generator = torch.Generator().manual_seed(seed)
    source = torch.randn(256, 4, generator=generator)
    target = torch.randn(256, 4, generator=generator) + torch.tensor([0, 0, 2.0, -2.0])
    return source, (source[:, 0] > 0).long(), target


def train_features(adapt: bool, tmp_path) -> float:
    """The proxy A-distance of the backbone's features after 300 steps, with or without DANN."""
    source, labels, target = two_domains(0)
    torch.manual_seed(0)
    model = Features()
    args = TrainArgs(output_dir=str(tmp_path), max_train_steps=300, lr_scheduler_type="constant", warmup_ratio=0.0,
                     logging_steps=50, mixed_precision="no", eval_steps=300)
    source_loader = DataLoader([{"inputs": x, "labels": y} for x, y in zip(source, labels)], batch_size=32,
                               shuffle=True, generator=torch.Generator().manual_seed(1))
    target_loader = DataLoader([{"inputs": x, "labels": torch.tensor(-1)} for x in target], batch_size=32,
                               shuffle=True, generator=torch.Generator().manual_seed(2))
    objective = (Dann(AdaptationArgs(adaptation="dann", target_train_file="unused.csv", discriminator_hidden_size=32),
                      "full", "unused.csv") if adapt else Supervised())
    trained = objective.attach(model, logits_loss(F.cross_entropy))
    Loop(Accelerator(cpu=True), trained, torch.optim.Adam(trained.parameters(), lr=1e-2),
         objective.streams(source_loader, {TARGET_TRAIN: target_loader}.get), objective.loss,
         lambda _: {"accuracy": 0.0}, args, tmp_path, policy=objective.policy).fit()
    with torch.no_grad():
        model.eval()
        return proxy_a_distance(model.backbone(source).numpy(), model.backbone(target).numpy())


def test_dann_brings_the_domains_closer_than_source_only_training(tmp_path):
    source_only, adapted = train_features(False, tmp_path / "source_only"), train_features(True, tmp_path / "dann")
    assert source_only > 1.2  # the offset survives plain training (measured: 1.52)
    assert adapted < source_only - 0.5  # measured: 0.55


def run_sentiment(tiny_bert, sentiment_files, tmp_path, **overrides):
    target = [{"text": row["text"].replace("was", "is really"), "label": row["label"]} for row in sentences(64, seed=3)]
    target_file = write_csv(tmp_path / "target.csv", target)
    config = {"model_name_or_path": str(tiny_bert), "train_file": str(sentiment_files["train"]),
              "test_file": str(sentiment_files["test"]), "output_dir": str(tmp_path / "out"), "strategy": "full",
              "learning_rate": 5e-3, "per_device_train_batch_size": 16, "max_train_steps": 16, "logging_steps": 2,
              "warmup_ratio": 0.0, "adaptation": "dann", "target_train_file": str(target_file),
              "target_test_file": str(target_file), **overrides}
    return sentiment.main(config)


def test_a_dann_run_logs_the_discriminator_scores_the_target_and_saves_a_plain_classifier(tiny_bert,
                                                                                          sentiment_files, tmp_path):
    results = run_sentiment(tiny_bert, sentiment_files, tmp_path)
    out = tmp_path / "out"
    assert results["target_test_samples"] == 64 and 0 <= results["target_test_accuracy"] <= 1
    assert "test_accuracy" in results  # the source test, reported apart
    assert (out / "target_test_predictions.jsonl").is_file()
    logged = json.loads((out / "train_log.json").read_text())["train"]
    assert {"train_domain_loss", "train_domain_accuracy", "train_class_loss", "train_reversal_weight"} <= set(logged[0])
    assert logged[-1]["train_reversal_weight"] > logged[0]["train_reversal_weight"]
    assert not any("discriminator" in name for name in load_file(str(out / "model.safetensors")))
    AutoModelForSequenceClassification.from_pretrained(out)  # loads as a plain classifier
    model, _, settings = load_trained(out)
    assert settings["adaptation"] == "dann"
    assert "domain adaptation: DANN" in (out / "README.md").read_text()


def test_the_discriminator_gets_no_weight_decay_on_biases_and_norms(tiny_bert, sentiment_files, tmp_path,
                                                                    monkeypatch):
    """As --weight_decay's help says, and as the classifier's own weights are grouped."""
    built = []

    class SpiedLoop(recipe.Loop):
        def __init__(self, accelerator, model, optimizer, *args, **kwargs):
            built.append((model, optimizer))
            super().__init__(accelerator, model, optimizer, *args, **kwargs)

    monkeypatch.setattr(recipe, "Loop", SpiedLoop)
    run_sentiment(tiny_bert, sentiment_files, tmp_path, max_train_steps=1, weight_decay=0.1)
    (adversarial, optimizer), = built
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    got = {name: decay[id(p)] for name, p in adversarial.discriminator.named_parameters()}
    assert got == {name: 0.1 if p.ndim >= 2 else 0.0 for name, p in adversarial.discriminator.named_parameters()}
    assert got["1.bias"] == 0.0 and got["0.weight"] == 0.1  # a norm's bias; a linear layer's weight


@pytest.mark.parametrize("overrides, message", [
    ({"target_train_file": None}, "--adaptation dann needs unlabelled target data"),
    ({"adaptation": "none", "target_test_file": None}, "read by --adaptation dann"),
    ({"strategy": "feature_extraction"}, "nothing below the classifier trains"),
    ({"target_test_file": "missing.csv"}, "data file not found: missing.csv"),
])
def test_dann_settings_that_cannot_work_are_refused_before_training(tiny_bert, sentiment_files, tmp_path,
                                                                     overrides, message):
    with pytest.raises(UsageError, match=message):
        run_sentiment(tiny_bert, sentiment_files, tmp_path, **overrides)
    assert not (tmp_path / "out" / "train_log.json").exists()


def test_dann_runs_on_audio_with_a_frozen_encoder_and_on_images(tiny_wav2vec2, tones, tiny_vit, images, tmp_path):
    """The audio projector trains under feature extraction, so DANN has features to move; target data can be a
    folder of class subfolders (their names unread) and is scored apart."""
    common = {"per_device_train_batch_size": 8, "max_train_steps": 4, "logging_steps": 1, "warmup_ratio": 0.0,
              "learning_rate": 5e-3, "adaptation": "dann"}
    audio = audio_classification.main({
        "model_name_or_path": str(tiny_wav2vec2), "train_dir": str(tones / "train"), "test_dir": str(tones / "test"),
        "max_duration_seconds": 0.25, "validation_split_percentage": 25, "strategy": "feature_extraction",
        "target_train_dir": str(tones / "test"), "target_test_dir": str(tones / "test"),
        "output_dir": str(tmp_path / "audio"), **common})
    image = image_classification.main({
        "model_name_or_path": str(tiny_vit), "train_dir": str(images / "train"), "validation_dir": str(images / "val"),
        "strategy": "full", "target_train_dir": str(images / "val"), "target_test_file": str(images / "val.csv"),
        "output_dir": str(tmp_path / "image"), **common})
    for results, folder in ((audio, tmp_path / "audio"), (image, tmp_path / "image")):
        assert results["target_test_samples"] > 0 and "train_domain_loss" in (folder / "train_log.json").read_text()
        load_trained(folder)
