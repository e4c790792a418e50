"""`--padding_free`: a text encoder's layers compute a batch's real tokens only.

The embeddings run on the padded batch as usual. A hook before the encoder gathers every sequence's real tokens
into one row; the layers' projections and feed-forward blocks, nearly all of the FLOPs, run on that row, and
attention (`packed_attention`) puts each sequence back in its padded place for SDPA, so no token attends across
sequences. A hook after the encoder returns the tokens to their padded places (zeros where the padding was), so
poolers, heads and the feature cache see the usual batch, and no weight changes its name. (Only the last hidden
state is restored: `output_hidden_states=True` would return the inner layers' packed.)

It pays where batches carry padding; with length grouping (the recipes' default) little is left to remove. The
packed row's length changes with every batch, so it does not go with `--torch_compile`, and on a GPU finding the
real tokens (`nonzero`) waits for the mask once per forward.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface

from hf_transfer.config import UsageError

ATTENTION = "hf_transfer_packed"
# Encoders whose layers call transformers' attention interface with the encoder's keyword arguments (tested:
# BERT and RoBERTa).
SUPPORTED_MODEL_TYPES = ("bert", "roberta")


@dataclass(frozen=True)
class PackedBatch:
    """Where a padded (batch, length) batch's real tokens went in the packed row."""

    mask: torch.Tensor  # (batch, length), True at real tokens
    indices: torch.Tensor  # each real token's place in the flattened (batch x length) layout, in packed order

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        """(tokens, ...) in packed order -> (batch, length, ...), zeros at the padding."""
        batch, length = self.mask.shape
        padded = packed.new_zeros(batch * length, *packed.shape[1:]).index_copy(0, self.indices, packed)
        return padded.view(batch, length, *packed.shape[1:])


def packed_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     packed_batch: PackedBatch | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention interface on a packed row: query/key/value are (1, heads, tokens, head_dim); each
    sequence attends within itself. Returns (1, tokens, heads, head_dim), as SDPA's version does."""
    padded = [packed_batch.pad(tensor[0].transpose(0, 1)).transpose(1, 2) for tensor in (query, key, value)]
    output = F.scaled_dot_product_attention(*padded, attn_mask=packed_batch.mask[:, None, None, :],
                                            dropout_p=dropout, scale=scaling)  # (batch, heads, length, head_dim)
    return output.transpose(1, 2).flatten(0, 1)[packed_batch.indices].unsqueeze(0), None


def _keep_two_dimensional_mask(batch_size: int, q_length: int, kv_length: int, attention_mask=None, **kwargs):
    """The mask builder for ATTENTION: the encoder's hook needs the (batch, length) padding mask itself."""
    return attention_mask


def _pack(encoder: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    hidden_states = args[0]
    batch, length = hidden_states.shape[:2]
    mask = kwargs.get("attention_mask")
    mask = (torch.ones(batch, length, dtype=torch.bool, device=hidden_states.device) if mask is None
            else mask.to(torch.bool))
    packed = PackedBatch(mask, mask.flatten().nonzero().squeeze(1))
    row = hidden_states.flatten(0, 1)[packed.indices].unsqueeze(0)
    return (row, *args[1:]), {**kwargs, "attention_mask": None, "packed_batch": packed}


def _unpack(encoder: nn.Module, args: tuple, kwargs: dict, output):
    output.last_hidden_state = kwargs["packed_batch"].pad(output.last_hidden_state[0])
    return output


def enable_padding_free(model: nn.Module) -> None:
    """Make `model`'s text encoder padding-free (see the module's docstring); `model` may be wrapped (a PEFT model,
    a multi-head model)."""
    backbones = [module for module in model.modules()
                 if isinstance(module, PreTrainedModel) and isinstance(getattr(module, "encoder", None), nn.Module)]
    if not backbones or backbones[0].config.model_type not in SUPPORTED_MODEL_TYPES:
        model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise UsageError(f"--padding_free works for {', '.join(SUPPORTED_MODEL_TYPES)} encoders, not {model_type}; "
                         "drop it")
    backbone = backbones[0]
    if backbone.config.is_decoder:
        raise UsageError("--padding_free is for encoders; this model is configured as a decoder")
    if backbone.config._attn_implementation == ATTENTION:
        return  # hooked already: a second pair of hooks would pack the packed row again
    AttentionInterface.register(ATTENTION, packed_attention)
    AttentionMaskInterface.register(ATTENTION, _keep_two_dimensional_mask)
    backbone.config._attn_implementation = ATTENTION
    backbone.encoder.register_forward_pre_hook(_pack, with_kwargs=True)
    backbone.encoder.register_forward_hook(_unpack, with_kwargs=True)
