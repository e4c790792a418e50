"""Pooling a backbone's hidden states into one vector per example.

`mean` averages the real tokens or audio frames (padding masked out), as sentence-transformers bodies were trained;
`cls` takes the first position ([CLS], ViT's class token). CNN feature maps are always averaged over space, and a
CNN's final output is its own pooled output.
"""

import torch
from transformers import PreTrainedModel

from hf_transfer.config import UsageError

POOLINGS = ("mean", "cls")


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """(batch, positions, dims) -> (batch, dims); CNN maps (batch, channels, height, width) -> (batch, channels)."""
    if hidden.dim() == 4:
        return hidden.mean(dim=(2, 3))
    if pooling == "cls":
        return hidden[:, 0]
    if mask is None:
        return hidden.mean(dim=1)
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def position_mask(model: PreTrainedModel, padding_mask: torch.Tensor | None, positions: int) -> torch.Tensor | None:
    """Which of the hidden states' `positions` hold real input: tokens map one to one, audio samples to frames."""
    if padding_mask is None or padding_mask.shape[1] == positions:
        return padding_mask
    if hasattr(model, "_get_feat_extract_output_lengths"):  # audio encoders whose convolutions stride over the input
        lengths = model._get_feat_extract_output_lengths(padding_mask.sum(dim=-1))
        return torch.arange(positions, device=padding_mask.device)[None, :] < lengths[:, None]
    raise UsageError(f"can't tell which of {type(model).__name__}'s {positions} output frames are padding; "
                     "use --pooling cls")


def pool_output(model: PreTrainedModel, outputs, padding_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """(batch, dims): the model's final output pooled; a CNN's own pooled output."""
    last = outputs.last_hidden_state
    if last.dim() == 4 and getattr(outputs, "pooler_output", None) is not None:
        return outputs.pooler_output.flatten(1)
    mask = position_mask(model, padding_mask, last.shape[1]) if last.dim() == 3 else None
    return pool(last, mask, pooling)
