"""A merged one-head model (`--pooling mean` or `cls`) for transformers' Auto classes and `pipeline()`.

transformers has no classifier on mean-pooled features, so `hf-transfer merge` copies this file beside such a model
and names it in config.json's `auto_map`: `pipeline(task, model=folder, trust_remote_code=True)` then pools and
classifies as `hf_transfer.models.heads.MultiHeadModel` did when it was trained. It imports only torch, transformers
and huggingface_hub, as the reader of a merged model may not have hf_transfer; its pooling repeats
`hf_transfer.models.pooling` (tests/test_merge.py checks that both give the same scores).
"""

import json
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class PooledHeadClassifier(PreTrainedModel):
    """The backbone's final output pooled over its real positions, then the one linear head of `heads.json`."""

    # Attention is the backbone's, chosen when it loaded: the wrapper accepts whichever that was.
    _supports_sdpa = _supports_flash_attn = _supports_flex_attn = True

    def __init__(self, backbone: PreTrainedModel, pooling: str, head: nn.Linear):
        super().__init__(backbone.config)
        self.backbone, self.pooling, self.head = backbone, pooling, head

    @classmethod
    def from_pretrained(cls, name_or_path, *args, config=None, **kwargs) -> "PooledHeadClassifier":
        folder = Path(name_or_path)
        if not folder.is_dir():
            folder = Path(snapshot_download(str(name_or_path)))
        spec = json.loads((folder / "heads.json").read_text())
        [(name, labels)] = spec["heads"].items()
        backbone = AutoModel.from_pretrained(folder, config=config)
        head = nn.Linear(_width(backbone.config), len(labels))
        head.load_state_dict({key.removeprefix(f"{name}."): value
                              for key, value in load_file(str(folder / "heads.safetensors")).items()})
        return cls(backbone, spec["pooling"], head).eval()

    def forward(self, labels=None, **inputs) -> SequenceClassifierOutput:
        padding_mask = inputs.pop("padding_mask", None)
        mask = inputs.get("attention_mask") if padding_mask is None else padding_mask
        outputs = self.backbone(**inputs)
        return SequenceClassifierOutput(logits=self.head(self._pooled(outputs, mask)))

    def _pooled(self, outputs, mask: torch.Tensor | None) -> torch.Tensor:
        last = outputs.last_hidden_state
        if last.dim() == 4:  # a CNN's feature map: its own pooled output, else the spatial mean
            pooled = getattr(outputs, "pooler_output", None)
            return last.mean(dim=(2, 3)) if pooled is None else pooled.flatten(1)
        if self.pooling == "cls":
            return last[:, 0]
        if mask is None:
            return last.mean(dim=1)
        if mask.shape[1] != last.shape[1]:  # audio samples -> the encoder's frames
            lengths = self.backbone._get_feat_extract_output_lengths(mask.sum(dim=-1))
            mask = torch.arange(last.shape[1], device=mask.device)[None, :] < lengths[:, None]
        weights = mask.to(last.dtype).unsqueeze(-1)
        return (last * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def _width(config) -> int:
    for name in ("hidden_size", "hidden_dim", "d_model"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    return config.hidden_sizes[-1]
