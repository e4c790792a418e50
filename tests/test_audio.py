"""The audio classification recipe on a tiny Wav2Vec2 and generated tones: decoding, bad files, strategies, DDP."""

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch
import transformers
from fixtures import AUDIO_RATE as RATE
from fixtures import PITCH, launch_two_processes, tone, write_tones
from safetensors.torch import load_file
from transformers import AutoConfig, AutoFeatureExtractor, Wav2Vec2FeatureExtractor

from hf_transfer.cli import main as cli
from hf_transfer.config import DataArgs, UsageError, parse
from hf_transfer.data.splits import load_labelled_splits
from hf_transfer.evaluation.inference import evaluate_folder, load_trained, predict
from hf_transfer.metrics import classification_metrics
from hf_transfer.modalities.audio import (
    AUDIO_LAYOUT,
    AudioArgs,
    audio_collator,
    augment,
    crop,
    load_clip,
    prepare_audio_splits,
    read_audio,
)
from hf_transfer.recipes import audio_classification

RECIPE = Path(__file__).parents[1] / "recipes" / "audio_classification.py"
CONFIGS = Path(__file__).parents[1] / "recipes" / "configs"


# --- decoding and augmentation --------------------------------------------------------------------------------
def test_read_audio_averages_channels_and_resamples(tmp_path):
    left, right = tone(440, 0.5, 8000, seed=1), tone(440, 0.5, 8000, seed=2)
    sf.write(tmp_path / "stereo.flac", np.stack([left, right], axis=1), 8000)
    assert np.allclose(read_audio(str(tmp_path / "stereo.flac"), 8000), (left + right) / 2, atol=1e-4)
    resampled = read_audio(str(tmp_path / "stereo.flac"), RATE)
    assert resampled.dtype == np.float32 and resampled.shape == (RATE // 2,)
    # The same tone generated at 16 kHz: resampling keeps the pitch (noise aside).
    clean = np.sin(2 * np.pi * 440 * np.arange(RATE // 2) / RATE)
    assert np.corrcoef(resampled[100:-100], clean[100:-100])[0, 1] > 0.98


def test_crop_is_centred_in_evaluation_and_random_in_training():
    wave = np.arange(10, dtype=np.float32)
    assert crop(wave, 4).tolist() == [3, 4, 5, 6]
    assert crop(wave, 20) is wave
    starts = {crop(wave, 4, np.random.default_rng(seed))[0] for seed in range(20)}
    assert len(starts) > 1 and starts <= set(range(7))


def test_augmentation_keeps_the_length_limit_and_is_off_at_zero():
    rng = np.random.default_rng(0)
    wave = tone(440, 0.3, RATE)
    mild = augment(wave, RATE, RATE // 4, AudioArgs(), rng)
    assert len(mild) <= RATE // 4 and mild.dtype == np.float32
    off = AudioArgs(gain_db=0, time_shift_seconds=0, noise_snr_db=0)
    assert np.array_equal(augment(wave[:1000], RATE, RATE, off, rng), wave[:1000])


# --- bad input --------------------------------------------------------------------------------------------------
def write_bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    bad = {"empty": folder / "empty.wav", "no samples": folder / "silent.wav", "corrupt": folder / "corrupt.flac"}
    bad["empty"].write_bytes(b"")
    sf.write(bad["no samples"], np.zeros(0, dtype=np.float32), RATE)
    bad["corrupt"].write_bytes(b"fLaC" + bytes(range(256)) * 8)
    return bad


@pytest.fixture
def csv_with_bad_files(tones, tmp_path):
    bad = write_bad_files(tmp_path / "bad")
    header, *rows = (tones / "train.csv").read_text().splitlines()
    lines = [header] + [f"{tones / row}" for row in rows]  # "train/low/0.wav,low" -> "/.../train/low/0.wav,low"
    lines += [f"{path},low" for path in bad.values()] + ["missing.wav,high"]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "train.csv", bad


def prepare(train_file: str, **audio) -> tuple:
    data = DataArgs(train_file=train_file, validation_split_percentage=25)
    labelled = load_labelled_splits(data, seed=0, layout=AUDIO_LAYOUT)
    return prepare_audio_splits(labelled, data, AudioArgs(**audio), RATE)


def test_bad_audio_error_names_the_files_before_training(csv_with_bad_files):
    train_file, bad = csv_with_bad_files
    with pytest.raises(UsageError) as error:
        prepare(str(train_file))
    message = str(error.value)
    assert "4 audio file(s)" in message and "--bad_audio skip" in message
    assert any(str(path) in message for path in bad.values())


def test_bad_audio_skip_leaves_them_out_and_counts_them(csv_with_bad_files):
    train_file, bad = csv_with_bad_files
    prepared, column, skipped = prepare(str(train_file), bad_audio="skip")
    assert column == "audio"
    left_out = [entry for entries in skipped.values() for entry in entries]
    assert len(left_out) == 4
    reasons = " ".join(left_out)
    for path in bad.values():
        assert str(path) in reasons
    assert "missing.wav (file not found)" in reasons and "empty: no audio samples" in reasons
    kept = sum(len(prepared.splits[s]) for s in ("train", "validation"))
    assert kept == 24
    assert all(0 < n <= RATE for n in prepared.splits["train"]["length"])


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_clip_with_nan_samples_is_named_before_training(tones, tmp_path, split):
    """NaN samples would make the training loss NaN ("lower the learning rate") or, in a test clip, break the
    scoring after training: the file is named before training instead."""
    wave = tone(PITCH["low"], 0.5, RATE)
    wave[100:110] = np.nan
    sf.write(tmp_path / "nan.wav", wave, RATE, subtype="FLOAT")
    header, *rows = (tones / f"{split}.csv").read_text().splitlines()
    (tmp_path / f"{split}.csv").write_text("\n".join([header, *(str(tones / row) for row in rows), "nan.wav,low"]))
    files = {"train_file": str(tones / "train.csv"), f"{split}_file": str(tmp_path / f"{split}.csv")}
    data = DataArgs(**files, validation_split_percentage=25)
    labelled = load_labelled_splits(data, seed=0, layout=AUDIO_LAYOUT)
    with pytest.raises(UsageError, match="1 audio file.*nan.wav \\(holds NaN or infinite samples\\)"):
        prepare_audio_splits(labelled, data, AudioArgs(), RATE)
    with pytest.raises(UsageError, match="nan.wav holds NaN or infinite samples"):  # predict's reader
        load_clip(str(tmp_path / "nan.wav"), RATE)


def test_relative_paths_are_read_from_the_csv_folder(tones, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nowhere near the CSV
    prepared, _, skipped = prepare(str(tones / "train.csv"))
    assert not skipped
    assert all(Path(p).is_file() for p in prepared.splits["train"]["audio"])


def test_a_class_folder_with_no_audio_is_named(tmp_path):
    write_tones(tmp_path / "train", 2, seed=0)
    (tmp_path / "train" / "empty_class").mkdir()
    (tmp_path / "train" / "empty_class" / "notes.txt").write_text("no audio here")
    with pytest.raises(UsageError, match="empty_class: class folder has no .wav/.flac/.mp3/.ogg files"):
        load_labelled_splits(DataArgs(train_dir=str(tmp_path / "train")), seed=0, layout=AUDIO_LAYOUT)


def test_hub_audio_column_is_decoded_from_its_bytes(tmp_path):
    """A Hub data set's `Audio` column, decoded by soundfile (datasets would need torchcodec)."""
    rows = write_tones(tmp_path / "clips", 4, seed=0)
    table = datasets.Dataset.from_dict({"audio": [{"bytes": Path(r["path"]).read_bytes(), "path": None}
                                                  for r in rows], "label": [r["label"] for r in rows]})
    table.cast_column("audio", datasets.Audio()).to_parquet(tmp_path / "hub.parquet")
    prepared, column, _ = prepare(str(tmp_path / "hub.parquet"))
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=RATE)
    batch = audio_collator(extractor, column, AudioArgs(), False)([prepared.splits["train"][0]])
    assert batch["input_values"].shape[0] == 1 and batch["labels"].shape == (1,)


@pytest.mark.parametrize("argv, message", [
    (["--bad_audio", "ignore"], "--bad_audio must be one of error, skip"),
    (["--max_duration_seconds", "0"], "--max_duration_seconds must be > 0"),
    (["--gain_db", "-3"], "--gain_db must be >= 0"),
    (["--spec_augment", "1"], r"--spec_augment must be in \[0, 1\)"),
])
def test_bad_audio_settings_are_rejected_by_name(argv, message):
    with pytest.raises(UsageError, match=message):
        parse(argv, defaults=audio_classification.DEFAULTS, modality=AudioArgs)


@pytest.mark.parametrize("argv", [["--train_file", "clips.csv"], ["--train_dir", "clips"],
                                  ["--dataset_name", "someone/keywords"]])
def test_own_data_drops_the_default_data_sets_config(argv):
    """The recipe's default Hub set has a config (v0.02); it must not stick to data the user names."""
    run = parse(argv, defaults=audio_classification.DEFAULTS, task="audio-classification", modality=AudioArgs)
    assert run.data.dataset_config_name is None


def test_shipped_model_config_is_an_8_khz_wav2vec2():
    folder = CONFIGS / "audio_classification_wav2vec2_8khz"
    assert AutoFeatureExtractor.from_pretrained(folder).sampling_rate == 8000
    assert AutoConfig.from_pretrained(folder).model_type == "wav2vec2"


# --- training ---------------------------------------------------------------------------------------------------
def settings(tiny_wav2vec2, tones, output_dir, **overrides) -> dict:
    return {"model_name_or_path": str(tiny_wav2vec2), "train_dir": str(tones / "train"),
            "test_dir": str(tones / "test"), "output_dir": str(output_dir), "max_duration_seconds": 0.25,
            "validation_split_percentage": 25, "per_device_train_batch_size": 8, "max_train_steps": 4,
            "logging_steps": 1, "warmup_ratio": 0.0, "learning_rate": 5e-3, **overrides}


STRATEGIES = {
    "full": {"spec_augment": 0.05},
    "feature_extraction": {},
    "partial": {"unfreeze_layers": 1},
    # Adapters on a random tiny backbone need a high rate to move within a few steps.
    "lora": {"learning_rate": 3e-2},
}


@pytest.fixture(scope="module")
def trained(tiny_wav2vec2, tones, tmp_path_factory):
    """Each strategy trained for 4 steps through `main`; {strategy: (results, output folder)}."""
    runs = {}
    for strategy, overrides in STRATEGIES.items():
        output_dir = tmp_path_factory.mktemp(strategy)
        runs[strategy] = audio_classification.main(
            settings(tiny_wav2vec2, tones, output_dir, strategy=strategy, **overrides)), output_dir
    return runs


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_trains_and_writes_its_outputs(trained, strategy):
    results, output_dir = trained[strategy]
    assert results["train_steps"] == 4
    assert results["test_samples"] == 8 and results["eval_samples"] == 6
    for name in ("README.md", "eval_report.md", "confusion_matrix.png", "run_config.yaml", "config.json",
                 "preprocessor_config.json",
                 "adapter_model.safetensors" if strategy == "lora" else "model.safetensors"):
        assert (output_dir / name).is_file(), name
    card = (output_dir / "README.md").read_text()
    assert "pipeline_tag: audio-classification" in card
    assert "sampling rate: 16,000 Hz" in card and "max duration: 0.25 s" in card
    assert "gain within ±6 dB" in card


def test_feature_encoder_is_frozen_unless_switched_off(tiny_wav2vec2, tones, tmp_path):
    from hf_transfer.recipes.audio_classification import AudioClassificationRecipe

    for freeze in (True, False):
        run = parse([], settings(tiny_wav2vec2, tones, tmp_path, strategy="full", freeze_feature_encoder=freeze),
                    audio_classification.DEFAULTS, task="audio-classification", modality=AudioArgs)
        recipe = AudioClassificationRecipe(run)
        recipe.setup()
        encoder = recipe.model.wav2vec2.feature_extractor
        assert all(p.requires_grad != freeze for p in encoder.parameters())
        assert recipe.model.config.apply_spec_augment is False  # SpecAugment off by default


def test_lora_round_trip_keeps_projector_and_classifier(trained, tones):
    results, output_dir = trained["lora"]
    model, extractor, saved = load_trained(output_dir)
    assert saved["task"] == "audio-classification"
    saved_keys = list(load_file(str(output_dir / "adapter_model.safetensors")))
    assert any(".projector." in k for k in saved_keys) and any(".classifier." in k for k in saved_keys)
    # The reloaded model scores the test split exactly as the run did (one batch, as the run's eval loader).
    data = DataArgs(train_dir=str(tones / "train"), test_dir=str(tones / "test"))
    audio = AudioArgs(max_duration_seconds=0.25)
    prepared, column, _ = prepare_audio_splits(load_labelled_splits(data, seed=42, layout=AUDIO_LAYOUT), data, audio,
                                               RATE)
    collate = audio_collator(extractor, column, audio, False)
    test = prepared.splits["test"]
    batch = collate([test[i] for i in range(len(test))])
    with torch.no_grad():
        probabilities = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.softmax(-1).numpy()
    metrics = classification_metrics(probabilities, batch["labels"].numpy())
    assert metrics["accuracy"] == results["test_accuracy"]
    assert metrics["roc_auc"] == pytest.approx(results["test_roc_auc"], abs=1e-6)


def test_saved_predictions_belong_to_their_clips(trained):
    """The run scores clips longest first (0.1 to 0.25 s here); each line of test_predictions.jsonl still pairs a clip
    with its own label and with the scores `predict` gives that file."""
    _, output_dir = trained["full"]
    items = [json.loads(line) for line in (output_dir / "test_predictions.jsonl").read_text().splitlines()]
    assert [Path(item["input"]).parent.name for item in items] == [item["reference"] for item in items]
    model, processor, run_settings = load_trained(output_dir)
    predicted = predict(model, processor, run_settings, [item["input"] for item in items])
    for item, prediction in zip(items, predicted):
        assert prediction["scores"] == pytest.approx(item["probabilities"], abs=1e-4), item["input"]


def test_full_model_predicts_a_label_in_the_transformers_pipeline(trained):
    _, output_dir = trained["full"]
    classify = transformers.pipeline("audio-classification", model=str(output_dir))
    predictions = classify({"raw": tone(880, 0.3, RATE), "sampling_rate": RATE})
    assert {p["label"] for p in predictions} == set(PITCH)


def test_predict_and_evaluate_commands_read_audio_files_and_folders(trained, tones, tmp_path, capsys):
    results, output_dir = trained["full"]
    clip = tones / "test" / "high" / "0.wav"
    cli(["predict", str(output_dir), str(clip)])
    prediction = json.loads(capsys.readouterr().out)
    assert prediction["audio"] == str(clip) and prediction["label"] in PITCH
    assert sum(prediction["scores"].values()) == pytest.approx(1)
    # The test split's class folder, and a CSV of the same clips by relative path: the run's own numbers.
    cli(["evaluate", str(output_dir), "--test_dir", str(tones / "test")])
    by_folder = json.loads((output_dir / "evaluation" / "all_results.json").read_text())
    by_file = evaluate_folder(output_dir, str(tones / "test.csv"), tmp_path / "by_file")
    for again in (by_folder, by_file):
        assert again["test_samples"] == 8 and again["test_accuracy"] == results["test_accuracy"]
        assert again["test_roc_auc"] == pytest.approx(results["test_roc_auc"], abs=1e-6)
    assert (output_dir / "evaluation" / "confusion_matrix.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["predict", "OUT", "a sentence"], "an audio model takes audio file paths"),
    (["predict", "OUT", "BAD"], "can't read audio file .*not-audio.wav"),
    (["evaluate", "OUT", "--test_file", "TONES/test.csv", "--text_column", "audio"],
     "--text_column does not apply to this audio-classification model"),
    (["evaluate", "OUT", "--test_file", "TONES/test.csv", "--audio_column", "clip"], "no audio column 'clip'"),
])
def test_predict_and_evaluate_name_what_is_wrong(trained, tones, tmp_path, argv, message):
    bad = tmp_path / "not-audio.wav"
    bad.write_text("not audio")
    _, output_dir = trained["full"]
    replace = {"OUT": str(output_dir), "BAD": str(bad), "TONES/test.csv": str(tones / "test.csv")}
    with pytest.raises(SystemExit, match=message):
        cli([replace.get(arg, arg) for arg in argv])


def test_two_process_ddp_run(tiny_wav2vec2, tones, tmp_path):
    """`accelerate launch` with two gloo processes, full fine-tuning: LayerDrop and the unused mask embedding."""
    flags = settings(tiny_wav2vec2, tones, tmp_path / "out", strategy="full", max_train_steps=3,
                     per_device_train_batch_size=4, per_device_eval_batch_size=3)
    done = launch_two_processes(str(RECIPE), *[arg for key, value in flags.items() for arg in (f"--{key}", str(value))])
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert results["num_processes"] == 2 and results["train_steps"] == 3
    assert results["test_samples"] == 8  # gather_for_metrics drops DDP's padding
    # 8 test clips, longest first, in batches of 3 shared out between the processes (the last one padded): gathered,
    # they come back in reading order, and each line still pairs a clip with its own label.
    items = [json.loads(line) for line in (tmp_path / "out" / "test_predictions.jsonl").read_text().splitlines()]
    assert [Path(item["input"]).parent.name for item in items] == [item["reference"] for item in items]


def test_scores_do_not_depend_on_the_evaluation_batch_size(tones, tmp_path):
    """A layer-norm feature encoder with the attention mask: a clip's score is the same alone or padded in a batch,
    in the run's evaluation and in `predict` (which answers in input order)."""
    from fixtures import make_tiny_wav2vec2

    from hf_transfer.evaluation.inference import predict

    model = make_tiny_wav2vec2(tmp_path / "layer-norm", feat_extract_norm="layer")
    runs = {size: audio_classification.main(settings(model, tones, tmp_path / f"batch-{size}", strategy="full",
                                                     max_train_steps=1, per_device_eval_batch_size=size))
            for size in (1, 16)}
    for key in ("test_accuracy", "test_roc_auc", "eval_accuracy", "eval_roc_auc"):
        assert runs[1][key] == pytest.approx(runs[16][key], abs=1e-7), key
    trained, extractor, saved = load_trained(tmp_path / "batch-16")
    clips = sorted(str(p) for p in (tones / "test").rglob("*.*"))
    alone = [predict(trained, extractor, {**saved, "per_device_eval_batch_size": 1}, [clip])[0] for clip in clips]
    batched = predict(trained, extractor, saved, clips)
    assert [p["audio"] for p in batched] == clips
    for one, together in zip(alone, batched):
        assert together["scores"] == pytest.approx(one["scores"], abs=1e-6)


def test_resume_continues_the_same_augmented_run(tiny_wav2vec2, tones, tmp_path):
    """Gain, shifts, noise and random crops: a run resumed from its step-2 checkpoint (with DataLoader workers) ends
    with the weights of the uninterrupted one."""
    import shutil

    run = dict(strategy="full", max_train_steps=6, save_steps=2, save_total_limit=3, eval_steps=2,
               per_device_train_batch_size=4)
    whole = audio_classification.main(settings(tiny_wav2vec2, tones, tmp_path / "whole", **run))
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "step-2", tmp_path / "resumed" / "checkpoints" / "step-2")
    resumed = audio_classification.main(settings(tiny_wav2vec2, tones, tmp_path / "resumed", dataloader_num_workers=2,
                                                 resume_from_checkpoint="latest", **run))
    assert resumed == whole
    expected, actual = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("whole", "resumed"))
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
