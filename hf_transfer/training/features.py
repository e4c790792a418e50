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
A new architecture plugs in by adding one entry; a head that is linear before
its pooling (Wav2Vec2's projector) can take the pooled features, since a linear map commutes with a mean.

Recipes call `training_inputs`, which takes this path when it applies and the per-step one otherwise.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hf_transfer.config import StrategyArgs, TrainArgs
from hf_transfer.data.sampling import EpochKeys, GroupedShuffleSampler, SeededExamples, data_order
from hf_transfer.models.architectures import head_modules, without_adapter
from hf_transfer.models.heads import MultiHeadModel

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
    # Whisper's encoder: encoder output -> projector -> mean over positions -> classifier. The projector is linear, so
    # it commutes with the mean: the cache holds the mean encoder output. Every clip is padded to the same window
    # (hf_transfer/modalities/whisper_inputs.py), so the mean covers the same positions as the model's own forward.
    "whisper": FeatureHead(
        features=lambda model, inputs: model.encoder(**inputs).last_hidden_state.mean(dim=1),
        head=lambda model, features: model.classifier(model.projector(features)),
    ),
    # BERT and its kin (MiniLM): the pooler (dense + tanh on [CLS], part of the frozen backbone) -> dropout ->
    # classifier.
    "bert": FeatureHead(
        features=lambda model, inputs: model.bert(**inputs).pooler_output,
        head=lambda model, features: model.classifier(model.dropout(features)),
    ),
    # ViT and DeiT's plain classifier: the final-norm [CLS] token -> classifier.
    **dict.fromkeys(("vit", "deit"), FeatureHead(
        features=lambda model, inputs: getattr(model, model.base_model_prefix)(**inputs).last_hidden_state[:, 0],
        head=lambda model, features: model.classifier(features),
    )),
}


# A linear head on the pooled backbone (`--pooling mean` or `cls`, any architecture): `hf_transfer.models.heads`.
POOLED_HEAD = FeatureHead(features=lambda model, inputs: model.pooled(inputs),
                          head=lambda model, features: model.classify(features))


def feature_head(model: nn.Module) -> FeatureHead | None:
    if isinstance(without_adapter(model), MultiHeadModel):
        return POOLED_HEAD
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

    def __getitems__(self, indices: list[int]) -> dict:
        """A whole batch in one indexing (the DataLoader fetches batches this way when a data set has it): a head
        step is so cheap that stacking rows one by one would take most of its time."""
        index = torch.as_tensor(indices)
        return {"features": self.features[index], "labels": self.labels[index]}


def batch_as_fetched(batch: dict) -> dict:
    """The collate_fn of a `FeatureDataset` loader: `__getitems__` has already made the batch."""
    return batch


@torch.no_grad()
def compute_features(model: nn.Module, loader: DataLoader, accelerator: Accelerator) -> FeatureDataset:
    """Run the frozen backbone once over `loader` (unshuffled batches of model inputs and `labels`) on the run's
    device, each forward at the run's precision (as `loop.predict` runs it: the loader's preprocessing stays outside
    autocast, since Whisper's feature extractor computes with torch and can't return bf16). Rows come back in the
    data set's order, whatever order the loader's sampler read them in (longest first, say), so a training sampler
    over the data set's lengths draws the batches the per-step path draws."""
    extract = feature_head(model).features
    training = model.training
    model.eval()
    features, labels = [], []
    # Iterating a DataLoader draws a seed from the global RNG: restore it, so dropout in the head then sees the
    # random numbers it would see without the cache.
    with torch.random.fork_rng(devices=[]):
        for batch in loader:
            inputs = {k: v.to(accelerator.device) for k, v in batch.items() if k != "labels"}
            with accelerator.autocast():
                features.append(extract(model, inputs).float().cpu())
            labels.append(batch["labels"])
    model.train(training)
    in_data_order = torch.from_numpy(data_order(loader.sampler))
    return FeatureDataset(torch.cat(features)[in_data_order], torch.cat(labels)[in_data_order])


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


# Fitting the head before fine-tuning (`--fit_head_first`): the LP of LP-FT (Kumar et al. 2022). A random head sends
# large, wrong gradients into the pretrained features in the first steps; a head that already answers as well as a
# linear probe does not. The fit is that probe: the run's own loss (cross-entropy, BCE or the regression loss, with
# its class weights) over every training example at once, plus an L2 penalty on the weights as scikit-learn's
# logistic regression puts it (C = 1), minimised by L-BFGS. Deterministic, so every DDP process fits the same head.
MAX_ITERATIONS = 200


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable weights of the task head (under LoRA, the head's trained copy)."""
    return [param for head in head_modules(model) for param in head.parameters() if param.requires_grad]


def fits_head_first(model: nn.Module, strategy: StrategyArgs, head_loss: Callable | None,
                    accelerator: Accelerator) -> bool:
    """Whether --fit_head_first applies: asked for, a loss to fit with, and a model whose features can be read
    (`FEATURE_HEADS`); says so when it was asked for and can't."""
    if not strategy.fit_head_first or head_loss is None:
        return False
    if feature_head(model) is None:
        accelerator.print(f"--fit_head_first: hf_transfer can't read the features of a {model.config.model_type!r} "
                          "model, so its head starts random")
        return False
    return True


def fit_head(model: nn.Module, features: FeatureDataset, loss: Callable) -> float:
    """Set the head of `model` to the minimiser of `loss` on `features` (plus the L2 penalty); returns the mean
    training loss it reaches. Dropout is off during the fit, as in a probe."""
    head, params = HeadOnFeatures(model), head_parameters(model)
    device = params[0].device
    inputs, labels = features.features.to(device), features.labels.to(device)
    penalty = 1 / (2 * len(labels))  # scikit-learn's C = 1 on a mean loss: ||W||^2 / (2 n)
    optimizer = torch.optim.LBFGS(params, max_iter=MAX_ITERATIONS, line_search_fn="strong_wolfe")
    training = model.training
    model.eval()

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        value = loss(head(inputs).logits.float(), labels)
        value = value + penalty * sum((param**2).sum() for param in params if param.dim() > 1)
        value.backward()
        return value

    optimizer.step(objective)
    optimizer.zero_grad()
    model.train(training)
    with torch.no_grad():
        return float(loss(head(inputs).logits.float(), labels))


@dataclass
class TrainingInputs:
    """What the loop trains on: its batches, the validation batches it scores, and the module it trains."""

    train_loader: DataLoader
    evaluation_loader: DataLoader
    model: nn.Module  # `HeadOnFeatures(model)` on cached features, else the model itself
    cached: bool
    features: dict[str, FeatureDataset] | None = None  # on cached features: the train and validation ones


def path_line(model: nn.Module, strategy: StrategyArgs, per_step: dict[str, str | None]) -> str:
    """The console's line on the backbone's path. When only `per_step` (see `training_inputs`) keeps a frozen
    backbone's features from being cached, it says so and names the settings that would cache them."""
    cached = uses_cached_features(model, strategy, bool(per_step))
    line = f"backbone: {PATH_TEXT[cached]}"
    if cached or not per_step or not uses_cached_features(model, strategy, random_inputs=False):
        return line
    line += (f": {' and '.join(per_step)} need{'s' if len(per_step) == 1 else ''} the backbone every step (new "
             "inputs each epoch), so its features are not cached")
    if all(per_step.values()):
        line += f"; {' '.join(per_step.values())} would cache them and run the frozen backbone once"
    return line


def training_inputs(accelerator: Accelerator, model: nn.Module, strategy: StrategyArgs, train_args: TrainArgs,
                    per_step: dict[str, str | None], plain_loaders: dict[str, DataLoader],
                    evaluation_loader: DataLoader, examples: Dataset, lengths: list[int] | None,
                    train_collate: Callable, workers: int, head_loss: Callable | None = None) -> TrainingInputs:
    """The head on cached features when `uses_cached_features` allows it: the frozen backbone runs once over the
    `plain_loaders` (train and validation, preprocessed as in evaluation). Otherwise the whole model on `examples`,
    each read with its own augmentation seed and batched by `train_collate`, grouped by `lengths` if given.
    `per_step`: the settings that give new inputs every step (`--augment basic`, DANN's target batches), each with
    the setting that turns it off (`--augment none`; None where there is none to suggest). With --fit_head_first,
    the head is first fitted (`fit_head`) on the training split's features with `head_loss`."""
    cached = uses_cached_features(model, strategy, bool(per_step))
    accelerator.print(path_line(model, strategy, per_step))
    fitting, train = fits_head_first(model, strategy, head_loss, accelerator), None
    if cached or fitting:
        model.to(accelerator.device)
        train = compute_features(model, plain_loaders["train"], accelerator)
    if fitting:
        loss = fit_head(model, train, head_loss)
        accelerator.print(f"head fitted on the frozen features of {len(train):,} training examples "
                          f"(training loss {loss:.4f}); training starts from it")
    if not cached:
        train_loader = example_loader(examples, lengths, train_collate, train_args, workers, accelerator.device)
        return TrainingInputs(train_loader, evaluation_loader, model, cached)
    validation = compute_features(model, plain_loaders["validation"], accelerator)
    evaluation_loader = accelerator.prepare(DataLoader(validation, batch_size=train_args.per_device_eval_batch_size,
                                                       collate_fn=batch_as_fetched))
    batch_size = train_args.per_device_train_batch_size
    # Its own generator: starting an epoch (or a resumed one) must not draw from the RNG that dropout uses.
    train_loader = DataLoader(train, sampler=GroupedShuffleSampler(lengths, batch_size, train_args.seed, len(train)),
                              batch_size=batch_size, collate_fn=batch_as_fetched,
                              pin_memory=accelerator.device.type == "cuda",
                              generator=torch.Generator().manual_seed(train_args.seed))
    return TrainingInputs(train_loader, evaluation_loader, HeadOnFeatures(model), cached,
                          {"train": train, "validation": validation})


def example_loader(examples: Dataset, lengths: list[int] | None, collate: Callable, train_args: TrainArgs,
                   workers: int, device: torch.device) -> DataLoader:
    """A training stream of `examples`: a seeded shuffle (grouped by `lengths` if given), each example read with its
    own augmentation seed and batched by `collate`."""
    batch_size = train_args.per_device_train_batch_size
    sampler = EpochKeys(GroupedShuffleSampler(lengths, batch_size, train_args.seed, len(examples)))
    # Its own generator: starting an epoch (or a resumed one) must not draw from the RNG that dropout uses.
    return DataLoader(SeededExamples(examples, train_args.seed), sampler=sampler, batch_size=batch_size,
                      collate_fn=collate, num_workers=workers, pin_memory=device.type == "cuda",
                      generator=torch.Generator().manual_seed(train_args.seed))
