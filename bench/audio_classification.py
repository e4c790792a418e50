"""Training throughput of hf_transfer's loop against transformers.Trainer, audio classification (issue 5).

    # CPU smoke: a tiny Wav2Vec2, short synthetic clips, a few steps
    python bench/audio_classification.py --model_config tiny --synthetic 64 --clip_seconds 0.1 --batch_size 8 \
        --max_steps 3 --warmup_steps 1
    # CPU: a small Wav2Vec2 (recipes/configs/audio_classification_wav2vec2_8khz's shape) on 1 s clips, bf16
    OMP_NUM_THREADS=1 python bench/audio_classification.py --model_config small --mixed_precision bf16 \
        --max_steps 40 --warmup_steps 10
    # GPU: Wav2Vec2-base on 1 s clips, bf16, batch 32
    python bench/audio_classification.py --model_config wav2vec2-base --mixed_precision bf16

Run from the repository root (`PYTHONPATH=.` where hf_transfer is not installed). hf_transfer's audio module
imports `datasets`, `soundfile` and `soxr`, so those must be importable.

One run trains the same randomly initialised Wav2Vec2 (or Whisper encoder) three times on the same synthetic clips
(16 kHz WAV bytes, all --clip_seconds long, as Speech Commands' 1 s clips are), decoded every step; with `--strategy
feature_extraction` only the head trains, no side augments, and ours trains it on features cached in one pass
(text_classification.py says how that run is timed):

  ours     hf_transfer's `Loop`, fed as recipes/audio_classification.py feeds it: the recipe's collator decoding
           and augmenting each batch with its defaults (leading silence, random crop, gain, white noise) where
           --augment_on puts it, as the recipe's flag does (`auto`: gain and noise on the GPU for Wav2Vec2, else in
           the loader), `GroupedShuffleSampler` length grouping, the feature encoder frozen;
  trainer  `transformers.Trainer` as run_audio_classification.py drives it: each clip decoded and passed through
           the feature extractor per example, `default_data_collator`, the feature encoder frozen;
  trainer_tuned  the same Trainer with --num_workers DataLoader workers decoding and extracting in parallel (pinned
           memory on CUDA) and, with --torch_compile, `torch_compile`. The clips are all one length, so neither
           per-batch padding nor length grouping changes anything.

Ours gets the same --num_workers (the recipe's collator then decodes and augments in the workers).

Whisper (`--model_config whisper-*`): ours crops the encoder's 30 s input window to --clip_seconds (rounded up to
whole seconds), as the recipe does by default (`--short_inputs`); the Trainer sides pad every clip to 30 s, as
WhisperFeatureExtractor does and transformers' Whisper encoder insists on.

Both models get SpecAugment off (mask_time_prob 0: the recipe's default; the Trainer is given the same config).
Same initial weights, batch size, learning rate and schedule, precision and number of steps; timing, output and
the summary line are text_classification.py's (its `StepClock` and `compare`).
"""

import argparse
import copy
import json
import random
import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from accelerate.utils import set_seed
from text_classification import (
    ClockCallback,
    StepClock,
    add_run_arguments,
    attach_counter,
    check_run_arguments,
    compare,
    loop_arguments,
    run_loop,
    trainer_arguments,
)
from torch.utils.data import Dataset
from transformers import (
    Trainer,
    Wav2Vec2Config,
    Wav2Vec2ForSequenceClassification,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForAudioClassification,
    default_data_collator,
)

from hf_transfer.config import AUGMENT_PLACES, ModelArgs, StrategyArgs
from hf_transfer.modalities.audio import (
    AudioArgs,
    audio_collator,
    freeze_feature_encoder,
    load_feature_extractor,
    read_audio,
    set_spec_augment,
)
from hf_transfer.modalities.audio_augment import DeviceWaveAugment, augments_on_device, raw_wave_collator
from hf_transfer.modalities.whisper_inputs import fit_whisper_window
from hf_transfer.models.strategies import apply_strategy
from hf_transfer.training.loop import default_dataloader_workers

# -----------------------------------------------------------------------------------------------------------------
MODEL_CONFIGS = {
    "wav2vec2-base": {},  # Wav2Vec2Config's defaults are facebook/wav2vec2-base's shape
    # recipes/configs/audio_classification_wav2vec2_8khz's shape (1.2 M parameters), for CPU measurements
    "small": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512,
              "conv_dim": (128,) * 4, "conv_stride": (5, 4, 4, 2), "conv_kernel": (10, 8, 8, 4),
              "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 16},
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "conv_dim": (32, 32, 32), "conv_stride": (5, 4, 4), "conv_kernel": (10, 3, 3),
             "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2},  # CPU smoke
    # Whisper encoders with a classification head: tiny.en's shape (recipes/configs/audio_classification_fsdd_whisper)
    "whisper-tiny": {"d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6, "encoder_ffn_dim": 1536},
    "whisper-micro": {"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64},  # smoke
}
NUM_LABELS = 2
SAMPLING_RATE = 16_000
BATCH_SIZE = 32
LEARNING_RATE = 3e-5  # run_audio_classification's README value
SYNTHETIC = 2048  # clips
CLIP_SECONDS = 1.0
SEED = 42


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_config", choices=sorted(MODEL_CONFIGS), default="wav2vec2-base")
    parser.add_argument("--synthetic", type=int, default=SYNTHETIC, metavar="N", help="number of synthetic clips")
    parser.add_argument("--clip_seconds", type=float, default=CLIP_SECONDS, help="length of every clip")
    parser.add_argument("--batch_size", type=int, default=BATCH_SIZE)
    parser.add_argument("--learning_rate", type=float, default=LEARNING_RATE)
    parser.add_argument("--mixed_precision", choices=("no", "bf16", "fp16"), default="no")
    add_run_arguments(parser)
    parser.add_argument("--augment_on", choices=AUGMENT_PLACES, default="auto",
                        help="where ours augments (the recipe's flag): auto = on the GPU for Wav2Vec2")
    parser.add_argument("--num_workers", type=int, default=default_dataloader_workers(),
                        help="DataLoader workers of ours and trainer_tuned (the example's Trainer keeps its 0); "
                             "default: what the recipes use on this machine")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--output_json", help="also write the JSON lines to this file")
    return check_run_arguments(parser, parser.parse_args(argv))


def synthetic_clips(count: int, seconds: float, seed: int) -> tuple[list[bytes], list[int]]:
    """A few decaying tones in noise per clip, as 16-bit WAV bytes."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    clips = []
    for _ in range(count):
        wave = sum(np.sin(2 * np.pi * rng.uniform(100, 3000) * t) * np.exp(-t * rng.uniform(1, 8)) for _ in range(3))
        wave = 0.2 * wave + 0.01 * rng.standard_normal(len(t))
        buffer = BytesIO()
        sf.write(buffer, wave.astype(np.float32), SAMPLING_RATE, format="WAV", subtype="PCM_16")
        clips.append(buffer.getvalue())
    labels = [random.Random(seed + i).randrange(NUM_LABELS) for i in range(count)]
    return clips, labels


def is_whisper_config(name: str) -> bool:
    return name.startswith("whisper-")


def write_feature_extractor(folder: Path) -> Path:
    """facebook/wav2vec2-base's feature extractor, saved like a checkpoint's."""
    settings = {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
                "sampling_rate": SAMPLING_RATE, "padding_value": 0.0, "padding_side": "right", "do_normalize": True,
                "return_attention_mask": False}
    (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    return folder


def load_extractor(name: str):
    """The model's feature extractor, as a checkpoint ships it: Whisper's pads every clip to 30 s."""
    if is_whisper_config(name):
        return WhisperFeatureExtractor(feature_size=80, sampling_rate=SAMPLING_RATE)
    with tempfile.TemporaryDirectory() as folder:  # the recipe's own loader reads it, as it would a checkpoint's
        return load_feature_extractor(ModelArgs(config_name=str(write_feature_extractor(Path(folder)))), None)


def build_model(name: str, seed: int, strategy: str):
    """The model with --strategy applied, SpecAugment off (the recipe's default) and the feature encoder frozen (the
    recipe's default and run_audio_classification's), after the strategy."""
    set_seed(seed)  # every side starts from the same weights
    if is_whisper_config(name):
        model = WhisperForAudioClassification(WhisperConfig(num_labels=NUM_LABELS, **MODEL_CONFIGS[name]))
    else:
        model = Wav2Vec2ForSequenceClassification(Wav2Vec2Config(
            num_labels=NUM_LABELS, mask_time_prob=0.0, mask_feature_prob=0.0, **MODEL_CONFIGS[name]))
    set_spec_augment(model, AudioArgs(), SAMPLING_RATE)
    model = apply_strategy(model, StrategyArgs(strategy=strategy, layerwise_lr_decay=1.0), None)
    freeze_feature_encoder(model)
    return model


# -----------------------------------------------------------------------------------------------------------------
# Ours: the Loop as recipes/audio_classification.py builds it.

def run_ours(args, feature_extractor, model, clips, labels, device, workdir: str) -> StepClock:
    audio = AudioArgs(max_duration_seconds=args.clip_seconds)
    if is_whisper_config(args.model_config):  # short-input mode, the recipe's default
        feature_extractor = copy.deepcopy(feature_extractor)
        fit_whisper_window(model, feature_extractor, args.clip_seconds, audio.short_inputs)
    length = round(args.clip_seconds * SAMPLING_RATE)
    examples = [{"audio": {"bytes": clip, "path": None}, "labels": label, "length": length}
                for clip, label in zip(clips, labels)]
    # Feature extraction: no augmentation, so that the frozen backbone's features repeat and are cached.
    train_args = loop_arguments(args, workdir)
    on_device = augments_on_ours_device(args, feature_extractor, device)
    train = (raw_wave_collator(feature_extractor, "audio", audio, train_args.torch_compile) if on_device else
             audio_collator(feature_extractor, "audio", audio, args.strategy == "full", train_args.torch_compile))
    return run_loop(args, train_args, model, examples, [length] * len(examples), train,
                    audio_collator(feature_extractor, "audio", audio, False), device, workdir,
                    DeviceWaveAugment(feature_extractor) if on_device else None)


def augments_on_ours_device(args, feature_extractor, device: torch.device) -> bool:
    """Where ours augments (full fine-tuning only), as the recipe decides it for --augment_on."""
    settings = AudioArgs(max_duration_seconds=args.clip_seconds, augment_on=args.augment_on)
    return args.strategy == "full" and augments_on_device(settings, feature_extractor, device)


# -----------------------------------------------------------------------------------------------------------------
# The Trainer, the way run_audio_classification.py drives it.

class ExtractedClips(Dataset):
    """run_audio_classification.py's train transform per example: decode, subsample to at most 20 s, extract."""

    max_seconds = 20  # the example's --max_length_seconds default

    def __init__(self, clips: list[bytes], labels: list[int], feature_extractor):
        self.clips, self.labels, self.feature_extractor = clips, labels, feature_extractor
        self.rng = random.Random(0)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        wave = read_audio({"bytes": self.clips[i], "path": None}, SAMPLING_RATE)
        limit = self.max_seconds * SAMPLING_RATE
        if len(wave) > limit:
            start = self.rng.randint(0, len(wave) - limit)
            wave = wave[start:start + limit]
        name = self.feature_extractor.model_input_names[0]  # input_values, or Whisper's input_features
        features = self.feature_extractor(wave, sampling_rate=SAMPLING_RATE)
        return {name: features[name][0], "labels": self.labels[i]}


def run_trainer(args, feature_extractor, model, clips, labels, device, workdir: str, tuned: bool) -> StepClock:
    training_args = trainer_arguments(args, workdir, device, tuned, remove_unused_columns=False)
    clock = StepClock(args.warmup_steps, device)
    attach_counter(model, clock)
    trainer = Trainer(model=model, args=training_args,
                      train_dataset=ExtractedClips(clips, labels, feature_extractor),
                      data_collator=default_data_collator,
                      callbacks=[ClockCallback(clock, args.strategy == "feature_extraction")])
    trainer.train()
    return clock


# -----------------------------------------------------------------------------------------------------------------

def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    feature_extractor = load_extractor(args.model_config)
    clips, labels = synthetic_clips(args.synthetic, args.clip_seconds, args.seed)
    data = f"synthetic:{args.synthetic} WAV clips of {args.clip_seconds:g} s at {SAMPLING_RATE} Hz"
    def model():
        return build_model(args.model_config, args.seed, args.strategy)

    sides = {"ours": lambda workdir: run_ours(args, feature_extractor, model(), clips, labels, device, workdir),
             "trainer": lambda workdir: run_trainer(args, feature_extractor, model(), clips, labels, device, workdir,
                                                    False),
             "trainer_tuned": lambda workdir: run_trainer(args, feature_extractor, model(), clips, labels, device,
                                                          workdir, True)}
    place = "device" if augments_on_ours_device(args, feature_extractor, device) else "loader"

    def extra(side: str, line: dict) -> dict:
        return {"audio_seconds_per_s": line["samples_per_s"] * args.clip_seconds,
                **({"augment_on": place} if side == "ours" else {})}

    return compare(sides, args, device, data, extra)


if __name__ == "__main__":
    main()
