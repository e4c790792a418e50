"""Text: pick the text column(s), tokenise once up front, pad per batch."""

import math

import torch
from datasets import DatasetDict
from transformers import AutoTokenizer, DataCollatorWithPadding, PreTrainedTokenizerBase

from hf_transfer.config import DataArgs, ModelArgs, UsageError
from hf_transfer.data.splits import LabelledSplits, guess_column

TEXT_COLUMN_GUESSES = ("text", "sentence", "review", "content", "document", "utterance", "question", "sentence1")


def load_tokenizer(model_args: ModelArgs, model_path: str) -> PreTrainedTokenizerBase:
    name = model_args.tokenizer_name or model_path or model_args.config_name
    try:
        return AutoTokenizer.from_pretrained(name, revision=model_args.revision,
                                             trust_remote_code=model_args.trust_remote_code)
    except (OSError, ValueError) as error:
        raise UsageError(f"could not load a tokenizer from {name!r}: {error}") from None


# Model types whose position ids start after the padding index: two fewer positions than the config says.
POSITION_OFFSET_MODEL_TYPES = ("roberta", "xlm-roberta", "camembert", "longformer")


def check_max_seq_length(config, max_seq_length: int, padding_multiple: int | None = None) -> None:
    """Refuse a --max_seq_length the model's absolute position embeddings can't reach (an index error mid-epoch),
    once batches are padded up to a multiple of `padding_multiple` tokens."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None or not getattr(config, "position_biased_input", True):  # DeBERTa: relative positions only
        return
    limit -= 2 if config.model_type in POSITION_OFFSET_MODEL_TYPES else 0
    padded = math.ceil(max_seq_length / padding_multiple) * padding_multiple if padding_multiple else max_seq_length
    if padded > limit:
        usable = limit - limit % padding_multiple if padding_multiple else limit
        padding = (f" (batches padded to a multiple of {padding_multiple} tokens: {padded})"
                   if padded > max_seq_length else "")
        raise UsageError(f"--max_seq_length {max_seq_length}{padding} is beyond this {config.model_type} model's "
                         f"{limit} positions; use --max_seq_length {usable} or less")


def text_columns(labelled: LabelledSplits, data: DataArgs) -> tuple[str, str | None]:
    columns = labelled.columns("train")
    source = labelled.sources["train"]
    text = guess_column(columns, data.text_column, TEXT_COLUMN_GUESSES, "text", source)
    pair = guess_column(columns, data.text_pair_column, (), "text pair", source) if data.text_pair_column else None
    for split in labelled.splits:
        for column in filter(None, (text, pair)):
            if column == labelled.label_column:
                raise UsageError(f"{labelled.sources[split]}: {column!r} is the label column; name the text column "
                                 f"with --text_column (columns are {', '.join(labelled.columns(split))})")
            if column not in labelled.columns(split):
                raise UsageError(f"{labelled.sources[split]}: no text column {column!r}; "
                                 f"columns are {', '.join(labelled.columns(split))}")
    return text, pair


def tokenize_splits(labelled: LabelledSplits, data: DataArgs, tokenizer: PreTrainedTokenizerBase) -> DatasetDict:
    """Tokenise every split once (no padding: batches pad to their own longest example)."""
    text, pair = text_columns(labelled, data)

    def tokenize(batch, indices, split):
        for column in filter(None, (text, pair)):
            for index, value in zip(indices, batch[column]):
                if not isinstance(value, str):
                    raise UsageError(f"{labelled.row_name(split, index)}: column {column!r} holds {value!r}, "
                                     "not text")
        encoded = tokenizer(batch[text], batch[pair] if pair else None, truncation=True,
                            max_length=data.max_seq_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    tokenized = DatasetDict()
    for split, dataset in labelled.splits.items():
        tokenized[split] = dataset.map(
            tokenize, batched=True, with_indices=True, fn_kwargs={"split": split},
            remove_columns=[c for c in dataset.column_names if c != "labels"], desc=f"Tokenising {split}",
        )
    return tokenized


def text_collator(tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None):
    """Pad to the batch's longest example; drop the `length` the sampler used and the `augment_seed` that
    `SeededExamples` adds (text has no augmentation)."""
    pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def collate(features):
        return pad([{k: v for k, v in f.items() if k not in ("length", "augment_seed")} for f in features])

    return collate


def text_logits(model, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int,
                pairs: list[str] | None = None) -> torch.Tensor:
    """The model's logits for a batch of texts (or text pairs), tokenised as in training."""
    batch = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return model(**batch.to(model.device)).logits
