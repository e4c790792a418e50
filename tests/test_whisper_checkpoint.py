"""Whisper from CTranslate2's model.bin: a fabricated tiny file converts exactly; the real tiny.en transcribes."""

import json
import shutil
import struct
import subprocess

import pytest
import torch
from transformers import (
    WhisperConfig,
    WhisperForAudioClassification,
    WhisperForConditionalGeneration,
    WhisperTokenizer,
    pipeline,
)

from hf_transfer.config import UsageError
from hf_transfer.modalities.audio import read_audio
from hf_transfer.models import builtin
from hf_transfer.models.checkpoints.ctranslate2 import DTYPES, read_model_bin
from hf_transfer.models.checkpoints.whisper import convert_whisper

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
            "<|startofprev|>", "<|notimestamps|>"]
CODES = {dtype: code for code, dtype in DTYPES.items()}


def _string(text: str) -> bytes:
    encoded = text.encode() + b"\0"
    return struct.pack("<H", len(encoded)) + encoded


def write_model_bin(path, variables: dict[str, torch.Tensor], aliases: dict[str, str], version: int = 6) -> None:
    """CTranslate2's layout, written independently of the reader under test."""
    out = struct.pack("<I", version) + _string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, tensor in variables.items():
        data = tensor.contiguous().view(torch.uint8).numpy().tobytes() if tensor.ndim else \
            tensor.reshape(1).view(torch.uint8).numpy().tobytes()
        out += _string(name) + struct.pack(f"<B{tensor.ndim}I", tensor.ndim, *tensor.shape)
        out += struct.pack("<BI", CODES[tensor.dtype], len(data)) + data
    out += struct.pack("<I", len(aliases)) + b"".join(_string(a) + _string(t) for a, t in aliases.items())
    path.write_bytes(out)


def _fuse_attention(state: dict, hf: str, ct2: str, cross: bool) -> dict:
    """transformers' q/k/v/out -> CTranslate2's fused linears (k gets a zero bias, as CTranslate2 writes it)."""
    q, k, v, o = (state[f"{hf}.{p}_proj.weight"] for p in ("q", "k", "v", "out"))
    zero = torch.zeros_like(state[f"{hf}.q_proj.bias"])
    if cross:
        return {f"{ct2}/linear_0/weight": q, f"{ct2}/linear_0/bias": state[f"{hf}.q_proj.bias"],
                f"{ct2}/linear_1/weight": torch.cat([k, v]),
                f"{ct2}/linear_1/bias": torch.cat([zero, state[f"{hf}.v_proj.bias"]]),
                f"{ct2}/linear_2/weight": o, f"{ct2}/linear_2/bias": state[f"{hf}.out_proj.bias"]}
    return {f"{ct2}/linear_0/weight": torch.cat([q, k, v]),
            f"{ct2}/linear_0/bias": torch.cat([state[f"{hf}.q_proj.bias"], zero, state[f"{hf}.v_proj.bias"]]),
            f"{ct2}/linear_1/weight": o, f"{ct2}/linear_1/bias": state[f"{hf}.out_proj.bias"]}


def export_to_ctranslate2(model: WhisperForConditionalGeneration) -> dict[str, torch.Tensor]:
    s, c = model.state_dict(), model.config

    def norm(hf, ct2):
        return {f"{ct2}/gamma": s[f"{hf}.weight"], f"{ct2}/beta": s[f"{hf}.bias"]}

    def linear(hf, ct2):
        return {f"{ct2}/weight": s[f"{hf}.weight"], f"{ct2}/bias": s[f"{hf}.bias"]}

    out = {"encoder/num_heads": torch.tensor(c.encoder_attention_heads, dtype=torch.int16),
           "decoder/num_heads": torch.tensor(c.decoder_attention_heads, dtype=torch.int16),
           **linear("model.encoder.conv1", "encoder/conv1"), **linear("model.encoder.conv2", "encoder/conv2"),
           "encoder/position_encodings/encodings": s["model.encoder.embed_positions.weight"],
           "decoder/position_encodings/encodings": s["model.decoder.embed_positions.weight"],
           "decoder/embeddings/weight": s["model.decoder.embed_tokens.weight"],
           **norm("model.encoder.layer_norm", "encoder/layer_norm"),
           **norm("model.decoder.layer_norm", "decoder/layer_norm")}
    for stack, count in (("encoder", c.encoder_layers), ("decoder", c.decoder_layers)):
        for i in range(count):
            hf, ct2 = f"model.{stack}.layers.{i}", f"{stack}/layer_{i}"
            out.update(_fuse_attention(s, f"{hf}.self_attn", f"{ct2}/self_attention", cross=False))
            out.update(norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm"))
            if stack == "decoder":
                out.update(_fuse_attention(s, f"{hf}.encoder_attn", f"{ct2}/attention", cross=True))
                out.update(norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm"))
            out.update(norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm"))
            out.update(linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0"))
            out.update(linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1"))
    # fp16 at source, like the packaged checkpoints; scalars keep their integer types
    return {name: t.half() if t.is_floating_point() else t for name, t in out.items()}


@pytest.fixture
def fabricated_package(tmp_path):
    """A tiny Whisper (fp16-exact weights) exported to a CTranslate2 package folder, and the reference model."""
    vocab = {chr(c): i for i, c in enumerate(range(ord("a"), ord("z") + 1))}
    vocab.update({"Ġ": len(vocab)})
    vocab.update({token: len(vocab) + i for i, token in enumerate(SPECIALS)})
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS})
    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=len(vocab), num_mel_bins=8, d_model=16, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=24,
                           decoder_ffn_dim=24, max_source_positions=30, max_target_positions=12,
                           pad_token_id=vocab["<|endoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                           decoder_start_token_id=vocab["<|startoftranscript|>"])
    reference = WhisperForConditionalGeneration(config).eval()
    for name, param in reference.named_parameters():
        param.data = param.data.half().float()  # what survives the fp16 source
        if name.endswith("k_proj.bias"):
            raise AssertionError("Whisper's k projections have no bias")
    package = tmp_path / "package"
    package.mkdir()
    write_model_bin(package / "model.bin", export_to_ctranslate2(reference),
                    {"decoder/projection/weight": "decoder/embeddings/weight"})
    tokenizer.save_pretrained(tmp_path / "tok")
    shutil.copy(tmp_path / "tok" / "tokenizer.json", package / "tokenizer.json")
    (package / "config.json").write_text(json.dumps({"alignment_heads": [[1, 0]], "lang_ids": [vocab["<|en|>"]],
                                                     "suppress_ids": [1], "suppress_ids_begin": [vocab["Ġ"]]}))
    return package, reference


def test_a_fabricated_model_bin_converts_to_the_same_logits(fabricated_package, tmp_path):
    package, reference = fabricated_package
    convert_whisper([package / "model.bin"], package, tmp_path / "out")
    converted = WhisperForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    features = torch.randn(2, 8, 60)  # max_source_positions 30, after the stride-2 convolution
    decoder_ids = torch.tensor([[27 + 1, 3, 4], [27 + 1, 5, 6]])
    with torch.no_grad():
        expected = reference(input_features=features, decoder_input_ids=decoder_ids).logits
        got = converted(input_features=features, decoder_input_ids=decoder_ids).logits
    assert torch.equal(got, expected)
    assert converted.generation_config.decoder_start_token_id == 28
    assert converted.generation_config.no_timestamps_token_id == 27 + SPECIALS.index("<|notimestamps|>")
    assert not converted.generation_config.is_multilingual  # a vocabulary below 51,865 tokens is English-only
    encoder_only = WhisperForAudioClassification.from_pretrained(tmp_path / "out", num_labels=3)
    assert torch.equal(encoder_only.encoder.layers[1].fc2.weight, reference.model.encoder.layers[1].fc2.weight)


def test_a_split_model_bin_reads_as_the_whole(fabricated_package, tmp_path):
    package, _ = fabricated_package
    data = (package / "model.bin").read_bytes()
    (tmp_path / "part1").write_bytes(data[:1001])
    (tmp_path / "part2").write_bytes(data[1001:])
    whole = read_model_bin([package / "model.bin"])[1]
    parts = read_model_bin([tmp_path / "part1", tmp_path / "part2"])[1]
    assert whole.keys() == parts.keys() and all(torch.equal(whole[k], parts[k]) for k in whole)
    assert parts["decoder/projection/weight"] is parts["decoder/embeddings/weight"]  # the alias


def test_a_truncated_or_foreign_model_bin_is_named(fabricated_package, tmp_path):
    package, _ = fabricated_package
    (tmp_path / "cut.bin").write_bytes((package / "model.bin").read_bytes()[:5000])
    with pytest.raises(UsageError, match=r"cut\.bin: truncated CTranslate2 file"):
        read_model_bin([tmp_path / "cut.bin"])
    write_model_bin(tmp_path / "old.bin", {}, {}, version=4)
    with pytest.raises(UsageError, match=r"old\.bin: CTranslate2 binary version 4"):
        read_model_bin([tmp_path / "old.bin"])


@pytest.mark.slow
def test_builtin_whisper_tiny_en_transcribes_synthetic_speech(tmp_path, monkeypatch):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    folder, hub_id = builtin.resolve_model("builtin:whisper-tiny.en")
    assert hub_id == "openai/whisper-tiny.en"
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "please call the doctor this morning"], check=True)
    samples = read_audio(str(wav), 16_000)  # espeak speaks at 22,050 Hz; the pipeline resamples only with torchaudio
    recogniser = pipeline("automatic-speech-recognition", model=folder)
    text = recogniser({"raw": samples, "sampling_rate": 16_000})["text"]
    assert text.lower().strip(" .") == "please call the doctor this morning"
