"""Speech recognition data: audio + transcript pairs, a character vocabulary built from them, CTC batches.

Audio decoding and augmentation come from `hf_transfer.modalities.audio`; a transcript can't be cropped, so
clips longer than `--max_duration_seconds` are left out of training instead of cut.
"""

import dataclasses
import json
import re
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import SequenceFeatureExtractor, Wav2Vec2CTCTokenizer, Wav2Vec2Processor

from hf_transfer.config import DataArgs, UsageError
from hf_transfer.data.sampling import random_sample
from hf_transfer.data.splits import (
    LabelledSplits,
    check_group_column,
    grouped_holdout,
    guess_column,
    load_raw_splits,
    row_name,
)
from hf_transfer.modalities.audio import AudioArgs, augment, load_clip, prepare_audio_splits, read_audio
from hf_transfer.models.architectures import base_model

TRANSCRIPT_COLUMN_GUESSES = ("transcript", "transcription", "text", "sentence", "words")
WORD_DELIMITER, PAD, UNK = "|", "[PAD]", "[UNK]"


@dataclass
class SpeechArgs(AudioArgs):
    transcript_column: str | None = field(
        default=None, metadata={"help": "Column with the transcripts (guessed if omitted)."}
    )
    max_duration_seconds: float = field(
        default=10.0,
        metadata={"help": "Clips longer than this are left out of training (a transcript can't be cropped)."},
    )
    lowercase: bool = field(default=True, metadata={"help": "Lower-case transcripts before building the vocabulary."})
    strip_punctuation: bool = field(
        default=True, metadata={"help": "Drop punctuation from transcripts (keeps letters, digits, ' and spaces)."}
    )


def normalize(text: str, args: SpeechArgs) -> str:
    text = unicodedata.normalize("NFC", text)
    if args.lowercase:
        text = text.lower()
    if args.strip_punctuation:
        text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(text.split())


def normalized_transcripts(values: list, args: SpeechArgs, column: str, source: str) -> list[str]:
    """A column of transcripts, normalised; a row left with no text is named."""
    texts = [normalize(value, args) if isinstance(value, str) else "" for value in values]
    if "" in texts:
        raise UsageError(f"{row_name(source, texts.index('') + 1)}: the transcript cell ({column!r}) is empty")
    return texts


def load_transcribed_splits(data: DataArgs, args: SpeechArgs, seed: int) -> LabelledSplits:
    """Splits with a normalised `transcript` column; a random validation split is held out when there is none."""
    splits, sources = load_raw_splits(data)
    column = guess_column(splits["train"].column_names, args.transcript_column, TRANSCRIPT_COLUMN_GUESSES,
                          "transcript", sources["train"])
    for split, dataset in splits.items():
        if column not in dataset.column_names:
            raise UsageError(f"{sources[split]}: no transcript column {column!r}; "
                             f"columns are {', '.join(dataset.column_names)}")
        if not dataset.num_rows:
            raise UsageError(f"{sources[split]}: the {split} split is empty")
        texts = normalized_transcripts(dataset[column], args, column, sources[split])
        splits[split] = dataset.remove_columns(column).add_column("transcript", texts)
    if data.group_column:
        check_group_column(splits, sources, data.group_column)
    if "validation" not in splits and data.group_column:
        splits["train"], splits["validation"] = grouped_holdout(
            splits["train"], data.group_column, data.validation_split_percentage, seed, False, sources["train"])
        sources["validation"] = (f"{sources['train']} ({len(set(splits['validation'][data.group_column]))} "
                                 f"{data.group_column} group(s) held out)")
    elif "validation" not in splits:
        carved = splits["train"].train_test_split(test_size=data.validation_split_percentage / 100, seed=seed)
        splits["train"], splits["validation"] = carved["train"], carved["test"]
        sources["validation"] = f"{sources['train']} ({data.validation_split_percentage:g}% held out)"
    if data.max_train_samples and data.max_train_samples < len(splits["train"]):
        splits["train"] = splits["train"].shuffle(seed=seed).select(range(data.max_train_samples))
    if data.max_eval_samples:
        for split in ("validation", "test"):
            if split in splits and data.max_eval_samples < len(splits[split]):
                splits[split] = splits[split].select(random_sample(len(splits[split]), data.max_eval_samples, seed))
    return LabelledSplits(splits=splits, label_names=[], sources=sources)


def prepare_speech_splits(transcribed: LabelledSplits, data: DataArgs, args: SpeechArgs,
                          sampling_rate: int) -> tuple[LabelledSplits, str, dict[str, list[str]]]:
    """Check every clip decodes (see `prepare_audio_splits`), then leave training clips that are too long out."""
    uncapped = dataclasses.replace(args, max_duration_seconds=24 * 3600.0)  # lengths as they are, uncapped
    prepared, column, skipped = prepare_audio_splits(transcribed, data, uncapped, sampling_rate)
    train = prepared.splits["train"]
    max_samples = args.max_duration_seconds * sampling_rate
    keep = [i for i, length in enumerate(train["length"]) if length <= max_samples]
    if not keep:
        raise UsageError(f"{prepared.sources['train']}: every clip is longer than --max_duration_seconds "
                         f"{args.max_duration_seconds:g}")
    if len(keep) < len(train):
        skipped.setdefault("train", []).extend(
            f"{train[i][column]} (longer than {args.max_duration_seconds:g} s)"
            for i in sorted(set(range(len(train))) - set(keep)))
        prepared.splits["train"] = train.select(keep)
    for split, dataset in prepared.splits.items():
        prepared.splits[split] = dataset.add_column("index", list(range(len(dataset))))
    return prepared, column, skipped


def build_processor(train_transcripts: list[str], feature_extractor: SequenceFeatureExtractor) -> Wav2Vec2Processor:
    """A character vocabulary from the training transcripts (space as `|`); saved later with the model."""
    characters = sorted(set("".join(train_transcripts)) - {" "})
    vocab = {PAD: 0, UNK: 1, WORD_DELIMITER: 2, **{c: i + 3 for i, c in enumerate(characters)}}
    with tempfile.TemporaryDirectory() as folder:  # the tokenizer reads its vocabulary from a file, once
        vocab_file = Path(folder) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False))
        # No <s>/</s>: CTC never emits them, and as extra outputs they could only add errors.
        tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file), unk_token=UNK, pad_token=PAD,
                                         word_delimiter_token=WORD_DELIMITER, bos_token=None, eos_token=None)
    return Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def ctc_collator(processor: Wav2Vec2Processor, column: str, args: SpeechArgs, train: bool):
    """Decode (and in training augment) each clip, pad the batch; labels are padded with -100 (ignored by CTC).

    Training examples come from `SeededExamples`: each clip's augmentation draws from its own `augment_seed`.
    `index` travels with the batch so predictions gathered across processes can be matched to their transcripts.
    """
    rate = processor.feature_extractor.sampling_rate
    shift = round(args.time_shift_seconds * rate)

    def collate(examples: list[dict]) -> dict:
        waves = [read_audio(example[column], rate) for example in examples]
        if train:  # room for the whole clip plus its shift: augment() must never crop speech away
            waves = [augment(wave, rate, len(wave) + shift, args, np.random.default_rng(example["augment_seed"]))
                     for wave, example in zip(waves, examples)]
        batch = processor.feature_extractor(waves, sampling_rate=rate, padding="longest", return_tensors="pt")
        ids = processor.tokenizer([example["transcript"] for example in examples]).input_ids
        width = max(map(len, ids))
        labels = torch.full((len(ids), width), -100, dtype=torch.long)
        for row, sequence in enumerate(ids):
            labels[row, :len(sequence)] = torch.tensor(sequence)
        return {**batch, "labels": labels, "index": torch.tensor([example["index"] for example in examples])}

    return collate


def greedy_ids(model, inputs: dict, pad_token_id: int) -> torch.Tensor:
    """Best CTC symbol per frame; frames past a clip's end (never trained: CTC skips them) read as blanks."""
    predicted = model(**inputs).logits.argmax(-1)
    if "attention_mask" in inputs:
        frames = base_model(model)._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1))
        past_end = torch.arange(predicted.shape[1], device=predicted.device)[None, :] >= frames[:, None]
        predicted = predicted.masked_fill(past_end, pad_token_id)
    return predicted


@torch.no_grad()
def transcribe(accelerator, model, loader, processor: Wav2Vec2Processor) -> dict[int, str]:
    """Greedy CTC transcripts of a whole split, gathered from every process, by example index."""
    model.eval()
    found, pad_id = {}, processor.tokenizer.pad_token_id
    for batch in loader:
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "index")}
        # Unwrapped for its frame-length helper; the forward pass is the same module DDP wraps.
        predicted = greedy_ids(accelerator.unwrap_model(model), inputs, pad_id)
        predicted = accelerator.pad_across_processes(predicted, dim=1, pad_index=pad_id)
        predicted, index = accelerator.gather_for_metrics((predicted, batch["index"]))
        found.update(zip(index.tolist(), processor.batch_decode(predicted.cpu())))
    model.train()
    return found


def transcribe_files(model, processor: Wav2Vec2Processor, paths: list[str]) -> list[str]:
    """Greedy CTC transcripts of a batch of audio files, decoded and padded as in evaluation."""
    rate = processor.feature_extractor.sampling_rate
    waves = [load_clip(path, rate) for path in paths]
    inputs = processor.feature_extractor(waves, sampling_rate=rate, padding="longest", return_tensors="pt")
    return processor.batch_decode(greedy_ids(model, dict(inputs.to(model.device)),
                                             processor.tokenizer.pad_token_id).cpu())
