"""`--pooling mean`: a linear head on the backbone's pooled output, trained by every strategy, saved, reloaded,
predicted with, merged and carded like the architecture's own head."""

import json

import pytest
import torch
from fixtures import launch_two_processes, sentences, write_csv
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from hf_transfer.config import UsageError, parse
from hf_transfer.evaluation.inference import load_trained, predict
from hf_transfer.models.heads import MultiHeadModel
from hf_transfer.models.loading import describe_new_weights
from hf_transfer.publish.merge import merge_adapter
from hf_transfer.recipes import sentiment
from hf_transfer.selection.study import strategy_overrides


def train(tiny_bert, files, output_dir, **overrides) -> dict:
    return sentiment.main({
        "model_name_or_path": str(tiny_bert), "train_file": str(files["train"]), "test_file": str(files["test"]),
        "output_dir": str(output_dir), "pooling": "mean", "learning_rate": 5e-3, "num_train_epochs": 2,
        "per_device_train_batch_size": 16, "mixed_precision": "no", **overrides})


@pytest.mark.parametrize("strategy, learning_rate", [("full", 5e-3), ("feature_extraction", 5e-2), ("lora", 5e-2)])
def test_a_mean_pooled_run_saves_reloads_and_predicts(strategy, learning_rate, tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / strategy
    results = train(tiny_bert, sentiment_files, out, strategy=strategy, learning_rate=learning_rate)
    assert json.loads((out / "heads.json").read_text())["pooling"] == "mean"
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    items = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    model, tokenizer, settings = load_trained(out)
    assert isinstance(model.get_base_model() if strategy == "lora" else model, MultiHeadModel)
    predicted = predict(model, tokenizer, settings, [item["input"] for item in items])
    assert [p["label"] for p in predicted] == [item["prediction"] for item in items]
    assert [p["scores"]["positive"] for p in predicted] == pytest.approx(
        [item["probabilities"]["positive"] for item in items], abs=1e-5)
    assert results["test_accuracy"] > 0.5
    card = (out / "README.md").read_text()
    assert "mean-pooled output (`--pooling mean`)" in card and "load_trained(snapshot_download(" in card
    assert "pipeline(\"text-classification\"" not in card


def test_mean_pooling_reads_only_real_tokens(tiny_bert):
    """A sentence's logits don't change when a longer one pads it in the same batch."""
    torch.manual_seed(0)
    model = MultiHeadModel(AutoModel.from_pretrained(tiny_bert), {"label": ["a", "b"]}, pooling="mean").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    short = "the film was good"
    alone = model(**tokenizer([short], return_tensors="pt")).logits
    padded = model(**tokenizer([short, short + " and long and slow and dull and bad"], padding=True,
                               return_tensors="pt")).logits
    torch.testing.assert_close(padded[0], alone[0], rtol=1e-4, atol=1e-5)
    cls = MultiHeadModel(model.backbone, {"label": ["a", "b"]}, pooling="cls")
    inputs = tokenizer([short], return_tensors="pt")
    assert not torch.allclose(model.pooled(inputs), cls.pooled(inputs))


@pytest.mark.parametrize("pooling, weights", [("mean", "heads.safetensors"), ("model", "model.safetensors")])
def test_cached_features_train_the_same_head(pooling, weights, tiny_bert, sentiment_files, tmp_path):
    """A mean-pooled head, and BERT's own (pooler, dropout, classifier): the same weights either way."""
    settings = {"strategy": "feature_extraction", "learning_rate": 5e-2, "logging_steps": 1, "pooling": pooling}
    cached = train(tiny_bert, sentiment_files, tmp_path / "cached", **settings)
    forward = train(tiny_bert, sentiment_files, tmp_path / "forward", cache_features=False, **settings)
    heads = {name: load_file(tmp_path / name / weights) for name in ("cached", "forward")}
    assert heads["cached"].keys() == heads["forward"].keys()
    for key, tensor in heads["cached"].items():
        torch.testing.assert_close(tensor, heads["forward"][key], rtol=1e-4, atol=1e-5, msg=key)
    if pooling == "model":  # the head did train
        assert not torch.equal(heads["cached"]["classifier.weight"],
                               load_file(tiny_bert / "model.safetensors")["classifier.weight"])
    assert cached["train_loss"] == pytest.approx(forward["train_loss"], rel=1e-4)
    details = [json.loads((tmp_path / name / "card_context.json").read_text())["extra_details"]["feature extraction"]
               for name in ("cached", "forward")]
    assert details[0].startswith("cached features") and details[1] == "backbone forward every step"


def test_a_mean_pooled_adapter_merges(tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / "lora"
    train(tiny_bert, sentiment_files, out, strategy="lora", learning_rate=5e-2)
    merged = merge_adapter(out, tmp_path / "merged")
    model, tokenizer, _ = load_trained(out)
    plain = MultiHeadModel.from_pretrained(merged).eval()
    inputs = tokenizer(["the film was good", "the plot was dull and slow"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(plain(**inputs).logits, model(**inputs).logits, rtol=1e-4, atol=1e-5)
    base = AutoModel.from_pretrained(tiny_bert).state_dict()
    assert any(not torch.equal(tensor, base[name])  # the adapter was folded into the backbone
               for name, tensor in plain.backbone.state_dict().items())


def test_pooling_is_named_when_wrong_or_not_read():
    with pytest.raises(UsageError, match="--pooling must be one of model, mean, cls; got 'max'"):
        parse(["--pooling", "max"], {"model_name_or_path": "x"})
    with pytest.raises(UsageError, match="--pooling does not apply to automatic-speech-recognition"):
        parse(["--pooling", "mean"], {"model_name_or_path": "x"}, task="automatic-speech-recognition")


@pytest.mark.parametrize("spelled, overrides", [
    ("full+mean", {"strategy": "full", "pooling": "mean"}),
    ("partial:2+cls", {"strategy": "partial", "unfreeze_layers": 2, "pooling": "cls"}),
    ("full+model", {"strategy": "full", "pooling": "model"}),
    ("lora", {"strategy": "lora"}),
])
def test_a_study_strategy_may_name_its_pooling(spelled, overrides):
    assert strategy_overrides(spelled, "") == overrides


def test_dann_adapts_the_features_a_mean_pooled_head_reads(tiny_bert, sentiment_files, tmp_path):
    shifted = [{"text": row["text"].replace("was", "is really"), "label": row["label"]}
               for row in sentences(32, seed=3)]
    target = write_csv(tmp_path / "target.csv", shifted)
    results = train(tiny_bert, sentiment_files, tmp_path / "out", strategy="full", max_train_steps=8,
                    adaptation="dann", target_train_file=str(target), target_test_file=str(target))
    assert results["target_test_samples"] == 32
    logged = json.loads((tmp_path / "out" / "train_log.json").read_text())["train"]
    assert "train_domain_loss" in logged[0]
    assert not any("discriminator" in name for name in load_file(str(tmp_path / "out" / "heads.safetensors")))


def test_a_mean_pooled_run_trains_under_ddp(tiny_bert, sentiment_files, tmp_path):
    """Every trainable weight gets a gradient (BERT's unused pooler is gone), as DDP requires."""
    launched = launch_two_processes(
        sentiment.__file__, "--model_name_or_path", str(tiny_bert), "--train_file", str(sentiment_files["train"]),
        "--output_dir", str(tmp_path / "out"), "--max_train_steps", "4", "--per_device_train_batch_size", "8",
        "--strategy", "full", "--pooling", "mean")
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "all_results.json").read_text())["num_processes"] == 2
    assert not any(name.startswith("pooler.") for name in load_file(str(tmp_path / "out" / "model.safetensors")))


def test_a_backbone_without_the_pooler_it_will_drop_is_not_reported_as_incomplete(tiny_bert):
    backbone = AutoModel.from_pretrained(tiny_bert)
    assert describe_new_weights(backbone, {"missing_keys": ["pooler.dense.weight", "pooler.dense.bias"],
                                           "mismatched_keys": []}, headless=True) == "backbone: the checkpoint's"
    missing = {"missing_keys": ["encoder.layer.0.output.dense.bias"], "mismatched_keys": []}
    line = describe_new_weights(backbone, missing, headless=True)
    assert line.endswith("1 weight(s) missing from it, initialised at random")
