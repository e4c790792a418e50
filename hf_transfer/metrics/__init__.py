"""Metrics as `evaluate` modules shipped with the package (no Hub download needed)."""

from hf_transfer.metrics.classification import classification_metrics
from hf_transfer.metrics.speech import transcription_metrics

__all__ = ["classification_metrics", "transcription_metrics"]
