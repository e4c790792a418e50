"""Choosing what to transfer: ranking checkpoints, domain shift, studies of strategies, hyperparameter search."""
