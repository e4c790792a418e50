"""Whisper's encoder on short clips: crop its fixed 30-second input window to the longest clip allowed.

transformers' Whisper encoder accepts exactly `max_source_positions * 2` mel frames (3,000: 30 s) and its feature
extractor pads every clip to that window, so a 1 s clip costs 30x its compute (transformers issues #25744,
#26241). Short-input mode crops both to the same window: the feature extractor's `chunk_length` (and the sample
and frame counts derived from it) and the encoder's positional embeddings with `max_source_positions`. The saved
folder keeps both, so `pipeline("audio-classification")` pads exactly as training did.

The window is a whole number of seconds: WhisperFeatureExtractor stores it as `chunk_length` in seconds and
recomputes its sample count from that on reload, and a fractional one reloads as a float count that it can't pad to.
Every clip is padded to the same window, whatever its batch mates: a clip's score never depends on them.
"""

import math

from torch import nn
from transformers import PretrainedConfig, SequenceFeatureExtractor
from transformers.models.whisper.modeling_whisper import sinusoids

from hf_transfer.config import UsageError

PRETRAINED_WINDOW_SECONDS = 30


def is_whisper(config: PretrainedConfig) -> bool:
    return getattr(config, "model_type", "") == "whisper"


def window_seconds(max_duration_seconds: float, short_inputs: bool) -> int:
    """The encoder's input window: the max duration rounded up to whole seconds, or the pretrained 30 s."""
    if not short_inputs:
        if max_duration_seconds > PRETRAINED_WINDOW_SECONDS:
            raise UsageError(f"--max_duration_seconds {max_duration_seconds:g}: Whisper's encoder takes at most "
                             f"{PRETRAINED_WINDOW_SECONDS} s")
        return PRETRAINED_WINDOW_SECONDS
    seconds = math.ceil(max_duration_seconds)
    if seconds > PRETRAINED_WINDOW_SECONDS:
        raise UsageError(f"--max_duration_seconds {max_duration_seconds:g}: Whisper's encoder takes at most "
                         f"{PRETRAINED_WINDOW_SECONDS} s")
    return seconds


def crop_feature_extractor(feature_extractor: SequenceFeatureExtractor, seconds: int) -> None:
    """Pad (and truncate) every clip to `seconds` instead of 30."""
    feature_extractor.chunk_length = seconds
    feature_extractor.n_samples = seconds * feature_extractor.sampling_rate
    feature_extractor.nb_max_frames = feature_extractor.n_samples // feature_extractor.hop_length


def crop_encoder(model: nn.Module, frames: int) -> None:
    """Keep the positional embeddings of the first `frames` mel frames (the convolutions halve the frame rate).
    `model` holds the encoder, or is it (`hf-transfer rank` scores the bare encoder)."""
    encoder = getattr(model, "encoder", model)
    positions = frames // (encoder.conv1.stride[0] * encoder.conv2.stride[0])
    if positions > encoder.embed_positions.num_embeddings:
        raise UsageError(f"a {frames}-frame window needs {positions} positions; the encoder has "
                         f"{encoder.embed_positions.num_embeddings}")
    # Whisper's are fixed sinusoids. Computed afresh rather than sliced from the checkpoint (which holds them
    # rounded to fp16): a LoRA adapter's base model, reloaded with the cropped config, gets exactly these.
    encoder.embed_positions = nn.Embedding(positions, encoder.embed_positions.embedding_dim,
                                           _weight=sinusoids(positions, encoder.embed_positions.embedding_dim))
    encoder.embed_positions.requires_grad_(False)
    encoder.max_source_positions = model.config.max_source_positions = positions


def fit_whisper_window(model: nn.Module, feature_extractor: SequenceFeatureExtractor, max_duration_seconds: float,
                       short_inputs: bool) -> int:
    """Crop model and feature extractor to the window `--max_duration_seconds` asks for; returns it in seconds."""
    seconds = window_seconds(max_duration_seconds, short_inputs)
    crop_feature_extractor(feature_extractor, seconds)
    crop_encoder(model, feature_extractor.nb_max_frames)
    return seconds
