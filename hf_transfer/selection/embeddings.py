"""Pooled embeddings of a frozen backbone, every layer at once: forward passes only, batched, gathered across
processes, cached on disk.

A backbone is the headless model (`AutoModel`; the encoder of an encoder-decoder such as Whisper). One forward
pass yields every hidden state, so each batch is pooled at every layer (0 = the embeddings) and at the model's
final output; asking for another layer later reads the cache instead of running the model again.

Each hidden state is pooled as `hf_transfer.models.pooling` says.
"""

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoModel, PreTrainedModel

from hf_transfer.config import UsageError
from hf_transfer.io import atomic_write_bytes
from hf_transfer.models.architectures import is_encoder_decoder
from hf_transfer.models.pooling import pool, pool_output, position_mask

# Part of every cache key: bump it when a change to how features are computed changes them, so old caches are not
# reused (2: rank reads Whisper through the short input window).
FEATURES_VERSION = 2


def load_backbone(path: str, random_init: bool, seed: int) -> PreTrainedModel:
    """The pretrained headless model at `path`, or (`random_init`) the same architecture with seeded random weights."""
    try:
        if random_init:
            torch.manual_seed(seed)
            model = AutoModel.from_config(AutoConfig.from_pretrained(path))
        else:
            model = AutoModel.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise UsageError(f"could not load a model from {path!r}: {error}") from None
    if is_encoder_decoder(model.config):
        model = model.get_encoder()
    return model.eval()


@dataclass
class PooledFeatures:
    layers: list[np.ndarray]  # per hidden state (0 = the embeddings): (examples, dims); CNN stages differ in dims
    final: np.ndarray  # (examples, dims): the model's final output, pooled

    def layer(self, index: int | None) -> np.ndarray:
        return self.final if index is None else self.layers[index]


@torch.no_grad()
def pooled_features(accelerator: Accelerator, model: PreTrainedModel, loader: DataLoader,
                    pooling: str) -> PooledFeatures:
    """Every example's pooled features at every layer, in loader order, gathered from all processes.

    Batches hold the model's inputs (a `labels` entry is left out) and, for inputs whose padding the model is not
    told about, `padding_mask` (1 where the input is real); otherwise `attention_mask` marks the padding.
    """
    layers, finals = [], []
    for batch in loader:
        batch = {key: value for key, value in batch.items() if key != "labels"}
        padding_mask = batch.pop("padding_mask", batch.get("attention_mask"))
        outputs = model(**batch, output_hidden_states=True)

        def pooled(hidden: torch.Tensor) -> torch.Tensor:
            mask = position_mask(model, padding_mask, hidden.shape[1]) if hidden.dim() == 3 else None
            return pool(hidden, mask, pooling).float()

        final = pool_output(model, outputs, padding_mask, pooling).float()
        per_layer, final = accelerator.gather_for_metrics(([pooled(h) for h in outputs.hidden_states], final))
        layers.append([h.cpu() for h in per_layer])
        finals.append(final.cpu())
    return PooledFeatures([torch.cat(stage).numpy() for stage in zip(*layers)], torch.cat(finals).numpy())


# --- the cache --------------------------------------------------------------------------------------------------
def folder_signature(path: str) -> list:
    """A local checkpoint's files with their sizes and times: a re-saved checkpoint gets a new cache key."""
    folder = Path(path)
    if not folder.is_dir():
        return [path]  # a Hub id: its name (and the revision in the key) identifies it
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())


def data_fingerprint(values: list) -> str:
    """A hash of a split's inputs in order: texts, or file paths with their sizes and times, or stored bytes."""
    digest = hashlib.sha256()
    for value in values:
        if isinstance(value, dict):  # a Hub image or audio feature: {bytes, path}
            digest.update(value.get("bytes") or str(value.get("path")).encode())
        else:
            digest.update(str(value).encode())
            stat = _file_stat(value) if isinstance(value, str) else None
            if stat is not None:
                digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _file_stat(value: str) -> os.stat_result | None:
    """The file a value names, if it names one; a text (an article, a review) is no file name and may be too long for
    one, which the system refuses with an OSError rather than saying "no such file"."""
    try:
        stat = os.stat(value)
    except (OSError, ValueError):  # ENAMETOOLONG, ENOENT, ...; ValueError: a NUL byte in the text
        return None
    return stat if S_ISREG(stat.st_mode) else None


def cache_key(**parts) -> str:
    """A short hash of everything the features depend on (model files, preprocessing, pooling, data)."""
    text = json.dumps({"version": FEATURES_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_cached(path: Path) -> PooledFeatures | None:
    if not path.is_file():
        return None
    with np.load(path) as stored:
        count = sum(name.startswith("layer") for name in stored.files)
        return PooledFeatures([stored[f"layer{i}"] for i in range(count)], stored["final"])


def save_cached(path: Path, features: PooledFeatures) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, final=features.final, **{f"layer{i}": layer for i, layer in enumerate(features.layers)})
    atomic_write_bytes(path, buffer.getvalue())
