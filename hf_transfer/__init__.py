"""hf_transfer: adapt Hugging Face checkpoints to your own labelled data."""

__version__ = "0.1.0"
