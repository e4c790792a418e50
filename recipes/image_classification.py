"""Image classification: adapt a ViT (or DeiT, Swin, ConvNeXt, ResNet...) checkpoint to your labelled images.

    accelerate launch recipes/image_classification.py --train_dir photos/train --validation_dir photos/val
    hf-transfer train image_classification --config recipes/configs/image_classification_hymenoptera.yaml

Data: a Hub id with an image column, class folders (`--train_dir DIR` holding DIR/<class>/*.jpg), or a CSV/JSON
of image paths and labels. In a notebook: `from hf_transfer.recipes import image_classification;
image_classification.main({"train_dir": "photos/train", ...})`.
Phases, in order (`Recipe.run_phases`): setup (data, model, strategy, optimizer) -> train -> finish (test,
report, card) -> cleanup. What every recipe shares is in hf_transfer/recipe.py; this file holds what is images' own.
"""

from hf_transfer.config import UsageError
from hf_transfer.modalities.image import (
    BatchMixer,
    ImageArgs,
    TrainTransform,
    augments_on_device,
    check_model_input_size,
    image_collator,
    image_details,
    image_splits,
    input_size,
    load_image_processor,
    mixed_loss,
    processor_transform,
    window_of,
)
from hf_transfer.modalities.image_augment import CanvasTransform, DeviceAugment
from hf_transfer.models.loading import model_path
from hf_transfer.recipe import ClassificationRecipe, ModalityBatches, run_from_command_line
from hf_transfer.targets import SINGLE_LABEL
from hf_transfer.tasks import TASKS

TASK = TASKS["image-classification"]
MODALITY = ImageArgs
# The real thing for users with the Hub; every value can be overridden by a config file or a flag.
DEFAULTS = {
    "model_name_or_path": "google/vit-base-patch16-224-in21k",
    "dataset_name": "AI-Lab-Makerere/beans",
    "strategy": "lora",
    "output_dir": "outputs/image_classification",
}


class ImageClassificationRecipe(ClassificationRecipe):
    name = "image_classification"
    task = TASK
    modality = MODALITY

    def setup(self) -> None:
        run, accelerator, image = self.run, self.accelerator, self.run.modality
        with accelerator.main_process_first():  # one process reads the Hub data set, the others its cache
            self.load_labels()
            if (image.mixup_alpha or image.cutmix_alpha) and self.data.problem_type != SINGLE_LABEL:
                raise UsageError(f"--mixup_alpha and --cutmix_alpha mix one-class targets: single-label "
                                 f"classification only, not {self.data.problem_type}")
            splits = image_splits(self.data, run.data, image.image_column, image.bad_images)
        on_device = augments_on_device(image, accelerator.device)
        # Recorded as resolved: a run resumed on another kind of device must not switch places unnoticed.
        image.augment_on = "device" if on_device else "loader"
        self.processor = load_image_processor(run.model, model_path(run.model), image.image_size)
        self.image_size = input_size(self.processor)
        model = self.load_classifier()
        check_model_input_size(model.config, self.image_size)
        if run.strategy.strategy == "lora" and run.model.config_name:
            accelerator.print("note: LoRA on a randomly initialised model saves only the adapter and head; "
                              "the random base weights are not kept, so the result can't be reloaded")
        self.apply_strategy(model)
        self.count_trainable()

        window = window_of(image.window_center, image.window_width)

        def eval_collate(split: str):
            return image_collator(processor_transform(self.processor), self.data.sources[split], window)

        def train_collate(split: str):
            transform = (CanvasTransform(self.processor, *self.image_size, image.augment == "randaugment")
                         if on_device else TrainTransform(self.processor, image.augment))
            return image_collator(transform, self.data.sources[split], window)

        compute_loss = None  # the target's loss
        if image.mixup_alpha or image.cutmix_alpha:
            mixer = BatchMixer(image.mixup_alpha, image.cutmix_alpha, len(self.data.label_names), run.train.seed,
                               accelerator.process_index)
            accelerator.register_for_checkpointing(mixer)
            compute_loss = mixed_loss(mixer, self.loss_function(self.data.splits["train"]["labels"]))
        self.start_training(ModalityBatches(
            splits, eval_collate, train_collate,
            per_step={setting: off for setting, off, on in (
                (f"--augment {image.augment}", "--augment none", image.augment != "none"),
                (f"--mixup_alpha {image.mixup_alpha:g}", "--mixup_alpha 0", bool(image.mixup_alpha)),
                (f"--cutmix_alpha {image.cutmix_alpha:g}", "--cutmix_alpha 0", bool(image.cutmix_alpha))) if on},
            prepare_batch=DeviceAugment(self.processor, *self.image_size) if on_device else None,
            compute_loss=compute_loss))

    def details(self) -> dict[str, str]:
        return image_details(self.run.modality, self.image_size)


def main(config: dict | str | None = None, argv: list[str] | None = None) -> dict:
    """Run the recipe; returns what `all_results.json` holds. `config` is a dict or a YAML path."""
    return ImageClassificationRecipe.main(config, argv, DEFAULTS)


if __name__ == "__main__":
    run_from_command_line(main)
