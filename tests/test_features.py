"""Cached features: training the head on features computed once gives the model a backbone forward every step gives."""

import json

import pytest
import torch
from safetensors.torch import load_file

from hf_transfer.config import StrategyArgs
from hf_transfer.recipes import image_classification
from hf_transfer.training.features import PATH_TEXT, path_line, uses_cached_features


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(model, images, output_dir, **overrides) -> dict:
    config = {"model_name_or_path": str(model), "output_dir": str(output_dir), "train_dir": str(images / "train"),
              "validation_dir": str(images / "val"), "strategy": "feature_extraction", "augment": "none",
              "learning_rate": 5e-2, "per_device_train_batch_size": 8, "num_train_epochs": 3, "warmup_ratio": 0.0,
              "logging_steps": 1, **overrides}
    return image_classification.main(config)


@pytest.mark.parametrize("model_fixture", ["tiny_efficientnet", "tiny_vit"])
def test_cached_features_train_the_same_model(model_fixture, images, tmp_path, request):
    model = request.getfixturevalue(model_fixture)
    cached = train(model, images, tmp_path / "cached")
    forward = train(model, images, tmp_path / "forward", cache_features=False)
    weights = {path: load_file(tmp_path / path / "model.safetensors") for path in ("cached", "forward")}
    assert weights["cached"].keys() == weights["forward"].keys()
    for name, tensor in weights["cached"].items():
        torch.testing.assert_close(tensor, weights["forward"][name], rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(weights["cached"]["classifier.weight"],  # the head did train
                           load_file(next(model.glob("*.safetensors")))["classifier.weight"])
    assert cached["eval_accuracy"] == forward["eval_accuracy"]
    assert cached["train_loss"] == pytest.approx(forward["train_loss"], rel=1e-4)
    for path, cache in (("cached", True), ("forward", False)):
        details = json.loads((tmp_path / path / "card_context.json").read_text())["extra_details"]
        assert details["feature extraction"] == PATH_TEXT[cache]


def test_cached_features_only_when_inputs_repeat(tiny_efficientnet):
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(tiny_efficientnet)
    frozen = StrategyArgs(strategy="feature_extraction")
    assert uses_cached_features(model, frozen, random_inputs=False)
    assert not uses_cached_features(model, frozen, random_inputs=True)  # augmentation: new features every epoch
    assert not uses_cached_features(model, StrategyArgs(strategy="partial"), random_inputs=False)
    assert not uses_cached_features(model, StrategyArgs(strategy="feature_extraction", cache_features=False), False)


def test_the_log_says_why_features_are_not_cached_and_what_caches_them(tiny_efficientnet, images, tmp_path, capsys):
    from transformers import AutoModelForImageClassification

    train(tiny_efficientnet, images, tmp_path / "out", augment="basic", max_train_steps=1)
    assert ("backbone: backbone forward every step: --augment basic needs the backbone every step (new inputs each "
            "epoch), so its features are not cached; --augment none would cache them and run the frozen backbone "
            "once\n") in capsys.readouterr().out
    model = AutoModelForImageClassification.from_pretrained(tiny_efficientnet)
    frozen = StrategyArgs(strategy="feature_extraction")
    assert path_line(model, frozen, {"--adaptation dann": None}).endswith("so its features are not cached")
    assert path_line(model, frozen, {"--augment basic": "--augment none", "--mixup_alpha 0.2": "--mixup_alpha 0"}
                     ).endswith("--augment basic and --mixup_alpha 0.2 need the backbone every step (new inputs each "
                                "epoch), so its features are not cached; --augment none --mixup_alpha 0 would cache "
                                "them and run the frozen backbone once")
    for strategy in (StrategyArgs(strategy="full"), StrategyArgs(strategy="feature_extraction", cache_features=False)):
        assert path_line(model, strategy, {"--augment basic": "--augment none"}) == f"backbone: {PATH_TEXT[False]}"
