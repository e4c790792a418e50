"""`--augment_on device` for audio: clips delayed and cropped in the loader, gain, noise and the feature extractor's
normalisation on the device, matching the loader path; the recipe trains with it and refuses it where it can't run."""

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from fixtures import tone
from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

from hf_transfer.config import UsageError
from hf_transfer.modalities.audio import AudioArgs, audio_collator
from hf_transfer.modalities.audio_augment import DeviceWaveAugment, augments_on_device, raw_wave_collator
from hf_transfer.recipes import audio_classification

RATE = 16000


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[dict]:
    """Tones of 0.3 to 1.6 s: some shorter than the 1 s crop, some cropped."""
    folder = tmp_path_factory.mktemp("clips")
    examples = []
    for i, seconds in enumerate([0.3, 1.6, 0.8, 1.2]):
        path = folder / f"{i}.wav"
        sf.write(path, tone(300 + 100 * i, seconds, RATE, seed=i), RATE)
        examples.append({"audio": str(path), "labels": i % 2, "augment_seed": 100 + i})
    return examples


@pytest.mark.parametrize("normalize", [True, False])
def test_without_noise_the_device_gives_the_loaders_inputs(clips, normalize):
    """Same seeds, same delay, crop and gain; the device's normalisation is the feature extractor's."""
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=RATE, do_normalize=normalize)
    args = AudioArgs(noise_snr_db=0.0)
    expected = audio_collator(extractor, "audio", args, True)(clips)
    actual = DeviceWaveAugment(extractor)(raw_wave_collator(extractor, "audio", args)(clips))
    assert actual.keys() == {"input_values", "attention_mask", "labels"}
    torch.testing.assert_close(actual["attention_mask"].long(), expected["attention_mask"].long())
    torch.testing.assert_close(actual["input_values"], expected["input_values"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(actual["labels"], expected["labels"])


def test_the_device_adds_noise_at_each_clips_drawn_level(clips):
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=RATE, do_normalize=False)
    args = AudioArgs(gain_db=0.0, time_shift_seconds=0.0, noise_snr_db=10.0)
    raw = raw_wave_collator(extractor, "audio", args)(clips)
    noisy = DeviceWaveAugment(extractor)(raw)["input_values"]
    again = DeviceWaveAugment(extractor)(raw)["input_values"]
    torch.testing.assert_close(noisy, again)  # the batch's seed fixes its noise
    for row, clean, length, snr_db in zip(noisy, raw["waves"], raw["lengths"], raw["snr_db"]):
        signal, noise = clean[:length], (row - clean)[:length]
        assert 10 <= snr_db <= 30
        measured = 10 * torch.log10(signal.square().mean() / noise.square().mean())
        assert measured == pytest.approx(float(snr_db), abs=0.5)
        assert not row[length:].any()  # the padding stays silent


def test_augmentation_goes_on_the_device_on_a_gpu_where_the_model_reads_samples():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    wav2vec2, whisper = Wav2Vec2FeatureExtractor(), WhisperFeatureExtractor()
    assert augments_on_device(AudioArgs(), wav2vec2, cuda) and not augments_on_device(AudioArgs(), wav2vec2, cpu)
    assert not augments_on_device(AudioArgs(), whisper, cuda)  # its log-mel features come from the loader
    assert augments_on_device(AudioArgs(augment_on="device"), wav2vec2, cpu)
    assert not augments_on_device(AudioArgs(augment_on="device", gain_db=0, time_shift_seconds=0, noise_snr_db=0),
                                  wav2vec2, cuda)  # nothing to augment
    with pytest.raises(UsageError, match="--augment_on device needs a model that reads raw samples .* "
                                         "WhisperFeatureExtractor computes its features in the loader"):
        augments_on_device(AudioArgs(augment_on="device"), whisper, cuda)
    with pytest.raises(UsageError, match="--augment_on must be one of auto, loader, device; got 'gpu'"):
        AudioArgs(augment_on="gpu")


def test_the_recipe_trains_with_audio_augmented_on_the_device(tiny_wav2vec2, tones, tmp_path, monkeypatch):
    batches = []
    original = DeviceWaveAugment.__call__

    def augment(self, batch):
        batches.append(len(batch["labels"]))
        return original(self, batch)

    monkeypatch.setattr(DeviceWaveAugment, "__call__", augment)
    results = audio_classification.main({
        "model_name_or_path": str(tiny_wav2vec2), "output_dir": str(tmp_path), "strategy": "full",
        "train_dir": str(tones / "train"), "test_dir": str(tones / "test"), "augment_on": "device",
        "spec_augment": 0.05, "per_device_train_batch_size": 4, "max_train_steps": 3, "warmup_ratio": 0.0})
    assert np.isfinite(results["train_loss"])
    assert batches == [4, 4, 4]
    assert yaml.safe_load((tmp_path / "run_config.yaml").read_text())["augment_on"] == "device"
