"""Domain terms: does fine-tuning Whisper teach it medical words it gets wrong, without losing everyday speech?

    python bench/domain_terms.py generate /tmp/domain           # espeak-ng corpus: train.csv, test.csv, terms.txt
    hf-transfer train speech_recognition --model_name_or_path builtin:whisper-tiny.en \\
        --train_file /tmp/domain/train.csv --test_file /tmp/domain/test.csv --output_dir outputs/domain-whisper \\
        --strategy full --learning_rate 1e-5 --num_train_epochs 3 --max_duration_seconds 5
    python bench/domain_terms.py score /tmp/domain outputs/domain-whisper builtin:whisper-tiny.en

Sentences put medical terms (drug names, conditions, procedures) into templates; control sentences hold none.
Train and test are split by template (so every test sentence is new) and by term: TEST_ONLY_TERMS never occur in
training. espeak-ng's voices, speeds and pitches are variants of one synthesiser, not different speakers.
`score` transcribes the test split with the base checkpoint (zero-shot, and with the term list as Whisper's
prompt), then with the fine-tuned folder, all normalised by the project's one normaliser, and prints the table.
"""

import argparse
import csv
import json
import random
import subprocess
import tempfile
from pathlib import Path

import torch

DRUGS = ["metoprolol", "atorvastatin", "lisinopril", "amoxicillin", "levothyroxine", "omeprazole", "gabapentin",
         "warfarin", "sertraline", "clopidogrel"]
CONDITIONS = ["atrial fibrillation", "pneumothorax", "cholecystitis", "diverticulitis", "hypothyroidism",
              "pancreatitis", "endometriosis", "sarcoidosis"]
PROCEDURES = ["colonoscopy", "angioplasty", "thoracentesis", "cholecystectomy", "bronchoscopy", "appendectomy"]
# Never in training: does what was learned carry over to terms the model has not been taught?
TEST_ONLY_TERMS = ["clopidogrel", "sertraline", "sarcoidosis", "endometriosis", "appendectomy", "bronchoscopy"]
TEMPLATES = {
    "train": ["the patient was started on {term} last week", "we discussed {term} at the morning meeting",
              "her notes mention {term} twice", "please check the chart for {term} before rounds",
              "he asked about {term} again today", "the referral letter says {term}",
              "the nurse wrote {term} on the board"],
    "test": ["the doctor confirmed {term} this afternoon", "there is no record of {term} in his file",
             "she read about {term} in the leaflet"],
}
CONTROLS = {
    "train": ["the weather was cold and windy all morning", "we walked to the station after lunch",
              "my brother bought a new bicycle yesterday", "the library closes early on sundays",
              "they painted the kitchen a pale yellow", "the train to the city was twenty minutes late",
              "she plays the piano every evening", "the children built a tall tower of blocks"],
    "test": ["the garden looks lovely in the spring", "he forgot his umbrella at the office",
             "we had soup and bread for dinner", "the market opens at eight on saturdays",
             "our neighbours adopted a small grey cat", "the football match ended in a draw"],
}
VOICES = ["en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-scotland"]


def synthesise(text: str, path: Path, rng: random.Random) -> None:
    """One utterance from a random espeak-ng variant (voice, speed, pitch), as 16 kHz mono WAV."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as raw:
        subprocess.run(["espeak-ng", "-v", rng.choice(VOICES), "-s", str(rng.randint(140, 185)),
                        "-p", str(rng.randint(30, 70)), "-w", raw.name, text], check=True)
        subprocess.run(["sox", raw.name, "-r", "16000", "-c", "1", str(path)], check=True)


def generate(folder: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    terms = DRUGS + CONDITIONS + PROCEDURES
    rows = {"train": [], "test": []}
    for split, copies in (("train", 2), ("test", 1)):  # two espeak variants of each training sentence
        split_terms = terms if split == "test" else [t for t in terms if t not in TEST_ONLY_TERMS]
        sentences = [(template.format(term=term), term) for term in split_terms for template in TEMPLATES[split]]
        if split == "test":  # two of the test templates per term keep the test split small
            sentences = [(TEMPLATES["test"][(i + k) % len(TEMPLATES["test"])].format(term=term), term)
                         for i, term in enumerate(split_terms) for k in (0, 1)]
        sentences += [(text, "") for text in CONTROLS[split]]
        for text, term in sentences:
            for _ in range(copies):
                path = folder / "clips" / f"{split}_{len(rows[split])}.wav"
                synthesise(text, path, rng)
                rows[split].append({"audio": str(path.resolve()), "transcript": text, "term": term})
    for split, split_rows in rows.items():
        with open(folder / f"{split}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["audio", "transcript", "term"])
            writer.writeheader()
            writer.writerows(split_rows)
        print(f"{folder / f'{split}.csv'}: {len(split_rows)} utterances")
    (folder / "terms.txt").write_text("\n".join(terms) + "\n")


def score(folder: Path, output_dir: Path, base: str) -> dict:
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    from hf_transfer.evaluation.inference import load_trained
    from hf_transfer.metrics import transcription_metrics
    from hf_transfer.modalities.audio import load_clip
    from hf_transfer.modalities.seq2seq import generate_text
    from hf_transfer.modalities.transcripts import SpeechArgs, normalize
    from hf_transfer.models.builtin import resolve_model

    speech = SpeechArgs()
    rows = list(csv.DictReader(open(folder / "test.csv")))
    references = [normalize(row["transcript"], speech) for row in rows]
    path = resolve_model(base)[0]
    base_model = AutoModelForSpeechSeq2Seq.from_pretrained(path).eval()
    base_processor = AutoProcessor.from_pretrained(path)
    # The cheap baseline: the term list as the previous-context prompt Whisper conditions on.
    prompt = base_processor.get_prompt_ids(", ".join((folder / "terms.txt").read_text().splitlines()) + ".",
                                           return_tensors="pt")
    tuned, tuned_processor, _ = load_trained(output_dir)

    def transcribe(model, processor, prompt_ids=None) -> list[str]:
        rate, found = processor.feature_extractor.sampling_rate, []
        for start in range(0, len(rows), 16):
            waves = [load_clip(row["audio"], rate) for row in rows[start:start + 16]]
            features = processor.feature_extractor(waves, sampling_rate=rate, return_tensors="pt").input_features
            with torch.no_grad():
                texts = generate_text(model, processor, features, prompt_ids)
            if prompt_ids is not None:  # some transformers versions return the prompt before the transcript
                prompt_text = processor.tokenizer.decode(prompt_ids[1:]).strip()  # after <|startofprev|>
                texts = [text.strip()[len(prompt_text):] if text.strip().startswith(prompt_text) else text
                         for text in texts]
            found += [normalize(text, speech) for text in texts]
        return found

    runs = {"zero-shot": transcribe(base_model, base_processor),
            "zero-shot + term prompt": transcribe(base_model, base_processor, prompt),
            "fine-tuned": transcribe(tuned, tuned_processor)}
    table = {}
    for name, predicted in runs.items():
        def wer(keep):
            chosen = [i for i, row in enumerate(rows) if keep(row)]
            return transcription_metrics([predicted[i] for i in chosen], [references[i] for i in chosen])["wer"]

        def term_accuracy(keep):
            chosen = [i for i, row in enumerate(rows) if row["term"] and keep(row)]
            return sum(f" {normalize(rows[i]['term'], speech)} " in f" {predicted[i]} " for i in chosen) / len(chosen)

        table[name] = {
            "medical WER": wer(lambda row: row["term"]),
            "term accuracy": term_accuracy(lambda row: True),
            "term accuracy, terms seen in training": term_accuracy(lambda row: row["term"] not in TEST_ONLY_TERMS),
            "term accuracy, test-only terms": term_accuracy(lambda row: row["term"] in TEST_ONLY_TERMS),
            "control WER": wer(lambda row: not row["term"]),
        }
    print(json.dumps(table, indent=2))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("generate", help="synthesise the corpus")
    make.add_argument("folder", type=Path)
    measure = commands.add_parser("score", help="zero-shot, prompted and fine-tuned WER on the test split")
    measure.add_argument("folder", type=Path)
    measure.add_argument("output_dir", type=Path, help="the fine-tuned folder")
    measure.add_argument("base", help="the checkpoint it was fine-tuned from")
    args = parser.parse_args()
    if args.command == "generate":
        generate(args.folder)
    else:
        score(args.folder, args.output_dir, args.base)


if __name__ == "__main__":
    main()
