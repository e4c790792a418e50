"""The loop's named streams: how they are drawn, what compute_loss sees, and bit-exact resume with two streams."""

import json
import re
import shutil

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from hf_transfer.config import TrainArgs, UsageError
from hf_transfer.data.sampling import GroupedShuffleSampler
from hf_transfer.training.loop import Loop, new_accelerator


class TwoInputs(torch.nn.Module):
    """A layer for each stream, and dropout: resuming must restore the random state as well as the positions."""

    def __init__(self):
        super().__init__()
        self.source = torch.nn.Linear(3, 2)
        self.target = torch.nn.Linear(3, 1)
        self.dropout = torch.nn.Dropout(0.3)

    def forward(self, x, layer):
        return getattr(self, layer)(self.dropout(x))


def shuffled_loader(examples: int, seed: int) -> DataLoader:
    rows = torch.arange(examples * 3, dtype=torch.float32).reshape(examples, 3) / (examples * 3)
    data = [{"x": row, "index": torch.tensor(i)} for i, row in enumerate(rows)]
    return DataLoader(data, batch_size=2, sampler=GroupedShuffleSampler(None, 2, seed, examples),
                      generator=torch.Generator().manual_seed(seed))


def train(output_dir, policy, seen=None, save_steps=4, **settings) -> dict:
    """Twelve optimizer steps over a source stream of 8 batches and a target stream of 3 (it wraps around)."""
    torch.manual_seed(0)
    model = TwoInputs()
    args = TrainArgs(output_dir=str(output_dir), max_train_steps=12, logging_steps=1, eval_steps=4,
                     save_total_limit=3, learning_rate=0.05, warmup_ratio=0.0, mixed_precision="no",
                     save_steps=save_steps, **settings)
    accelerator = new_accelerator(args, str(output_dir), cpu=True)

    def compute_loss(model, batch, progress):
        values = {}
        for name, stream in batch.items():
            if seen is not None:
                seen.append((progress.step, name, stream["index"].tolist()))
            values[f"{name}_loss"] = model(stream["x"], name).pow(2).mean()
        values["loss"] = sum(values.values())
        values["progress"] = torch.tensor(progress.fraction)
        return values

    loop = Loop(accelerator, model, torch.optim.SGD(model.parameters(), lr=0.05),
                {"source": shuffled_loader(16, seed=1), "target": shuffled_loader(6, seed=2)}, compute_loss,
                lambda model: {"accuracy": -model.source.weight.abs().sum().item()}, args, output_dir, policy=policy)
    loop.fit()
    return {"train": loop.state.train_losses, "eval": loop.state.history,
            "weights": {name: p.detach().clone() for name, p in model.state_dict().items()}}


# Step 5 of the last case ends on micro-batch 15, within a round: the source's turn of that round comes first.
@pytest.mark.parametrize("policy,accumulation,step", [("together", 1, 4), ("round_robin", 1, 4), ("round_robin", 3, 5)])
def test_a_two_stream_run_resumes_bit_exactly(tmp_path, policy, accumulation, step):
    settings = dict(gradient_accumulation_steps=accumulation, save_steps=step)
    whole = train(tmp_path / "whole", policy, **settings)
    checkpoint = f"checkpoints/step-{step}"
    shutil.copytree(tmp_path / "whole" / checkpoint, tmp_path / "resumed" / checkpoint)
    resumed = train(tmp_path / "resumed", policy, resume_from_checkpoint="latest", **settings)
    assert resumed["train"] == whole["train"]  # the first 4 come from the checkpoint, the other 8 were trained again
    assert resumed["eval"] == whole["eval"]
    for name, value in whole["weights"].items():
        torch.testing.assert_close(resumed["weights"][name], value, rtol=0, atol=0, msg=name)
    saved = json.loads((tmp_path / "whole" / checkpoint / "train_state.json").read_text())
    assert list(saved["stream_positions"]) == ["target"]


def test_together_draws_every_stream_in_each_micro_batch_and_the_shorter_one_wraps(tmp_path):
    seen = []
    result = train(tmp_path, "together", seen)
    assert [name for _, name, _ in seen[:4]] == ["source", "target", "source", "target"]
    target = [indices for _, name, indices in seen if name == "target"]
    # The target stream (6 examples, 3 batches) starts again, in a new order, each time it runs out.
    first, second = (sorted(sum(target[i:i + 3], [])) for i in (0, 3))
    assert first == second == list(range(6))
    assert target[:3] != target[3:6]
    # compute_loss sees the step, and every value it returns is logged.
    assert [step for step, name, _ in seen if name == "source"] == list(range(12))
    assert {"train_loss", "train_source_loss", "train_target_loss", "train_progress"} <= set(result["train"][0])
    assert [entry["train_progress"] for entry in result["train"][:3]] == pytest.approx([0, 1 / 12, 2 / 12])


def test_round_robin_gives_each_micro_batch_one_stream_in_turn(tmp_path):
    seen = []
    train(tmp_path, "round_robin", seen)
    assert [name for _, name, _ in seen[:6]] == ["target", "source"] * 3  # the first stream ends each round
    assert len(seen) == 12


def test_an_unknown_policy_and_an_empty_stream_are_refused(tmp_path):
    model = TwoInputs()
    args = TrainArgs(output_dir=str(tmp_path))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UsageError, match="stream policy 'zip'.*together, round_robin"):
        Loop(Accelerator(cpu=True), model, optimizer, {"a": shuffled_loader(4, 0)}, None, None, args, tmp_path,
             policy="zip")
    with pytest.raises(UsageError, match="the 'target' stream holds no batch"):
        Loop(Accelerator(cpu=True), model, optimizer, {"source": shuffled_loader(4, 0), "target": DataLoader([])},
             None, None, args, tmp_path)


def test_weights_saved_at_the_end_match_the_best_evaluation(tmp_path):
    """The two-stream run keeps its best weights, as a one-stream run does."""
    result = train(tmp_path, "together")
    best = max(result["eval"], key=lambda entry: entry["eval_accuracy"])
    assert -result["weights"]["source.weight"].abs().sum().item() == pytest.approx(best["eval_accuracy"])
    assert not (tmp_path / "checkpoints" / "best").exists()


def test_best_weights_that_do_not_fit_the_model_are_refused(tmp_path):
    """restore_best loads strictly: a trainable tensor missing from the file, or one the model lacks, is an error
    (a skipped tensor would leave the end-of-training weights in a model said to hold the best ones)."""
    model = TwoInputs()
    model.target.requires_grad_(False)  # frozen: left out of the best weights, and not missed when they load
    args = TrainArgs(output_dir=str(tmp_path), mixed_precision="no", num_train_epochs=3, warmup_ratio=0.0)
    loop = Loop(new_accelerator(args, str(tmp_path), cpu=True), model, torch.optim.SGD(model.parameters(), lr=0.1),
                {"source": shuffled_loader(4, 0)}, None, None, args, tmp_path)
    best = {name: p.detach().clone() for name, p in model.state_dict().items()}
    loop._save_best()
    assert set(load_file(loop.best_path)) == {"source.weight", "source.bias"}
    with torch.no_grad():
        model.source.weight.zero_()
    loop.restore_best()
    torch.testing.assert_close(model.state_dict(), best, rtol=0, atol=0)

    for tamper, message in ((lambda weights: weights.pop("source.bias"), r"missing source\.bias"),
                            (lambda weights: weights.update(extra=torch.ones(1)), "unexpected extra")):
        loop._save_best()
        weights = load_file(loop.best_path)
        tamper(weights)
        save_file(weights, loop.best_path)
        with torch.no_grad():
            model.source.weight.zero_()
        with pytest.raises(RuntimeError, match=f"{re.escape(str(loop.best_path))}.*{message}"):
            loop.restore_best()
        assert not model.source.weight.any()  # nothing was half loaded
