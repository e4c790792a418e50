"""The task registry: per task, the Auto class, the processor, what the model reads and how it predicts.

Architecture knowledge (backbone, blocks, heads, LoRA targets) is in `hf_transfer.models.architectures`.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import (
    AutoModelForAudioClassification,
    AutoModelForCTC,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoModelForSpeechSeq2Seq,
    PretrainedConfig,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
)

from hf_transfer.data.splits import FolderLayout
from hf_transfer.modalities.audio import AUDIO_COLUMN_GUESSES, AUDIO_LAYOUT, audio_logits
from hf_transfer.modalities.image import IMAGE_COLUMN_GUESSES, IMAGE_LAYOUT, image_logits, window_of
from hf_transfer.modalities.seq2seq import transcribe_seq2seq_files
from hf_transfer.modalities.text import TEXT_COLUMN_GUESSES, text_logits
from hf_transfer.modalities.transcripts import transcribe_files
from hf_transfer.models.architectures import is_encoder_decoder

# (model, processor, run settings) -> a function from a batch of inputs (and their text pairs, or None) to logits,
# preprocessed as the run evaluated.
LogitsFunction = Callable[[object, object, dict], Callable[[list[str], list[str] | None], torch.Tensor]]


def _text_logits(model, tokenizer, settings: dict):
    return lambda texts, pairs: text_logits(model, tokenizer, texts, settings["max_seq_length"], pairs)


def _image_logits(model, processor, settings: dict):
    window = window_of(settings.get("window_center"), settings.get("window_width"))
    return lambda paths, _: image_logits(model, processor, paths, window)


def _audio_logits(model, feature_extractor, settings: dict):
    return lambda paths, _: audio_logits(model, feature_extractor, paths, settings["max_duration_seconds"])


@dataclass(frozen=True)
class Task:
    name: str
    auto_model: type
    processor_class: str  # the Auto class users load the preprocessing with
    modality: str  # how cards name the inputs
    input_kind: str  # "text", "image" or "audio": the key of each prediction, and the --KIND_column setting
    column_guesses: tuple[str, ...]  # the input column's usual names
    peft_task_type: str | None = None  # peft's wrapper for the task, where it has one
    layout: FolderLayout | None = None  # class folders (`evaluate --test_dir`), for classifiers of files
    logits: LogitsFunction | None = None  # classifiers: how `predict` gets a batch's logits
    transcribe: Callable | None = None  # speech recognition: (model, processor, paths) -> transcripts

    @property
    def pipeline_tag(self) -> str:
        return self.name

    @property
    def reads_files(self) -> bool:
        return self.input_kind != "text"


TASKS = {
    "text-classification": Task("text-classification", AutoModelForSequenceClassification, "AutoTokenizer", "text",
                                "text", TEXT_COLUMN_GUESSES, "SEQ_CLS", logits=_text_logits),
    "image-classification": Task("image-classification", AutoModelForImageClassification, "AutoImageProcessor",
                                 "images", "image", IMAGE_COLUMN_GUESSES, layout=IMAGE_LAYOUT, logits=_image_logits),
    "audio-classification": Task("audio-classification", AutoModelForAudioClassification, "AutoFeatureExtractor",
                                 "audio clips", "audio", AUDIO_COLUMN_GUESSES, layout=AUDIO_LAYOUT,
                                 logits=_audio_logits),
    "automatic-speech-recognition": Task("automatic-speech-recognition", AutoModelForCTC, "AutoProcessor", "speech",
                                         "audio", AUDIO_COLUMN_GUESSES, transcribe=transcribe_files),
}
# The same task done by an encoder-decoder (Whisper): its decoder writes the transcript with its own vocabulary.
SPEECH_SEQ2SEQ = Task("automatic-speech-recognition", AutoModelForSpeechSeq2Seq, "AutoProcessor", "speech", "audio",
                      AUDIO_COLUMN_GUESSES, transcribe=transcribe_seq2seq_files)


def task_for(name: str, config) -> Task:
    """The task's entry, or its sequence-to-sequence form when `config` is an encoder-decoder speech model."""
    if name == "automatic-speech-recognition" and is_encoder_decoder(config):
        return SPEECH_SEQ2SEQ
    return TASKS[name]


# The classification task an architecture serves, in the order asked: an image or audio model type is never text.
CLASSIFICATION_MODEL_TYPES = (
    ("image-classification", MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES),
    ("audio-classification", MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES),
    ("text-classification", MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES),
)


def classification_task(config: PretrainedConfig) -> str | None:
    """`text-classification`, `image-classification` or `audio-classification` for the config's model type."""
    return next((task for task, model_types in CLASSIFICATION_MODEL_TYPES if config.model_type in model_types), None)
