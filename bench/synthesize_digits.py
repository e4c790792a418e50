"""Spoken digits synthesised with espeak-ng: a labelled source domain for domain adaptation towards real speech.

    python bench/synthesize_digits.py /tmp/synthetic_digits --voices 60

Writes `clips/{digit}_{voice}.wav` and `train.csv` (columns `audio`, `label`, `transcript`, `voice`: the columns of
bench/prepare_fsdd.py's CSVs, so FSDD's clips are the target domain as they are). Each voice is an espeak-ng
English variant at a speed and pitch of its own, drawn with `--seed`; every voice says every digit.
Needs Debian's `espeak-ng` (`apt-get install espeak-ng`).
"""

import argparse
import csv
import random
import shutil
import subprocess
from pathlib import Path

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
LANGUAGES = ["en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "croak", "whisper"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for clips/ and train.csv (created if missing)")
    parser.add_argument("--voices", type=int, default=60, help="how many voices (each says the ten digits)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the voices' language, variant, speed, pitch")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        parser.error("espeak-ng not found: apt-get install espeak-ng")
    rng = random.Random(args.seed)
    clips = args.out / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    rows = []
    for number in range(args.voices):
        voice = f"{rng.choice(LANGUAGES)}+{rng.choice(VARIANTS)}"
        speed, pitch = rng.randint(110, 200), rng.randint(20, 80)
        name = f"v{number:03d}"
        for digit, word in enumerate(WORDS):
            path = clips / f"{digit}_{name}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), word],
                           check=True, capture_output=True)
            rows.append({"audio": str(path.resolve()), "label": str(digit), "transcript": word,
                         "voice": f"{name} ({voice}, speed {speed}, pitch {pitch})"})
    with open(args.out / "train.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} clips of {args.voices} voices: {args.out / 'train.csv'}")


if __name__ == "__main__":
    main()
