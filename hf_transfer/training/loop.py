"""The training loop every recipe shares: accelerate, accumulation, evaluation, early stopping, checkpoints.

The loop knows nothing of tasks: it takes one or several named streams of batches, a
`compute_loss(model, batch, progress)` and an `evaluate(model)` returning metrics, so domain adaptation or several
heads fit in by changing those two functions.
"""

import itertools
import json
import math
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import send_to_device
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import get_scheduler

from hf_transfer.config import TrainArgs, UsageError
from hf_transfer.io import atomic_write_json, follow_umask
from hf_transfer.models.strategies import load_trainable_state_dict, trainable_state_dict
from hf_transfer.targets import lower_is_better
from hf_transfer.training.precision import choose_mixed_precision
from hf_transfer.training.run_folder import checkpoint_dirs, copy_record, resolve_checkpoint

# How a run with several streams draws them: `together`, one batch of every stream in each micro-batch
# (domain adaptation: labelled source and unlabelled target); `round_robin`, one stream per micro-batch, in turn,
# the first stream last (several tasks, one head each).
STREAM_POLICIES = ("together", "round_robin")


# --torch_compile: the model compiles once per distinct input shape (train and evaluation, full and last batches
# count apart). Recipes keep the shapes few: text pads to multiples of COMPILE_TOKEN_BUCKET tokens, audio to its
# longest clip allowed, and images have one size. The limit is a backstop above what those give.
COMPILE_TOKEN_BUCKET = 32
COMPILE_SHAPE_LIMIT = 64


class TrainingDiverged(UsageError):
    """The loss became NaN or infinite: printed as a message with advice, like bad input."""


@dataclass
class TrainState:
    """Where a run is; saved with every checkpoint so a resumed run continues exactly."""

    epoch: int = 0
    step: int = 0  # optimizer steps done
    batches_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    best_metric: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    history: list[dict] = field(default_factory=list)  # one entry per evaluation
    train_losses: list[dict] = field(default_factory=list)  # one entry per logging step
    # Every stream but the first (which sets the epochs): [its own epoch, batches of it already drawn].
    stream_positions: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    """Where training is, as `compute_loss` sees it: schedules over training (DANN's lambda) read it."""

    step: int  # optimizer steps done before this micro-batch
    max_steps: int
    epoch: int

    @property
    def fraction(self) -> float:
        return self.step / self.max_steps


def new_accelerator(args: TrainArgs, output_dir: str, **kwargs) -> Accelerator:
    """The run's Accelerator. Its precision is `--mixed_precision` when given, else the launcher's choice
    (`accelerate launch --mixed_precision`, `accelerate config`), else bf16 where the hardware runs it fast
    (`choose_mixed_precision`), else none.

    accelerate keeps its settings in process-wide singletons: they are reset first, so that a second run in one
    notebook kernel may use another precision. The process group (PartialState) of a launched run stays.
    The precision chosen is written back to `args`, so that run_config.yaml records it.
    """
    AcceleratorState._reset_state()
    GradientState._reset_state()
    accelerator = Accelerator(mixed_precision=choose_mixed_precision(args.mixed_precision, kwargs.get("cpu", False)),
                              gradient_accumulation_steps=args.gradient_accumulation_steps,
                              log_with=None if args.report_to == "none" else args.report_to, project_dir=output_dir,
                              # Batches from pinned memory (the loaders pin on CUDA) copy to the GPU without
                              # the host waiting for the copy: the step's kernels queue behind it.
                              dataloader_config=DataLoaderConfiguration(non_blocking=True), **kwargs)
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        # accelerate has no fp16 autocast on a CPU: it would compute in fp32 and record fp16.
        source = "--mixed_precision fp16" if args.mixed_precision else "fp16 (from accelerate launch or its config)"
        raise UsageError(f"{source} does not run on a CPU (accelerate would train in fp32 and report fp16); "
                         "use --mixed_precision bf16 or --mixed_precision no")
    args.mixed_precision = accelerator.mixed_precision
    return accelerator


def dataloader_workers(args: TrainArgs) -> int:
    """`--dataloader_num_workers`, else `default_dataloader_workers()`.

    Each worker's torch and `random` are seeded by torch from the loader's generator; augmentation needs neither
    (each example has its own seed, see `SeededExamples`).
    """
    return default_dataloader_workers() if args.dataloader_num_workers is None else args.dataloader_num_workers


def default_dataloader_workers() -> int:
    """min(4, CPUs - 1) for each process on this machine, and 0 where that leaves fewer than 2: on a 2-core machine
    workers take CPU time from the training threads (measured: 13 % fewer clips a second with 2 workers).

    Workers only where processes start by fork: the collators are closures, which spawn can't pickle."""
    if multiprocessing.get_start_method() != "fork":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_process = min(4, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", 1)) - 1)
    return per_process if per_process >= 2 else 0


def text_padding_multiple(args: TrainArgs, device: torch.device) -> int | None:
    """What text batches pad their longest example up to: COMPILE_TOKEN_BUCKET tokens under --torch_compile (few
    shapes), 8 on CUDA (tensor cores like it), nothing otherwise (the CPU does not care)."""
    if args.torch_compile:
        return COMPILE_TOKEN_BUCKET
    return 8 if device.type == "cuda" else None


def compile_model(model: torch.nn.Module, mode: str | None) -> None:
    """Compile `model`'s forward in place (its weights and state-dict keys unchanged), one graph per input shape.
    Compiled code is shared by every module in the process, so an earlier run's (a study's previous cell) is dropped
    first: its graphs would count against this run's limit.

    Under mode "reduce-overhead" each shape's kernels are recorded once as a CUDA graph, and every call (a training
    micro-batch, once its backward ran, or an evaluation batch) replays into the previous call's output buffers: the
    loop keeps nothing of a step's outputs past it (the logged loss is summed into a new tensor). On the CPU the
    mode compiles as "default" does."""
    torch._dynamo.reset()
    # `cache_size_limit`: the name every torch the project supports knows (newer ones alias it to recompile_limit).
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, COMPILE_SHAPE_LIMIT)
    model.compile(dynamic=False, mode=mode)


def logits_loss(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    """`compute_loss` for a model with logits: `loss(float logits, labels)` (a target's, `targets.loss_function`)."""

    def compute_loss(model, batch, progress: Progress):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return loss(model(**inputs).logits.float(), batch["labels"])

    return compute_loss


def softmax(logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(-1)


@torch.no_grad()
def predict(accelerator: Accelerator, model, loader, scores: Callable[[torch.Tensor], torch.Tensor] = softmax
            ) -> tuple[np.ndarray, np.ndarray]:
    """`scores` of the logits (class probabilities by default; a target's `scores`) and the references over the
    whole split, gathered from every process. The forward runs at
    the run's precision whether or not accelerate prepared `model` (a head trained on cached features scores the
    bare model); the loader's preprocessing stays outside autocast (Whisper's feature extractor can't return bf16)."""
    model.eval()
    probabilities, references = [], []
    for batch in loader:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with accelerator.autocast():
            logits = model(**inputs).logits.float()
        logits, labels = accelerator.gather_for_metrics((logits, batch["labels"]))
        probabilities.append(scores(logits).cpu())
        references.append(labels.cpu())
    model.train()
    return torch.cat(probabilities).numpy(), torch.cat(references).numpy()


def check_metric_for_best_model(metric: str, metrics: dict[str, str | None]) -> None:
    """Before training: `metric` must be one the evaluation produces (`metrics` maps each to None, or to why it is
    undefined on this validation split), so a run never stops at its first evaluation."""
    name = metric.removeprefix("eval_")
    if name not in metrics:
        raise UsageError(f"--metric_for_best_model {metric}: not among this task's metrics ({', '.join(metrics)})")
    if metrics[name]:
        defined = [m for m, why in metrics.items() if not why]
        raise UsageError(f"--metric_for_best_model {metric}: {metrics[name]}; pick another ({', '.join(defined)}) "
                         "or give a validation split with every class")


def _is_better(value: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    return value < best if lower_is_better(metric) else value > best


class SecondaryStream:
    """A stream after the first: drawn whenever a micro-batch needs it, and started again (in its next epoch's
    order) when it runs out. Its position is part of the checkpoint, so a resumed run draws the same batches.

    It iterates the prepared loader's sharded base loader itself: accelerate counts the loader being iterated as
    the one whose end closes a gradient accumulation, and that must stay the first stream."""

    def __init__(self, name: str, loader, device: torch.device):
        if len(loader) == 0:
            raise UsageError(f"the {name!r} stream holds no batch")
        self.name, self.loader, self.device = name, loader, device
        self.epoch, self.batches, self._iterator = 0, 0, None

    def restore(self, epoch: int, batches: int) -> None:
        self.epoch, self.batches, self._iterator = epoch, batches, None

    def next(self):
        if self._iterator is None:
            self.loader.set_epoch(self.epoch)
            self._iterator = itertools.islice(iter(self.loader.base_dataloader), self.batches, None)
        batch = next(self._iterator, None)
        if batch is None:
            self.restore(self.epoch + 1, 0)
            return self.next()
        self.batches += 1
        return send_to_device(batch, self.device, non_blocking=True)


class Loop:
    """Train `model` with `args`; call `fit()`, then the model holds the best weights seen.

    `streams` is one DataLoader, whose batches `compute_loss` gets as they are, or named DataLoaders drawn by
    `policy` (see STREAM_POLICIES), whose batches it gets as {name: batch}. The first named stream sets the epochs.
    `compute_loss` returns the loss, or a dict of it ("loss") and other values to log as `train_<name>`.
    `prepare_batch`, when given, turns each stream's batch into what `compute_loss` gets once the batch is on the
    device (images augmented on the GPU, see image_augment.py).
    """

    def __init__(self, accelerator: Accelerator, model, optimizer, streams, compute_loss: Callable,
                 evaluate: Callable[[torch.nn.Module], dict], args: TrainArgs, output_dir: str | Path,
                 policy: str = "together", prepare_batch: Callable[[dict], dict] | None = None):
        if policy not in STREAM_POLICIES:
            raise UsageError(f"stream policy {policy!r}: choose one of {', '.join(STREAM_POLICIES)}")
        self.accelerator = accelerator
        self.args = args
        self.output_dir = Path(output_dir)
        self.compute_loss = compute_loss
        self.evaluate = evaluate
        self.named = isinstance(streams, dict)
        self.policy = policy
        self.prepare_batch = prepare_batch
        loaders = streams if self.named else {"train": streams}
        if args.torch_compile:
            compile_model(model, args.torch_compile_mode)
        self.model, self.optimizer, *prepared = accelerator.prepare(model, optimizer, *loaders.values())
        self.train_loader, *others = prepared
        self.lead = next(iter(loaders))
        self.secondary = [SecondaryStream(name, loader, accelerator.device)
                          for name, loader in zip(list(loaders)[1:], others)]
        # Micro-batches per epoch: the first stream's, and under round_robin every stream's turn after each of them.
        self.turns = len(loaders) if policy == "round_robin" else 1
        # Counted on the prepared loader: under DDP each process sees only its share of the batches.
        self.steps_per_epoch = math.ceil(len(self.train_loader) * self.turns / args.gradient_accumulation_steps)
        self.max_steps = args.max_train_steps or math.ceil(args.num_train_epochs * self.steps_per_epoch)
        self.num_epochs = math.ceil(self.max_steps / self.steps_per_epoch)
        scheduler = get_scheduler(
            args.lr_scheduler_type, self.optimizer.optimizer,
            # The prepared scheduler steps once per process for each optimizer step.
            num_warmup_steps=math.ceil(args.warmup_ratio * self.max_steps) * accelerator.num_processes,
            num_training_steps=self.max_steps * accelerator.num_processes,
        )
        self.scheduler = accelerator.prepare(scheduler)
        self.state = TrainState()
        self.best_path = self.output_dir / "checkpoints" / "best" / "trainable.safetensors"
        # Called after each evaluation with (step, {"eval_<metric>": value}): `hf-transfer tune` prunes from here.
        self.evaluation_callbacks: list[Callable[[int, dict], None]] = []

    # --- checkpoints -------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        path = self.output_dir / "checkpoints" / f"step-{self.state.step}"
        self.state.stream_positions = {stream.name: [stream.epoch, stream.batches] for stream in self.secondary}
        self.accelerator.save_state(str(path))
        if self.accelerator.is_main_process:
            if self.best_path.is_file():  # the best weights so far belong to this point of the run
                shutil.copyfile(self.best_path, path / self.best_path.name)
            copy_record(self.output_dir, path)
            follow_umask(path)
            # Written last: a folder without it is an interrupted save and is never resumed from.
            atomic_write_json(path / "train_state.json", asdict(self.state))
            for old in checkpoint_dirs(self.output_dir)[:-self.args.save_total_limit or None]:
                shutil.rmtree(old)
        self.accelerator.wait_for_everyone()

    def resume(self, resume_from: str) -> None:
        path = resolve_checkpoint(resume_from, self.output_dir)
        self.accelerator.load_state(str(path))
        self.state = TrainState(**json.loads((path / "train_state.json").read_text()))
        for stream in self.secondary:
            stream.restore(*self.state.stream_positions[stream.name])
        if self.accelerator.is_main_process and (path / self.best_path.name).is_file():
            self.best_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path / self.best_path.name, self.best_path)
        self.accelerator.wait_for_everyone()
        self.accelerator.print(f"Resumed from {path} at step {self.state.step} (epoch {self.state.epoch})")

    def _save_best(self) -> None:
        if self.accelerator.is_main_process:
            self.best_path.parent.mkdir(parents=True, exist_ok=True)
            weights = trainable_state_dict(self.accelerator.unwrap_model(self.model))
            tmp = self.best_path.with_suffix(".tmp")
            save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp))
            tmp.replace(self.best_path)
        self.accelerator.wait_for_everyone()

    def restore_best(self) -> None:
        """Load the best weights seen, then drop their scratch copy (the output folder gets the real save)."""
        load_trainable_state_dict(self.accelerator.unwrap_model(self.model), load_file(str(self.best_path)),
                                  str(self.best_path))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            shutil.rmtree(self.best_path.parent)
            if not any(self.best_path.parent.parent.iterdir()):  # no periodic checkpoints either
                self.best_path.parent.parent.rmdir()

    # --- evaluation --------------------------------------------------------------------------------------------
    def _evaluate_and_track(self) -> bool:
        """Evaluate, log, keep the best weights. Returns True when early stopping says stop."""
        metrics = {f"eval_{k}": v for k, v in self.evaluate(self.model).items() if v is not None}
        metric = self.args.metric_for_best_model or "accuracy"  # recipes set the target's; a bare Loop, accuracy
        key = metric if metric.startswith("eval_") else f"eval_{metric}"
        if key not in metrics:
            raise UsageError(f"--metric_for_best_model {metric}: not among the metrics "
                             f"({', '.join(k.removeprefix('eval_') for k in metrics)})")
        self.state.history.append({"step": self.state.step, "epoch": self.state.epoch, **metrics})
        self.accelerator.log(metrics, step=self.state.step)
        for callback in self.evaluation_callbacks:
            callback(self.state.step, metrics)
        shown = dict.fromkeys(("eval_accuracy", "eval_f1_macro", key))
        self.accelerator.print(f"step {self.state.step}: " + ", ".join(f"{k} {metrics[k]:.4f}" for k in shown
                                                                       if k in metrics))
        if _is_better(metrics[key], self.state.best_metric, key):
            self.state.best_metric, self.state.best_step, self.state.evals_since_best = metrics[key], self.state.step, 0
            self._save_best()
            return False
        self.state.evals_since_best += 1
        patience = self.args.early_stopping_patience
        return patience is not None and self.state.evals_since_best >= patience

    # --- training ----------------------------------------------------------------------------------------------
    def _log_loss(self, running: dict[str, list]) -> float:
        """Log the mean loss (and other logged values) of the micro-batches since the last log; returns the loss.
        A value is averaged over the micro-batches that returned it (a head's loss, over its stream's turns)."""
        means = {name: self.accelerator.reduce(total, "mean").item() / count
                 for name, (total, count) in running.items()}
        logs = {f"train_{name}": value for name, value in means.items()}
        logs["learning_rate"] = self.scheduler.get_last_lr()[0]
        self.accelerator.log(logs, step=self.state.step)
        self.state.train_losses.append({"step": self.state.step, **logs})
        return means["loss"]

    def _check_loss_is_finite(self) -> None:
        """Stop at the first optimizer step whose loss was NaN or inf.

        The loop marks that step on the device (`self.bad_step`) and this reads it back only at logging steps,
        evaluations and checkpoints, where the loop syncs anyway: no host sync per step, and nothing built on
        diverged weights is ever evaluated or saved.
        """
        bad = self.accelerator.gather(self.bad_step.reshape(1))
        bad = bad[bad > 0]
        if len(bad):
            step = int(bad.min())
            raise TrainingDiverged(
                f"the training loss became NaN or infinite at step {step} (learning rate "
                f"{self.step_learning_rates.get(step, float('nan')):.3g}); training stopped there and no weights "
                "from that step on were saved. Try a lower --learning_rate (or a longer --warmup_ratio), "
                "--mixed_precision bf16 instead of "
                "fp16, or gradient clipping (--max_grad_norm 1.0)")
        self.step_learning_rates.clear()

    def _micro_batches(self) -> Iterable:
        """The rest of this epoch's micro-batches, as `compute_loss` gets them (see the class docstring).

        A round_robin round draws the other streams first and the first stream last, so that the epoch ends with
        the first stream: accelerate closes a gradient accumulation where that stream ends."""
        rounds_done, turns_done = divmod(self.state.batches_in_epoch, self.turns)
        self.train_loader.set_epoch(self.state.epoch)
        batches: Iterable = self.train_loader
        if rounds_done:
            batches = self.accelerator.skip_first_batches(self.train_loader, rounds_done)
        prepare = self.prepare_batch or (lambda batch: batch)
        if not self.named:
            yield from map(prepare, batches)
        elif self.policy == "together":
            for batch in batches:
                yield {self.lead: prepare(batch), **{stream.name: prepare(stream.next()) for stream in self.secondary}}
        else:
            lead = iter(batches)
            for _ in range(len(self.train_loader) - rounds_done):
                # Drawn before the first stream's batch: once its last batch is drawn, accelerate syncs every step.
                yield from ({stream.name: prepare(stream.next())} for stream in self.secondary[turns_done:])
                turns_done = 0
                yield {self.lead: prepare(next(lead))}
            next(lead, None)  # ends the first stream's epoch: accelerate no longer counts it as being iterated

    def fit(self) -> TrainState:
        if self.args.resume_from_checkpoint:
            self.resume(self.args.resume_from_checkpoint)
        args, accelerator, state = self.args, self.accelerator, self.state
        progress = tqdm(total=self.max_steps, initial=state.step, disable=not accelerator.is_local_main_process,
                        desc="Training")
        self.model.train()
        # A checkpoint is saved after its step's evaluation: a resumed run must not evaluate that step again.
        stop, evaluated_at = state.step >= self.max_steps, state.history[-1]["step"] if state.history else None
        running = {}  # name -> [sum, micro-batches] of the loss (and other logged values) since the last log
        self.bad_step = torch.zeros((), dtype=torch.long, device=accelerator.device)  # 0 until a loss is NaN/inf
        self.step_learning_rates = {}  # step -> its learning rate, since the last finiteness check
        while not stop and state.epoch < self.num_epochs:
            for batch in self._micro_batches():
                with accelerator.accumulate(self.model):
                    output = self.compute_loss(self.model, batch, Progress(state.step, self.max_steps, state.epoch))
                    values = output if isinstance(output, dict) else {"loss": output}
                    loss = values["loss"]
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.max_grad_norm:
                        accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                    if accelerator.sync_gradients:
                        self.step_learning_rates[state.step + 1] = self.scheduler.get_last_lr()[0]
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                state.batches_in_epoch += 1
                for name, value in values.items():
                    total, count = running.get(name, (0, 0))
                    running[name] = [total + value.detach().float(), count + 1]
                self.bad_step = torch.where((self.bad_step == 0) & ~torch.isfinite(loss.detach()), state.step + 1,
                                            self.bad_step)
                if not accelerator.sync_gradients:
                    continue
                state.step += 1
                progress.update(1)
                logging = state.step % args.logging_steps == 0 or state.step == self.max_steps
                evaluating = args.eval_steps and state.step % args.eval_steps == 0
                saving = args.save_steps and state.step % args.save_steps == 0
                if logging or evaluating or saving:
                    self._check_loss_is_finite()
                if logging:
                    progress.set_postfix(loss=f"{self._log_loss(running):.4f}")
                    running = {}
                if evaluating:
                    stop, evaluated_at = self._evaluate_and_track(), state.step
                if saving:
                    self.save_checkpoint()
                if stop or state.step >= self.max_steps:
                    stop = True
                    break
            else:
                state.epoch += 1
                state.batches_in_epoch = 0
            if not args.eval_steps and evaluated_at != state.step:
                self._check_loss_is_finite()
                stop, evaluated_at = self._evaluate_and_track() or stop, state.step
        self._check_loss_is_finite()
        if running and accelerator.sync_gradients:
            # Stopped early between logging steps: the loss since the last log still belongs in the results.
            self._log_loss(running)
        if evaluated_at != state.step:
            self._evaluate_and_track()
        progress.close()
        self.restore_best()
        return state
