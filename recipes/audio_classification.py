"""Audio classification: adapt a speech checkpoint (Wav2Vec2, HuBERT, WavLM, Whisper's encoder) to your clips.

    accelerate launch recipes/audio_classification.py --config recipes/configs/audio_classification.yaml
    hf-transfer train audio_classification --config recipes/configs/audio_classification_fsdd.yaml

Data: a Hub id with an audio column, a class-folder layout (`--train_dir DIR` with DIR/<class>/*.wav|flac|mp3|ogg),
or a CSV of file paths + labels (relative paths are read from the CSV's folder). Every clip is decoded once before
training; a file that fails stops the run with its name, or is left out with `--bad_audio skip`.
In a notebook: `from hf_transfer.recipes import audio_classification; audio_classification.main({...})`.
Phases, in order (`Recipe.run_phases`): setup (data, model, strategy, optimizer) -> train -> finish (test,
report, card) -> cleanup. What every recipe shares is in hf_transfer/recipe.py; this file holds what is audio's own.
"""

from hf_transfer.modalities.audio import (
    AudioArgs,
    audio_collator,
    describe_augmentation,
    freeze_feature_encoder,
    load_feature_extractor,
    prepare_audio_splits,
    set_spec_augment,
)
from hf_transfer.modalities.audio_augment import DeviceWaveAugment, augments_on_device, raw_wave_collator
from hf_transfer.modalities.whisper_inputs import fit_whisper_window, is_whisper
from hf_transfer.models.loading import model_path
from hf_transfer.recipe import ClassificationRecipe, ModalityBatches, run_from_command_line
from hf_transfer.tasks import TASKS

TASK = TASKS["audio-classification"]
MODALITY = AudioArgs
# The real thing for users with the Hub; every value can be overridden by a config file or a flag.
DEFAULTS = {
    "model_name_or_path": "facebook/wav2vec2-base",
    "dataset_name": "google/speech_commands",
    "dataset_config_name": "v0.02",
    "strategy": "lora",
    "output_dir": "outputs/audio_classification",
}


class AudioClassificationRecipe(ClassificationRecipe):
    name = "audio_classification"
    task = TASK
    modality = MODALITY
    # Under DDP some trainable weights get no gradient in a step: LayerDrop skips whole layers at random, and the
    # SpecAugment mask embedding is unused while masking is off. Letting DDP look for them keeps LayerDrop's
    # regularisation (setting layerdrop=0 would drop it and still leave the mask embedding).
    find_unused_parameters = True

    def setup(self) -> None:
        run, accelerator, audio = self.run, self.accelerator, self.run.modality
        with accelerator.main_process_first():
            self.load_labels()
            self.processor = load_feature_extractor(run.model, model_path(run.model))
            self.rate = self.processor.sampling_rate
            self.data, column, self.skipped = prepare_audio_splits(self.data, run.data, audio, self.rate)
        on_device = augments_on_device(audio, self.processor, accelerator.device)
        # Recorded as resolved: a run resumed on another kind of device must not switch places unnoticed.
        audio.augment_on = "device" if on_device else "loader"
        model = self.load_classifier()
        for split, files in self.skipped.items():
            accelerator.print(f"--bad_audio skip: left out {len(files)} audio file(s) of the {split} split: "
                              + "; ".join(files))
        self.whisper_window = (fit_whisper_window(model, self.processor, audio.max_duration_seconds,
                                                  audio.short_inputs) if is_whisper(model.config) else None)
        set_spec_augment(model, audio, self.rate)
        self.apply_strategy(model)
        if audio.freeze_feature_encoder:
            freeze_feature_encoder(model)  # after the strategy: `full` makes every weight trainable
        self.count_trainable()

        eval_collate = audio_collator(self.processor, column, audio, False)  # padded as `predict` pads
        # Fixed-length training batches under --torch_compile (one shape) and SpecAugment (see `audio_collator`).
        train_collate = (raw_wave_collator(self.processor, column, audio,
                                           run.train.torch_compile or bool(audio.spec_augment)) if on_device
                         else audio_collator(self.processor, column, audio, True, run.train.torch_compile))
        self.start_training(ModalityBatches(
            self.data.splits, eval_collate=lambda split: eval_collate, train_collate=lambda split: train_collate,
            by_length=True,
            per_step={setting: off for setting, off, on in (
                (f"--gain_db {audio.gain_db:g}", "--gain_db 0", bool(audio.gain_db)),
                (f"--time_shift_seconds {audio.time_shift_seconds:g}", "--time_shift_seconds 0",
                 bool(audio.time_shift_seconds)),
                (f"--noise_snr_db {audio.noise_snr_db:g}", "--noise_snr_db 0", bool(audio.noise_snr_db)),
                (f"--spec_augment {audio.spec_augment:g}", "--spec_augment 0", bool(audio.spec_augment))) if on},
            prepare_batch=DeviceWaveAugment(self.processor) if on_device else None))

    def details(self) -> dict[str, str]:
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
        if self.skipped:
            details["unreadable audio left out"] = ", ".join(f"{len(files)} in {split}"
                                                            for split, files in self.skipped.items())
        return details


def main(config: dict | str | None = None, argv: list[str] | None = None) -> dict:
    """Run the recipe; returns what `all_results.json` holds. `config` is a dict or a YAML path."""
    return AudioClassificationRecipe.main(config, argv, DEFAULTS)


if __name__ == "__main__":
    run_from_command_line(main)
