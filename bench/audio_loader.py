"""What the audio recipe's DataLoader spends per training clip: decoding, the augmentation (`augment`: time shift,
crop, gain, noise) and Wav2Vec2's feature extractor, so that one can see whether moving the augmentation to the
GPU, as the image recipe's `--augment_on device` does, would pay.

    # CPU: the first 256 FSDD recordings (BENCHMARKS.md has the exact line measured)
    OMP_NUM_THREADS=1 python bench/audio_loader.py --audio_dir ../shared/data/fsdd/recordings
    # CPU smoke (tests/test_bench.py): synthetic clips
    python bench/audio_loader.py --synthetic 8 --repeats 1

Run from the repository root (`PYTHONPATH=.` where hf_transfer is not installed). One process: the milliseconds
are what each DataLoader worker spends per clip, best of --repeats passes after a warm-up pass. stdout holds one
JSON line.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from transformers import Wav2Vec2FeatureExtractor

from hf_transfer.modalities.audio import AudioArgs, augment, read_audio

RATE = 16000


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio_dir", help="a folder of audio files (searched recursively)")
    source.add_argument("--synthetic", type=int, metavar="N", help="N synthetic 0.5 s FLAC clips instead")
    parser.add_argument("--clips", type=int, default=256, help="at most this many of --audio_dir's clips")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output_json", help="also write the JSON line to this file")
    return parser.parse_args(argv)


def best_ms_per_clip(run, clips: int, repeats: int) -> float:
    run()  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return min(seconds) / clips * 1000


def main(argv=None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        if args.audio_dir:
            paths = sorted(str(path) for path in Path(args.audio_dir).rglob("*")
                           if path.suffix.lower() in (".wav", ".flac", ".mp3", ".ogg"))[:args.clips]
            data = f"{len(paths)} clips of {args.audio_dir}"
        else:
            rng = np.random.default_rng(0)
            paths = [str(Path(folder) / f"{i}.flac") for i in range(args.synthetic)]
            for path in paths:
                sf.write(path, (0.1 * rng.standard_normal(RATE // 2)).astype(np.float32), RATE)
            data = f"synthetic:{args.synthetic} 0.5 s FLAC"
        settings = AudioArgs()  # the recipe's default augmentation
        max_samples = round(settings.max_duration_seconds * RATE)
        waves = [read_audio(path, RATE) for path in paths]
        augmented = [augment(wave, RATE, max_samples, settings, np.random.default_rng(i))
                     for i, wave in enumerate(waves)]
        extractor = Wav2Vec2FeatureExtractor(sampling_rate=RATE)
        ms = {
            "decode": best_ms_per_clip(lambda: [read_audio(path, RATE) for path in paths], len(paths), args.repeats),
            "augment": best_ms_per_clip(lambda: [augment(wave, RATE, max_samples, settings, np.random.default_rng(i))
                                                 for i, wave in enumerate(waves)], len(paths), args.repeats),
            "feature_extractor": best_ms_per_clip(
                lambda: extractor(augmented, sampling_rate=RATE, padding=True, return_attention_mask=True,
                                  return_tensors="pt"), len(paths), args.repeats),
        }
    total = sum(ms.values())
    line = {"data": data, "ms_per_clip": ms, "augment_share": ms["augment"] / total,
            "clips_per_s_per_worker": 1000 / total}
    print(json.dumps(line), flush=True)
    if args.output_json:
        with open(args.output_json, "a") as handle:
            handle.write(json.dumps(line) + "\n")
    return line


if __name__ == "__main__":
    main()
