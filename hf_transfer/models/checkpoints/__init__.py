"""Converters from checkpoints packaged in other formats to transformers folders (see `hf_transfer.models.builtin`)."""
