"""Sentiment / text classification: adapt a text checkpoint to your labelled sentences.

    accelerate launch recipes/sentiment.py --config recipes/configs/sentiment.yaml
    hf-transfer train sentiment --config recipes/configs/sentiment_demo.yaml

In a notebook: `from hf_transfer.recipes import sentiment; sentiment.main({"learning_rate": 1e-4, ...})`.
Phases, in order (`Recipe.run_phases`): setup (data, model, strategy, optimizer) -> train -> finish (test,
report, card) -> cleanup. What every recipe shares is in hf_transfer/recipe.py; this file holds what is text's own.
"""

from hf_transfer.modalities.text import check_max_seq_length, load_tokenizer, text_collator, tokenize_splits
from hf_transfer.models.loading import model_path
from hf_transfer.models.padding_free import enable_padding_free
from hf_transfer.recipe import ClassificationRecipe, ModalityBatches, run_from_command_line
from hf_transfer.tasks import TASKS
from hf_transfer.training.loop import text_padding_multiple

TASK = TASKS["text-classification"]
# The real thing for users with the Hub; every value can be overridden by a config file or a flag.
DEFAULTS = {
    "model_name_or_path": "google-bert/bert-base-uncased",
    "dataset_name": "stanfordnlp/sst2",
    "strategy": "lora",
    "output_dir": "outputs/sentiment",
}


class SentimentRecipe(ClassificationRecipe):
    name = "sentiment"
    task = TASK

    def setup(self) -> None:
        run, accelerator = self.run, self.accelerator
        with accelerator.main_process_first():  # one process tokenises, the others read its cache
            self.load_labels()
            self.processor = load_tokenizer(run.model, model_path(run.model))
            splits = tokenize_splits(self.data, run.data, self.processor)
        model = self.load_classifier()
        padding_multiple = text_padding_multiple(run.train, accelerator.device)
        check_max_seq_length(model.config, run.data.max_seq_length, padding_multiple)
        self.apply_strategy(model)
        if run.train.padding_free:
            enable_padding_free(self.model)
        self.count_trainable()
        # Training batches are tokenised as evaluation's: text has no augmentation.
        collate = text_collator(self.processor, padding_multiple)
        self.start_training(ModalityBatches(splits, eval_collate=lambda split: collate,
                                            train_collate=lambda split: collate, by_length=True))


def main(config: dict | str | None = None, argv: list[str] | None = None) -> dict:
    """Run the recipe; returns what `all_results.json` holds. `config` is a dict or a YAML path."""
    return SentimentRecipe.main(config, argv, DEFAULTS)


if __name__ == "__main__":
    run_from_command_line(main)
