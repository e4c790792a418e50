"""Feature extraction on cached features: run the frozen backbone once, then train only the head.

With `--strategy feature_extraction` the backbone is frozen and runs in inference mode (`strategies.
keep_frozen_in_eval`), so without augmentation it maps each example to the same pooled features every epoch.
Computing them once and training the head on the cache gives the same model as running the backbone every step
(same batches, same head dropout; only floating-point summation order differs), 10-100x faster on a CPU.

Per architecture (`config.model_type`), `FEATURE_HEADS` says where the model splits:
- `features(model, inputs)`: the pooled backbone output for a batch of model inputs (everything but `labels`),
  shape (batch, dim); it must not depend on anything the head trains.
- `head(model, features)`: the logits from those features, exactly as the model's own forward computes them
  (dropout included), using only the trainable head.
A new architecture (Whisper's encoder, a text model) plugs in by adding one entry; a head that is linear before
its pooling (Wav2Vec2's projector) can take the pooled features, since a linear map commutes with a mean.

A recipe uses it like this (see recipes/image_classification.py):

    if uses_cached_features(model, run.strategy, random_inputs=augment != "none"):
        train_features = compute_features(model, plain_train_loader)   # batches of model inputs + labels
        model_to_train = HeadOnFeatures(model)                          # trains `model`'s head in place
        train_loader = DataLoader(train_features, sampler=..., batch_size=...)   # yields features + labels
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from hf_transfer.config import StrategyArgs

PATH_TEXT = {
    True: "cached features (the frozen backbone ran once; the head trained on its pooled output)",
    False: "backbone forward every step",
}


@dataclass(frozen=True)
class FeatureHead:
    features: Callable[[nn.Module, dict], torch.Tensor]  # (model, inputs) -> pooled backbone features
    head: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (model, features) -> logits


FEATURE_HEADS: dict[str, FeatureHead] = {
    # EfficientNet: average-pooled last feature map -> dropout -> classifier.
    "efficientnet": FeatureHead(
        features=lambda model, inputs: model.efficientnet(**inputs).pooler_output,
        head=lambda model, features: model.classifier(model.dropout(features)),
    ),
    # ViT and DeiT's plain classifier: the final-norm [CLS] token -> classifier.
    **dict.fromkeys(("vit", "deit"), FeatureHead(
        features=lambda model, inputs: getattr(model, model.base_model_prefix)(**inputs).last_hidden_state[:, 0],
        head=lambda model, features: model.classifier(features),
    )),
}


def feature_head(model: nn.Module) -> FeatureHead | None:
    return FEATURE_HEADS.get(getattr(model.config, "model_type", ""))


def uses_cached_features(model: nn.Module, strategy: StrategyArgs, random_inputs: bool) -> bool:
    """Whether training can run on cached features: a frozen backbone, inputs that are the same every epoch
    (no augmentation, mixup or CutMix), a model in `FEATURE_HEADS`, and `--cache_features` left on."""
    return (strategy.cache_features and strategy.strategy == "feature_extraction" and not random_inputs
            and feature_head(model) is not None)


class FeatureDataset(Dataset):
    """Pooled features and labels, one row per example, in the order of the loader they were computed from."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"features": self.features[index], "labels": self.labels[index]}


@torch.no_grad()
def compute_features(model: nn.Module, loader, device: torch.device | None = None) -> FeatureDataset:
    """Run the frozen backbone once over `loader` (unshuffled batches of model inputs and `labels`)."""
    extract = feature_head(model).features
    training = model.training
    model.eval()
    features, labels = [], []
    # Iterating a DataLoader draws a seed from the global RNG: restore it, so dropout in the head then sees the
    # random numbers it would see without the cache.
    with torch.random.fork_rng(devices=[]):
        for batch in loader:
            inputs = {k: v.to(device) if device else v for k, v in batch.items() if k != "labels"}
            features.append(extract(model, inputs).float().cpu())
            labels.append(batch["labels"])
    model.train(training)
    return FeatureDataset(torch.cat(features), torch.cat(labels))


@dataclass
class HeadOutput:
    logits: torch.Tensor  # what the Loop's losses and `predict` read from a model's output


class HeadOnFeatures(nn.Module):
    """The model seen from its cached features: `forward(features=...)` gives the logits of `model`'s own head.

    The Loop trains this wrapper; the parameters are `model`'s, so `model` ends up trained (and saved) as usual.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.head = feature_head(model).head

    def forward(self, features: torch.Tensor) -> HeadOutput:
        return HeadOutput(logits=self.head(self.model, features))
