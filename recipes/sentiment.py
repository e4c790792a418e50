"""Sentiment / text classification: adapt a text checkpoint to your labelled sentences.

    accelerate launch recipes/sentiment.py --config recipes/configs/sentiment.yaml
    hf-transfer train sentiment --config recipes/configs/sentiment_demo.yaml

In a notebook: `from hf_transfer.recipes import sentiment; sentiment.main({"learning_rate": 1e-4, ...})`.
Phases, in order (`Recipe.run_phases`): setup (data, model, strategy, optimizer) -> train -> finish (test,
report, card) -> cleanup. What every recipe shares is in hf_transfer/recipe.py; this file holds what is text's own.
"""

from torch.utils.data import DataLoader

from hf_transfer.data.sampling import LengthSortedSampler
from hf_transfer.data.splits import load_labelled_splits
from hf_transfer.modalities.text import check_max_seq_length, load_tokenizer, text_collator, tokenize_splits
from hf_transfer.models.loading import load_model, model_path
from hf_transfer.models.padding_free import enable_padding_free
from hf_transfer.recipe import ClassificationRecipe, run_from_command_line
from hf_transfer.tasks import TASKS
from hf_transfer.training.features import example_loader, training_inputs
from hf_transfer.training.loop import dataloader_workers, text_padding_multiple
from hf_transfer.training.run_folder import claim_output_dir

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


class SentimentRecipe(ClassificationRecipe):
    name = "sentiment"
    task = TASK

    def setup(self) -> None:
        run, accelerator = self.run, self.accelerator
        with accelerator.main_process_first():  # one process tokenises, the others read its cache
            self.claim_labels(load_labelled_splits(run.data, run.train.seed))
            self.processor = load_tokenizer(run.model, model_path(run.model))
            splits = tokenize_splits(self.data, run.data, self.processor)
        claim_output_dir(accelerator, run, self.data, self.name)
        model = load_model(run.model, TASK.auto_model, self.data.label_names, run.train.dropout,
                           self.data.problem_type)
        padding_multiple = text_padding_multiple(run.train, accelerator.device)
        check_max_seq_length(model.config, run.data.max_seq_length, padding_multiple)
        self.apply_strategy(model)
        if run.train.padding_free:
            enable_padding_free(self.model)
        self.count_trainable()

        collate = text_collator(self.processor, padding_multiple)
        workers = dataloader_workers(run.train)
        # Longest first (each batch pads little) and tokenised as in evaluation: for scoring, and for computing
        # cached features. Scores and features come back in the data's order.
        plain_loaders = {split: DataLoader(splits[split], batch_size=run.train.per_device_eval_batch_size,
                                           sampler=LengthSortedSampler(splits[split]["length"]),
                                           collate_fn=collate, num_workers=workers)
                         for split in ("train", *self.objective.evaluated_splits) if split in splits}
        self.prepare_evaluation_loaders(plain_loaders)

        def lengths(examples):
            return examples["length"] if run.train.length_grouping else None

        inputs = training_inputs(accelerator, self.model, run.strategy, run.train,
                                 self.objective.needs_backbone_every_step, plain_loaders,
                                 self.eval_loaders["validation"], splits["train"], lengths(splits["train"]), collate,
                                 workers)
        self.cached_features = inputs.cached
        self.frozen_features = inputs.features

        def training_loader(split: str):
            return example_loader(splits[split], lengths(splits[split]), collate, run.train, workers,
                                  accelerator.device)

        self.start_classification_loop(inputs.model, inputs.train_loader, inputs.evaluation_loader, training_loader)


def main(config: dict | str | None = None, argv: list[str] | None = None) -> dict:
    """Run the recipe; returns what `all_results.json` holds. `config` is a dict or a YAML path."""
    return SentimentRecipe.main(config, argv, DEFAULTS)


if __name__ == "__main__":
    run_from_command_line(main)
