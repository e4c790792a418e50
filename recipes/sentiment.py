"""Sentiment / text classification: adapt a text checkpoint to your labelled sentences.

    accelerate launch recipes/sentiment.py --config recipes/configs/sentiment.yaml
    hf-transfer train sentiment --config recipes/configs/sentiment_demo.yaml

In a notebook: `from hf_transfer.recipes import sentiment; sentiment.main({"learning_rate": 1e-4, ...})`.
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
from hf_transfer.modalities.text import load_tokenizer, text_collator, tokenize_splits
from hf_transfer.models import load_model, model_path
from hf_transfer.precision import choose_mixed_precision
from hf_transfer.sampling import GroupedShuffleSampler
from hf_transfer.strategies import apply_strategy, build_optimizer, count_parameters
from hf_transfer.tasks import TASKS

TASK = TASKS["text-classification"]
# The real thing for users with the Hub; every value can be overridden by a config file or a flag.
DEFAULTS = {
    "model_name_or_path": "google-bert/bert-base-uncased",
    "dataset_name": "stanfordnlp/sst2",
    "strategy": "lora",
    "learning_rate": 5e-4,  # LoRA wants ~10x the full fine-tuning rate
    "num_train_epochs": 3,
    "output_dir": "outputs/sentiment",
}


class SentimentRecipe:
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
        run, accelerator = self.run, self.accelerator
        set_seed(run.train.seed)
        with accelerator.main_process_first():  # one process tokenises, the others read its cache
            self.data = load_labelled_splits(run.data, run.train.seed)
            self.tokenizer = load_tokenizer(run.model, model_path(run.model))
            self.splits = tokenize_splits(self.data, run.data, self.tokenizer)
        model = load_model(run.model, TASK, self.data.label_names, run.train.dropout)
        self.model = apply_strategy(model, run.strategy, TASK.peft_task_type)
        self.trainable, self.total = count_parameters(self.model)
        accelerator.print(f"{run.strategy.strategy}: training {self.trainable:,} of {self.total:,} parameters "
                          f"({100 * self.trainable / self.total:.2f}%)")

        # Tensor cores like padded lengths that are multiples of 8; the CPU does not care.
        collate = text_collator(self.tokenizer, 8 if accelerator.device.type == "cuda" else None)
        train = self.splits["train"]
        sampler = GroupedShuffleSampler(train["length"] if run.train.length_grouping else None,
                                        run.train.per_device_train_batch_size, run.train.seed, len(train))
        # Its own generator: starting an epoch (or a resumed one) must not draw from the RNG that dropout uses.
        train_loader = DataLoader(train, batch_size=run.train.per_device_train_batch_size, sampler=sampler,
                                  collate_fn=collate, pin_memory=accelerator.device.type == "cuda",
                                  generator=torch.Generator().manual_seed(run.train.seed))
        self.eval_loaders = {
            split: accelerator.prepare(DataLoader(self.splits[split], batch_size=run.train.per_device_eval_batch_size,
                                                  collate_fn=collate))
            for split in ("validation", "test") if split in self.splits
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

    def finish(self) -> dict:
        """Score the best model on validation and test, then write model, report and card."""
        predictions = {split: predict(self.accelerator, self.loop.model, loader)
                       for split, loader in self.eval_loaders.items()}
        return outputs.write_outputs(
            self.accelerator, self.loop.model, self.tokenizer, self.run, TASK, self.data, predictions,
            self.state, parameter_counts=(self.trainable, self.total),
        )

    def cleanup(self) -> None:
        self.accelerator.end_training()


def main(config: dict | str | None = None, argv: list[str] | None = None) -> dict:
    """Run the recipe; returns what `all_results.json` holds. `config` is a dict or a YAML path."""
    if argv is None and config is not None:
        argv = []  # in a notebook, sys.argv holds the kernel's flags, not ours
    run = parse(argv, config, DEFAULTS)
    recipe = SentimentRecipe(run)
    recipe.setup()
    recipe.train()
    results = recipe.finish()
    recipe.cleanup()
    return results


if __name__ == "__main__":
    run_from_command_line(main)
