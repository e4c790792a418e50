"""The CTC recipe on generated 'speech': each letter is a tone, so a tiny model can learn to spell it."""

import json

import pytest
import soundfile as sf
from fixtures import SPEECH_RATE as RATE
from transformers import pipeline

from hf_transfer.cli import main as cli
from hf_transfer.config import UsageError
from hf_transfer.evaluation.inference import evaluate_folder, load_trained
from hf_transfer.recipes import speech_recognition


def train(speech_data, output_dir, **overrides):
    return speech_recognition.main({
        "model_name_or_path": str(speech_data / "tiny-wav2vec2"), "train_file": str(speech_data / "train.csv"),
        "test_file": str(speech_data / "test.csv"), "output_dir": str(output_dir), "strategy": "full",
        "freeze_feature_encoder": False, "learning_rate": 3e-3, "num_train_epochs": 40, "eval_steps": 50,
        "per_device_train_batch_size": 8, "warmup_ratio": 0.05, "noise_snr_db": 0, "gain_db": 0,
        "time_shift_seconds": 0, **overrides})


@pytest.fixture(scope="module")
def learned(speech_data, tmp_path_factory):
    """The full recipe, long enough to learn: (results, output folder)."""
    output_dir = tmp_path_factory.mktemp("ctc-full")
    return train(speech_data, output_dir, num_train_epochs=60, eval_steps=60, dropout=0.0), output_dir


def test_ctc_learns_to_spell_the_tones(learned):
    results, output_dir = learned
    validation_cer = [entry["eval_cer"] for entry in json.loads((output_dir / "train_log.json").read_text())["eval"]]
    assert validation_cer[0] == 1.0 and min(validation_cer) < 0.6, validation_cer  # all blank at first, then spelling
    assert results["test_cer"] < 0.7 and results["test_samples"] == 8 and results["eval_samples"] == 5


def test_ctc_recipe_writes_model_processor_report_and_card(learned, speech_data):
    _, output_dir = learned
    assert set(json.loads((output_dir / "vocab.json").read_text())) == {"[PAD]", "[UNK]", "|", "a", "b", "c"}
    report = (output_dir / "eval_report.md").read_text()
    assert "| wer |" in report and "| reference | prediction |" in report
    card = (output_dir / "README.md").read_text()
    assert "pipeline_tag: automatic-speech-recognition" in card and "type: cer" in card
    # The saved folder is a plain transformers ASR model: the pipeline transcribes test_0 as the report did.
    transcriber = pipeline("automatic-speech-recognition", model=str(output_dir))
    clip, _ = sf.read(speech_data / "clips" / "test_0.wav", dtype="float32")
    text = transcriber({"raw": clip, "sampling_rate": RATE})["text"]
    first_example = report.split("| reference | prediction |\n|---|---|\n")[1].splitlines()[0]
    assert text and first_example.split(" | ")[1].removesuffix(" |").removesuffix(" ✗") == text


def test_predict_and_evaluate_commands_transcribe(learned, speech_data, tmp_path, capsys):
    results, output_dir = learned
    clip = speech_data / "clips" / "test_0.wav"
    cli(["predict", str(output_dir), str(clip)])
    prediction = json.loads(capsys.readouterr().out)
    first_example = (output_dir / "eval_report.md").read_text().split("| reference | prediction |\n|---|---|\n")[1]
    assert prediction == {"audio": str(clip), "transcript": first_example.split(" | ")[1].split(" |")[0].rstrip(" ✗")}
    # The test CSV again (relative paths, un-normalised transcripts): the run's own error rates.
    again = evaluate_folder(output_dir, str(speech_data / "test.csv"), tmp_path / "evaluation")
    assert again.pop("test_samples_per_second") > 0  # scoring's throughput, which training does not report
    assert again == {k: v for k, v in results.items() if k.startswith("test_")}
    assert "| reference | prediction |" in (tmp_path / "evaluation" / "eval_report.md").read_text()
    with pytest.raises(SystemExit, match="--test_dir reads class folders"):
        cli(["evaluate", str(output_dir), "--test_dir", str(speech_data / "clips")])


def test_lora_ctc_saves_the_head_and_reloads(speech_data, tmp_path):
    train(speech_data, tmp_path, strategy="lora", lora_dropout=0.0, num_train_epochs=2, eval_steps=None,
          learning_rate=1e-2)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    model, processor, _ = load_trained(tmp_path)
    assert type(processor).__name__ == "Wav2Vec2Processor"
    # The head of the built 6-symbol vocabulary, not the base checkpoint's 8-symbol one.
    heads = [module for name, module in model.named_modules() if name.endswith("lm_head.modules_to_save.default")]
    assert model.config.vocab_size == 6 and [head.out_features for head in heads] == [6]


def test_missing_transcript_is_named(speech_data, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,transcript\nclips/train_0.wav,ab\nclips/train_1.wav,\n")
    with pytest.raises(UsageError, match=r"bad.csv: data row 2 \(counted from 1, header not counted\): the "
                                         r"transcript cell \('transcript'\) is empty"):
        speech_recognition.main({"model_name_or_path": str(speech_data / "tiny-wav2vec2"),
                                 "train_file": str(bad), "output_dir": str(tmp_path / "out")})
