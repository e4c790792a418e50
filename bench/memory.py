"""Peak training memory of full fine-tuning vs LoRA vs feature extraction (issue 5's memory table).

    # GPU: one line per strategy for each base model, bf16, batch 32
    python bench/memory.py --model_config bert-base --mixed_precision bf16
    python bench/memory.py --model_config vit-base --mixed_precision bf16
    python bench/memory.py --model_config wav2vec2-base --mixed_precision bf16
    # CPU: peak RSS per strategy (BENCHMARKS.md has the exact lines measured)
    python bench/memory.py --model_config minilm --mixed_precision bf16 --steps 2
    # CPU smoke (tests/test_bench.py)
    python bench/memory.py --model_config bert-tiny --steps 2 --batch_size 4

For each strategy the model is built from its config (random init: memory does not depend on the weights), given
the strategy by `models.strategies.apply_strategy`, optimised by `build_optimizer` (fused AdamW, as every recipe
does), prepared by accelerate and trained `--steps` steps on random inputs of the model's usual training shape. The
peak is `torch.cuda.max_memory_allocated` over those steps: weights, gradients, optimizer state and activations.
Without CUDA each strategy runs in a forked child process, and the line gives its peak resident set size (VmHWM,
`peak_rss_gb`) and that peak less the RSS the child started with (`training_rss_gb`: the model, its training
state and activations, without the Python and library pages every strategy shares).
Text batches are padded to --seq_len (run_glue's 128), the worst case; length-grouped batches of short sentences
use less. Wav2Vec2's convolutional feature encoder stays frozen, as recipes/audio_classification.py leaves it by
default. One JSON line per strategy on stdout; the libraries' own output goes to stderr.
"""

import argparse
import contextlib
import gc
import json
import multiprocessing
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import set_seed
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    ViTConfig,
    ViTForImageClassification,
    Wav2Vec2Config,
    Wav2Vec2ForSequenceClassification,
)

from hf_transfer.config import StrategyArgs, TrainArgs
from hf_transfer.models.strategies import apply_strategy, build_optimizer, count_parameters
from hf_transfer.tasks import TASKS
from hf_transfer.training.loop import Progress, logits_loss

# -----------------------------------------------------------------------------------------------------------------
# name -> (task, model class, config). The transformers defaults of these configs are the base models' shapes:
# bert-base-uncased, ViT-B/16 at 224 px, wav2vec2-base. The tiny ones are for the CPU smoke test.
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
MODELS = {
    "bert-base": ("text-classification", BertForSequenceClassification, lambda: BertConfig()),
    "bert-tiny": ("text-classification", BertForSequenceClassification, lambda: BertConfig(**TINY)),
    "minilm": ("text-classification", BertForSequenceClassification,
               lambda: BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                  intermediate_size=1536)),
    "vit-base": ("image-classification", ViTForImageClassification, lambda: ViTConfig()),
    "vit-small": ("image-classification", ViTForImageClassification,
                  lambda: ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                    intermediate_size=1536)),
    "vit-tiny": ("image-classification", ViTForImageClassification,
                 lambda: ViTConfig(image_size=32, patch_size=8, **TINY)),
    "wav2vec2-base": ("audio-classification", Wav2Vec2ForSequenceClassification, lambda: Wav2Vec2Config()),
    "wav2vec2-tiny": ("audio-classification", Wav2Vec2ForSequenceClassification,
                      lambda: Wav2Vec2Config(conv_dim=(32, 32, 32), conv_stride=(5, 4, 4), conv_kernel=(10, 3, 3),
                                             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **TINY)),
}
STRATEGIES = ("full", "lora", "feature_extraction")
BATCH_SIZE = 32
SEQ_LEN = 128  # text: tokens per example
AUDIO_SECONDS = 1.0  # audio: clip length at 16 kHz
STEPS = 3  # optimizer steps per strategy; the peak is reached by the second (optimizer state exists from the first)
NUM_LABELS = 2
SEED = 42


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_config", choices=sorted(MODELS), default="bert-base")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help=f"comma-separated, from {STRATEGIES}")
    parser.add_argument("--batch_size", type=int, default=BATCH_SIZE)
    parser.add_argument("--seq_len", type=int, default=SEQ_LEN, help="text: tokens per example")
    parser.add_argument("--audio_seconds", type=float, default=AUDIO_SECONDS, help="audio: clip length (16 kHz)")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--mixed_precision", choices=("no", "bf16", "fp16"), default="no")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--output_json", help="also write the JSON lines to this file")
    args = parser.parse_args(argv)
    args.strategies = args.strategies.split(",")
    unknown = set(args.strategies) - set(STRATEGIES)
    if unknown:
        parser.error(f"--strategies: unknown {', '.join(sorted(unknown))}; choose from {', '.join(STRATEGIES)}")
    return args


def random_batch(task: str, config, args, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Inputs of the shape a recipe trains on, and labels."""
    size = args.batch_size
    if task == "text-classification":
        ids = torch.randint(1000, config.vocab_size, (size, args.seq_len), generator=generator)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    elif task == "image-classification":
        inputs = {"pixel_values": torch.randn(size, 3, config.image_size, config.image_size, generator=generator)}
    else:
        inputs = {"input_values": torch.randn(size, round(16_000 * args.audio_seconds), generator=generator)}
    return inputs | {"labels": torch.randint(NUM_LABELS, (size,), generator=generator)}


def reset_device(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def rss_gb(field: str) -> float:
    """VmRSS (now) or VmHWM (the peak so far) of this process, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 2**20  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(strategy_name: str, args) -> dict:
    start_rss = rss_gb("VmRSS") if not torch.cuda.is_available() else None
    task_name, model_class, make_config = MODELS[args.model_config]
    task = TASKS[task_name]
    set_seed(args.seed)
    config = make_config()
    config.num_labels = NUM_LABELS
    strategy = StrategyArgs(strategy=strategy_name, layerwise_lr_decay=1.0)
    base = model_class(config)
    model = apply_strategy(base, strategy, task.peft_task_type)
    if task_name == "audio-classification":
        base.freeze_feature_encoder()  # recipes/audio_classification.py's default, applied after the strategy too
    trainable, total = count_parameters(model)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    optimizer = build_optimizer(model, strategy, TrainArgs(learning_rate=5e-5, mixed_precision=args.mixed_precision),
                                accelerator.device)
    model, optimizer = accelerator.prepare(model, optimizer)
    compute_loss = logits_loss(F.cross_entropy)
    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    for step in range(args.steps):
        batch = {k: v.to(accelerator.device) for k, v in random_batch(task_name, config, args, generator).items()}
        loss = compute_loss(model, batch, Progress(step, args.steps, 0))
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    device = accelerator.device
    line = {
        "model_config": args.model_config,
        "strategy": strategy_name,
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "trainable_params": trainable,
        "total_params": total,
        "loss": loss.item(),
        "batch_size": args.batch_size,
        "input_shape": list(next(v for k, v in batch.items() if k != "labels").shape),
        "mixed_precision": args.mixed_precision,
        "steps": args.steps,
        "device": f"cuda: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if device.type != "cuda":
        peak = rss_gb("VmHWM")
        line |= {"peak_rss_gb": peak, "training_rss_gb": peak - start_rss}
    return line


def measure_in_child(strategy: str, args) -> dict:
    """`measure` in a forked process, so that its peak RSS is its own strategy's (the CPU's peak never resets)."""
    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(measure, (strategy, args))


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lines = []
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(open(args.output_json, "w")) if args.output_json else None
        for strategy in args.strategies:
            reset_device(device)
            with contextlib.redirect_stdout(sys.stderr):
                lines.append((measure if device.type == "cuda" else measure_in_child)(strategy, args))
            text = json.dumps(lines[-1])
            print(text, flush=True)
            if output is not None:
                output.write(text + "\n")
    return lines


if __name__ == "__main__":
    main()
