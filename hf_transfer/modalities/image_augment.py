"""Training augmentation of images on the training device (`--augment_on device`): the GPU crops, flips,
jitters and applies RandAugment-style ops to the whole batch, so DataLoader workers only decode and resize.

Each image's augmentation is drawn in the loader from its example's seed, by the same `draw_augmentation` the
PIL path (`TrainTransform`) applies per image, so the two paths augment an example alike. The loader hands over
each image resized (antialiased, by PIL) to a uint8 canvas 1.5x the model's input size; here one `grid_sample`
takes every image's crop box (with its flip) from its canvas at twice the output size, and an average pool halves
it, which antialiases the last downscale. Ops follow PIL's definitions (ImageEnhance, ImageOps,
`Image.rotate`/`transform` filling grey) in the same order, up to resampling (bilinear where PIL's geometric ops
take the nearest pixel) and rounding (PIL rounds to 8 bits after each op). Every image computes each op and keeps
the ones drawn for it, and the constants move to the device once, so nothing waits on the device.
"""

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# RandAugment-style ops at a fixed moderate magnitude (RandAugment's m=9 of 30): rotations of 9 degrees, shears of
# 0.09, shifts of 10 %, 5-bit posterize, solarize above 180, sharpness 1 +- 0.3. `sign` picks the direction.
RANDAUGMENT_OP_NAMES = ("autocontrast", "equalize", "posterize", "rotate", "sharpness", "shear_x", "shear_y",
                        "solarize", "translate_x", "translate_y")
GEOMETRIC_OP_NAMES = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
ROTATE_DEGREES, SHEAR, TRANSLATE, POSTERIZE_BITS, SOLARIZE_THRESHOLD, SHARPNESS = 9, 0.09, 0.1, 5, 180, 0.3
GREY = (128, 128, 128)  # what rotations and shifts uncover
# Random resized crop: area share and aspect ratio; gentler than ImageNet's 8 %: small data sets often show one
# object that a tiny crop misses. Colour jitter: brightness, contrast and saturation factors in 1 +- JITTER.
CROP_SCALE, CROP_RATIO, JITTER = (0.25, 1.0), (3 / 4, 4 / 3), 0.2
RANDAUGMENT_OPS_PER_IMAGE = 2
# The canvas's side over the model's: crops down to 1 / 1.5 of the image's side keep the canvas's full detail.
# A larger canvas costs the loader more than the augmentation it saves (measured: 2x took 2 ms per image to resize,
# the PIL path's whole augmentation 1.4 ms).
CANVAS_SCALE = 1.5


@dataclass(frozen=True)
class Augmentation:
    """One image's draw: crop box in the original image's pixels (left, top, right, bottom), mirror or not, the
    brightness/contrast/saturation factors, then the RandAugment ops in order with their signs."""

    box: tuple[float, float, float, float]
    flip: bool
    jitter: tuple[float, float, float]
    ops: tuple[tuple[str, int], ...]


def draw_augmentation(width: int, height: int, randaugment: bool, rng: random.Random) -> Augmentation:
    """Draw one image's augmentation from its own generator (seeded with the example's `augment_seed`)."""
    box = (0.0, 0.0, float(width), float(height))
    for _ in range(10):
        area = width * height * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(*map(math.log, CROP_RATIO)))
        w, h = math.sqrt(area * ratio), math.sqrt(area / ratio)
        if w <= width and h <= height:
            left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
            box = (left, top, left + w, top + h)
            break
    flip = rng.random() < 0.5
    jitter = tuple(rng.uniform(1 - JITTER, 1 + JITTER) for _ in range(3))
    names = rng.sample(RANDAUGMENT_OP_NAMES, RANDAUGMENT_OPS_PER_IMAGE) if randaugment else []
    return Augmentation(box, flip, jitter, tuple((name, rng.choice((-1, 1))) for name in names))


def geometric_matrix(name: str, sign: int, width: int, height: int) -> tuple[float, ...] | None:
    """PIL's affine coefficients (a, b, c, d, e, f: the input pixel of output pixel (x, y) is (ax + by + c,
    dx + ey + f)) of a geometric op, or None for the others. `Image.rotate` turns counter-clockwise."""
    if name == "rotate":
        angle = -math.radians(sign * ROTATE_DEGREES)
        a, b, d, e = math.cos(angle), math.sin(angle), -math.sin(angle), math.cos(angle)
        cx, cy = width / 2, height / 2
        return a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy
    return {"shear_x": (1, sign * SHEAR, 0, 0, 1, 0), "shear_y": (1, 0, 0, sign * SHEAR, 1, 0),
            "translate_x": (1, 0, sign * TRANSLATE * width, 0, 1, 0),
            "translate_y": (1, 0, 0, 0, 1, sign * TRANSLATE * height)}.get(name)


class CanvasTransform:
    """The loader's side of `--augment_on device`: each image resized to a uint8 canvas CANVAS_SCALE times the
    model's input size, and its drawn augmentation as tensors; `DeviceAugment` does the rest on the device."""

    def __init__(self, processor, height: int, width: int, randaugment: bool):
        self.randaugment = randaugment
        self.canvas_height, self.canvas_width = round(CANVAS_SCALE * height), round(CANVAS_SCALE * width)
        self.resample = Image.Resampling(processor.resample)

    def __call__(self, images: list[Image.Image], seeds: list[int]) -> dict:
        draws = [draw_augmentation(*image.size, self.randaugment, random.Random(seed))
                 for image, seed in zip(images, seeds)]
        canvas = np.stack([np.asarray(image.resize((self.canvas_width, self.canvas_height), self.resample))
                           for image in images])
        # The crop box as a share of the image: the canvas holds the whole image, squeezed to its shape.
        boxes = [[left / image.width, top / image.height, right / image.width, bottom / image.height]
                 for image, (left, top, right, bottom) in ((image, draw.box) for image, draw in zip(images, draws))]
        ops = [[RANDAUGMENT_OP_NAMES.index(name) for name, _ in draw.ops] for draw in draws]
        signs = [[sign for _, sign in draw.ops] for draw in draws]
        return {"canvas": torch.from_numpy(canvas).permute(0, 3, 1, 2).contiguous(),
                "augmentation": {"box": torch.tensor(boxes), "flip": torch.tensor([draw.flip for draw in draws]),
                                 "jitter": torch.tensor([draw.jitter for draw in draws]),
                                 "ops": torch.tensor(ops, dtype=torch.long).reshape(len(draws), -1),
                                 "signs": torch.tensor(signs, dtype=torch.float32).reshape(len(draws), -1)}}


def _grey_level(x: torch.Tensor) -> torch.Tensor:
    """PIL's `convert("L")`: ITU-R 601-2 luma, per pixel; x is (batch, 3, height, width) in [0, 1]."""
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance: degenerate + factor * (image - degenerate), per image, clipped to [0, 1]."""
    return (degenerate + factor.view(-1, 1, 1, 1) * (x - degenerate)).clamp(0, 1)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """ImageOps.equalize, per image and channel, on 8-bit levels."""
    levels = (x * 255).round().long().clamp(0, 255)
    batch, channels = levels.shape[:2]
    offsets = torch.arange(batch * channels, device=x.device).view(batch, channels, 1, 1) * 256
    index = (levels + offsets).flatten()
    # scatter_add_ rather than bincount, which reads the indices' range back to the host
    histogram = torch.zeros(batch * channels * 256, dtype=torch.long, device=x.device).scatter_add_(
        0, index, torch.ones_like(index)).view(batch * channels, 256)
    top = 255 - histogram.flip(1).ne(0).int().argmax(1)  # the highest level present
    step = (histogram.sum(1) - histogram.gather(1, top[:, None]).squeeze(1)) // 255
    below = histogram.cumsum(1) - histogram  # pixels under each level
    lut = (step[:, None] // 2 + below) // step.clamp(min=1)[:, None]
    lut = torch.where(step[:, None] > 0, lut.clamp(max=255), torch.arange(256, device=x.device))
    return lut.gather(1, levels.flatten(2).flatten(0, 1)).view_as(levels).float() / 255


def _sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Sharpness: blend with PIL's SMOOTH filter (3x3 ones, 5 at the centre, over 13); the one-pixel
    border stays as it is."""
    smooth = (9 * F.avg_pool2d(x, 3, stride=1) + 4 * x[..., 1:-1, 1:-1]) / 13
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    return _blend(degenerate, x, factor)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """ImageOps.autocontrast: each channel stretched from its lowest to its highest level."""
    low, high = x.amin((-2, -1), keepdim=True), x.amax((-2, -1), keepdim=True)
    return torch.where(high > low, (x - low) / (high - low).clamp(min=1e-6), x)


# Point ops on (batch, 3, height, width) in [0, 1]; `sign` is (batch,) of +-1.
POINT_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "autocontrast": lambda x, sign: _autocontrast(x),
    "equalize": lambda x, sign: _equalize(x),
    "posterize": lambda x, sign: torch.floor((x * 255).round() / 2 ** (8 - POSTERIZE_BITS))
    * 2 ** (8 - POSTERIZE_BITS) / 255,
    "solarize": lambda x, sign: torch.where((x * 255).round() >= SOLARIZE_THRESHOLD, 1 - x, x),
    "sharpness": lambda x, sign: _sharpness(x, 1 + sign * SHARPNESS),
}


def _pil_affine_to_theta(matrices: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """PIL affine coefficients (batch, 6), on pixel coordinates whose centres sit at +0.5, as `affine_grid`
    thetas (batch, 2, 3) on normalised coordinates (align_corners=False)."""
    a, b, c, d, e, f = matrices.unbind(1)
    ratio = height / width
    return torch.stack([
        torch.stack([a, b * ratio, a + b * ratio + 2 * c / width - 1], 1),
        torch.stack([d / ratio, e, d / ratio + e + 2 * f / height - 1], 1),
    ], 1)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample each image through its theta; what falls outside is filled grey, as PIL fills it."""
    grey = GREY[0] / 255  # one level on every channel
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - grey, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + grey


class DeviceAugment:
    """The device's side of `--augment_on device`: a batch of canvases and their drawn augmentations ->
    normalised pixel values of the model's input size, as `TrainTransform` makes them. The Loop calls it on each
    training batch once the batch is on the device (its `prepare_batch`)."""

    def __init__(self, processor, height: int, width: int):
        self.height, self.width = height, width
        self.rescale = processor.rescale_factor * 255  # our levels are in [0, 1]
        self.mean = torch.tensor(processor.image_mean if processor.do_normalize else [0.0] * 3).view(1, 3, 1, 1)
        self.std = torch.tensor(processor.image_std if processor.do_normalize else [1.0] * 3).view(1, 3, 1, 1)
        identity = torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float32)
        # Each geometric op's theta for sign -1 and +1 (rows 0 and 1); the identity where it is not drawn.
        self.geometric = {name: _pil_affine_to_theta(torch.tensor([geometric_matrix(name, sign, width, height)
                                                                   for sign in (-1, 1)], dtype=torch.float32),
                                                     width, height)
                          for name in GEOMETRIC_OP_NAMES}
        self.identity = _pil_affine_to_theta(identity[None], width, height)[0]

    def __call__(self, batch: dict) -> dict:
        """The Loop's `prepare_batch`: the batch with pixel values in place of its canvases."""
        rest = {k: v for k, v in batch.items() if k not in ("canvas", "augmentation")}
        return {"pixel_values": self.pixels(batch["canvas"], batch["augmentation"]), **rest}

    @torch.no_grad()
    def pixels(self, canvas: torch.Tensor, augmentation: dict[str, torch.Tensor]) -> torch.Tensor:
        x = canvas.float() / 255
        if self.mean.device != x.device:
            self.mean, self.std, self.identity = (t.to(x.device) for t in (self.mean, self.std, self.identity))
            self.geometric = {name: thetas.to(x.device) for name, thetas in self.geometric.items()}
        batch = x.shape[0]
        box, flip = augmentation["box"].float(), augmentation["flip"]
        # Output pixel (u, v) in [-1, 1] reads canvas point (centre + half-size * u, ...), mirrored when flipped.
        mirror = torch.where(flip, -1.0, 1.0).to(x.dtype)
        theta = torch.zeros(batch, 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0] = (box[:, 2] - box[:, 0]) * mirror
        theta[:, 0, 2] = box[:, 0] + box[:, 2] - 1
        theta[:, 1, 1] = box[:, 3] - box[:, 1]
        theta[:, 1, 2] = box[:, 1] + box[:, 3] - 1
        grid = F.affine_grid(theta, [batch, 3, 2 * self.height, 2 * self.width], align_corners=False)
        x = F.avg_pool2d(F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False), 2)
        brightness, contrast, saturation = augmentation["jitter"].to(x.dtype).unbind(1)
        x = _blend(torch.zeros_like(x), x, brightness)
        mean_grey = _grey_level(x).mean((-2, -1), keepdim=True)
        x = _blend(mean_grey.expand_as(x), x, contrast)
        x = _blend(_grey_level(x).expand_as(x), x, saturation)
        for slot in range(augmentation["ops"].shape[1]):
            x = self.apply_ops(x, augmentation["ops"][:, slot], augmentation["signs"][:, slot].to(x.dtype))
        return ((x * self.rescale - self.mean) / self.std).contiguous()

    def apply_ops(self, x: torch.Tensor, ops: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
        """One slot's ops: each image gets the op drawn for it. The geometric ops share one warp per batch."""
        theta = self.identity.expand(x.shape[0], 2, 3)
        warped = torch.zeros_like(ops, dtype=torch.bool)
        for name, thetas in self.geometric.items():
            chosen = ops == RANDAUGMENT_OP_NAMES.index(name)
            theta = torch.where(chosen.view(-1, 1, 1), thetas[(signs > 0).long()], theta)
            warped |= chosen
        out = torch.where(warped.view(-1, 1, 1, 1), _warp(x, theta), x)
        for name, op in POINT_OPS.items():
            chosen = (ops == RANDAUGMENT_OP_NAMES.index(name)).view(-1, 1, 1, 1)
            out = torch.where(chosen, op(x, signs), out)
        return out
