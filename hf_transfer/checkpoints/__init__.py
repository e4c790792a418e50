"""Converters from the formats built-in checkpoints ship in to transformers folders."""
