"""Speech recognition: teach a speech checkpoint to transcribe your recordings.

    accelerate launch recipes/speech_recognition.py --config recipes/configs/speech_recognition.yaml
    hf-transfer train speech_recognition --config recipes/configs/speech_recognition_fsdd.yaml
    hf-transfer train speech_recognition --config recipes/configs/speech_recognition_fsdd_whisper.yaml

Data: a Hub id, or a CSV/JSON of audio file paths + transcripts (relative paths are read from the file's folder).
The model decides the mode:
- an encoder-decoder (Whisper) writes transcripts with its own tokenizer and decoder, decoded greedily; its
  zero-shot error rates on the test split are measured before training and reported beside the fine-tuned ones;
- an encoder (Wav2Vec2 and relatives) gets a CTC head over a character vocabulary built from the training
  transcripts, saved with the model as a processor.
Transcripts, references and predictions alike, go through one normaliser (`--lowercase`, `--strip_punctuation`).
In a notebook: `from hf_transfer.recipes import speech_recognition; speech_recognition.main({...})`.
Phases, in order (`Recipe.run_phases`): setup (data, vocabulary, model, strategy, optimizer) -> train -> finish
(test, report, card) -> cleanup. What every recipe shares is in hf_transfer/recipe.py; this file holds what is
speech recognition's own.
"""

import torch
from torch.utils.data import DataLoader

from hf_transfer import outputs
from hf_transfer.config import UsageError
from hf_transfer.data.sampling import EpochKeys, GroupedShuffleSampler, SeededExamples
from hf_transfer.metrics import transcription_metric_names, transcription_metrics
from hf_transfer.modalities.audio import (
    describe_augmentation,
    freeze_feature_encoder,
    load_feature_extractor,
    set_spec_augment,
)
from hf_transfer.modalities.seq2seq import (
    limit_generation,
    load_seq2seq_processor,
    seq2seq_collator,
    seq2seq_loss,
    transcribe_seq2seq,
)
from hf_transfer.modalities.transcripts import (
    SpeechArgs,
    build_processor,
    ctc_collator,
    load_transcribed_splits,
    normalize,
    prepare_speech_splits,
    transcribe,
)
from hf_transfer.modalities.whisper_inputs import fit_whisper_window
from hf_transfer.models.architectures import base_model
from hf_transfer.models.loading import build_model, load_config, model_path
from hf_transfer.recipe import Recipe, run_from_command_line
from hf_transfer.tasks import SPEECH_SEQ2SEQ, TASKS, task_for
from hf_transfer.training.loop import dataloader_workers
from hf_transfer.training.run_folder import claim_output_dir

TASK = TASKS["automatic-speech-recognition"]
MODALITY = SpeechArgs
# The real thing for users with the Hub; every value can be overridden by a config file or a flag.
DEFAULTS = {
    "model_name_or_path": "facebook/wav2vec2-base",
    "dataset_name": "openslr/librispeech_asr",
    "dataset_config_name": "clean",
    "strategy": "full",
    "learning_rate": 1e-4,
    "num_train_epochs": 10,
    "warmup_ratio": 0.06,
    "layerwise_lr_decay": 1.0,
    "metric_for_best_model": "cer",
    "output_dir": "outputs/speech_recognition",
}


def ctc_loss(model, batch, progress):
    """The model's own CTC loss (mean over target lengths, set in the config)."""
    return model(**{k: v for k, v in batch.items() if k != "index"}).loss


class SpeechRecognitionRecipe(Recipe):
    name = "speech_recognition"
    task = TASK
    modality = MODALITY
    find_unused_parameters = True  # LayerDrop skips whole layers at random

    def setup(self) -> None:
        run, accelerator, speech = self.run, self.accelerator, self.run.modality
        config = load_config(run.model, run.train.dropout)
        self.task = task_for(TASK.name, config)
        self.seq2seq = self.task is SPEECH_SEQ2SEQ
        with accelerator.main_process_first():
            if self.seq2seq:
                self.processor = load_seq2seq_processor(run.model, model_path(run.model))
                feature_extractor = self.processor.feature_extractor
            else:
                feature_extractor = load_feature_extractor(run.model, model_path(run.model))
            self.rate = feature_extractor.sampling_rate
            self.data = load_transcribed_splits(run.data, speech, run.train.seed)
            self.data, column, self.skipped = prepare_speech_splits(self.data, run.data, speech, self.rate)
        claim_output_dir(accelerator, run, self.data, self.name)
        for split, files in self.skipped.items():
            accelerator.print(f"left out {len(files)} clip(s) of the {split} split: " + "; ".join(files[:5])
                              + (" ..." if len(files) > 5 else ""))
        if self.seq2seq:
            if speech.spec_augment:
                raise UsageError("--spec_augment applies to CTC models (Wav2Vec2 and relatives), not to "
                                 f"{config.model_type!r}")
            model = build_model(run.model, self.task.auto_model, config)
            # Short inputs (on by default): the encoder reads --max_duration_seconds, not 30 s.
            fit_whisper_window(base_model(model), self.processor.feature_extractor, speech.max_duration_seconds,
                               speech.short_inputs)
            limit_generation(model, self.processor, self.data.splits["train"]["transcript"])
            make_collator, loss = seq2seq_collator, seq2seq_loss
        else:
            self.processor = build_processor(self.data.splits["train"]["transcript"], feature_extractor)
            tokenizer = self.processor.tokenizer
            characters = "".join(c for c in tokenizer.get_vocab() if c not in tokenizer.all_special_tokens)
            accelerator.print(f"vocabulary: {len(tokenizer)} symbols, with blank and unknown ({characters})")
            config = load_config(run.model, run.train.dropout, vocab_size=len(tokenizer),
                                 pad_token_id=tokenizer.pad_token_id, ctc_loss_reduction="mean",
                                 ctc_zero_infinity=True)
            model = build_model(run.model, self.task.auto_model, config)
            set_spec_augment(model, speech, self.rate)
            make_collator, loss = ctc_collator, ctc_loss
        self.apply_strategy(model)
        if speech.freeze_feature_encoder and not self.seq2seq:
            freeze_feature_encoder(model)  # after the strategy: `full` makes every weight trainable
        self.count_trainable()

        train = self.data.splits["train"]
        sampler = GroupedShuffleSampler(train["length"] if run.train.length_grouping else None,
                                        run.train.per_device_train_batch_size, run.train.seed, len(train))
        workers = dataloader_workers(run.train)
        train_loader = DataLoader(SeededExamples(train, run.train.seed), sampler=EpochKeys(sampler),
                                  batch_size=run.train.per_device_train_batch_size, num_workers=workers,
                                  collate_fn=make_collator(self.processor, column, speech, True),
                                  pin_memory=accelerator.device.type == "cuda",
                                  generator=torch.Generator().manual_seed(run.train.seed))
        self.eval_loaders = self.evaluation_loaders(self.data.splits, make_collator(self.processor, column, speech,
                                                                                   False), workers)
        self.start_loop(self.model, train_loader, loss,
                        lambda model: self.score("validation", self.transcribe("validation", model)),
                        transcription_metric_names())

    def transcribe(self, split: str, model) -> dict[int, str]:
        """{index: transcript}, normalised as the references are."""
        if self.seq2seq:
            found = transcribe_seq2seq(self.accelerator, model, self.eval_loaders[split], self.processor)
        else:
            found = transcribe(self.accelerator, model, self.eval_loaders[split], self.processor)
        return {index: normalize(text, self.run.modality) for index, text in found.items()}

    def score(self, split: str, predicted: dict[int, str]) -> dict[str, float]:
        references = self.data.splits[split]["transcript"]
        return transcription_metrics([predicted[i] for i in range(len(references))], references)

    def train(self) -> None:
        # What the checkpoint does before any training: the number fine-tuning has to beat.
        self.zero_shot = {}
        if self.seq2seq:
            split = "test" if "test" in self.eval_loaders else "validation"
            prefix = outputs.PREFIX[split]
            self.zero_shot = {f"zero_shot_{prefix}_{metric}": value
                              for metric, value in self.score(split, self.transcribe(split, self.loop.model)).items()}
            self.accelerator.print("zero-shot: " + ", ".join(f"{k} {v:.4f}" for k, v in self.zero_shot.items()))
        self.state = self.loop.fit()

    def details(self) -> dict[str, str]:
        """The modality's settings, for the report and the card."""
        speech = self.run.modality
        normaliser = ", ".join(["Unicode NFC"] + (["lower-cased"] if speech.lowercase else [])
                               + (["punctuation removed"] if speech.strip_punctuation else []) + ["spaces collapsed"])
        details = {
            "sampling rate": f"{self.rate:,} Hz (every clip is resampled to it, channels averaged to mono)",
            "max duration": f"{speech.max_duration_seconds:g} s (longer training clips left out, never cropped)",
            "training augmentation": describe_augmentation(speech),
            "normaliser": f"{normaliser}; applied to training transcripts, references and predictions alike",
        }
        if self.seq2seq:
            details["decoding"] = (f"greedy generation with the checkpoint's own tokenizer, at most "
                                   f"{self.model.generation_config.max_length} tokens")
            details["encoder input"] = f"{self.processor.feature_extractor.chunk_length:g} s (longer clips are cut)"
        else:
            details["decoding"] = "greedy CTC, no language model"
            details["feature encoder"] = "frozen" if speech.freeze_feature_encoder else "trained"
            details["vocabulary"] = f"{len(self.processor.tokenizer)} symbols from the training transcripts"
        if self.skipped:
            details["clips left out"] = ", ".join(f"{len(files)} in {split}" for split, files in self.skipped.items())
        return details

    def finish(self) -> dict:
        """Transcribe validation and test with the best model, then write model, report and card."""
        transcripts = {split: self.transcribe(split, self.loop.model) for split in self.eval_loaders}
        return outputs.write_transcription_outputs(
            self.accelerator, self.loop.model, self.processor, self.run, self.task, self.data, transcripts,
            self.state, parameter_counts=(self.trainable, self.total), extra_details=self.details(),
            extra_results=self.zero_shot,
        )

def main(config: dict | str | None = None, argv: list[str] | None = None) -> dict:
    """Run the recipe; returns what `all_results.json` holds. `config` is a dict or a YAML path."""
    return SpeechRecognitionRecipe.main(config, argv, DEFAULTS)


if __name__ == "__main__":
    run_from_command_line(main)
