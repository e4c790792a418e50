"""The image recipe end to end on a tiny ViT and generated red/blue squares: strategies, mixing, reload, errors."""

import json

import datasets
import numpy as np
import pytest
import torch
from fixtures import COLOURS, square, write_class_folder
from safetensors.torch import load_file
from transformers import (
    ConvNextConfig,
    ConvNextForImageClassification,
    ConvNextImageProcessorPil,
    ViTForImageClassification,
    ViTImageProcessorPil,
    pipeline,
)

from hf_transfer.cli import main as cli
from hf_transfer.config import DataArgs, UsageError
from hf_transfer.data.splits import LabelledSplits
from hf_transfer.evaluation.inference import evaluate_folder, load_trained
from hf_transfer.modalities.image import (
    BatchMixer,
    ImageArgs,
    TrainTransform,
    image_collator,
    image_splits,
    load_image,
    processor_transform,
)
from hf_transfer.models.architectures import lora_target_modules
from hf_transfer.recipes import image_classification


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and lose a lot when another job holds the other core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(model, output_dir, **overrides) -> dict:
    config = {"model_name_or_path": str(model), "output_dir": str(output_dir), "learning_rate": 5e-3,
              "per_device_train_batch_size": 8, "max_train_steps": 3, "warmup_ratio": 0.0, "logging_steps": 1,
              **overrides}
    return image_classification.main(config)


def folders(images) -> dict:
    return {"train_dir": str(images / "train"), "validation_dir": str(images / "val")}


@pytest.mark.parametrize("strategy", ["full", "feature_extraction", "partial", "lora"])
def test_every_strategy_trains_and_writes_report_and_card(tiny_vit, images, tmp_path, strategy):
    results = train(tiny_vit, tmp_path, strategy=strategy, unfreeze_layers=1, augment="randaugment",
                    **folders(images))
    assert results["train_steps"] == 3 and results["eval_samples"] == 16
    for name in ("README.md", "eval_report.md", "confusion_matrix.png", "roc_curve.png", "preprocessor_config.json",
                 "adapter_model.safetensors" if strategy == "lora" else "model.safetensors"):
        assert (tmp_path / name).is_file(), name
    card = (tmp_path / "README.md").read_text()
    assert "pipeline_tag: image-classification" in card
    assert "image size: 32 x 32 pixels" in card and "then 2 random ops per image" in card
    assert "- **image size**: 32 x 32 pixels" in (tmp_path / "eval_report.md").read_text()


def test_vit_gets_lora_on_q_and_v_and_convnets_ask_for_targets(tiny_vit, images, tmp_path):
    assert lora_target_modules(ViTForImageClassification.from_pretrained(tiny_vit)) == ["q_proj", "v_proj"]
    convnext = tmp_path / "convnext"
    ConvNextForImageClassification(ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1],
                                                  num_stages=2)).save_pretrained(convnext)
    ConvNextImageProcessorPil(size={"shortest_edge": 32}).save_pretrained(convnext)
    results = train(convnext, tmp_path / "out", strategy="feature_extraction", **folders(images))
    assert results["train_steps"] == 3
    with pytest.raises(UsageError, match="can't guess LoRA target modules for model type 'convnext'.*"
                                         "--lora_target_modules"):
        train(convnext, tmp_path / "lora", strategy="lora", **folders(images))


def test_csv_of_relative_paths_trains_and_the_full_model_loads_in_a_pipeline(tiny_vit, images, tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)  # the paths resolve against the CSV's folder, not the working directory
    train(tiny_vit, tmp_path / "out", strategy="full", learning_rate=1e-2, max_train_steps=6,
          train_file=str(images / "train.csv"), test_file=str(images / "val.csv"))
    classifier = pipeline("image-classification", model=str(tmp_path / "out"))
    assert classifier(square("blue", seed=7))[0]["label"] in COLOURS
    # The command line predicts image files and scores a CSV of them.
    cli(["predict", str(tmp_path / "out"), str(images / "val" / "red" / "0.png")])
    with pytest.raises(SystemExit, match="an image model takes image file paths"):
        cli(["predict", str(tmp_path / "out"), "a sentence, not an image"])
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    again = evaluate_folder(tmp_path / "out", str(images / "val.csv"), tmp_path / "evaluation")
    assert again["test_accuracy"] == results["test_accuracy"]


def test_lora_reload_gives_the_predictions_of_the_end_of_training(tiny_vit, images, tmp_path):
    """Adapter + classifier saved together: the reloaded model scores the test CSV exactly as training did."""
    results = train(tiny_vit, tmp_path, strategy="lora", learning_rate=3e-2, lora_dropout=0.0,
                    train_file=str(images / "train.csv"), test_file=str(images / "val.csv"))
    again = evaluate_folder(tmp_path, str(images / "val.csv"), tmp_path / "evaluation")
    assert again["test_roc_auc"] == pytest.approx(results["test_roc_auc"], abs=1e-6)
    assert again["test_accuracy"] == results["test_accuracy"]
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert any("classifier" in name for name in saved)
    assert any("lora_B" in name and tensor.abs().sum() > 0 for name, tensor in saved.items())  # adapters moved
    model, _, _ = load_trained(tmp_path)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), model.disable_adapter():
        plain = model(pixel_values=pixels).logits
    assert not torch.allclose(model(pixel_values=pixels).logits, plain, atol=1e-4)


@pytest.mark.parametrize("mixing", [{"mixup_alpha": 0.4}, {"cutmix_alpha": 1.0}])
def test_mixup_and_cutmix_train(tiny_vit, images, tmp_path, mixing):
    results = train(tiny_vit, tmp_path, strategy="full", **mixing, **folders(images))
    assert np.isfinite(results["train_loss"])
    assert "alpha" in (tmp_path / "README.md").read_text()


def test_mixer_targets_match_the_pixels_they_mix():
    labels = torch.tensor([0, 1, 1, 0])
    pixels = labels.float().view(4, 1, 1, 1).expand(4, 3, 16, 16).contiguous()  # each image is its label
    for mixer in (BatchMixer(0.4, 0.0, 2, seed=0), BatchMixer(0.0, 1.0, 2, seed=0), BatchMixer(0.4, 1.0, 2, seed=1)):
        mixed, targets = mixer(pixels, labels)
        torch.testing.assert_close(targets.sum(1), torch.ones(4))
        # The mean pixel of each mixed image is the share of label 1 in it: exactly its soft target.
        torch.testing.assert_close(mixed.mean(dim=(1, 2, 3)), targets[:, 1])


def test_training_transform_makes_normalised_inputs_of_the_model_size(tiny_vit):
    processor = ViTImageProcessorPil.from_pretrained(tiny_vit)
    for augment in ("none", "basic", "randaugment"):
        batch = TrainTransform(processor, augment)([square("red", 0), square("blue", 1)], [0, 1])
        assert batch.shape == (2, 3, 32, 32) and batch.min() >= -1 and batch.max() <= 1


def test_hub_image_feature_is_decoded_per_batch(tiny_vit, images):
    """Hub data sets hold images as an Image feature: kept undecoded until the collator reads the batch."""
    paths = [str(path) for path in sorted((images / "val").glob("*/*.png"))]
    hub_like = datasets.Dataset.from_dict({"img": paths, "labels": [0] * len(paths)}).cast_column("img",
                                                                                                   datasets.Image())
    labelled = LabelledSplits(datasets.DatasetDict({"train": hub_like}), ["blue", "red"], {"train": "hub"})
    split = image_splits(labelled, DataArgs(dataset_name="hub"), None)["train"]
    assert split.column_names == ["image", "labels"] and isinstance(split[0]["image"], dict)
    processor = ViTImageProcessorPil.from_pretrained(tiny_vit)
    batch = image_collator(processor_transform(processor), "hub")([split[0], split[1]])
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["labels"].tolist() == [0, 0]


def test_corrupt_image_is_named(tiny_vit, images, tmp_path):
    broken = tmp_path / "train"
    write_class_folder(broken, 4, seed=0)
    (broken / "red" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UsageError, match=r"can't read image .*broken\.jpg"):
        load_image(str(broken / "red" / "broken.jpg"), "test")
    with pytest.raises(UsageError, match=r"can't read image .*broken\.jpg"):
        train(tiny_vit, tmp_path / "out", strategy="full", train_dir=str(broken),
              validation_dir=str(images / "val"))


def test_class_folder_without_images_is_refused(tiny_vit, tmp_path):
    for colour in COLOURS:
        (tmp_path / "data" / colour).mkdir(parents=True)
    square("red", 0).save(tmp_path / "data" / "red" / "0.png")
    (tmp_path / "data" / "blue" / "notes.txt").write_text("no images here")
    with pytest.raises(UsageError, match=r"blue: class folder has no \.jpg"):
        train(tiny_vit, tmp_path / "out", train_dir=str(tmp_path / "data"))


def test_missing_image_in_a_csv_is_named(tiny_vit, images, tmp_path):
    rows = [f"{path},{path.parent.name}" for path in sorted((images / "train").glob("*/*.png"))]
    (tmp_path / "train.csv").write_text("\n".join(["image,label", *rows, "missing.png,red"]) + "\n")
    # The validation split is carved out of the file, shuffling it: the error still names the file's row.
    with pytest.raises(UsageError, match=r"train.csv: data row 33 \(counted from 1, header not counted\): image "
                                         r"file not found: .*missing\.png"):
        train(tiny_vit, tmp_path / "out", train_file=str(tmp_path / "train.csv"))


@pytest.mark.parametrize("settings, message", [
    ({"augment": "heavy"}, "--augment must be one of none, basic, randaugment"),
    ({"mixup_alpha": -1}, "--mixup_alpha must be >= 0"),
    ({"image_size": 0}, "--image_size must be > 0"),
])
def test_bad_image_settings_are_refused(settings, message):
    with pytest.raises(UsageError, match=message):
        ImageArgs(**settings)


def test_image_size_a_vit_cannot_take_is_refused(tiny_vit, images, tmp_path):
    with pytest.raises(UsageError, match="takes 32 x 32 images but the image processor makes 48 x 48"):
        train(tiny_vit, tmp_path, image_size=48, **folders(images))


def test_resume_continues_the_same_augmented_run(tiny_vit, images, tmp_path):
    """Random crops, flips, jitter and CutMix: a run resumed from its step-2 checkpoint (with DataLoader workers)
    ends with the weights of the uninterrupted one."""
    import shutil

    from safetensors.torch import load_file

    settings = dict(strategy="full", augment="randaugment", cutmix_alpha=1.0, max_train_steps=6, save_steps=2,
                    save_total_limit=3, eval_steps=2, dropout=0.1, **folders(images))
    whole = train(tiny_vit, tmp_path / "whole", **settings)
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "step-2", tmp_path / "resumed" / "checkpoints" / "step-2")
    resumed = train(tiny_vit, tmp_path / "resumed", resume_from_checkpoint="latest", dataloader_num_workers=2,
                    **settings)
    assert resumed == whole
    expected, actual = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("whole", "resumed"))
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
