"""Audio classification: adapt a speech checkpoint (Wav2Vec2, HuBERT, WavLM, Whisper's encoder) to your clips.

    accelerate launch recipes/audio_classification.py --config recipes/configs/audio_classification.yaml
    hf-transfer train audio_classification --config recipes/configs/audio_classification_fsdd.yaml

Data: a Hub id with an audio column, a class-folder layout (`--train_dir DIR` with DIR/<class>/*.wav|flac|mp3|ogg),
or a CSV of file paths + labels (relative paths are read from the CSV's folder). Every clip is decoded once before
training; a file that fails stops the run with its name, or is left out with `--bad_audio skip`.
In a notebook: `from hf_transfer.recipes import audio_classification; audio_classification.main({...})`.
Phases, in order: setup (data, model, strategy, optimizer) -> train -> finish (test, report, card) -> cleanup.
"""

from accelerate import DistributedDataParallelKwargs
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from hf_transfer import outputs
from hf_transfer.cli import run_from_command_line
from hf_transfer.config import RunConfig, parse
from hf_transfer.console import library_output
from hf_transfer.data import load_labelled_splits
from hf_transfer.features import PATH_TEXT, training_inputs
from hf_transfer.loop import (
    Loop,
    auto_class_weights,
    check_metric_for_best_model,
    classification_loss,
    dataloader_workers,
    new_accelerator,
    predict,
)
from hf_transfer.metrics import classification_metric_names, classification_metrics
from hf_transfer.metrics.operating_point import check_decision_settings
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
from hf_transfer.modalities.whisper_inputs import fit_whisper_window, is_whisper
from hf_transfer.models import load_model, model_path
from hf_transfer.run_folder import claim_output_dir
from hf_transfer.sampling import LengthSortedSampler
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
        self.accelerator = new_accelerator(
            run.train, run.train.output_dir,
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
            check_decision_settings(run.evaluation, self.data.label_names)
            self.feature_extractor = load_feature_extractor(run.model, model_path(run.model))
            self.rate = self.feature_extractor.sampling_rate
            self.data, column, self.skipped = prepare_audio_splits(self.data, run.data, audio, self.rate)
        claim_output_dir(accelerator, run, self.data)
        for split, files in self.skipped.items():
            accelerator.print(f"--bad_audio skip: left out {len(files)} audio file(s) of the {split} split: "
                              + "; ".join(files))

        model = load_model(run.model, TASK, self.data.label_names, run.train.dropout)
        self.whisper_window = (fit_whisper_window(model, self.feature_extractor, audio.max_duration_seconds,
                                                  audio.short_inputs) if is_whisper(model.config) else None)
        set_spec_augment(model, audio, self.rate)
        self.model = apply_strategy(model, run.strategy, TASK.peft_task_type)
        if audio.freeze_feature_encoder:
            freeze_feature_encoder(model)  # after the strategy: `full` makes every weight trainable
        self.trainable, self.total = count_parameters(self.model)
        accelerator.print(f"{run.strategy.strategy}: training {self.trainable:,} of {self.total:,} parameters "
                          f"({100 * self.trainable / self.total:.2f}%)")

        workers = dataloader_workers(run.train)
        eval_collate = audio_collator(self.feature_extractor, column, audio, False)
        # In order (longest first: little padding) and preprocessed as in evaluation: for scoring, and for
        # computing cached features.
        plain_loaders = {split: DataLoader(self.data.splits[split], batch_size=run.train.per_device_eval_batch_size,
                                           sampler=LengthSortedSampler(self.data.splits[split]["length"]),
                                           collate_fn=eval_collate, num_workers=workers)
                         for split in ("train", "validation", "test") if split in self.data.splits}
        self.eval_loaders = {split: accelerator.prepare(loader) for split, loader in plain_loaders.items()
                             if split != "train"}
        random_inputs = bool(audio.gain_db or audio.time_shift_seconds or audio.noise_snr_db or audio.spec_augment)
        clips = self.data.splits["train"]
        inputs = training_inputs(accelerator, self.model, run.strategy, run.train, random_inputs, plain_loaders,
                                 self.eval_loaders["validation"], clips,
                                 clips["length"] if run.train.length_grouping else None,
                                 audio_collator(self.feature_extractor, column, audio, True), workers)
        self.cached_features = inputs.cached
        class_weights = (auto_class_weights(self.data.splits["train"]["labels"], len(self.data.label_names))
                         if run.train.class_weights == "auto" else None)
        check_metric_for_best_model(run.train.metric_for_best_model, classification_metric_names(self.data))
        self.loop = Loop(
            accelerator, inputs.model, build_optimizer(self.model, run.strategy, run.train, accelerator.device),
            inputs.train_loader, classification_loss(class_weights, run.train.label_smoothing),
            lambda model: classification_metrics(*predict(accelerator, model, inputs.evaluation_loader)),
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
        if self.whisper_window is not None:
            details["Whisper input window"] = (f"{self.whisper_window} s (every clip padded to it; the pretrained "
                                               "window is 30 s)")
        if self.run.strategy.strategy == "feature_extraction":
            details["feature extraction"] = PATH_TEXT[self.cached_features]
        if self.skipped:
            details["unreadable audio left out"] = ", ".join(f"{len(files)} in {split}"
                                                            for split, files in self.skipped.items())
        return details

    def finish(self) -> dict:
        """Score the best model on validation and test, then write model, report and card."""
        model = self.loop.model if not self.cached_features else self.model
        predictions = {split: predict(self.accelerator, model, loader)
                       for split, loader in self.eval_loaders.items()}
        return outputs.write_outputs(
            self.accelerator, model, self.feature_extractor, self.run, TASK, self.data, predictions,
            self.state, parameter_counts=(self.trainable, self.total), extra_details=self.details(),
        )

    def cleanup(self) -> None:
        self.accelerator.end_training()


def main(config: dict | str | None = None, argv: list[str] | None = None) -> dict:
    """Run the recipe; returns what `all_results.json` holds. `config` is a dict or a YAML path."""
    if argv is None and config is not None:
        argv = []  # in a notebook, sys.argv holds the kernel's flags, not ours
    run = parse(argv, config, DEFAULTS, task=TASK.name, modality=MODALITY)
    with library_output(run.train.verbose):
        recipe = AudioClassificationRecipe(run)
        recipe.setup()
        recipe.train()
        results = recipe.finish()
        recipe.cleanup()
    return results


if __name__ == "__main__":
    run_from_command_line(main)
