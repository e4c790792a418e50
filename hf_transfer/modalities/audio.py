"""Audio: find the clips, decode every one once before training, then decode and augment lazily per batch.

Decoding is soundfile (libsndfile: wav, flac, mp3, ogg) plus soxr resampling: neither torchaudio nor torchcodec
(which datasets' `Audio` feature needs in order to decode) is required. Clips are read from disk again for each
batch rather than held in memory, so memory stays flat however large the data set; decoding a short clip costs
far less than the model's forward pass over it.
"""

import dataclasses
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import soundfile as sf
import soxr
import torch
from torch import nn
from transformers import AutoFeatureExtractor, SequenceFeatureExtractor

from hf_transfer.config import AUGMENT_PLACES, DataArgs, ModelArgs, UsageError, _check_choice
from hf_transfer.data.splits import FolderLayout, LabelledSplits, guess_column
from hf_transfer.modalities.whisper_inputs import is_whisper
from hf_transfer.models.architectures import base_model

AUDIO_COLUMN_GUESSES = ("audio", "path", "file", "filename")
AUDIO_LAYOUT = FolderLayout("audio", (".wav", ".flac", ".mp3", ".ogg"))
BAD_AUDIO = ("error", "skip")
NOISE_SNR_SPAN_DB = 20  # training noise SNR is drawn from [noise_snr_db, noise_snr_db + this]


@dataclass
class AudioArgs:
    audio_column: str | None = field(
        default=None,
        metadata={"help": "Column with the audio (file paths, or a Hub audio column); guessed if omitted."}
    )
    max_duration_seconds: float = field(
        default=1.0,
        metadata={"help": "Longer clips are cropped to this: at a random point in training, centred in evaluation. "
                          "Shorter ones are padded to the longest clip of their batch (training under "
                          "--torch_compile: to this length)."},
    )
    gain_db: float = field(
        default=6.0, metadata={"help": "Training: scale each clip by a random gain within +-this many dB (0 = off)."}
    )
    time_shift_seconds: float = field(
        default=0.1,
        metadata={"help": "Training: delay each clip by a random 0 to this many seconds of leading silence (0 = off)."},
    )
    noise_snr_db: float = field(
        default=20.0,
        metadata={"help": f"Training: add white noise at a random signal-to-noise ratio between this and "
                          f"{NOISE_SNR_SPAN_DB} dB more (lower = noisier; 0 = off)."},
    )
    augment_on: str = field(
        default="auto",
        metadata={"help": "Where the gain and noise are applied in training: loader (in the DataLoader workers) | "
                          "device (on the training device; models that read raw samples: Wav2Vec2, HuBERT, WavLM) | "
                          "auto (device on a GPU where the model reads raw samples, else loader)."},
    )
    spec_augment: float = field(
        default=0.0,
        metadata={"help": "SpecAugment: share of time steps and of feature channels masked in training, set as the "
                          "model config's mask_time_prob and mask_feature_prob (0 = off; 0.05 is mild)."},
    )
    freeze_feature_encoder: bool = field(
        default=True,
        metadata={"help": "Keep the convolutional feature encoder fixed, as the Wav2Vec2 papers do. Turn it off to "
                          "train from scratch (--config_name)."},
    )
    short_inputs: bool = field(
        default=True,
        metadata={"help": "Whisper: crop the encoder's 30 s input window (mel frames and positional embeddings) to "
                          "--max_duration_seconds, rounded up to whole seconds; 30x less compute on 1 s clips. "
                          "false keeps the pretrained 30 s window."},
    )
    bad_audio: str = field(
        default="error",
        metadata={"help": "A file that is missing, unreadable or empty: `error` stops before training and names it; "
                          "`skip` leaves it out and prints how many were left out."},
    )

    def __post_init__(self):
        if self.bad_audio not in BAD_AUDIO:
            raise UsageError(f"--bad_audio must be one of {', '.join(BAD_AUDIO)}; got {self.bad_audio!r}")
        if self.max_duration_seconds <= 0:
            raise UsageError(f"--max_duration_seconds must be > 0; got {self.max_duration_seconds}")
        for name in ("gain_db", "time_shift_seconds", "noise_snr_db"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name} must be >= 0 (0 = off); got {getattr(self, name)}")
        _check_choice("augment_on", self.augment_on, AUGMENT_PLACES)
        if not 0 <= self.spec_augment < 1:
            raise UsageError(f"--spec_augment must be in [0, 1); got {self.spec_augment}")


def describe_augmentation(args: AudioArgs) -> str:
    """For the report and card."""
    parts = []
    if args.gain_db:
        parts.append(f"gain within ±{args.gain_db:g} dB")
    if args.time_shift_seconds:
        parts.append(f"up to {args.time_shift_seconds:g} s of leading silence")
    if args.noise_snr_db:
        parts.append(f"white noise at {args.noise_snr_db:g}–{args.noise_snr_db + NOISE_SNR_SPAN_DB:g} dB SNR")
    if args.spec_augment:
        parts.append(f"SpecAugment (mask_time_prob = mask_feature_prob = {args.spec_augment:g})")
    return ", ".join(parts) or "none"


def load_feature_extractor(model_args: ModelArgs, model_path: str | None) -> SequenceFeatureExtractor:
    name = model_args.tokenizer_name or model_path or model_args.config_name
    try:
        return AutoFeatureExtractor.from_pretrained(name, revision=model_args.revision,
                                                    trust_remote_code=model_args.trust_remote_code)
    except (OSError, ValueError) as error:
        raise UsageError(f"could not load a feature extractor from {name!r}: {error}") from None


# --- decoding ---------------------------------------------------------------------------------------------------
def _source(value: str | dict):
    """What soundfile opens: a path, or the bytes of a Hub audio column (`{"bytes", "path"}`)."""
    if isinstance(value, dict):
        return io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
    return value


def _name(value: str | dict) -> str:
    return (value.get("path") or "<audio bytes>") if isinstance(value, dict) else value


def read_audio(value: str | dict, sampling_rate: int) -> np.ndarray:
    """Mono float32 samples at `sampling_rate`: channels averaged, resampled with soxr when the file's rate differs."""
    samples, rate = sf.read(_source(value), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    return mono if rate == sampling_rate else soxr.resample(mono, rate, sampling_rate)


def _probe(value: str | dict, sampling_rate: int) -> tuple[int, str | None]:
    """(length in samples at `sampling_rate`, None), or (0, why the clip can't be used)."""
    if isinstance(value, str) and not Path(value).is_file():
        return 0, "file not found"
    try:
        # The whole file, not just its header: damaged audio data must show now, not in the middle of an epoch.
        samples, rate = sf.read(_source(value), dtype="float32", always_2d=True)
    except (RuntimeError, ValueError) as error:  # soundfile's LibsndfileError is a RuntimeError
        return 0, f"unreadable: {error}"
    if len(samples) == 0:
        return 0, "empty: no audio samples"
    if not np.isfinite(samples).all():  # a float file can hold them; they'd turn the loss or the scores into NaN
        return 0, "holds NaN or infinite samples"
    return math.ceil(len(samples) * sampling_rate / rate), None


# --- preparing the splits ---------------------------------------------------------------------------------------
def _csv_folder(split: str, data: DataArgs) -> Path:
    """Relative paths in a data file are read from that file's folder (a carved validation split is train's).
    Other splits (domain adaptation's target data) hold absolute paths already."""
    file = {"train": data.train_file, "validation": data.validation_file or data.train_file,
            "test": data.test_file}.get(split)
    return Path(file).parent if file else Path()


def audio_column(labelled: LabelledSplits, args: AudioArgs) -> str:
    column = guess_column(labelled.columns("train"), args.audio_column, AUDIO_COLUMN_GUESSES, "audio",
                          labelled.sources["train"])
    for split, dataset in labelled.splits.items():
        if column not in dataset.column_names:
            raise UsageError(f"{labelled.sources[split]}: no audio column {column!r}; "
                             f"columns are {', '.join(labelled.columns(split))}")
        feature = dataset.features[column]
        is_path = getattr(feature, "dtype", None) in ("string", "large_string")
        if not isinstance(feature, datasets.Audio) and not is_path:
            raise UsageError(f"{labelled.sources[split]}: column {column!r} holds {feature}, not audio or file paths")
    return column


def prepare_audio_splits(labelled: LabelledSplits, data: DataArgs, args: AudioArgs,
                         sampling_rate: int) -> tuple[LabelledSplits, str, dict[str, list[str]]]:
    """Check every clip decodes before training starts; returns the splits, the audio column and what was skipped.

    Relative paths become paths from the working folder; each split gains a `length` column (samples at
    `sampling_rate`, at most the max duration) that batches similar lengths together.
    """
    column = audio_column(labelled, args)
    max_samples = round(args.max_duration_seconds * sampling_rate)
    splits, skipped, file_rows = datasets.DatasetDict(), {}, dict(labelled.file_rows)
    for split, dataset in labelled.splits.items():
        is_hub_audio = isinstance(dataset.features[column], datasets.Audio)
        if is_hub_audio:
            dataset = dataset.cast_column(column, datasets.Audio(decode=False))  # bytes in, decoded by soundfile
        folder = _csv_folder(split, data)
        values, lengths, keep, bad = [], [], [], []
        for batch in dataset.iter(batch_size=256):
            for value in batch[column]:
                if not is_hub_audio:
                    value = str(folder / value) if value else ""
                length, reason = _probe(value, sampling_rate)
                if reason:
                    bad.append(f"{_name(value) or '<empty path>'} ({reason})")
                else:
                    keep.append(len(values))
                values.append(value)
                lengths.append(min(length, max_samples))
        if not keep:
            raise UsageError(f"{labelled.sources[split]}: not one audio file of the {split} split can be used: "
                             + _shorten(bad))
        if not is_hub_audio:
            dataset = dataset.remove_columns(column).add_column(column, values)
        dataset = dataset.add_column("length", lengths)
        splits[split] = dataset.select(keep) if bad else dataset
        if bad:
            skipped[split] = bad
            if split in file_rows:  # rows named in later messages are the kept examples' own
                file_rows[split] = [file_rows[split][index] for index in keep]
    if skipped and args.bad_audio == "error":
        where = ", ".join(f"{len(bad)} in {split} ({labelled.sources[split]})" for split, bad in skipped.items())
        raise UsageError(f"{sum(map(len, skipped.values()))} audio file(s) can't be used, {where}: "
                         f"{_shorten([entry for bad in skipped.values() for entry in bad])}. "
                         "Fix or remove them, or pass --bad_audio skip to leave them out")
    prepared = dataclasses.replace(labelled, splits=splits, file_rows=file_rows)  # names and problem type kept
    return prepared, column, skipped


def _shorten(entries: list[str], shown: int = 3) -> str:
    return "; ".join(entries[:shown]) + (f"; and {len(entries) - shown} more" if len(entries) > shown else "")


# --- augmentation and batches -----------------------------------------------------------------------------------
def crop(wave: np.ndarray, max_samples: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """At most `max_samples`: a random window when `rng` is given (training), the centre otherwise."""
    extra = len(wave) - max_samples
    if extra <= 0:
        return wave
    start = int(rng.integers(0, extra + 1)) if rng is not None else extra // 2
    return wave[start:start + max_samples]


@dataclass(frozen=True)
class WaveAugmentation:
    """One clip's draw: samples of leading silence, where the crop starts in the delayed clip, the gain factor, and
    the noise's signal-to-noise ratio in dB (None: no noise)."""

    delay: int
    start: int
    gain: float
    snr_db: float | None


def draw_wave_augmentation(length: int, sampling_rate: int, max_samples: int, args: AudioArgs,
                           rng: np.random.Generator) -> WaveAugmentation:
    """Draw one clip's augmentation from its own generator; both places (`--augment_on`) use it."""
    delay = int(rng.integers(0, round(args.time_shift_seconds * sampling_rate) + 1)) if args.time_shift_seconds else 0
    extra = length + delay - max_samples
    start = int(rng.integers(0, extra + 1)) if extra > 0 else 0
    gain = 10 ** (rng.uniform(-args.gain_db, args.gain_db) / 20) if args.gain_db else 1.0
    snr_db = rng.uniform(args.noise_snr_db, args.noise_snr_db + NOISE_SNR_SPAN_DB) if args.noise_snr_db else None
    return WaveAugmentation(delay, start, gain, snr_db)


def shift_and_crop(wave: np.ndarray, draw: WaveAugmentation, max_samples: int) -> np.ndarray:
    return np.concatenate([np.zeros(draw.delay, dtype=wave.dtype), wave])[draw.start:draw.start + max_samples]


def augment(wave: np.ndarray, sampling_rate: int, max_samples: int, args: AudioArgs,
            rng: np.random.Generator) -> np.ndarray:
    """Training-time changes in the loader: leading silence, a random crop, gain, white noise."""
    draw = draw_wave_augmentation(len(wave), sampling_rate, max_samples, args, rng)
    wave = shift_and_crop(wave, draw, max_samples) * np.float32(draw.gain)
    if draw.snr_db is not None:
        noise_power = np.mean(wave ** 2) / 10 ** (draw.snr_db / 10)
        wave = wave + (rng.standard_normal(len(wave)) * np.sqrt(noise_power)).astype(wave.dtype)
    return wave


def audio_collator(feature_extractor: SequenceFeatureExtractor, column: str, args: AudioArgs, train: bool,
                   fixed_length: bool = False):
    """Decode, crop (and in training augment) each clip, then pad the batch with the feature extractor.

    Training examples come from `SeededExamples`: each clip's augmentation draws from its own `augment_seed`.

    Padding to the batch's longest clip wastes little with length grouping. The attention mask is always asked for,
    whatever the checkpoint's feature extractor says (wav2vec2-base and HuBERT say no): without it the feature
    extractor normalises each clip together with its padding and the classifier's mean pool averages over the padding,
    so a clip's score would depend on the clips that share its batch.
    """
    rate = feature_extractor.sampling_rate
    max_samples = round(args.max_duration_seconds * rate)
    # SpecAugment masks spans of `mask_time_length` frames: a batch of short clips could be shorter than one span.
    # `fixed_length` (--torch_compile): one input shape.
    padding = _padding(feature_extractor, max_samples, fixed=fixed_length or (train and bool(args.spec_augment)))

    def collate(examples: list[dict]) -> dict:
        waves = [read_audio(example[column], rate) for example in examples]
        if train:
            waves = [augment(wave, rate, max_samples, args, np.random.default_rng(example["augment_seed"]))
                     for wave, example in zip(waves, examples)]
        else:
            waves = [crop(wave, max_samples) for wave in waves]
        batch = feature_extractor(waves, sampling_rate=rate, return_tensors="pt", **padding)
        return {**batch, "labels": torch.tensor([example["labels"] for example in examples])}

    return collate


def _padding(feature_extractor: SequenceFeatureExtractor, max_samples: int, fixed: bool = False) -> dict:
    """The feature extractor's padding settings: to the batch's longest clip, or to a fixed length: `max_samples`,
    or the input window of an extractor that has one (Whisper's `n_samples`, which its encoder insists on; that
    encoder takes no attention mask). Other extractors always return the mask (see `audio_collator`)."""
    if hasattr(feature_extractor, "n_samples"):
        return {"padding": "max_length", "max_length": feature_extractor.n_samples}
    return {"padding": "max_length" if fixed else "longest", "max_length": max_samples, "return_attention_mask": True}


def load_clip(path: str, sampling_rate: int) -> np.ndarray:
    """`read_audio` for files given after training: one that can't be used is named in the error."""
    try:
        wave = read_audio(path, sampling_rate)
    except (RuntimeError, ValueError) as error:  # soundfile's LibsndfileError is a RuntimeError
        raise UsageError(f"can't read audio file {path}: {error}") from None
    if not len(wave):
        raise UsageError(f"audio file {path} is empty: no audio samples")
    if not np.isfinite(wave).all():
        raise UsageError(f"audio file {path} holds NaN or infinite samples")
    return wave


def audio_logits(model, feature_extractor: SequenceFeatureExtractor, paths: list[str],
                 max_duration_seconds: float) -> torch.Tensor:
    """The model's logits for a batch of audio files, cropped (centred) and padded as in evaluation."""
    rate = feature_extractor.sampling_rate
    waves = [crop(load_clip(path, rate), round(max_duration_seconds * rate)) for path in paths]
    padding = _padding(feature_extractor, round(max_duration_seconds * rate))
    return model(**feature_extractor(waves, sampling_rate=rate, return_tensors="pt", **padding).to(model.device)).logits


def clip_lengths(paths: list[str], sampling_rate: int, max_duration_seconds: float) -> list[int]:
    """Each file's length in samples at `sampling_rate`, at most the max duration: the `length` column of training,
    read from the files' headers."""
    max_samples = round(max_duration_seconds * sampling_rate)
    lengths = []
    for path in paths:
        try:
            info = sf.info(path)
        except (RuntimeError, ValueError) as error:  # soundfile's LibsndfileError is a RuntimeError
            raise UsageError(f"can't read audio file {path}: {error}") from None
        lengths.append(min(math.ceil(info.frames * sampling_rate / info.samplerate), max_samples))
    return lengths


# --- the model --------------------------------------------------------------------------------------------------
def set_spec_augment(model: nn.Module, args: AudioArgs, sampling_rate: int) -> None:
    """Set SpecAugment masking in the model config (read at each training forward pass); 0 turns it off."""
    config = model.config
    if not hasattr(config, "apply_spec_augment"):
        if args.spec_augment:
            raise UsageError(f"--spec_augment: model type {config.model_type!r} has no SpecAugment settings")
        return
    # Off is the switch, not zero probabilities: a config with both at 0 builds no mask embedding, so reloading the
    # saved model would report the trained one as an unexpected weight.
    config.apply_spec_augment = bool(args.spec_augment)
    if not args.spec_augment:
        return
    config.mask_time_prob = config.mask_feature_prob = args.spec_augment
    if getattr(base_model(model), "masked_spec_embed", None) is None:
        raise UsageError("--spec_augment: this model was built without a mask embedding (its config had "
                         "mask_time_prob 0); set mask_time_prob > 0 in the config to build one")
    frames = round(args.max_duration_seconds * sampling_rate) // math.prod(config.conv_stride)
    if frames <= config.mask_time_length:
        raise UsageError(f"--spec_augment masks spans of {config.mask_time_length} frames, but "
                         f"--max_duration_seconds {args.max_duration_seconds:g} gives only {frames}")


def freeze_feature_encoder(model: nn.Module) -> None:
    if is_whisper(model.config):  # Whisper's two convolutions play the part of the feature encoder
        model.encoder.conv1.requires_grad_(False)
        model.encoder.conv2.requires_grad_(False)
        return
    if not hasattr(model, "freeze_feature_encoder"):
        raise UsageError(f"{type(model).__name__} has no convolutional feature encoder to freeze; "
                         "pass --freeze_feature_encoder false")
    model.freeze_feature_encoder()
