"""`--padding_free`: the encoder layers run on the real tokens packed into one row, and train the same model as
padded batches do, for each supported architecture, head and strategy."""

import copy
import random

import pytest
import torch
from fixtures import make_tiny_model, sentences, write_csv
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

import hf_transfer.models.padding_free as padding_free
from hf_transfer.config import TrainArgs, UsageError, parse
from hf_transfer.models.padding_free import enable_padding_free
from hf_transfer.recipes import sentiment


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """The fixture's reviews with 0 to 20 words added, so that every batch has sentences of several lengths."""
    folder = tmp_path_factory.mktemp("reviews")

    def lengthen(rows, seed):
        rng = random.Random(seed)
        return [{**row, "text": row["text"] + " and then" * rng.randrange(0, 11)} for row in rows]

    return {"train": write_csv(folder / "train.csv", lengthen(sentences(96, seed=0), 0)),
            "test": write_csv(folder / "test.csv", lengthen(sentences(32, seed=1), 1))}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return {name: make_tiny_model(tmp_path_factory.mktemp(name), name) for name in ("bert", "roberta", "distilbert")}


def padded_batch(tokenizer, texts: list[str]) -> dict:
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


TEXTS = ["short one", "a somewhat longer sentence with a few more words in it", "mid length text here", "x"]


@pytest.mark.parametrize("name", ["bert", "roberta"])
def test_packed_forward_and_backward_equal_the_padded_ones(tiny_models, name):
    padded = AutoModelForSequenceClassification.from_pretrained(tiny_models[name]).eval()
    packed = copy.deepcopy(padded)
    enable_padding_free(packed)
    enable_padding_free(packed)  # a second call changes nothing
    batch = padded_batch(AutoTokenizer.from_pretrained(tiny_models[name]), TEXTS)
    assert (batch["attention_mask"] == 0).any()  # there is padding to leave out
    expected, actual = padded(**batch).logits, packed(**batch).logits
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    expected.square().sum().backward()
    actual.square().sum().backward()
    for (key, weight), other in zip(padded.named_parameters(), packed.parameters()):
        torch.testing.assert_close(other.grad, weight.grad, rtol=1e-4, atol=1e-7, msg=key)


def train(model, files, output_dir, **overrides) -> dict:
    return sentiment.main({
        "model_name_or_path": str(model), "train_file": str(files["train"]), "test_file": str(files["test"]),
        "output_dir": str(output_dir), "learning_rate": 5e-3, "num_train_epochs": 1, "mixed_precision": "no",
        "per_device_train_batch_size": 16, "dropout": 0.0, "length_grouping": False, "max_seq_length": 64,
        **overrides})


@pytest.mark.parametrize("name, pooling, strategy", [("bert", "model", "full"), ("bert", "mean", "lora"),
                                                     ("roberta", "model", "full")])
def test_the_recipe_trains_the_same_model_padding_free(tiny_models, files, tmp_path, monkeypatch, name, pooling,
                                                      strategy):
    """Shuffled, not length-grouped: the batches carry padding, which the packed rows leave out."""
    tokens = []
    original = padding_free.packed_attention

    def counted(module, query, *args, **kwargs):
        tokens.append(query.shape[2])
        return original(module, query, *args, **kwargs)

    monkeypatch.setattr(padding_free, "packed_attention", counted)
    settings = {"pooling": pooling, "strategy": strategy, "lora_dropout": 0.0}  # dropout draws follow shapes
    packed = train(tiny_models[name], files, tmp_path / "packed", padding_free=True, **settings)
    padded = train(tiny_models[name], files, tmp_path / "padded", **settings)
    # The packed attention ran, on rows without the padding: fewer tokens than 16 sentences of the longest length.
    assert tokens and min(tokens) < 16 * 10
    weights = "model.safetensors" if strategy == "full" else "adapter_model.safetensors"
    expected, actual = (load_file(tmp_path / run / weights) for run in ("padded", "packed"))
    for key, tensor in expected.items():
        torch.testing.assert_close(actual[key], tensor, rtol=1e-4, atol=1e-5, msg=key)
    assert packed["train_loss"] == pytest.approx(padded["train_loss"], rel=1e-4)
    assert packed["test_accuracy"] == padded["test_accuracy"]
    if strategy == "full" and pooling == "model":
        # The saved model knows nothing of the packing: a plain pipeline scores it as training did.
        classify = pipeline("text-classification", model=str(tmp_path / "packed"))
        padded_model = pipeline("text-classification", model=str(tmp_path / "padded"))
        assert [r["score"] for r in classify(TEXTS)] == pytest.approx([r["score"] for r in padded_model(TEXTS)],
                                                                       rel=1e-4)


def test_padding_free_is_refused_where_it_cannot_work(tiny_models, files, tmp_path):
    with pytest.raises(UsageError, match="--padding_free works for bert, roberta encoders, not distilbert"):
        train(tiny_models["distilbert"], files, tmp_path, padding_free=True)
    with pytest.raises(UsageError, match="--padding_free with --torch_compile: the packed row's length changes"):
        TrainArgs(padding_free=True, torch_compile=True)
    with pytest.raises(UsageError, match="--padding_free does not apply to image-classification"):
        parse(["--padding_free", "true"], {"model_name_or_path": "x", "train_dir": "x"}, task="image-classification")
