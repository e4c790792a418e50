"""Classification metrics as `evaluate` modules shipped with the package (no Hub download needed)."""

from hf_transfer.metrics.classification import classification_metrics

__all__ = ["classification_metrics"]
