"""Write train.csv and test.csv for the Free Spoken Digit Dataset, with its official split.

    python bench/prepare_fsdd.py ../shared/data/fsdd/recordings /tmp/fsdd

Files are named `{digit}_{speaker}_{index}.{wav|flac}`; index 0-4 of each digit and speaker is the test split,
5-49 the training split. The CSVs hold absolute paths (`audio`), the digit (`label`) for audio classification,
the digit as a word (`transcript`, "zero" ... "nine") for speech recognition, and the `speaker` (for
`--group_column speaker`: a validation split of unseen speakers, per-speaker scores).

`--test_speakers george,yweweler` makes a speaker-shift split instead: every recording of those speakers is the
test split, the other speakers' recordings train.
"""

import argparse
import csv
import re
from pathlib import Path

NAME = re.compile(r"(?P<digit>\d)_(?P<speaker>[a-z]+)_(?P<index>\d+)")
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recordings", type=Path, help="the folder of FSDD recordings")
    parser.add_argument("out", type=Path, help="folder for train.csv and test.csv (created if missing)")
    parser.add_argument("--test_speakers", default="", help="comma-separated speakers whose recordings are the "
                                                            "whole test split (default: the official split)")
    args = parser.parse_args()
    test_speakers = {name for name in args.test_speakers.split(",") if name}
    rows = {"train": [], "test": []}
    for path in sorted(args.recordings.iterdir()):
        match = NAME.fullmatch(path.stem)
        if match and path.suffix in (".wav", ".flac"):
            if test_speakers:
                split = "test" if match["speaker"] in test_speakers else "train"
            else:
                split = "test" if int(match["index"]) < 5 else "train"
            rows[split].append({"audio": str(path.resolve()), "label": match["digit"],
                                "transcript": WORDS[int(match["digit"])], "speaker": match["speaker"]})
    speakers = {row["speaker"] for split_rows in rows.values() for row in split_rows}
    if not speakers:
        parser.error(f"{args.recordings}: no {{digit}}_{{speaker}}_{{index}}.wav|flac recordings")
    if (not rows["train"] or not rows["test"]) and test_speakers:
        parser.error(f"--test_speakers {args.test_speakers}: leaves an empty split; name some but not all of the "
                     f"speakers in {args.recordings}: {', '.join(sorted(speakers))}")
    if not rows["train"] or not rows["test"]:
        parser.error(f"{args.recordings}: the official split needs recordings with index 0-4 (test) and 5-49 (train)")
    args.out.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        with open(args.out / f"{split}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["audio", "label", "transcript", "speaker"])
            writer.writeheader()
            writer.writerows(split_rows)
        print(f"{args.out / f'{split}.csv'}: {len(split_rows)} recordings")


if __name__ == "__main__":
    main()
