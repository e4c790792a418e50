"""Speech recognition (CTC): teach a speech checkpoint (Wav2Vec2 and relatives) to transcribe your recordings.

    accelerate launch recipes/speech_recognition.py --config recipes/configs/speech_recognition.yaml
    hf-transfer train speech_recognition --config recipes/configs/speech_recognition_fsdd.yaml

Data: a Hub id, or a CSV/JSON of audio file paths + transcripts (relative paths are read from the file's folder).
The character vocabulary is built from the training transcripts and saved with the model as a processor.
In a notebook: `from hf_transfer.recipes import speech_recognition; speech_recognition.main({...})`.
Phases, in order: setup (data, vocabulary, model, strategy, optimizer) -> train -> finish (test, report, card) -> cleanup.
"""

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from hf_transfer import outputs
from hf_transfer.cli import run_from_command_line
from hf_transfer.config import RunConfig, parse
from hf_transfer.loop import Loop
from hf_transfer.metrics import transcription_metrics
from hf_transfer.modalities.audio import (
    describe_augmentation,
    freeze_feature_encoder,
    load_feature_extractor,
    set_spec_augment,
)
from hf_transfer.modalities.transcripts import (
    SpeechArgs,
    build_processor,
    ctc_collator,
    load_transcribed_splits,
    prepare_speech_splits,
    transcribe,
)
from hf_transfer.models import build_model, load_config, model_path
from hf_transfer.precision import choose_mixed_precision
from hf_transfer.sampling import GroupedShuffleSampler
from hf_transfer.strategies import apply_strategy, build_optimizer, count_parameters
from hf_transfer.tasks import TASKS

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
    "metric_for_best_model": "cer",
    "output_dir": "outputs/speech_recognition",
}


def ctc_loss(model, batch):
    """The model's own CTC loss (mean over target lengths, set in the config)."""
    return model(**{k: v for k, v in batch.items() if k != "index"}).loss


class SpeechRecognitionRecipe:
    def __init__(self, run: RunConfig):
        self.run = run
        run.train.mixed_precision = choose_mixed_precision(run.train.mixed_precision)  # saved as chosen
        self.accelerator = Accelerator(
            mixed_precision=run.train.mixed_precision,
            gradient_accumulation_steps=run.train.gradient_accumulation_steps,
            log_with=None if run.train.report_to == "none" else run.train.report_to,
            project_dir=run.train.output_dir,
            # LayerDrop skips whole layers at random, so DDP must expect weights without a gradient in a step.
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )

    def setup(self) -> None:
        run, accelerator, speech = self.run, self.accelerator, self.run.modality
        set_seed(run.train.seed)
        with accelerator.main_process_first():
            feature_extractor = load_feature_extractor(run.model, model_path(run.model))
            self.rate = feature_extractor.sampling_rate
            self.data = load_transcribed_splits(run.data, speech, run.train.seed)
            self.data, column, self.skipped = prepare_speech_splits(self.data, run.data, speech, self.rate)
        for split, files in self.skipped.items():
            accelerator.print(f"left out {len(files)} clip(s) of the {split} split: " + "; ".join(files[:5])
                              + (" ..." if len(files) > 5 else ""))
        self.processor = build_processor(self.data.splits["train"]["transcript"], feature_extractor)
        tokenizer = self.processor.tokenizer
        characters = "".join(c for c in tokenizer.get_vocab() if c not in tokenizer.all_special_tokens)
        accelerator.print(f"vocabulary: {len(tokenizer)} symbols, with blank and unknown ({characters})")

        config = load_config(run.model, run.train.dropout, vocab_size=len(tokenizer),
                             pad_token_id=tokenizer.pad_token_id, ctc_loss_reduction="mean", ctc_zero_infinity=True)
        model = build_model(run.model, TASK, config)
        set_spec_augment(model, speech, self.rate)
        self.model = apply_strategy(model, run.strategy, TASK.peft_task_type)
        if speech.freeze_feature_encoder:
            freeze_feature_encoder(model)  # after the strategy: `full` makes every weight trainable
        self.trainable, self.total = count_parameters(self.model)
        accelerator.print(f"{run.strategy.strategy}: training {self.trainable:,} of {self.total:,} parameters "
                          f"({100 * self.trainable / self.total:.2f}%)")

        seed = run.train.seed + accelerator.process_index  # each process draws its own augmentations
        train = self.data.splits["train"]
        sampler = GroupedShuffleSampler(train["length"] if run.train.length_grouping else None,
                                        run.train.per_device_train_batch_size, run.train.seed, len(train))
        train_loader = DataLoader(train, batch_size=run.train.per_device_train_batch_size, sampler=sampler,
                                  collate_fn=ctc_collator(self.processor, column, speech, True, seed),
                                  pin_memory=accelerator.device.type == "cuda",
                                  generator=torch.Generator().manual_seed(run.train.seed))
        eval_collate = ctc_collator(self.processor, column, speech, False, seed)
        self.eval_loaders = {
            split: accelerator.prepare(DataLoader(self.data.splits[split],
                                                  batch_size=run.train.per_device_eval_batch_size,
                                                  collate_fn=eval_collate))
            for split in ("validation", "test") if split in self.data.splits
        }
        self.loop = Loop(
            accelerator, self.model, build_optimizer(self.model, run.strategy, run.train, accelerator.device),
            train_loader, ctc_loss, lambda model: self.score("validation", self.transcribe("validation", model)),
            run.train, run.train.output_dir,
        )
        if run.train.report_to != "none":
            accelerator.init_trackers("hf_transfer", config=run.to_dict())

    def transcribe(self, split: str, model) -> dict[int, str]:
        return transcribe(self.accelerator, model, self.eval_loaders[split], self.processor)

    def score(self, split: str, predicted: dict[int, str]) -> dict[str, float]:
        references = self.data.splits[split]["transcript"]
        return transcription_metrics([predicted[i] for i in range(len(references))], references)

    def train(self) -> None:
        self.state = self.loop.fit()

    def details(self) -> dict[str, str]:
        """The modality's settings, for the report and the card."""
        speech = self.run.modality
        details = {
            "sampling rate": f"{self.rate:,} Hz (every clip is resampled to it, channels averaged to mono)",
            "max duration": f"{speech.max_duration_seconds:g} s (longer training clips left out, never cropped)",
            "training augmentation": describe_augmentation(speech),
            "feature encoder": "frozen" if speech.freeze_feature_encoder else "trained",
            "vocabulary": f"{len(self.processor.tokenizer)} symbols from the training transcripts"
                          f"{', lower-cased' if speech.lowercase else ''}"
                          f"{', punctuation removed' if speech.strip_punctuation else ''}",
        }
        if self.skipped:
            details["clips left out"] = ", ".join(f"{len(files)} in {split}" for split, files in self.skipped.items())
        return details

    def finish(self) -> dict:
        """Transcribe validation and test with the best model, then write model, report and card."""
        transcripts = {split: self.transcribe(split, self.loop.model) for split in self.eval_loaders}
        return outputs.write_transcription_outputs(
            self.accelerator, self.loop.model, self.processor, self.run, TASK, self.data, transcripts, self.state,
            parameter_counts=(self.trainable, self.total), extra_details=self.details(),
        )

    def cleanup(self) -> None:
        self.accelerator.end_training()


def main(config: dict | str | None = None, argv: list[str] | None = None) -> dict:
    """Run the recipe; returns what `all_results.json` holds. `config` is a dict or a YAML path."""
    if argv is None and config is not None:
        argv = []  # in a notebook, sys.argv holds the kernel's flags, not ours
    run = parse(argv, config, DEFAULTS, task=TASK.name, modality=MODALITY)
    recipe = SpeechRecognitionRecipe(run)
    recipe.setup()
    recipe.train()
    results = recipe.finish()
    recipe.cleanup()
    return results


if __name__ == "__main__":
    run_from_command_line(main)
