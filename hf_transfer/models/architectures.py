"""What hf_transfer knows per architecture: where the backbone, its blocks and the head are, and LoRA's targets."""

from torch import nn

from hf_transfer.config import UsageError


def is_encoder_decoder(config) -> bool:
    return bool(getattr(config, "is_encoder_decoder", False))


# Attention projections that get LoRA adapters, by `config.model_type`. Query and value is the LoRA paper's choice.
# In transformers 5, ViT and the Wav2Vec2 family name them q_proj/v_proj; BERT and its relatives keep query/value.
LORA_TARGETS = {
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie", "megatron-bert",
                     "data2vec-text"), ["query", "value"]),
    "distilbert": ["q_lin", "v_lin"],
    "mpnet": ["q", "v"],
    "deberta-v2": ["query_proj", "value_proj"],
    "deberta": ["in_proj"],
    **dict.fromkeys(("vit", "deit", "wav2vec2", "hubert", "wavlm", "whisper"), ["q_proj", "v_proj"]),
    # CNNs: the 1x1 convolutions around each block's depthwise one. A depthwise convolution (groups > 1) takes no
    # mergeable adapter in peft, so it is never a default target. MobileNetV2 names every convolution
    # `convolution`: its targets say which module holds it.
    "efficientnet": ["expand_conv", "project_conv"],
    "mobilenet_v2": ["expand_1x1.convolution", "reduce_1x1.convolution"],
}
# When the table has no entry: the first pair whose names occur among the model's Linear layers.
LORA_TARGET_FALLBACKS = (["query", "value"], ["q_proj", "v_proj"], ["q_lin", "v_lin"], ["query_proj", "value_proj"])


def matches_target(name: str, target: str) -> bool:
    """peft's rule for a list of target modules: a target is a module's full name or its last dotted parts."""
    return name == target or name.endswith("." + target)


def _adaptable_names(model: nn.Module) -> list[str]:
    """Full names of the layers LoRA adapts: Linear layers and ungrouped convolutions."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)]


def lora_target_modules(model: nn.Module) -> list[str]:
    model_type = getattr(model.config, "model_type", "")
    adaptable = _adaptable_names(model)

    def present(targets: list[str]) -> bool:
        return all(any(matches_target(name, target) for name in adaptable) for target in targets)

    if model_type in LORA_TARGETS and present(LORA_TARGETS[model_type]):
        return LORA_TARGETS[model_type]
    for pair in LORA_TARGET_FALLBACKS:
        if present(pair):
            return pair
    names = sorted({name.rsplit(".", 1)[-1] for name in adaptable})
    raise UsageError(f"can't guess LoRA target modules for model type {model_type!r}; name them with "
                     f"--lora_target_modules (its Linear and convolution layers are: {', '.join(names)})")


def _backbone_name(model: nn.Module) -> str:
    """`base_model_prefix`; heads on one half of an encoder-decoder (WhisperForAudioClassification) keep the
    prefix `model` but hold only `encoder`."""
    return model.base_model_prefix if hasattr(model, model.base_model_prefix) else "encoder"


def base_model(model: nn.Module) -> nn.Module:
    return getattr(model, _backbone_name(model))


def has_decoder(model: nn.Module) -> bool:
    """Whether `model` writes text with a decoder. WhisperForAudioClassification keeps its config's
    `is_encoder_decoder` but holds only the encoder."""
    return is_encoder_decoder(model.config) and hasattr(base_model(model), "decoder")


def head_module_names(model: nn.Module) -> list[str]:
    """Top-level modules outside the pretrained backbone: the new task head (e.g. `classifier`, `projector`), or
    each named head of a `heads.MultiHeadModel` (`heads.<name>`). An encoder-decoder has none: its output layer is
    the pretrained vocabulary projection (tied to the decoder's embeddings), kept as it is."""
    if has_decoder(model):
        return []
    backbone, names = _backbone_name(model), []
    for name, module in model.named_children():
        if name == backbone or not any(True for _ in module.parameters()):
            continue
        names += [f"{name}.{head}" for head in module] if isinstance(module, nn.ModuleDict) else [name]
    return names


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The backbone's stack of blocks: transformer layers (`encoder.layer`, `transformer.layer`, `encoder.layers`...)
    or CNN blocks (`encoder.blocks`); the encoder's, for an encoder-decoder."""
    if has_decoder(model):
        return model.get_encoder().layers
    stacks = [module for name, module in base_model(model).named_modules()
              if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers", "blocks")]
    if not stacks:
        raise UsageError(f"can't find the encoder layers of {type(model).__name__}; "
                         "use --strategy full, feature_extraction or lora")
    return max(stacks, key=len)


# Backbone modules above the block stack, trained with the top blocks by `partial`: BERT's pooler, the 1x1
# convolution and BatchNorm that EfficientNet (and MobileNetV2) runs after its last block, the final LayerNorm of
# Whisper's encoder.
TOP_MODULES = ("pooler", "encoder.top_conv", "encoder.top_bn", "conv_1x1", "layer_norm")


def top_modules(model: nn.Module) -> list[nn.Module]:
    modules = dict(base_model(model).named_modules())
    return [modules[name] for name in TOP_MODULES if name in modules and any(True for _ in modules[name].parameters())]


def fixed_parameter_names(model: nn.Module) -> list[str]:
    """Parameters no strategy trains: EfficientNet-Lite's squeeze-excite, made an exact identity by the converter
    (`squeeze_expansion_ratio` 0; see models/checkpoints/efficientnet.py). Training would make it a real one."""
    if getattr(model.config, "model_type", "") == "efficientnet" and model.config.squeeze_expansion_ratio == 0:
        return [name for name, _ in model.named_parameters() if ".squeeze_excite." in name]
    return []


def without_adapter(model: nn.Module) -> nn.Module:
    """The model a peft wrapper (LoRA) holds, or `model` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The task head's modules (`head_module_names`), under LoRA with their wrappers: the trained copy and the
    original."""
    base = without_adapter(model)
    return [base.get_submodule(name) for name in head_module_names(base)]


def output_layers(model: nn.Module) -> list[nn.Linear]:
    """The task head's one-output linear layers: a regression's output, where its target scaling is folded in
    (under LoRA both the trained copy and the original, so either one loads in the user's units)."""
    layers = [module for head in head_modules(model) for module in head.modules()
              if isinstance(module, nn.Linear) and module.out_features == 1]
    if not layers:
        raise RuntimeError(f"no one-output linear layer in the head of {type(without_adapter(model)).__name__}")
    return layers
