"""Metrics as `evaluate` modules shipped with the package (no Hub download needed)."""

from hf_transfer.metrics.classification import classification_metric_names, classification_metrics
from hf_transfer.metrics.speech import transcription_metric_names, transcription_metrics

__all__ = ["classification_metric_names", "classification_metrics", "transcription_metric_names",
           "transcription_metrics"]
