"""`--torch_compile`: the model compiles once per input shape, the shapes stay few, and it trains the model eager
training trains."""

import random

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from fixtures import sentences, write_csv
from safetensors.torch import load_file
from torch._dynamo.utils import counters
from torch.utils.data import DataLoader

from hf_transfer.config import TrainArgs, UsageError, parse
from hf_transfer.recipes import sentiment
from hf_transfer.training.loop import COMPILE_TOKEN_BUCKET, Loop, text_padding_multiple


def reviews_of_many_lengths(folder) -> dict:
    """train.csv (160 rows) and test.csv (40 rows): the fixture's reviews, each with 0 to 40 words added, so that
    length-grouped batches have many different longest examples (about 7 to 50 tokens)."""
    def lengthen(rows, seed):
        rng = random.Random(seed)
        return [{**row, "text": row["text"] + " and then" * rng.randrange(0, 21)} for row in rows]

    return {"train": write_csv(folder / "train.csv", lengthen(sentences(160, seed=0), 0)),
            "test": write_csv(folder / "test.csv", lengthen(sentences(40, seed=1), 1))}


def train(tiny_bert, files, output_dir, **overrides) -> dict:
    return sentiment.main({
        "model_name_or_path": str(tiny_bert), "train_file": str(files["train"]), "test_file": str(files["test"]),
        "output_dir": str(output_dir), "strategy": "full", "learning_rate": 5e-3, "num_train_epochs": 2,
        "per_device_train_batch_size": 16, "mixed_precision": "no", "dropout": 0.0, **overrides})


def test_compiled_training_matches_eager(tiny_bert, tmp_path):
    files = reviews_of_many_lengths(tmp_path)
    torch._dynamo.reset()
    counters.clear()
    compiled = train(tiny_bert, files, tmp_path / "compiled", torch_compile=True)
    graphs = counters["stats"]["unique_graphs"]
    eager = train(tiny_bert, files, tmp_path / "eager")
    # Two 32-token buckets (up to 32, up to 64) for the 144 training rows (9 full batches of 16), one batch each of
    # the 16 validation and 40 test rows, evaluated without gradients: at most 4 graphs. Padded only to each
    # batch's longest example, the length-grouped batches would compile a graph for nearly every batch.
    assert 0 < graphs <= 4
    weights = {name: load_file(tmp_path / name / "model.safetensors") for name in ("compiled", "eager")}
    for key, tensor in weights["compiled"].items():
        torch.testing.assert_close(tensor, weights["eager"][key], rtol=1e-3, atol=1e-4, msg=key)
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-3)
    assert compiled["test_accuracy"] == eager["test_accuracy"]


def test_a_compiled_frozen_backbone_at_bf16_keeps_its_graphs(tiny_bert, tmp_path):
    """Feature extraction without the cache: the frozen layers' hooks put them in inference mode inside the compiled
    forward, under bf16 autocast, without a new graph per step. Compiled in the CUDA-graph mode, which the CPU
    compiles as the default one."""
    files = reviews_of_many_lengths(tmp_path)
    counters.clear()
    results = train(tiny_bert, files, tmp_path / "frozen", strategy="feature_extraction", cache_features=False,
                    mixed_precision="bf16", learning_rate=5e-2, torch_compile_mode="reduce-overhead")
    assert results["train_steps"] == 18
    # A few graphs for two buckets and two scored splits (6 measured), not one for each of the 18 steps.
    assert 0 < counters["stats"]["unique_graphs"] <= 8


def test_padding_buckets_stay_within_the_position_embeddings(tiny_bert):
    from transformers import AutoConfig

    from hf_transfer.modalities.text import check_max_seq_length

    config = AutoConfig.from_pretrained(tiny_bert)  # 128 positions
    check_max_seq_length(config, 100)
    check_max_seq_length(config, 100, COMPILE_TOKEN_BUCKET)  # padded to 128: fits
    config.max_position_embeddings = 100
    with pytest.raises(UsageError, match="--max_seq_length 100 \\(batches padded to a multiple of 32 tokens: 128\\) "
                                         "is beyond this bert model's 100 positions; use --max_seq_length 96"):
        check_max_seq_length(config, 100, COMPILE_TOKEN_BUCKET)


def test_text_pads_to_buckets_only_when_compiling():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert text_padding_multiple(TrainArgs(torch_compile=True), cpu) == COMPILE_TOKEN_BUCKET
    assert text_padding_multiple(TrainArgs(), cpu) is None
    assert text_padding_multiple(TrainArgs(), cuda) == 8


def test_torch_compile_is_refused_where_shapes_or_constants_change_every_step():
    with pytest.raises(UsageError, match="--torch_compile does not apply to automatic-speech-recognition"):
        parse(["--torch_compile", "true"], {"model_name_or_path": "x"}, task="automatic-speech-recognition")
    with pytest.raises(UsageError, match="--torch_compile with --adaptation dann: the gradient reversal weight"):
        parse(["--torch_compile", "true", "--adaptation", "dann", "--target_train_file", "t.csv"],
              {"model_name_or_path": "x", "train_file": "x.csv"})


def test_torch_compile_mode_implies_compiling_and_is_checked():
    run = parse(["--torch_compile_mode", "reduce-overhead"], {"model_name_or_path": "x", "train_file": "x.csv"})
    assert run.train.torch_compile and run.train.torch_compile_mode == "reduce-overhead"
    with pytest.raises(UsageError, match="--torch_compile_mode must be one of default, reduce-overhead, "
                                         "max-autotune; got 'cuda-graphs'"):
        TrainArgs(torch_compile_mode="cuda-graphs")
    with pytest.raises(UsageError, match="--torch_compile_mode does not apply to automatic-speech-recognition"):
        parse(["--torch_compile_mode", "default"], {"model_name_or_path": "x"}, task="automatic-speech-recognition")


def test_the_loop_keeps_no_output_of_a_step_past_the_next_one(tmp_path):
    """CUDA graphs (--torch_compile_mode reduce-overhead) replay each call into the previous call's output buffers.
    Here every call overwrites the loss it returned the call before, as a replay would: the logged losses must still
    be the true means."""
    args = TrainArgs(output_dir=str(tmp_path), max_train_steps=6, logging_steps=3, gradient_accumulation_steps=2,
                     learning_rate=0.1, warmup_ratio=0.0, lr_scheduler_type="constant")
    model = torch.nn.Linear(2, 1)
    returned, true_losses = [], []

    def compute_loss(model, batch, progress):
        if returned:
            returned[-1].data.fill_(1e6)  # the replay writes into the last call's output
        loss = model(batch).pow(2).mean()
        returned.append(loss)
        true_losses.append(loss.item())
        return loss

    loop = Loop(Accelerator(cpu=True, gradient_accumulation_steps=2), model,
                torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(torch.randn(48, 2), batch_size=4), compute_loss,
                lambda model: {"accuracy": 1.0}, args,
                tmp_path)
    state = loop.fit()
    logged = [entry["train_loss"] for entry in state.train_losses]
    assert logged == pytest.approx([np.mean(true_losses[:6]), np.mean(true_losses[6:12])], rel=1e-6)
