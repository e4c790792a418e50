"""Speech recognition by an encoder-decoder (Whisper): the checkpoint's own tokenizer and decoder write transcripts.

Labels are the normalised transcripts (`transcripts.normalize`: lower case, punctuation dropped), so the model
learns to write what is scored; its zero-shot output (capitals, commas) goes through the same normaliser before
WER and CER are counted. Decoding is greedy (the generation config's defaults, as `pipeline()` uses them).
"""

import numpy as np
import torch
from transformers import AutoProcessor, ProcessorMixin

from hf_transfer.config import ModelArgs, UsageError
from hf_transfer.modalities.audio import augment, load_clip, read_audio
from hf_transfer.modalities.transcripts import SpeechArgs


def load_seq2seq_processor(model_args: ModelArgs, path: str) -> ProcessorMixin:
    """The checkpoint's feature extractor and tokenizer (a Whisper model reads its own vocabulary)."""
    try:
        processor = AutoProcessor.from_pretrained(model_args.tokenizer_name or path, revision=model_args.revision,
                                                  trust_remote_code=model_args.trust_remote_code)
    except (OSError, ValueError) as error:
        raise UsageError(f"could not load a processor (feature extractor + tokenizer) from {path!r}: {error}") from None
    # A tokenizer read from a bare tokenizer.json (the packaged tiny.en) lists only <|endoftext|> as special, so
    # `pipeline()`'s Whisper decoding would print <|notimestamps|> and the like: name every control token special.
    tokenizer = processor.tokenizer
    controls = [token for token in tokenizer.get_added_vocab() if token.startswith("<|") and token.endswith("|>")]
    if set(controls) - set(tokenizer.all_special_tokens):
        tokenizer.add_special_tokens({"additional_special_tokens": controls})
    return processor


def limit_generation(model, processor: ProcessorMixin, transcripts: list[str]) -> None:
    """Stop generation at twice the longest training transcript (in tokens): a model that loops on an input
    (zero-shot Whisper does, on short inputs) would otherwise write up to 448 tokens, slowly. Saved with the
    generation config, so `pipeline()` stops at the same length."""
    longest = max(len(ids) for ids in processor.tokenizer([" " + text for text in transcripts]).input_ids)
    model.generation_config.max_length = min(model.generation_config.max_length or longest, 2 * longest + 4)


def label_ids(processor: ProcessorMixin, transcripts: list[str]) -> torch.Tensor:
    """Token ids to predict, padded with -100 (ignored by the loss). The tokenizer writes the decoder's prompt
    (<|startoftranscript|><|notimestamps|>) before the text and <|endoftext|> after; the model shifts labels
    right and puts the start token back itself, so it is dropped here. The leading space is how Whisper writes a
    first word."""
    tokenizer = processor.tokenizer
    start = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    ids = [sequence[1:] if sequence[0] == start else sequence
           for sequence in tokenizer([" " + text for text in transcripts]).input_ids]
    labels = torch.full((len(ids), max(map(len, ids))), -100, dtype=torch.long)
    for row, sequence in enumerate(ids):
        labels[row, :len(sequence)] = torch.tensor(sequence)
    return labels


def seq2seq_collator(processor: ProcessorMixin, column: str, args: SpeechArgs, train: bool):
    """Decode (and in training augment) each clip into log-mel features padded to the encoder's input length.

    Training examples come from `SeededExamples`: each clip's augmentation draws from its own `augment_seed`."""
    extractor = processor.feature_extractor
    rate, shift = extractor.sampling_rate, round(args.time_shift_seconds * processor.feature_extractor.sampling_rate)

    def collate(examples: list[dict]) -> dict:
        waves = [read_audio(example[column], rate) for example in examples]
        if train:  # room for the whole clip plus its shift: augment() must never crop speech away
            waves = [augment(wave, rate, len(wave) + shift, args, np.random.default_rng(example["augment_seed"]))
                     for wave, example in zip(waves, examples)]
        features = extractor(waves, sampling_rate=rate, return_tensors="pt").input_features
        return {"input_features": features, "labels": label_ids(processor, [e["transcript"] for e in examples]),
                "index": torch.tensor([example["index"] for example in examples])}

    return collate


def seq2seq_loss(model, batch, progress):
    """The model's own token cross-entropy (mean over label tokens)."""
    return model(input_features=batch["input_features"], labels=batch["labels"]).loss


def generate_text(model, processor: ProcessorMixin, features: torch.Tensor,
                  prompt_ids: torch.Tensor | None = None) -> list[str]:
    """Greedy transcripts as the model writes them (spaces at the ends stripped, as `pipeline()` shows them)."""
    extra = {} if prompt_ids is None else {"prompt_ids": prompt_ids.to(features.device)}
    ids = model.generate(input_features=features, num_beams=1, do_sample=False, **extra)
    return [text.strip() for text in processor.batch_decode(ids, skip_special_tokens=True)]


@torch.no_grad()
def transcribe_seq2seq(accelerator, model, loader, processor: ProcessorMixin,
                       prompt_ids: torch.Tensor | None = None) -> dict[int, str]:
    """Greedy transcripts of a whole split, gathered from every process, by example index (not normalised)."""
    model.eval()
    found = {}
    for batch in loader:
        texts = generate_text(accelerator.unwrap_model(model), processor, batch["input_features"], prompt_ids)
        # Strings can't be gathered as tensors: each process keeps the texts of its share, gathered as objects.
        for index, text in zip(accelerator.gather_for_metrics(batch["index"].tolist(), use_gather_object=True),
                               accelerator.gather_for_metrics(texts, use_gather_object=True)):
            found[index] = text
    model.train()
    return found


def transcribe_seq2seq_files(model, processor: ProcessorMixin, paths: list[str]) -> list[str]:
    """Greedy transcripts of a batch of audio files, read as in evaluation."""
    rate = processor.feature_extractor.sampling_rate
    waves = [load_clip(path, rate) for path in paths]
    features = processor.feature_extractor(waves, sampling_rate=rate, return_tensors="pt").input_features
    return generate_text(model, processor, features)
