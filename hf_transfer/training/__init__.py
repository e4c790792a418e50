"""Training: the loop, its precision, cached features, domain adaptation, output folders and checkpoints."""
