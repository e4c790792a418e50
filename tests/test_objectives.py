"""The objectives (plain training, DANN): the streams, loss, extra modules and scored classifier each gives; and a
recipe trains any objective through one code path."""

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_transfer.config import AdaptationArgs, UsageError
from hf_transfer.recipes import sentiment
from hf_transfer.training.adaptation import TARGET_TRAIN, DomainAdversarial
from hf_transfer.training.loop import Progress, logits_loss
from hf_transfer.training.objectives import Dann, Supervised, objective_for


class Classifier(nn.Module):
    """A backbone and a `classifier` head, shaped as the transformers classifiers DANN hooks into."""

    base_model_prefix = "backbone"
    config = SimpleNamespace(is_encoder_decoder=False, model_type="toy")

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 8)
        self.classifier = nn.Linear(8, 2)

    def forward(self, inputs):
        return SimpleNamespace(logits=self.classifier(self.backbone(inputs)))


def batch(rows: int = 4) -> dict:
    return {"inputs": torch.randn(rows, 4), "labels": torch.arange(rows) % 2}


ARGS = AdaptationArgs(adaptation="dann", target_train_file="target.csv", discriminator_hidden_size=16)
PROGRESS = Progress(step=5, max_steps=10, epoch=0)


def test_supervised_trains_the_model_itself_on_the_train_stream():
    torch.manual_seed(0)
    model, objective = Classifier(), Supervised()
    class_loss = logits_loss(F.cross_entropy)
    module = objective.attach(model, class_loss)
    labelled = batch()
    assert module is model and objective.scored(module) is model and objective.extra_modules() == ()
    assert objective.streams("train loader", lambda split: pytest.fail("no other stream")) == {"train": "train loader"}
    torch.testing.assert_close(objective.loss(module, {"train": labelled}, PROGRESS),
                               F.cross_entropy(model(labelled["inputs"]).logits, labelled["labels"]))
    assert not objective.needs_backbone_every_step and objective.details() == {}


def test_dann_trains_the_model_beside_its_discriminator_on_source_and_target_streams():
    torch.manual_seed(0)
    model, objective = Classifier(), Dann(ARGS, "full", "target.csv")
    module = objective.attach(model, logits_loss(F.cross_entropy))
    assert isinstance(module, DomainAdversarial) and module.model is model
    discriminator, = objective.extra_modules()
    assert discriminator is module.discriminator  # the optimizer gets it; accelerate prepares it inside `module`
    assert objective.scored(module) is model  # evaluated and saved: the plain classifier
    assert objective.streams("source loader", {TARGET_TRAIN: "target loader"}.get) == {
        "source": "source loader", "target": "target loader"}
    logged = objective.loss(module, {"source": batch(), "target": batch()}, PROGRESS)
    assert {"loss", "class_loss", "domain_loss", "domain_accuracy", "reversal_weight"} == set(logged)
    torch.testing.assert_close(logged["loss"], logged["class_loss"] + logged["domain_loss"])  # domain weight 1
    assert objective.needs_backbone_every_step
    assert "unlabelled target data: target.csv" in objective.details()["domain adaptation"]


def test_dann_refuses_a_model_with_nothing_below_the_head_training():
    model = Classifier()
    model.backbone.requires_grad_(False)
    with pytest.raises(UsageError, match="--strategy feature_extraction: nothing below the classifier trains"):
        Dann(ARGS, "feature_extraction", "target.csv").attach(model, logits_loss(F.cross_entropy))


def test_adaptation_settings_name_the_objective():
    assert isinstance(objective_for(AdaptationArgs(), "lora", {"train": "train.csv"}), Supervised)
    dann = objective_for(ARGS, "lora", {"train": "train.csv", TARGET_TRAIN: "target/"})
    assert isinstance(dann, Dann) and dann.target_source == "target/"


class TrainSplitTwice:
    """A third objective, written outside the library: the training split as two streams taken in turn, each
    micro-batch's loss logged under its stream's name."""

    policy = "round_robin"
    evaluated_splits = ("validation", "test")
    needs_backbone_every_step = False

    def attach(self, model, class_loss):
        self.class_loss = class_loss
        return model

    def streams(self, train, training_loader):
        return {"first": train, "second": training_loader("train")}

    def loss(self, module, batch, progress):
        (name, labelled), = batch.items()
        loss = self.class_loss(module, labelled, progress)
        return {"loss": loss, f"{name}_loss": loss.detach()}

    def extra_modules(self):
        return ()

    def scored(self, module):
        return module

    def details(self):
        return {"objective": "the training split twice, in turn"}


def test_a_recipe_trains_any_objective_through_the_same_loop(tiny_bert, sentiment_files, tmp_path):
    """The recipe names its objective and never asks which: a new one needs no branch in the library."""

    class TwiceRecipe(sentiment.SentimentRecipe):
        def new_objective(self):
            return TrainSplitTwice()

    results = TwiceRecipe.main({"model_name_or_path": str(tiny_bert), "train_file": str(sentiment_files["train"]),
                                "test_file": str(sentiment_files["test"]), "output_dir": str(tmp_path / "out"),
                                "strategy": "full", "max_train_steps": 4, "logging_steps": 2,
                                "per_device_train_batch_size": 16}, None, sentiment.DEFAULTS)
    logged = json.loads((tmp_path / "out" / "train_log.json").read_text())["train"]
    assert all({"train_first_loss", "train_second_loss"} <= set(entry) for entry in logged)
    assert 0 <= results["test_accuracy"] <= 1
    assert "objective: the training split twice, in turn" in (tmp_path / "out" / "README.md").read_text()
