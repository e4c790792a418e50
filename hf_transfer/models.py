"""Build a classification model from a checkpoint (or a config, to train from scratch)."""

from pathlib import Path

from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from hf_transfer.builtin import resolve_model
from hf_transfer.config import ModelArgs, UsageError
from hf_transfer.tasks import Task

# Config attributes that hold dropout rates, across BERT, DistilBERT, ViT, Wav2Vec2 and EfficientNet families.
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "dropout",
                "attention_dropout", "seq_classif_dropout", "hidden_dropout", "activation_dropout",
                "final_dropout", "feat_proj_dropout", "dropout_rate")


def model_path(model_args: ModelArgs) -> str | None:
    """The local folder or Hub id the weights are read from (`builtin:` names resolved)."""
    if not model_args.model_name_or_path:
        return None
    return resolve_model(model_args.model_name_or_path)[0]


def base_model_id(model_args: ModelArgs) -> str | None:
    """The Hub id to name as `base_model` in cards: given, known for a built-in, or the Hub id loaded."""
    if model_args.base_model_id:
        return model_args.base_model_id
    if not model_args.model_name_or_path:
        return None
    path, hub_id = resolve_model(model_args.model_name_or_path)
    return hub_id or (None if Path(path).exists() else path)


def load_config(model_args: ModelArgs, dropout: float | None, **overrides) -> PretrainedConfig:
    """The checkpoint's (or `--config_name`'s) config with the task's `overrides` and an optional dropout rate."""
    source = model_args.config_name or model_path(model_args)
    try:
        config = AutoConfig.from_pretrained(source, revision=model_args.revision,
                                            trust_remote_code=model_args.trust_remote_code)
    except (OSError, ValueError) as error:
        raise UsageError(f"could not load a model config from {source!r}: {error}") from None
    for key, value in overrides.items():
        setattr(config, key, value)
    if dropout is not None:
        for key in DROPOUT_KEYS:
            if isinstance(getattr(config, key, None), float):
                setattr(config, key, dropout)
    return config


def build_model(model_args: ModelArgs, task: Task, config: PretrainedConfig) -> PreTrainedModel:
    """Pretrained weights with `config`, or random ones from it for `--config_name` (training from scratch)."""
    if model_args.config_name:
        return task.auto_model.from_config(config, trust_remote_code=model_args.trust_remote_code)
    path = model_path(model_args)
    try:
        # A checkpoint that already has a head for another label set (or vocabulary) gets a fresh one.
        return task.auto_model.from_pretrained(path, config=config, revision=model_args.revision,
                                               trust_remote_code=model_args.trust_remote_code,
                                               ignore_mismatched_sizes=True)
    except (OSError, ValueError) as error:
        raise UsageError(f"could not load {task.name} weights from {path!r}: {error}") from None


def load_model(model_args: ModelArgs, task: Task, label_names: list[str], dropout: float | None) -> PreTrainedModel:
    """A classifier for `label_names`."""
    config = load_config(model_args, dropout, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
                         label2id={name: i for i, name in enumerate(label_names)})
    model = build_model(model_args, task, config)
    set_batchnorm_momentum(model)
    return model


def set_batchnorm_momentum(model: PreTrainedModel) -> None:
    """Give every EfficientNet BatchNorm layer PyTorch's meaning of the config's momentum.

    transformers passes `batch_norm_momentum` to `nn.BatchNorm2d` as it is, but Hub EfficientNet configs hold
    TensorFlow's meaning (0.99: keep 99 % of the running statistics), which PyTorch reads as "keep 1 %"; and it
    builds the expansion layers' BatchNorm without it (PyTorch's 0.1). Our converted Lite0 stores 0.01.
    """
    if getattr(model.config, "model_type", "") != "efficientnet":
        return
    momentum = model.config.batch_norm_momentum
    momentum = 1 - momentum if momentum > 0.5 else momentum
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
