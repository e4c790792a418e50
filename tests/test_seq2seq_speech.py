"""Whisper (sequence to sequence) in the speech recognition recipe, on a tiny random Whisper and the tone 'speech'."""

import json

import pytest
from transformers import AutoModelForSpeechSeq2Seq, pipeline

from hf_transfer.cli import main as cli
from hf_transfer.config import StrategyArgs, UsageError
from hf_transfer.evaluation.inference import evaluate_folder, load_trained
from hf_transfer.modalities.audio import load_clip
from hf_transfer.models.strategies import apply_strategy
from hf_transfer.recipes import speech_recognition


def train(speech_data, whisper, output_dir, **overrides):
    return speech_recognition.main({
        "model_name_or_path": str(whisper), "train_file": str(speech_data / "train.csv"),
        "test_file": str(speech_data / "test.csv"), "output_dir": str(output_dir), "learning_rate": 1e-2,
        "max_train_steps": 24, "eval_steps": 24, "per_device_train_batch_size": 8, "dropout": 0.0,
        "noise_snr_db": 0, "gain_db": 0, "time_shift_seconds": 0, "logging_steps": 1,
        "max_duration_seconds": 1, **overrides})  # the tiny model reads 1 s; every clip is shorter


# (strategy, settings, how far the training loss must fall from its first step): everything trains, the decoder
# only (encoder frozen), or LoRA on q/v (the output layer stays as it is, so the loss falls less).
TEST_CASES = [
    ("full", {}, 3.0),
    ("feature_extraction", {}, 3.0),
    ("lora", {"lora_dropout": 0.0, "learning_rate": 3e-2}, 0.2),
]


@pytest.fixture(scope="module")
def trained(speech_data, tiny_whisper, tmp_path_factory):
    """{strategy: (results, output folder)}, each trained a few steps."""
    runs = {}
    for strategy, overrides, _ in TEST_CASES:
        output_dir = tmp_path_factory.mktemp(f"whisper-{strategy}")
        runs[strategy] = train(speech_data, tiny_whisper, output_dir, strategy=strategy, **overrides), output_dir
    return runs


@pytest.mark.parametrize(("strategy", "fall"), [(case[0], case[2]) for case in TEST_CASES])
def test_each_strategy_lowers_the_loss_and_reports_zero_shot(trained, strategy, fall):
    results, output_dir = trained[strategy]
    losses = [entry["train_loss"] for entry in json.loads((output_dir / "train_log.json").read_text())["train"]]
    assert losses[-1] < losses[0] - fall, losses
    # Zero-shot and fine-tuned error rates side by side, in the results, the report and the card.
    assert {"zero_shot_test_wer", "zero_shot_test_cer", "test_wer", "test_cer"} <= set(results)
    assert results["zero_shot_test_wer"] >= 1.0  # a random model writes no tone word right
    assert "| metric | zero_shot_test | eval | test |" in (output_dir / "eval_report.md").read_text()
    assert "| metric | test, zero-shot | validation | test |" in (output_dir / "README.md").read_text()


def test_frozen_encoder_trains_the_decoder_only(tiny_whisper):
    model = apply_strategy(AutoModelForSpeechSeq2Seq.from_pretrained(tiny_whisper),
                           StrategyArgs(strategy="feature_extraction"), None)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("model.decoder.") for name in trainable)


@pytest.mark.parametrize("strategy", [case[0] for case in TEST_CASES])
def test_reloads_and_evaluates_as_trained(trained, speech_data, strategy, tmp_path):
    results, output_dir = trained[strategy]
    model, processor, _ = load_trained(output_dir)
    assert type(processor).__name__ == "WhisperProcessor"
    again = evaluate_folder(output_dir, str(speech_data / "test.csv"), tmp_path / "evaluation")
    assert again.pop("test_samples_per_second") > 0  # scoring's throughput, which training does not report
    assert again == {k: v for k, v in results.items() if k.startswith("test_")}


def test_pipeline_transcribes_as_predict(speech_data, tiny_whisper, tmp_path, capsys):
    # Two steps only: the model still writes words (after 24 it writes nothing, and '' == '' proves little).
    output_dir = tmp_path / "whisper"
    train(speech_data, tiny_whisper, output_dir, strategy="full", max_train_steps=2, eval_steps=2)
    capsys.readouterr()
    clips = [speech_data / "clips" / f"test_{i}.wav" for i in range(3)]
    cli(["predict", str(output_dir), *map(str, clips)])
    predicted = [row["transcript"] for row in map(json.loads, capsys.readouterr().out.splitlines())]
    # Greedy, as predict and the report decode; the pipeline's own default is a 5-beam search.
    transcriber = pipeline("automatic-speech-recognition", model=str(output_dir), num_beams=1)
    rate = transcriber.feature_extractor.sampling_rate  # the clips are 8 kHz; resampled as the recipe does
    piped = [transcriber({"raw": load_clip(str(clip), rate), "sampling_rate": rate})["text"].strip() for clip in clips]
    assert predicted == piped and any(predicted), predicted


def test_spec_augment_is_refused_for_whisper(speech_data, tiny_whisper, tmp_path):
    with pytest.raises(UsageError, match="--spec_augment applies to CTC models"):
        train(speech_data, tiny_whisper, tmp_path, spec_augment=0.05)


def test_the_load_line_counts_the_vocabulary_not_labels(tiny_whisper):
    """Whisper's config keeps num_labels = 2 by default: a speech recognition run must not report a 2-label head."""
    from hf_transfer.models.loading import describe_new_weights

    model = AutoModelForSpeechSeq2Seq.from_pretrained(tiny_whisper)
    line = describe_new_weights(model, {"missing_keys": [], "mismatched_keys": []})
    assert line == f"head: the checkpoint's ({model.config.vocab_size} tokens)"
