"""Audio classification: adapt a speech checkpoint (Wav2Vec2, HuBERT, WavLM) to your labelled clips.

    accelerate launch recipes/audio_classification.py --config recipes/configs/audio_classification.yaml
    hf-transfer train audio_classification --config recipes/configs/audio_classification_fsdd.yaml

Data: a Hub id with an audio column, a class-folder layout (`--train_dir DIR` with DIR/<class>/*.wav|flac|mp3|ogg),
or a CSV of file paths + labels (relative paths are read from the CSV's folder). Every clip is decoded once before
training; a file that fails stops the run with its name, or is left out with `--bad_audio skip`.
In a notebook: `from hf_transfer.recipes import audio_classification; audio_classification.main({...})`.
Phases, in order: setup (data, model, strategy, optimizer) -> train -> finish (test, report, card) -> cleanup.
"""

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from hf_transfer import outputs
from hf_transfer.cli import run_from_command_line
from hf_transfer.config import RunConfig, parse
from hf_transfer.data import load_labelled_splits
from hf_transfer.loop import Loop, auto_class_weights, classification_loss, predict
from hf_transfer.metrics import classification_metrics
from hf_transfer.modalities.audio import (
    AUDIO_LAYOUT,
    AudioArgs,
    audio_collator,
    describe_augmentation,
    freeze_feature_encoder,
    load_feature_extractor,
    prepare_audio_splits,
    set_spec_augment,
)
from hf_transfer.models import load_model, model_path
from hf_transfer.precision import choose_mixed_precision
from hf_transfer.sampling import GroupedShuffleSampler
from hf_transfer.strategies import apply_strategy, build_optimizer, count_parameters
from hf_transfer.tasks import TASKS

TASK = TASKS["audio-classification"]
MODALITY = AudioArgs
# The real thing for users with the Hub; every value can be overridden by a config file or a flag.
DEFAULTS = {
    "model_name_or_path": "facebook/wav2vec2-base",
    "dataset_name": "google/speech_commands",
    "dataset_config_name": "v0.02",
    "strategy": "lora",
    "learning_rate": 5e-4,  # LoRA wants ~10x the full fine-tuning rate
    "num_train_epochs": 3,
    "output_dir": "outputs/audio_classification",
}


class AudioClassificationRecipe:
    def __init__(self, run: RunConfig):
        self.run = run
        run.train.mixed_precision = choose_mixed_precision(run.train.mixed_precision)  # saved as chosen
        self.accelerator = Accelerator(
            mixed_precision=run.train.mixed_precision,
            gradient_accumulation_steps=run.train.gradient_accumulation_steps,
            log_with=None if run.train.report_to == "none" else run.train.report_to,
            project_dir=run.train.output_dir,
            # Under DDP some trainable weights get no gradient in a step: LayerDrop skips whole layers at random,
            # and the SpecAugment mask embedding is unused while masking is off. Letting DDP look for them keeps
            # LayerDrop's regularisation (setting layerdrop=0 would drop it and still leave the mask embedding).
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )

    def setup(self) -> None:
        run, accelerator, audio = self.run, self.accelerator, self.run.modality
        set_seed(run.train.seed)
        with accelerator.main_process_first():
            self.data = load_labelled_splits(run.data, run.train.seed, layout=AUDIO_LAYOUT)
            self.feature_extractor = load_feature_extractor(run.model, model_path(run.model))
            self.rate = self.feature_extractor.sampling_rate
            self.data, column, self.skipped = prepare_audio_splits(self.data, run.data, audio, self.rate)
        for split, files in self.skipped.items():
            accelerator.print(f"--bad_audio skip: left out {len(files)} audio file(s) of the {split} split: "
                              + "; ".join(files))

        model = load_model(run.model, TASK, self.data.label_names, run.train.dropout)
        set_spec_augment(model, audio, self.rate)
        self.model = apply_strategy(model, run.strategy, TASK.peft_task_type)
        if audio.freeze_feature_encoder:
            freeze_feature_encoder(model)  # after the strategy: `full` makes every weight trainable
        self.trainable, self.total = count_parameters(self.model)
        accelerator.print(f"{run.strategy.strategy}: training {self.trainable:,} of {self.total:,} parameters "
                          f"({100 * self.trainable / self.total:.2f}%)")

        # Each process augments its own clips: a different seed each, or they would share their random draws.
        seed = run.train.seed + accelerator.process_index
        train = self.data.splits["train"]
        sampler = GroupedShuffleSampler(train["length"] if run.train.length_grouping else None,
                                        run.train.per_device_train_batch_size, run.train.seed, len(train))
        train_loader = DataLoader(train, batch_size=run.train.per_device_train_batch_size, sampler=sampler,
                                  collate_fn=audio_collator(self.feature_extractor, column, audio, True, seed),
                                  pin_memory=accelerator.device.type == "cuda",
                                  generator=torch.Generator().manual_seed(run.train.seed))
        eval_collate = audio_collator(self.feature_extractor, column, audio, False, seed)
        self.eval_loaders = {
            split: accelerator.prepare(DataLoader(self.data.splits[split],
                                                  batch_size=run.train.per_device_eval_batch_size,
                                                  collate_fn=eval_collate))
            for split in ("validation", "test") if split in self.data.splits
        }
        class_weights = (auto_class_weights(train["labels"], len(self.data.label_names))
                         if run.train.class_weights == "auto" else None)
        self.loop = Loop(
            accelerator, self.model, build_optimizer(self.model, run.strategy, run.train, accelerator.device),
            train_loader, classification_loss(class_weights, run.train.label_smoothing),
            lambda model: classification_metrics(*predict(accelerator, model, self.eval_loaders["validation"])),
            run.train, run.train.output_dir,
        )
        if run.train.report_to != "none":
            accelerator.init_trackers("hf_transfer", config=run.to_dict())

    def train(self) -> None:
        self.state = self.loop.fit()

    def details(self) -> dict[str, str]:
        """The modality's settings, for the report and the card."""
        audio = self.run.modality
        details = {
            "sampling rate": f"{self.rate:,} Hz (every clip is resampled to it, channels averaged to mono)",
            "max duration": f"{audio.max_duration_seconds:g} s (longer clips cropped: at random in training, "
                            "centred in evaluation)",
            "training augmentation": describe_augmentation(audio),
            "feature encoder": "frozen" if audio.freeze_feature_encoder else "trained",
        }
        if self.skipped:
            details["unreadable audio left out"] = ", ".join(f"{len(files)} in {split}"
                                                            for split, files in self.skipped.items())
        return details

    def finish(self) -> dict:
        """Score the best model on validation and test, then write model, report and card."""
        predictions = {split: predict(self.accelerator, self.loop.model, loader)
                       for split, loader in self.eval_loaders.items()}
        return outputs.write_outputs(
            self.accelerator, self.loop.model, self.feature_extractor, self.run, TASK, self.data, predictions,
            self.state, parameter_counts=(self.trainable, self.total), extra_details=self.details(),
        )

    def cleanup(self) -> None:
        self.accelerator.end_training()


def main(config: dict | str | None = None, argv: list[str] | None = None) -> dict:
    """Run the recipe; returns what `all_results.json` holds. `config` is a dict or a YAML path."""
    if argv is None and config is not None:
        argv = []  # in a notebook, sys.argv holds the kernel's flags, not ours
    run = parse(argv, config, DEFAULTS, task=TASK.name, modality=MODALITY)
    recipe = AudioClassificationRecipe(run)
    recipe.setup()
    recipe.train()
    results = recipe.finish()
    recipe.cleanup()
    return results


if __name__ == "__main__":
    run_from_command_line(main)
