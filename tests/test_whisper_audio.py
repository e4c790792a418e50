"""Audio classification on Whisper's encoder: short inputs, every strategy, batch-invariant scores, pipeline()."""

import json

import numpy as np
import pytest
import torch
import transformers
from fixtures import AUDIO_RATE as RATE
from fixtures import PITCH
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from hf_transfer.cli import main as cli
from hf_transfer.evaluation.inference import load_trained
from hf_transfer.modalities.audio import audio_logits, load_clip
from hf_transfer.recipes import audio_classification


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A tiny Whisper saved like a converted checkpoint: the 30 s window, 8 mel bins."""
    folder = tmp_path_factory.mktemp("tiny-whisper")
    config = WhisperConfig(vocab_size=64, num_mel_bins=8, d_model=16, encoder_layers=2, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=24,
                           decoder_ffn_dim=24, max_target_positions=16, classifier_proj_size=8,
                           pad_token_id=1, bos_token_id=1, eos_token_id=1, decoder_start_token_id=2)
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=8).save_pretrained(folder)
    return folder


def settings(model, tones, output_dir, **overrides) -> dict:
    return {"model_name_or_path": str(model), "train_dir": str(tones / "train"), "test_dir": str(tones / "test"),
            "output_dir": str(output_dir), "max_duration_seconds": 0.25, "validation_split_percentage": 25,
            "per_device_train_batch_size": 8, "max_train_steps": 4, "logging_steps": 1, "warmup_ratio": 0.0,
            "learning_rate": 5e-3, **overrides}


STRATEGIES = {
    "full": {},
    "feature_extraction": {"gain_db": 0, "time_shift_seconds": 0, "noise_snr_db": 0},  # cached features
    "partial": {"unfreeze_layers": 1},
    "lora": {"learning_rate": 3e-2},
}


@pytest.fixture(scope="module")
def trained(tiny_whisper, tones, tmp_path_factory):
    runs = {}
    for strategy, overrides in STRATEGIES.items():
        output_dir = tmp_path_factory.mktemp(strategy)
        runs[strategy] = audio_classification.main(
            settings(tiny_whisper, tones, output_dir, strategy=strategy, **overrides)), output_dir
    return runs


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_trains_on_a_one_second_window(trained, strategy):
    results, output_dir = trained[strategy]
    assert results["train_steps"] == 4 and results["test_samples"] == 8
    config = json.loads((output_dir / "config.json").read_text())
    assert config["max_source_positions"] == 50  # 1 s: 100 mel frames, halved by the strided convolution
    extractor = transformers.AutoFeatureExtractor.from_pretrained(output_dir)
    assert (extractor.chunk_length, extractor.n_samples, extractor.nb_max_frames) == (1, RATE, 100)
    card = (output_dir / "README.md").read_text()
    assert "Whisper input window: 1 s" in card
    if strategy == "feature_extraction":
        assert "cached features" in card


def test_cached_features_at_bf16(tiny_whisper, tones, tmp_path):
    """The frozen encoder runs under bf16 autocast once; the feature extractor (torch inside) stays outside it."""
    results = audio_classification.main(settings(tiny_whisper, tones, tmp_path, strategy="feature_extraction",
                                                 mixed_precision="bf16", **STRATEGIES["feature_extraction"]))
    assert results["train_steps"] == 4
    assert "cached features" in (tmp_path / "README.md").read_text()


def test_strategies_train_what_they_say(tiny_whisper, tones, tmp_path):
    from hf_transfer.config import parse
    from hf_transfer.modalities.audio import AudioArgs

    def trainable(strategy, **overrides):
        run = parse([], settings(tiny_whisper, tones, tmp_path, strategy=strategy, **overrides),
                    audio_classification.DEFAULTS, task="audio-classification", modality=AudioArgs)
        recipe = audio_classification.AudioClassificationRecipe(run)
        recipe.setup()
        return {name for name, p in recipe.model.named_parameters() if p.requires_grad}

    partial = trainable("partial", unfreeze_layers=1)
    assert any("encoder.layers.1." in n for n in partial) and not any("encoder.layers.0." in n for n in partial)
    assert "encoder.layer_norm.weight" in partial and not any("conv" in n for n in partial)
    assert all(n.startswith(("projector", "classifier")) for n in trainable("feature_extraction"))
    lora = trainable("lora")
    assert any("q_proj.lora_A" in n for n in lora) and any("v_proj.lora_A" in n for n in lora)
    assert not any("k_proj.lora" in n for n in lora)


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_scores_do_not_depend_on_batch_mates(trained, tones, strategy):
    _, output_dir = trained[strategy]
    model, extractor, saved = load_trained(output_dir)
    clips = sorted(str(p) for p in (tones / "test").rglob("*.*"))
    assert len(clips) == 8
    with torch.no_grad():
        together = audio_logits(model, extractor, clips, saved["max_duration_seconds"])
        alone = torch.cat([audio_logits(model, extractor, [clip], saved["max_duration_seconds"]) for clip in clips])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_pipeline_gives_the_predictions_of_hf_transfer_predict(trained, tones, capsys):
    _, output_dir = trained["full"]
    classify = transformers.pipeline("audio-classification", model=str(output_dir))
    for clip in sorted((tones / "test").rglob("*.*")):
        cli(["predict", str(output_dir), str(clip)])
        ours = json.loads(capsys.readouterr().out)["scores"]
        theirs = {p["label"]: p["score"] for p in classify({"raw": load_clip(str(clip), RATE),
                                                            "sampling_rate": RATE})}
        assert set(theirs) == set(PITCH)
        assert all(theirs[label] == pytest.approx(ours[label], abs=1e-5) for label in PITCH)


def test_the_30_second_window_stays_when_short_inputs_are_off(tiny_whisper, tones, tmp_path):
    results = audio_classification.main(settings(tiny_whisper, tones, tmp_path, strategy="feature_extraction",
                                                 short_inputs=False, max_train_steps=1))
    assert results["train_steps"] == 1
    assert json.loads((tmp_path / "config.json").read_text())["max_source_positions"] == 1500
    assert transformers.AutoFeatureExtractor.from_pretrained(tmp_path).nb_max_frames == 3000
    assert np.isfinite(results["test_accuracy"])


def test_the_load_line_names_the_new_head_and_warns_only_of_weights_really_missing(tiny_whisper, capsys):
    """WhisperForAudioClassification has no base-model submodule (encoder, projector, classifier): its new projector
    and classifier are the head, not 4 backbone weights missing."""
    from transformers import AutoConfig, AutoModelForAudioClassification

    from hf_transfer.config import ModelArgs
    from hf_transfer.models.loading import build_model, describe_new_weights

    config = AutoConfig.from_pretrained(tiny_whisper, num_labels=3)
    model = build_model(ModelArgs(model_name_or_path=str(tiny_whisper)), AutoModelForAudioClassification, config)
    line = capsys.readouterr().out
    assert "new head: classifier, projector (3 labels), initialised" in line
    assert "missing" not in line
    new = ["projector.weight", "projector.bias", "classifier.weight", "classifier.bias"]
    line = describe_new_weights(model, {"missing_keys": [*new, "encoder.layer_norm.bias"], "mismatched_keys": []})
    assert line.endswith("warning: 1 backbone weight(s) missing from the checkpoint, initialised at random "
                         "(encoder.layer_norm.bias)")
