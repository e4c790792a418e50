"""Per-modality preprocessing: turn raw examples into model inputs and batches."""
