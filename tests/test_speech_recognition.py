"""The CTC recipe on generated 'speech': each letter is a tone, so a tiny model can learn to spell it."""

import json

import pytest
import soundfile as sf
from fixtures import SPEECH_RATE as RATE
from hf_transfer.recipes import speech_recognition
from transformers import pipeline

from hf_transfer.config import UsageError
from hf_transfer.inference import load_trained


def train(speech_data, output_dir, **overrides):
    return speech_recognition.main({
        "model_name_or_path": str(speech_data / "tiny-wav2vec2"), "train_file": str(speech_data / "train.csv"),
        "test_file": str(speech_data / "test.csv"), "output_dir": str(output_dir), "strategy": "full",
        "freeze_feature_encoder": False, "learning_rate": 3e-3, "num_train_epochs": 40, "eval_steps": 50,
        "per_device_train_batch_size": 8, "warmup_ratio": 0.05, "noise_snr_db": 0, "gain_db": 0,
        "time_shift_seconds": 0, **overrides})


def test_ctc_recipe_writes_model_processor_report_and_card(speech_data, tmp_path):
    # Mechanics only: this tiny model has not yet been shown to get past all-blank output on the CPU budget.
    results = train(speech_data, tmp_path, num_train_epochs=2, eval_steps=None)
    assert 0 <= results["test_cer"] and results["test_samples"] == 8 and results["eval_samples"] == 5
    assert json.loads((tmp_path / "vocab.json").read_text()).keys() >= {"a", "b", "c", "|"}
    report = (tmp_path / "eval_report.md").read_text()
    assert "| wer |" in report and "| reference | prediction |" in report
    card = (tmp_path / "README.md").read_text()
    assert "pipeline_tag: automatic-speech-recognition" in card and "type: cer" in card
    # The saved folder is a plain transformers ASR model: the pipeline transcribes with it.
    transcriber = pipeline("automatic-speech-recognition", model=str(tmp_path))
    clip, _ = sf.read(speech_data / "clips" / "test_0.wav", dtype="float32")
    assert set(transcriber({"raw": clip, "sampling_rate": RATE})["text"]) <= set("abc ")


def test_lora_ctc_saves_the_head_and_reloads(speech_data, tmp_path):
    train(speech_data, tmp_path, strategy="lora", lora_dropout=0.0, num_train_epochs=2, eval_steps=None,
          learning_rate=1e-2)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    model, processor, _ = load_trained(tmp_path)
    assert type(processor).__name__ == "Wav2Vec2Processor"
    assert any("lm_head" in name for name, _ in model.named_parameters())


def test_missing_transcript_is_named(speech_data, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,transcript\nclips/train_0.wav,ab\nclips/train_1.wav,\n")
    with pytest.raises(UsageError, match="row 1 of column 'transcript' has no transcript"):
        speech_recognition.main({"model_name_or_path": str(speech_data / "tiny-wav2vec2"),
                                 "train_file": str(bad), "output_dir": str(tmp_path / "out")})
