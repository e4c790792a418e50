"""What a classification run trains for: one object per objective, so the recipe never asks which.

An objective gives the Loop its streams and its loss, the optimizer the modules that train beside the model, and
evaluation the classifier to score. Plain supervised training and DANN are two; a multi-task objective (a head per
task, one stream per task, drawn round-robin) is a third, with no branch in the recipe.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from torch import nn
from torch.utils.data import DataLoader

from hf_transfer.config import AdaptationArgs
from hf_transfer.training.adaptation import (
    TARGET_TEST,
    TARGET_TRAIN,
    DomainAdversarial,
    check_trainable_features,
    head_input_size,
)

# The splits scored after training (those the data has): validation picks the operating point, the others are tests.
EVALUATED_SPLITS = ("validation", "test", TARGET_TEST)


class Objective(Protocol):
    """The seam between a recipe and the Loop. `attach` comes first; the rest describe the attached objective."""

    policy: str  # how the Loop draws the streams (`loop.STREAM_POLICIES`)
    evaluated_splits: tuple[str, ...]  # scored after training, where the data has them
    needs_backbone_every_step: bool  # True: no training on cached features

    def attach(self, model: nn.Module, class_loss: Callable) -> nn.Module:
        """The module the Loop trains: `model`, or `model` inside what trains beside it. `class_loss` is the Loop's
        `compute_loss` for one labelled batch: (model, batch, progress) -> loss."""

    def streams(self, train: DataLoader, training_loader: Callable[[str], DataLoader]) -> dict[str, DataLoader]:
        """The named training loaders: `train` is the labelled training split's; `training_loader(split)` makes
        another split's, read as the modality reads training examples."""

    def loss(self, module: nn.Module, batch: dict[str, dict], progress):
        """The Loop's `compute_loss`: one micro-batch's ({stream: batch}) loss, or a dict of it and values to log."""

    def extra_modules(self) -> tuple[nn.Module, ...]:
        """Modules that train beside the model, for the optimizer (grouped as the model's own weights are)."""

    def scored(self, module: nn.Module) -> nn.Module:
        """The classifier in the trained `module` (as the Loop holds it): what evaluation and the saved folder use."""

    def details(self) -> dict[str, str]:
        """What the report and the card say about the objective."""


@dataclass
class Supervised:
    """The labelled training split, and the target's loss on it."""

    policy: str = "together"
    evaluated_splits: tuple[str, ...] = EVALUATED_SPLITS
    needs_backbone_every_step: bool = False
    class_loss: Callable | None = field(default=None, init=False)

    def attach(self, model: nn.Module, class_loss: Callable) -> nn.Module:
        self.class_loss = class_loss
        return model

    def streams(self, train: DataLoader, training_loader: Callable[[str], DataLoader]) -> dict[str, DataLoader]:
        return {"train": train}

    def loss(self, module: nn.Module, batch: dict[str, dict], progress):
        return self.class_loss(module, batch["train"], progress)

    def extra_modules(self) -> tuple[nn.Module, ...]:
        return ()

    def scored(self, module: nn.Module) -> nn.Module:
        return module

    def details(self) -> dict[str, str]:
        return {}


@dataclass
class Dann:
    """Domain-adversarial training (`adaptation.py`): the labelled source stream and the unlabelled target stream,
    drawn together; the domain discriminator trains beside the model and is never saved."""

    args: AdaptationArgs
    strategy: str  # --strategy: something below the head must train
    target_source: str  # where the unlabelled target data came from, for the report
    policy: str = "together"
    evaluated_splits: tuple[str, ...] = EVALUATED_SPLITS
    # The backbone runs on the target batches every step.
    needs_backbone_every_step: bool = True
    adversarial: DomainAdversarial | None = field(default=None, init=False)

    def attach(self, model: nn.Module, class_loss: Callable) -> nn.Module:
        check_trainable_features(model, self.strategy)
        self.adversarial = DomainAdversarial(model, head_input_size(model), self.args, class_loss)
        return self.adversarial

    def streams(self, train: DataLoader, training_loader: Callable[[str], DataLoader]) -> dict[str, DataLoader]:
        return {"source": train, "target": training_loader(TARGET_TRAIN)}

    def loss(self, module: nn.Module, batch: dict[str, dict], progress):
        return module(batch["source"], batch["target"], progress)

    def extra_modules(self) -> tuple[nn.Module, ...]:
        return (self.adversarial.discriminator,)

    def scored(self, module: nn.Module) -> nn.Module:
        return self.adversarial.model  # the module the Loop holds is this wrapper, prepared

    def details(self) -> dict[str, str]:
        args = self.args
        return {"domain adaptation": (
            f"DANN: a domain discriminator ({args.discriminator_hidden_size}-wide, domain loss weight "
            f"{args.domain_loss_weight:g}) on the features the classifier reads, through gradient reversal "
            f"(weight 2/(1+exp(-10p))-1 over training progress p); unlabelled target data: "
            f"{self.target_source}; the best checkpoint chosen on the source validation split")}


def objective_for(args: AdaptationArgs, strategy: str, sources: dict[str, str]) -> Objective:
    """The objective --adaptation names; `sources` are the data's ({split: where it came from})."""
    if args.adaptation == "dann":
        return Dann(args, strategy, sources[TARGET_TRAIN])
    return Supervised()
