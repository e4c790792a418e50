"""Domain adaptation by adversarial training (DANN: Ganin et al. 2016; tllib's `alignment/dann.py`).

The labelled source stream trains the classifier as usual. The features the classifier head reads, from source and
unlabelled target batches alike, also go through a gradient-reversal layer into a small domain discriminator: it
learns to tell the domains apart, and the reversed gradient teaches the model features it can't tell apart.

The features are the head's input, caught with a forward hook, so every classification model works unchanged
(BERT's pooled [CLS], ViT's class token, a Wav2Vec2 or Whisper projector's mean pool, a CNN's pooled map). The
discriminator lives only in training: the saved model is the plain classifier.
"""

import dataclasses
import math
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
from torch import nn

from hf_transfer.config import AdaptationArgs, UsageError
from hf_transfer.data.splits import (
    LABEL_COLUMN_GUESSES,
    FolderLayout,
    LabelledSplits,
    guess_column,
    label_names_in,
    load_class_folder,
    load_file,
    resolve_paths,
)
from hf_transfer.models.architectures import head_module_names
from hf_transfer.tasks import Task

# The splits target data adds to a run's LabelledSplits: unlabelled training data, and an optional labelled test.
TARGET_TRAIN, TARGET_TEST = "target_train", "target_test"

def dann_lambda(progress: float) -> float:
    """The gradient-reversal weight over training progress p in [0, 1]: 2 / (1 + exp(-10 p)) - 1, from 0 to ~1,
    so the discriminator's noisy early gradients barely reach the features."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return inputs.view_as(inputs)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return -ctx.weight * grad_output, None


def reverse_gradient(inputs: torch.Tensor, weight: float) -> torch.Tensor:
    """The identity going forward; the gradient times -`weight` going back."""
    return _ReverseGradient.apply(inputs, weight)


def domain_discriminator(features: int, hidden: int) -> nn.Sequential:
    """tllib's DomainDiscriminator: two hidden layers with batch norm, one logit (source vs target)."""
    return nn.Sequential(
        nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
        nn.Linear(hidden, 1),
    )


def feature_head_name(model: nn.Module) -> str:
    """The module whose input is the pooled features: the last head module (`classifier`)."""
    heads = head_module_names(model)
    if not heads:
        raise UsageError(f"--adaptation dann: can't find the classifier head of {type(model).__name__}")
    return heads[-1]


def check_trainable_features(model: nn.Module, strategy: str) -> None:
    """DANN moves the features the head reads: something below the head must train. With a frozen backbone, the
    audio models' projector does; a text or image classifier reads the frozen backbone directly."""
    head = model.get_submodule(feature_head_name(model))
    head_ids = {id(p) for p in head.parameters()}
    if not any(p.requires_grad and id(p) not in head_ids for p in model.parameters()):
        raise UsageError(f"--adaptation dann with --strategy {strategy}: nothing below the classifier trains, so the "
                         "features can't move toward the target. Use --strategy partial, lora or full")


class DomainAdversarial(nn.Module):
    """`model` and its domain discriminator, trained together; `forward` returns the loss and what to log."""

    def __init__(self, model: nn.Module, feature_size: int, args: AdaptationArgs, class_loss):
        super().__init__()
        self.model = model
        self.discriminator = domain_discriminator(feature_size, args.discriminator_hidden_size)
        self.domain_loss_weight = args.domain_loss_weight
        self.class_loss = class_loss  # (model, labelled batch, progress) -> loss: class weights, smoothing
        self._features: list[torch.Tensor] | None = None  # a list only inside `forward`: evaluation adds nothing
        head = model.get_submodule(feature_head_name(model))
        head.register_forward_pre_hook(self._catch_features)

    def _catch_features(self, module, inputs) -> None:
        if self._features is not None:
            self._features.append(inputs[0])

    def forward(self, source: dict, target: dict, progress) -> dict[str, torch.Tensor]:
        self._features = []
        class_loss = self.class_loss(self.model, source, progress)
        self.model(**{k: v for k, v in target.items() if k != "labels"})
        (source_features, target_features), self._features = self._features, None
        features = torch.cat([source_features, target_features]).float()
        weight = dann_lambda(progress.fraction)
        logits = self.discriminator(reverse_gradient(features, weight)).squeeze(-1)
        domains = torch.cat([torch.ones(len(source_features)), torch.zeros(len(target_features))]).to(logits.device)
        domain_loss = F.binary_cross_entropy_with_logits(logits, domains)
        return {
            "loss": class_loss + self.domain_loss_weight * domain_loss,
            "class_loss": class_loss.detach(),
            "domain_loss": domain_loss.detach(),
            "domain_accuracy": ((logits > 0).float() == domains).float().mean(),
            "reversal_weight": torch.tensor(weight, device=logits.device),
        }


def head_input_size(model: nn.Module) -> int:
    """The width of the features the classifier head reads: its (first) linear layer's input."""
    head = model.get_submodule(feature_head_name(model))
    return next(module for module in head.modules() if isinstance(module, nn.Linear)).in_features


# --- target data -------------------------------------------------------------------------------------------------
def _load_files_under(root: str, layout: FolderLayout) -> datasets.Dataset:
    """Every file of the layout's kinds under `root`, at any depth (class subfolders or none): labels unread."""
    folder = Path(root)
    if not folder.is_dir():
        raise UsageError(f"data folder not found: {root}")
    files = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in layout.extensions)
    if not files:
        raise UsageError(f"{root}: no {'/'.join(layout.extensions)} files")
    return datasets.Dataset.from_dict({layout.column: files})


def add_target_splits(data: LabelledSplits, args: AdaptationArgs, task: Task, input_column: str | None,
                      label_column: str | None) -> LabelledSplits:
    """`data` with the target splits added: `target_train` (labels -1: never read) and, when given, the labelled
    `target_test`, its labels those the source trained on. Each keeps only the input column, named as in the
    source's training split, so the modality prepares it as any other split; relative file paths are read from the
    file's folder."""
    return with_splits(data, task, input_column, label_column, {
        TARGET_TRAIN: (args.target_train_file, args.target_train_dir),
        TARGET_TEST: (args.target_test_file, args.target_test_dir)})


def with_splits(data: LabelledSplits, task: Task, input_column: str | None, label_column: str | None,
                files: dict[str, tuple[str | None, str | None]]) -> LabelledSplits:
    """`data` with each split of `files` ({split: (file, folder)}, one of them or neither) added as
    `add_target_splits` says; a split named TARGET_TRAIN is unlabelled."""
    train_column = guess_column(data.splits["train"].column_names, input_column, task.column_guesses,
                                task.input_kind, data.sources["train"])
    splits, sources = dict(data.splits), dict(data.sources)
    for split, (file, folder) in files.items():
        if not (file or folder):
            continue
        if folder and task.layout is None:
            raise UsageError(f"--{split}_dir: this recipe reads {task.input_kind}, not folders of files; "
                             f"use --{split}_file")
        source = file or folder
        if split == TARGET_TRAIN:
            dataset = load_file(file) if file else _load_files_under(folder, task.layout)
        else:
            dataset = load_file(file) if file else load_class_folder(folder, task.layout)
        if len(dataset) == 0:
            raise UsageError(f"{source}: no examples")
        column = guess_column(dataset.column_names, input_column, task.column_guesses, task.input_kind, source)
        values = dataset[column]
        if task.reads_files and file:
            values = resolve_paths(values, Path(file).parent, source, task.input_kind)
        if split == TARGET_TRAIN:
            labels = [-1] * len(values)
        else:
            labels = _encode_target_labels(dataset, label_column, data, source)
        splits[split] = datasets.Dataset.from_dict({train_column: values, "labels": labels})
        sources[split] = source
    return dataclasses.replace(data, splits=datasets.DatasetDict(splits), sources=sources)


def _encode_target_labels(dataset: datasets.Dataset, label_column: str | None, data: LabelledSplits,
                          source: str) -> list[int]:
    column = guess_column(dataset.column_names, label_column, LABEL_COLUMN_GUESSES, "label", source)
    values = label_names_in(dataset, column)
    unknown = sorted(set(values) - set(data.label_names))
    if unknown:
        raise UsageError(f"{source}: label(s) {', '.join(map(repr, unknown))} never appear in the source training "
                         f"data (known: {', '.join(data.label_names)})")
    return [data.label2id[value] for value in values]
