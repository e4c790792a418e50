"""Image classification: adapt a ViT (or DeiT, Swin, ConvNeXt, ResNet...) checkpoint to your labelled images.

    accelerate launch recipes/image_classification.py --train_dir photos/train --validation_dir photos/val
    hf-transfer train image_classification --config recipes/configs/image_classification_hymenoptera.yaml

Data: a Hub id with an image column, class folders (`--train_dir DIR` holding DIR/<class>/*.jpg), or a CSV/JSON
of image paths and labels. In a notebook: `from hf_transfer.recipes import image_classification;
image_classification.main({"train_dir": "photos/train", ...})`.
Phases, in order: setup (data, model, strategy, optimizer) -> train -> finish (test, report, card) -> cleanup.
"""

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from hf_transfer import outputs
from hf_transfer.cli import run_from_command_line
from hf_transfer.config import RunConfig, parse
from hf_transfer.data import load_labelled_splits
from hf_transfer.loop import Loop, auto_class_weights, classification_loss, predict
from hf_transfer.metrics import classification_metrics
from hf_transfer.modalities.image import (
    IMAGE_LAYOUT,
    BatchMixer,
    ImageArgs,
    TrainTransform,
    check_model_input_size,
    image_collator,
    image_details,
    image_splits,
    input_size,
    load_image_processor,
    mixed_loss,
    processor_transform,
)
from hf_transfer.models import load_model, model_path
from hf_transfer.precision import choose_mixed_precision
from hf_transfer.sampling import GroupedShuffleSampler
from hf_transfer.strategies import apply_strategy, build_optimizer, count_parameters
from hf_transfer.tasks import TASKS

TASK = TASKS["image-classification"]
MODALITY = ImageArgs
# The real thing for users with the Hub; every value can be overridden by a config file or a flag.
DEFAULTS = {
    "model_name_or_path": "google/vit-base-patch16-224-in21k",
    "dataset_name": "AI-Lab-Makerere/beans",
    "strategy": "lora",
    "learning_rate": 5e-3,  # peft's ViT LoRA example rate; full fine-tuning wants ~5e-5
    "num_train_epochs": 5,
    "output_dir": "outputs/image_classification",
}


class ImageClassificationRecipe:
    def __init__(self, run: RunConfig):
        self.run = run
        run.train.mixed_precision = choose_mixed_precision(run.train.mixed_precision)  # saved as chosen
        self.accelerator = Accelerator(
            mixed_precision=run.train.mixed_precision,
            gradient_accumulation_steps=run.train.gradient_accumulation_steps,
            log_with=None if run.train.report_to == "none" else run.train.report_to,
            project_dir=run.train.output_dir,
        )

    def setup(self) -> None:
        run, accelerator, image = self.run, self.accelerator, self.run.modality
        set_seed(run.train.seed)
        with accelerator.main_process_first():  # one process reads the Hub data set, the others its cache
            self.data = load_labelled_splits(run.data, run.train.seed, layout=IMAGE_LAYOUT)
            self.splits = image_splits(self.data, run.data, image.image_column)
        self.processor = load_image_processor(run.model, model_path(run.model), image.image_size)
        self.image_size = input_size(self.processor)
        model = load_model(run.model, TASK, self.data.label_names, run.train.dropout)
        check_model_input_size(model.config, self.image_size)
        if run.strategy.strategy == "lora" and run.model.config_name:
            accelerator.print("note: LoRA on a randomly initialised model saves only the adapter and head; "
                              "the random base weights are not kept, so the result can't be reloaded")
        self.model = apply_strategy(model, run.strategy, TASK.peft_task_type)
        self.trainable, self.total = count_parameters(self.model)
        accelerator.print(f"{run.strategy.strategy}: training {self.trainable:,} of {self.total:,} parameters "
                          f"({100 * self.trainable / self.total:.2f}%)")

        train = self.splits["train"]
        sampler = GroupedShuffleSampler(None, run.train.per_device_train_batch_size, run.train.seed, len(train))
        train_collate = image_collator(TrainTransform(self.processor, image.augment, run.train.seed),
                                       self.data.sources["train"])
        # Its own generator: starting an epoch (or a resumed one) must not draw from the RNG that dropout uses.
        train_loader = DataLoader(train, batch_size=run.train.per_device_train_batch_size, sampler=sampler,
                                  collate_fn=train_collate, pin_memory=accelerator.device.type == "cuda",
                                  generator=torch.Generator().manual_seed(run.train.seed))
        self.eval_loaders = {
            split: accelerator.prepare(DataLoader(
                self.splits[split], batch_size=run.train.per_device_eval_batch_size,
                collate_fn=image_collator(processor_transform(self.processor), self.data.sources[split])))
            for split in ("validation", "test") if split in self.splits
        }
        class_weights = (auto_class_weights(train["labels"], len(self.data.label_names))
                         if run.train.class_weights == "auto" else None)
        if image.mixup_alpha or image.cutmix_alpha:
            mixer = BatchMixer(image.mixup_alpha, image.cutmix_alpha, len(self.data.label_names), run.train.seed)
            compute_loss = mixed_loss(mixer, class_weights, run.train.label_smoothing)
        else:
            compute_loss = classification_loss(class_weights, run.train.label_smoothing)
        self.loop = Loop(
            accelerator, self.model, build_optimizer(self.model, run.strategy, run.train, accelerator.device),
            train_loader, compute_loss,
            lambda model: classification_metrics(*predict(accelerator, model, self.eval_loaders["validation"])),
            run.train, run.train.output_dir,
        )
        if run.train.report_to != "none":
            accelerator.init_trackers("hf_transfer", config=run.to_dict())

    def train(self) -> None:
        self.state = self.loop.fit()

    def finish(self) -> dict:
        """Score the best model on validation and test, then write model, processor, report and card."""
        predictions = {split: predict(self.accelerator, self.loop.model, loader)
                       for split, loader in self.eval_loaders.items()}
        return outputs.write_outputs(
            self.accelerator, self.loop.model, self.processor, self.run, TASK, self.data, predictions,
            self.state, parameter_counts=(self.trainable, self.total),
            extra_details=image_details(self.run.modality, self.image_size),
        )

    def cleanup(self) -> None:
        self.accelerator.end_training()


def main(config: dict | str | None = None, argv: list[str] | None = None) -> dict:
    """Run the recipe; returns what `all_results.json` holds. `config` is a dict or a YAML path."""
    if argv is None and config is not None:
        argv = []  # in a notebook, sys.argv holds the kernel's flags, not ours
    run = parse(argv, config, DEFAULTS, task=TASK.name, modality=MODALITY)
    recipe = ImageClassificationRecipe(run)
    recipe.setup()
    recipe.train()
    results = recipe.finish()
    recipe.cleanup()
    return results


if __name__ == "__main__":
    run_from_command_line(main)
