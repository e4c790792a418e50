"""`--augment_on device`: images augmented batched on the training device match the PIL path, op by op and as a
whole, and the image recipe trains with it (DANN's target stream included)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from transformers import ViTImageProcessorPil

from hf_transfer.modalities.image import RANDAUGMENT_OPS, ImageArgs, TrainTransform, augments_on_device, to_tensor
from hf_transfer.modalities.image_augment import (
    GEOMETRIC_OP_NAMES,
    RANDAUGMENT_OP_NAMES,
    CanvasTransform,
    DeviceAugment,
)
from hf_transfer.recipes import image_classification

# Levels in [0, 1], unnormalised: what the ops see on either path.
PLAIN = SimpleNamespace(rescale_factor=1 / 255, do_normalize=False, image_mean=None, image_std=None)


def smooth_image(seed: int, height: int, width: int) -> Image.Image:
    """Slow colour waves: resampling differences (PIL's nearest or bicubic against bilinear) stay small on them."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    waves = [np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y) + rng.uniform(0, 6))
             for _ in range(3)]
    return Image.fromarray(((np.stack(waves, -1) * 0.45 + 0.5) * 255).astype(np.uint8))


IMAGES = [smooth_image(seed, height, width) for seed, (height, width) in enumerate([(120, 160), (200, 100), (128, 128),
                                                                                   (90, 90)])]


def test_both_paths_know_the_same_ops():
    assert sorted(RANDAUGMENT_OPS) == list(RANDAUGMENT_OP_NAMES)


@pytest.mark.parametrize("name", RANDAUGMENT_OP_NAMES)
@pytest.mark.parametrize("sign", [-1, 1])
def test_each_op_on_the_device_is_pils(name, sign):
    """Geometric ops differ where PIL samples the nearest pixel and the device interpolates; point ops agree to
    PIL's rounding."""
    images = [image.resize((64, 48)) for image in IMAGES]
    if name not in GEOMETRIC_OP_NAMES:  # texture for sharpness to sharpen, levels 28-227 for autocontrast to stretch
        noise = np.random.default_rng(0).integers(-10, 10, (48, 64, 3))
        images = [Image.fromarray((0.7 * np.asarray(image) + 38 + noise).astype(np.uint8)) for image in images]
    before = to_tensor(images, PLAIN)
    expected = to_tensor([RANDAUGMENT_OPS[name](image, sign) for image in images], PLAIN)
    ops = torch.full((len(images),), RANDAUGMENT_OP_NAMES.index(name))
    actual = DeviceAugment(PLAIN, 48, 64).apply_ops(before, ops, torch.full((len(images),), sign))
    error = (actual - expected).abs().mean()
    assert error < (0.015 if name in GEOMETRIC_OP_NAMES else 0.003)
    assert error < (before - expected).abs().mean() / 2  # it did what PIL did, not nothing


@pytest.mark.parametrize("augment", ["basic", "randaugment"])
def test_an_example_is_augmented_alike_on_the_device_and_in_the_loader(augment):
    """The same seeds draw the same crop, flip, jitter and ops on both paths; other seeds give other images."""
    processor = ViTImageProcessorPil(size={"height": 64, "width": 64})
    seeds = [5, 6, 7, 8]
    in_loader = TrainTransform(processor, augment)(IMAGES, seeds)
    batch = CanvasTransform(processor, 64, 64, augment == "randaugment")(IMAGES, seeds)
    assert batch["canvas"].dtype == torch.uint8 and batch["canvas"].shape == (4, 3, 96, 96)
    on_device = DeviceAugment(processor, 64, 64)({**batch, "labels": torch.arange(4)})
    assert set(on_device) == {"pixel_values", "labels"}
    pixels = on_device["pixel_values"]
    assert pixels.shape == in_loader.shape
    other_seeds = TrainTransform(processor, augment)(IMAGES, [seed + 10 for seed in seeds])
    alike = (pixels - in_loader).abs().mean((1, 2, 3))
    unlike = (pixels - other_seeds).abs().mean((1, 2, 3))
    assert alike.max() < 0.05 and unlike.min() > 0.1


def test_augmentation_goes_on_the_device_on_a_gpu_unless_told():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert augments_on_device(ImageArgs(), cuda) and not augments_on_device(ImageArgs(), cpu)
    assert augments_on_device(ImageArgs(augment_on="device"), cpu)
    assert not augments_on_device(ImageArgs(augment_on="loader"), cuda)
    assert not augments_on_device(ImageArgs(augment="none", augment_on="device"), cuda)  # nothing to augment


@pytest.mark.parametrize("dann", [False, True])
def test_the_recipe_trains_with_augmentation_on_the_device(tiny_vit, images, tmp_path, monkeypatch, dann):
    seen = []
    original = DeviceAugment.pixels

    def pixels(self, canvas, augmentation):
        seen.append(canvas.shape[0])
        return original(self, canvas, augmentation)

    monkeypatch.setattr(DeviceAugment, "pixels", pixels)
    adaptation = {"adaptation": "dann", "target_train_dir": str(images / "val")} if dann else {}
    results = image_classification.main({
        "model_name_or_path": str(tiny_vit), "output_dir": str(tmp_path), "strategy": "full",
        "train_dir": str(images / "train"), "validation_dir": str(images / "val"), "augment": "randaugment",
        "augment_on": "device", "per_device_train_batch_size": 4, "max_train_steps": 3, "warmup_ratio": 0.0,
        **adaptation})
    assert np.isfinite(results["train_loss"])
    # Every training batch, and with DANN every target batch too, was augmented here.
    assert seen == [4] * (6 if dann else 3)
    assert yaml.safe_load((tmp_path / "run_config.yaml").read_text())["augment_on"] == "device"
