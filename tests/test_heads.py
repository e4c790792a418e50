"""One backbone, two named heads: strategies, training on two streams, saving, reloading, predicting with each."""

import pytest
import torch
from accelerate import Accelerator
from fixtures import sentences
from torch.utils.data import DataLoader
from transformers import AutoModel, AutoTokenizer, DataCollatorWithPadding

from hf_transfer.config import StrategyArgs, TrainArgs, UsageError, parse, save_config
from hf_transfer.evaluation.inference import load_trained, predict
from hf_transfer.models.heads import MultiHeadModel, multi_head_loss
from hf_transfer.models.strategies import apply_strategy, build_optimizer
from hf_transfer.outputs import save_model
from hf_transfer.training.loop import Loop

HEADS = {"sentiment": ["negative", "positive"], "topic": ["sport", "music", "food"]}


def two_head_model(tiny_bert) -> MultiHeadModel:
    torch.manual_seed(0)
    return MultiHeadModel(AutoModel.from_pretrained(tiny_bert), HEADS, pooling="cls")


def stream(tokenizer, labels: list[str], count: int, seed: int) -> DataLoader:
    rows = sentences(count, tuple(labels), seed=seed)
    examples = [{**tokenizer(row["text"]), "labels": labels.index(row["label"])} for row in rows]
    return DataLoader(examples, batch_size=8, shuffle=True, collate_fn=DataCollatorWithPadding(tokenizer),
                      generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("strategy,trains_layer_0,trains_layer_2", [
    ("full", True, True), ("partial", False, True), ("feature_extraction", False, False), ("lora", False, False)])
def test_every_strategy_trains_both_heads(tiny_bert, strategy, trains_layer_0, trains_layer_2):
    model = apply_strategy(two_head_model(tiny_bert), StrategyArgs(strategy=strategy, unfreeze_layers=1), None)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    for head in HEADS:
        assert any(f"heads.{head}." in name for name in trainable), head
    assert any(".layer.0.attention.self.query.weight" in name for name in trainable) == trains_layer_0
    assert any(".layer.2.attention.self.query.weight" in name for name in trainable) == trains_layer_2
    assert any("lora_A" in name for name in trainable) == (strategy == "lora")


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_a_two_head_model_trains_on_two_streams_saves_reloads_and_predicts_with_each_head(tiny_bert, tmp_path,
                                                                                        strategy):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    strategy_args = StrategyArgs(strategy=strategy, layerwise_lr_decay=1.0)
    model = apply_strategy(two_head_model(tiny_bert), strategy_args, None)
    args = TrainArgs(output_dir=str(tmp_path / "run"), max_train_steps=40,
                     learning_rate=3e-3 if strategy == "full" else 2e-2, warmup_ratio=0.0,
                     logging_steps=10, mixed_precision="no")
    accelerator = Accelerator(cpu=True)
    streams = {name: stream(tokenizer, labels, 48, seed) for seed, (name, labels) in enumerate(HEADS.items())}
    held_out = {name: stream(tokenizer, labels, 24, 5 + seed) for seed, (name, labels) in enumerate(HEADS.items())}

    @torch.no_grad()
    def evaluate(model):  # the mean accuracy of the two heads: the loop keeps the best weights by it
        model.eval()
        right = [(model(head=name, **{k: v for k, v in batch.items() if k != "labels"}).logits.argmax(-1)
                  == batch["labels"]).float().mean() for name, loader in held_out.items() for batch in loader]
        model.train()
        return {"accuracy": torch.stack(right).mean().item()}

    loop = Loop(accelerator, model, build_optimizer(model, strategy_args, args, accelerator.device), streams,
                multi_head_loss(), evaluate, args, args.output_dir, policy="round_robin")
    state = loop.fit()
    first, last = state.train_losses[0], state.train_losses[-1]
    for head in HEADS:  # each head's loss is logged, and falls
        assert last[f"train_{head}_loss"] < first[f"train_{head}_loss"], head

    folder = tmp_path / "model"
    save_model(accelerator.unwrap_model(loop.model), tokenizer, folder, None)
    save_config(parse([], {"model_name_or_path": str(tiny_bert), "strategy": strategy,
                           "dataset_name": "local/two-tasks"}), folder / "run_config.yaml")
    model.eval()
    for seed, (head, labels) in enumerate(HEADS.items()):
        texts = [row["text"] for row in sentences(12, tuple(labels), seed=10 + seed)]
        reloaded, processor, settings = load_trained(folder, require_finished=False, head=head)
        assert reloaded.config.id2label == dict(enumerate(labels))
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            torch.testing.assert_close(reloaded(**batch).logits, model(head=head, **batch).logits)
        predictions = predict(reloaded, processor, settings, texts)
        assert {p["label"] for p in predictions} <= set(labels)
        expected = [row["label"] for row in sentences(12, tuple(labels), seed=10 + seed)]
        assert sum(p["label"] == e for p, e in zip(predictions, expected)) > len(texts) / len(labels)


def test_a_multi_head_folder_asks_which_head(tiny_bert, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    folder = tmp_path / "model"
    save_model(two_head_model(tiny_bert), tokenizer, folder, None)
    save_config(parse([], {"model_name_or_path": str(tiny_bert), "strategy": "full",
                           "dataset_name": "local/two-tasks"}), folder / "run_config.yaml")
    with pytest.raises(UsageError, match=r"several heads \(sentiment, topic\): name one with --head"):
        load_trained(folder, require_finished=False)
    with pytest.raises(UsageError, match="no head 'colour'; this model has sentiment, topic"):
        load_trained(folder, require_finished=False, head="colour")
    with pytest.raises(UsageError, match="every head needs two labels or more"):
        MultiHeadModel(AutoModel.from_pretrained(tiny_bert), {"one": ["only"]})


def test_each_head_trains_with_its_class_weights_and_the_label_smoothing(tiny_bert):
    """--class_weights and --label_smoothing apply to a multi-head run as to a one-head one: per head, its weights."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = two_head_model(tiny_bert).eval()  # no dropout: the same logits on every call
    batch = {name: next(iter(stream(tokenizer, labels, 8, seed))) for seed, (name, labels) in enumerate(HEADS.items())}
    weights = {"topic": torch.tensor([1.0, 2.0, 3.0])}  # the sentiment head: unweighted
    got = multi_head_loss(weights, label_smoothing=0.2)(model, batch, None)
    with torch.no_grad():
        logits = {name: model(head=name, **{k: v for k, v in inputs.items() if k != "labels"}).logits
                  for name, inputs in batch.items()}
    expected = {name: torch.nn.functional.cross_entropy(logits[name], batch[name]["labels"],
                                                        weight=weights.get(name), label_smoothing=0.2)
                for name in HEADS}
    for name in HEADS:
        torch.testing.assert_close(got[f"{name}_loss"], expected[name])
    torch.testing.assert_close(got["loss"], expected["sentiment"] + expected["topic"])
    plain = multi_head_loss()(model, batch, None)["topic_loss"]
    assert not torch.isclose(plain, got["topic_loss"])
