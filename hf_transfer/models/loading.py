"""Build a classification model from a checkpoint (or a config, to train from scratch)."""

from pathlib import Path

from accelerate import PartialState
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from hf_transfer.config import ModelArgs, UsageError
from hf_transfer.models.architectures import has_decoder
from hf_transfer.models.builtin import resolve_model
from hf_transfer.models.heads import ONLY_HEAD, MultiHeadModel

DEFAULT_HEAD_DROPOUT = 0.1  # BERT's and ViT's classifier dropout

# Config attributes that hold dropout rates, across BERT, DistilBERT, ViT, Wav2Vec2 and EfficientNet families.
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "dropout",
                "attention_dropout", "seq_classif_dropout", "hidden_dropout", "activation_dropout",
                "final_dropout", "feat_proj_dropout", "dropout_rate")


def _looks_local(name: str) -> bool:
    """A Hub id is `name` or `org/name`; anything else is meant as a local path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def check_model_folder(name: str, flag: str, needs_weights: bool = True) -> None:
    """A local model folder must exist and hold a config (and weights); a Hub id is left to the Hub."""
    path = Path(name).expanduser()
    if not path.exists():
        if _looks_local(name):
            raise UsageError(f"--{flag} {name}: no such folder")
        return
    if not path.is_dir():
        raise UsageError(f"--{flag} {name}: a file, not a model folder")
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if needs_weights and not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    if missing:
        raise UsageError(f"--{flag} {name}: the folder is not a model checkpoint, it has no {' and no '.join(missing)}")


def model_path(model_args: ModelArgs) -> str | None:
    """The local folder or Hub id the weights are read from (`builtin:` names resolved), checked when local."""
    if not model_args.model_name_or_path:
        return None
    path = resolve_model(model_args.model_name_or_path)[0]
    check_model_folder(path, "model_name_or_path")
    return path


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
    if model_args.config_name:
        check_model_folder(model_args.config_name, "config_name", needs_weights=False)
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


def build_model(model_args: ModelArgs, auto_model: type, config: PretrainedConfig) -> PreTrainedModel:
    """Pretrained weights with `config`, or random ones from it for `--config_name` (training from scratch).
    `auto_model`: the task's class (`AutoModelFor*`), or `AutoModel` for a headless backbone."""
    if model_args.config_name:
        return auto_model.from_config(config, trust_remote_code=model_args.trust_remote_code)
    path = model_path(model_args)
    try:
        # A checkpoint that already has a head for another label set (or vocabulary) gets a fresh one.
        model, loading = auto_model.from_pretrained(path, config=config, revision=model_args.revision,
                                                    trust_remote_code=model_args.trust_remote_code,
                                                    ignore_mismatched_sizes=True, output_loading_info=True)
    except (OSError, ValueError) as error:
        raise UsageError(f"could not load {auto_model.__name__} weights from {path!r}: {error}") from None
    PartialState().print(describe_new_weights(model, loading, headless=auto_model is AutoModel))
    return model


def describe_new_weights(model: PreTrainedModel, loading: dict, headless: bool = False) -> str:
    """One line for transformers' LOAD REPORT table: which modules start from random weights, and why that is fine
    (the new head) or not (backbone weights the checkpoint lacks). `headless`: a backbone loaded with `AutoModel`."""
    initialised = set(loading["missing_keys"]) | {key for key, *_ in loading["mismatched_keys"]}
    if headless:  # `--pooling mean`: its head is built apart
        # A classification checkpoint may lack the pooler (ViT's); the pooled head drops it anyway.
        initialised = {key for key in initialised if not key.startswith("pooler.")}
        line = "backbone: the checkpoint's"
        if initialised:
            line += f"; warning: {len(initialised)} weight(s) missing from it, initialised at random"
        return line
    modules = sorted({key.split(".")[0] for key in initialised})
    heads = [name for name in modules if _is_new_head(model, name, initialised)]
    if type(model).__name__.endswith("ForCTC"):
        size = f"{model.config.vocab_size} symbols"
    elif has_decoder(model):  # writes text: its config's num_labels (2 by default) means nothing
        size = f"{model.config.vocab_size} tokens"
    else:
        size = f"{model.config.num_labels} labels"
    line = f"new head: {', '.join(heads)} ({size}), initialised" if heads else f"head: the checkpoint's ({size})"
    backbone = sorted(key for key in initialised if key.split(".")[0] not in heads)
    if backbone:
        line += (f"; warning: {len(backbone)} backbone weight(s) missing from the checkpoint, initialised at random "
                 f"({', '.join(backbone[:3])}{', ...' if len(backbone) > 3 else ''})")
    return line


def _is_new_head(model: PreTrainedModel, module: str, initialised: set[str]) -> bool:
    """Whether the top-level `module` of `model` is a head: not its base model, or for a model without one as a
    submodule (WhisperForAudioClassification: encoder, projector, classifier), a module whose every weight is new."""
    if model.base_model is not model:
        return module != model.base_model_prefix
    return all(f"{module}.{key}" in initialised for key in getattr(model, module).state_dict())


def load_model(model_args: ModelArgs, auto_model: type, label_names: list[str], dropout: float | None,
               problem_type: str = "single_label_classification") -> PreTrainedModel | MultiHeadModel:
    """A model with one output per name in `label_names` (a class, a label, or a regression's target): the
    architecture's own head (`auto_model`, under `--pooling model`), or a linear head on the backbone's pooled
    output. `problem_type` goes to config.json, so `pipeline()` applies softmax, sigmoid or nothing."""
    config = load_config(model_args, dropout, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
                         label2id={name: i for i, name in enumerate(label_names)}, problem_type=problem_type)
    if model_args.pooling == "model":
        model = build_model(model_args, auto_model, config)
    else:
        backbone = build_model(model_args, AutoModel, config)
        model = MultiHeadModel(backbone, {ONLY_HEAD: label_names}, model_args.pooling,
                               DEFAULT_HEAD_DROPOUT if dropout is None else dropout)
    set_batchnorm_momentum(model)
    return model


def set_batchnorm_momentum(model: PreTrainedModel) -> None:
    """Give every BatchNorm layer PyTorch's meaning of its momentum (the share of each batch in the running
    statistics).

    transformers passes EfficientNet's `batch_norm_momentum` to `nn.BatchNorm2d` as it is, but Hub EfficientNet
    configs hold TensorFlow's meaning (0.99: keep 99 % of the running statistics), which PyTorch reads as "keep 1 %";
    and it builds the expansion layers' BatchNorm without it (PyTorch's 0.1). Our converted Lite stores 0.01.
    MobileNet hard-codes TensorFlow's 0.997 in every layer.
    """
    if getattr(model.config, "model_type", "") == "efficientnet":
        momentum = model.config.batch_norm_momentum
        momentum = 1 - momentum if momentum > 0.5 else momentum
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = momentum
    elif getattr(model.config, "model_type", "") in ("mobilenet_v1", "mobilenet_v2"):
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum > 0.5:
                module.momentum = 1 - module.momentum
