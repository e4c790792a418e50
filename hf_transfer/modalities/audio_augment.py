"""Training augmentation of audio on the training device (`--augment_on device`), for models that read raw
samples (Wav2Vec2, HuBERT, WavLM: `Wav2Vec2FeatureExtractor`).

The loader decodes each clip, draws its augmentation from the example's seed with `draw_wave_augmentation` (as the
loader path does), applies the leading silence and the crop (they set the clip's length), and pads the batch of raw
samples. The device applies the gain and the white noise, then normalises each clip over its own samples as the
feature extractor does. The noise is drawn on the device from one seed per batch (drawn in the loader), so it
differs from the loader path's noise in its samples, not in its level.
"""

import numpy as np
import torch
from transformers import SequenceFeatureExtractor, Wav2Vec2FeatureExtractor

from hf_transfer.config import UsageError
from hf_transfer.modalities.audio import AudioArgs, draw_wave_augmentation, read_audio, shift_and_crop


def augments_on_device(args: AudioArgs, feature_extractor: SequenceFeatureExtractor, device: torch.device) -> bool:
    """--augment_on, with auto resolved: on a GPU, where the model reads raw samples. Refused where it can't run."""
    augmenting = bool(args.gain_db or args.time_shift_seconds or args.noise_snr_db)
    raw_samples = isinstance(feature_extractor, Wav2Vec2FeatureExtractor)
    if args.augment_on == "device" and augmenting and not raw_samples:
        raise UsageError(f"--augment_on device needs a model that reads raw samples (Wav2Vec2, HuBERT, WavLM); "
                         f"this one's {type(feature_extractor).__name__} computes its features in the loader, so "
                         "its augmentation stays there: use --augment_on loader (or auto)")
    if not augmenting or args.augment_on == "loader":
        return False
    return args.augment_on == "device" or (device.type == "cuda" and raw_samples)


def raw_wave_collator(feature_extractor: Wav2Vec2FeatureExtractor, column: str, args: AudioArgs,
                      fixed_length: bool = False):
    """The loader's side: decoded, delayed and cropped clips padded with zeros to the batch's longest (or to
    --max_duration_seconds with `fixed_length`), with each clip's length, gain and noise level, and a noise seed."""
    rate = feature_extractor.sampling_rate
    max_samples = round(args.max_duration_seconds * rate)

    def collate(examples: list[dict]) -> dict:
        rngs = [np.random.default_rng(example["augment_seed"]) for example in examples]
        waves, gains, snrs = [], [], []
        for example, rng in zip(examples, rngs):
            wave = read_audio(example[column], rate)
            draw = draw_wave_augmentation(len(wave), rate, max_samples, args, rng)
            waves.append(shift_and_crop(wave, draw, max_samples))
            gains.append(draw.gain)
            snrs.append(np.inf if draw.snr_db is None else draw.snr_db)
        padded = np.zeros((len(waves), max_samples if fixed_length else max(map(len, waves))), dtype=np.float32)
        for row, wave in zip(padded, waves):
            row[:len(wave)] = wave
        return {"waves": torch.from_numpy(padded), "lengths": torch.tensor([len(wave) for wave in waves]),
                "gain": torch.tensor(gains, dtype=torch.float32), "snr_db": torch.tensor(snrs, dtype=torch.float32),
                "noise_seed": int(rngs[0].integers(2**62)),
                "labels": torch.tensor([example["labels"] for example in examples])}

    return collate


class DeviceWaveAugment:
    """The device's side: the Loop's `prepare_batch`. Gain, white noise at each clip's drawn level over its own
    samples, then the feature extractor's per-clip normalisation; returns the model's inputs."""

    def __init__(self, feature_extractor: Wav2Vec2FeatureExtractor):
        self.normalize = feature_extractor.do_normalize
        self.padding_value = feature_extractor.padding_value

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        waves, lengths = batch["waves"], batch["lengths"]
        mask = torch.arange(waves.shape[1], device=waves.device) < lengths[:, None]
        waves = waves * batch["gain"][:, None]
        power = waves.square().sum(1) / lengths
        noise_std = torch.sqrt(power / 10 ** (batch["snr_db"] / 10))  # 0 where snr_db is inf: no noise
        generator = torch.Generator(waves.device).manual_seed(batch["noise_seed"])
        noise = torch.randn(waves.shape, generator=generator, device=waves.device, dtype=waves.dtype)
        waves = torch.where(mask, waves + noise * noise_std[:, None], 0.0)
        if self.normalize:  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm, over each clip's own samples
            mean = waves.sum(1, keepdim=True) / lengths[:, None]
            variance = torch.where(mask, waves - mean, 0.0).square().sum(1, keepdim=True) / lengths[:, None]
            waves = torch.where(mask, (waves - mean) / torch.sqrt(variance + 1e-7), self.padding_value)
        return {"input_values": waves, "attention_mask": mask.to(torch.int32), "labels": batch["labels"]}
