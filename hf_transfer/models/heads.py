"""One backbone, several named classification heads: a second task is a second entry, not a second model.

A one-head run keeps the `AutoModelFor*` model (it loads with `from_pretrained` and in `pipeline()`), unless it
asks for another pooling (`--pooling mean`): then it is a `MultiHeadModel` with one head, `label`, which predicts
without naming it. Several heads share one headless backbone (`AutoModel`), pooled as `hf_transfer.models.pooling`
pools features, each head a linear layer under `heads.<name>`. The strategies find the heads as they find a single head
(`tasks.head_module_names`), so full, partial, feature extraction and LoRA work alike; `head(name)` gives a model
that `hf_transfer.evaluation.inference` predicts with as with a one-head model.

Saved as the backbone's own folder (config.json, model.safetensors) plus `heads.json` (names, labels, pooling)
and `heads.safetensors`; with LoRA, as the adapter (which holds the heads) plus `heads.json`.
"""

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from hf_transfer.config import UsageError
from hf_transfer.models.pooling import POOLINGS, pool_output

HEADS_FILE = "heads.json"
HEAD_WEIGHTS_FILE = "heads.safetensors"
ONLY_HEAD = "label"  # the head of a one-head model (`--pooling mean` or `cls`)


class MultiHeadModel(nn.Module):
    """`backbone` + a linear head per task in `heads` ({name: label names})."""

    base_model_prefix = "backbone"  # how `tasks.base_model` and the strategies find the backbone

    def __init__(self, backbone: PreTrainedModel, heads: dict[str, list[str]], pooling: str = "cls",
                 dropout: float = 0.1):
        super().__init__()
        if pooling not in POOLINGS:
            raise UsageError(f"pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
        if not heads or any(len(labels) < 2 for labels in heads.values()):
            raise UsageError(f"every head needs two labels or more: {heads}")
        # The heads read the final hidden states: a pooler with weights (BERT's, ViT's) would train for nothing, and
        # DDP refuses weights that get no gradient. A CNN's parameter-free pooling stays: it gives the features.
        pooler = getattr(backbone, "pooler", None)
        if isinstance(pooler, nn.Module) and any(True for _ in pooler.parameters()):
            backbone.pooler = None
        self.backbone = backbone
        self.labels = {name: list(labels) for name, labels in heads.items()}
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        width = _output_width(backbone)
        self.heads = nn.ModuleDict({name: nn.Linear(width, len(labels)) for name, labels in heads.items()})
        if len(heads) == 1:  # the config names the only head's labels, as a one-task model's does
            labels = next(iter(self.labels.values()))
            backbone.config.id2label = dict(enumerate(labels))
            backbone.config.label2id = {label: i for i, label in enumerate(labels)}

    @property
    def config(self):
        return self.backbone.config

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, head: str | None = None, **inputs) -> SequenceClassifierOutput:
        """The logits of head `head` (of the only head when None); the losses are the Loop's (`multi_head_loss`)."""
        return SequenceClassifierOutput(logits=self.classify(self.pooled(inputs), head))

    def pooled(self, inputs: dict) -> torch.Tensor:
        """(batch, width): the backbone's output pooled over the real positions (`padding_mask` for audio, else
        `attention_mask`)."""
        inputs = dict(inputs)
        padding_mask = inputs.pop("padding_mask", None)
        mask = inputs.get("attention_mask") if padding_mask is None else padding_mask
        return pool_output(self.backbone, self.backbone(**inputs), mask, self.pooling)

    def classify(self, features: torch.Tensor, head: str | None = None) -> torch.Tensor:
        """The logits of head `head` (of the only head when None) from pooled features."""
        if head is None:
            if len(self.heads) > 1:
                raise UsageError(f"this model has several heads ({', '.join(self.heads)}): name one")
            head = next(iter(self.heads))
        if head not in self.heads:
            raise UsageError(f"no head {head!r}; this model has {', '.join(self.heads)}")
        return self.heads[head](self.dropout(features))

    def head(self, name: str) -> "OneHead":
        """A model that predicts with head `name` alone, with that head's labels in its config."""
        if name not in self.heads:
            raise UsageError(f"no head {name!r}; this model has {', '.join(self.heads)}")
        return OneHead(self, name)

    def spec(self) -> dict:
        return {"pooling": self.pooling, "dropout": self.dropout.p, "heads": self.labels}

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.backbone.save_pretrained(folder)
        save_file({name: tensor.contiguous() for name, tensor in self.heads.state_dict().items()},
                  str(folder / HEAD_WEIGHTS_FILE))
        save_heads_spec(self, folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "MultiHeadModel":
        """A saved multi-head model; for a LoRA one, the base (`backbone_path`) with the adapter: see
        `inference.load_trained`."""
        folder = Path(folder)
        model = cls.from_spec(AutoModel.from_pretrained(folder), folder)
        model.heads.load_state_dict(load_file(str(folder / HEAD_WEIGHTS_FILE)))
        return model

    @classmethod
    def from_spec(cls, backbone: PreTrainedModel, folder: str | Path) -> "MultiHeadModel":
        """`backbone` with the heads `folder/heads.json` names, their weights not yet loaded."""
        spec = json.loads((Path(folder) / HEADS_FILE).read_text())
        return cls(backbone, spec["heads"], spec["pooling"], spec["dropout"])


def multi_head_loss(class_weights: dict[str, torch.Tensor] | None = None, label_smoothing: float = 0.0) -> Callable:
    """The Loop's `compute_loss` for named streams: each stream trains the head of its name, by cross-entropy with
    that head's `class_weights` (none for a head left out; `--class_weights auto`: `training.loop.auto_class_weights`
    of its own stream's labels) and --label_smoothing, as a one-head run's loss. Returns the sum of the heads' losses
    as the loss, and each one (`<name>_loss`) to log."""
    class_weights = class_weights or {}

    def compute_loss(model, batch: dict[str, dict], progress) -> dict[str, torch.Tensor]:
        losses = {}
        for name, stream in batch.items():
            logits = model(head=name, **{k: v for k, v in stream.items() if k != "labels"}).logits
            weight = class_weights.get(name)
            losses[f"{name}_loss"] = nn.functional.cross_entropy(
                logits.float(), stream["labels"], weight=None if weight is None else weight.to(logits.device),
                label_smoothing=label_smoothing)
        return {"loss": sum(losses.values()), **losses}

    return compute_loss


def save_heads_spec(model: MultiHeadModel, folder: Path) -> None:
    (folder / HEADS_FILE).write_text(json.dumps(model.spec(), indent=2))


def is_multi_head(folder: str | Path) -> bool:
    return (Path(folder) / HEADS_FILE).is_file()


class OneHead(nn.Module):
    """One head of a `MultiHeadModel`, called like a one-head classifier: `model(**inputs).logits`."""

    def __init__(self, model: MultiHeadModel, name: str):
        super().__init__()
        self.model, self.name = model, name
        labels = model.labels[name]
        self.config = type(model.config).from_dict(
            {**model.config.to_dict(), "id2label": dict(enumerate(labels)),
             "label2id": {label: i for i, label in enumerate(labels)}})

    @property
    def device(self) -> torch.device:
        return self.model.device

    def forward(self, **inputs) -> SequenceClassifierOutput:
        return self.model(head=self.name, **inputs)


def _output_width(backbone: PreTrainedModel) -> int:
    """The width of the pooled features: `hidden_size`, or a CNN's last stage (`hidden_dim`, `hidden_sizes`)."""
    config = backbone.config
    for name in ("hidden_size", "hidden_dim", "d_model"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    if getattr(config, "hidden_sizes", None):
        return config.hidden_sizes[-1]
    raise UsageError(f"can't tell the feature width of {type(backbone).__name__}")
