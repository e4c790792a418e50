"""Models: architectures, built-in checkpoints and their converters, heads, pooling, loading, strategies."""
