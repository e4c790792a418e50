"""What the audio recipe's DataLoader spends per training clip, with the augmentation in the loader and with
`--augment_on device` (the loader decodes, delays and crops; gain, noise and the feature extractor's normalisation
run on the device), and the device's own time for its part.

    # CPU: the first 256 FSDD recordings (BENCHMARKS.md has the exact line measured)
    OMP_NUM_THREADS=1 python bench/audio_loader.py --audio_dir ../shared/data/fsdd/recordings
    # CPU smoke (tests/test_bench.py): synthetic clips
    python bench/audio_loader.py --synthetic 8 --repeats 1

Run from the repository root (`PYTHONPATH=.` where hf_transfer is not installed). One process: the numbers are
what each DataLoader worker delivers, best of --repeats passes after a warm-up pass, batches of 32. The loader
path's time is also split into decoding, augmentation and Wav2Vec2's feature extractor. The device's part runs on
CUDA when there is one, synchronised before its clock stops. stdout holds one JSON line.
"""

import argparse
import contextlib
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from text_classification import augmentation_rates, best_seconds, describe, emit
from transformers import Wav2Vec2FeatureExtractor

from hf_transfer.modalities.audio import AUDIO_LAYOUT, AudioArgs, audio_collator, augment, read_audio
from hf_transfer.modalities.audio_augment import DeviceWaveAugment, raw_wave_collator

RATE = 16000
BATCH_SIZE = 32


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio_dir", help="a folder of audio files (searched recursively)")
    source.add_argument("--synthetic", type=int, metavar="N", help="N synthetic 0.5 s FLAC clips instead")
    parser.add_argument("--clips", type=int, default=256, help="at most this many of --audio_dir's clips")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output_json", help="also write the JSON line to this file")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        if args.audio_dir:
            paths = sorted(str(path) for path in Path(args.audio_dir).rglob("*")
                           if path.suffix.lower() in AUDIO_LAYOUT.extensions)[:args.clips]
            if not paths:
                raise SystemExit(f"no wav, flac, mp3 or ogg files under --audio_dir {args.audio_dir}")
            data = f"{len(paths)} clips of {args.audio_dir}"
        else:
            rng = np.random.default_rng(0)
            paths = [str(Path(folder) / f"{i}.flac") for i in range(args.synthetic)]
            for path in paths:
                sf.write(path, (0.1 * rng.standard_normal(RATE // 2)).astype(np.float32), RATE)
            data = f"synthetic:{args.synthetic} 0.5 s FLAC"
        settings = AudioArgs()  # the recipe's default augmentation
        max_samples = round(settings.max_duration_seconds * RATE)
        extractor = Wav2Vec2FeatureExtractor(sampling_rate=RATE)
        examples = [{"audio": path, "labels": 0, "augment_seed": i} for i, path in enumerate(paths)]
        batches = [examples[i:i + BATCH_SIZE] for i in range(0, len(examples), BATCH_SIZE)]
        waves = [read_audio(path, RATE) for path in paths]
        augmented = [augment(wave, RATE, max_samples, settings, np.random.default_rng(i))
                     for i, wave in enumerate(waves)]
        seconds = {
            "decode": best_seconds(lambda: [read_audio(path, RATE) for path in paths], args.repeats),
            "augment": best_seconds(lambda: [augment(wave, RATE, max_samples, settings, np.random.default_rng(i))
                                             for i, wave in enumerate(waves)], args.repeats),
            "feature_extractor": best_seconds(
                lambda: extractor(augmented, sampling_rate=RATE, padding=True, return_attention_mask=True,
                                  return_tensors="pt"), args.repeats),
        }
        collators = {"loader": audio_collator(extractor, "audio", settings, True),
                     "device": raw_wave_collator(extractor, "audio", settings)}
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        rates = augmentation_rates(collators, batches, DeviceWaveAugment(extractor), device, args.repeats)
    line = {"data": data, "ms_per_clip": {part: value / len(paths) * 1000 for part, value in seconds.items()},
            "loader_clips_per_s": rates["loader"], "loader_ratio": rates["loader_ratio"],
            "device_clips_per_s": rates["device"], "device": describe(device)}
    with open(args.output_json, "a") if args.output_json else contextlib.nullcontext() as output:
        emit(line, output)
    return line


if __name__ == "__main__":
    main()
