"""What every recipe does the same way: its phases, the Accelerator, the strategy, the Loop, the outputs.

A recipe subclasses `Recipe` (or `ClassificationRecipe`) and writes what belongs to its modality: how raw examples
become model inputs (processor, collator, augmentation) in `setup`, and its defaults. `run()` calls the phases in
order: setup -> train -> finish -> cleanup.
"""

from collections.abc import Callable

from accelerate import DistributedDataParallelKwargs
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from hf_transfer import outputs
from hf_transfer.config import RunConfig, parse
from hf_transfer.console import library_output
from hf_transfer.data import LabelledSplits
from hf_transfer.loop import (
    Loop,
    auto_class_weights,
    check_metric_for_best_model,
    classification_loss,
    new_accelerator,
    predict,
)
from hf_transfer.metrics import classification_metric_names, classification_metrics
from hf_transfer.metrics.operating_point import check_decision_settings
from hf_transfer.strategies import apply_strategy, build_optimizer, count_parameters
from hf_transfer.tasks import Task


class Recipe:
    """The phases, and the steps of `setup` that every modality shares."""

    task: Task
    modality: type | None = None  # the recipe's own settings dataclass (`ImageArgs`...): its fields become flags
    # Under DDP, whether some trainable weights may get no gradient in a step (LayerDrop skips whole layers).
    find_unused_parameters = False

    def __init__(self, run: RunConfig):
        self.run = run
        handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if self.find_unused_parameters else []
        self.accelerator = new_accelerator(run.train, run.train.output_dir, kwargs_handlers=handlers)
        set_seed(run.train.seed)

    @classmethod
    def main(cls, config: dict | str | None, argv: list[str] | None, defaults: dict) -> dict:
        """Parse the settings (`defaults` < `config` < flags), then run; returns what `all_results.json` holds."""
        if argv is None and config is not None:
            argv = []  # in a notebook, sys.argv holds the kernel's flags, not ours
        return cls(parse(argv, config, defaults, task=cls.task.name, modality=cls.modality)).run_phases()

    def run_phases(self) -> dict:
        with library_output(self.run.train.verbose):
            self.setup()
            self.train()
            results = self.finish()
            self.cleanup()
        return results

    def setup(self) -> None:
        raise NotImplementedError

    def train(self) -> None:
        self.state = self.loop.fit()

    def finish(self) -> dict:
        raise NotImplementedError

    def cleanup(self) -> None:
        self.accelerator.end_training()

    # --- steps of setup ----------------------------------------------------------------------------------------
    def apply_strategy(self, model) -> None:
        """`self.model`: `model` with the run's strategy applied (its trainable weights chosen, LoRA added)."""
        self.model = apply_strategy(model, self.run.strategy, self.task.peft_task_type)

    def count_trainable(self) -> None:
        """Says how much of `self.model` trains; once every freezing step is done."""
        self.trainable, self.total = count_parameters(self.model)
        self.accelerator.print(f"{self.run.strategy.strategy}: training {self.trainable:,} of {self.total:,} "
                               f"parameters ({100 * self.trainable / self.total:.2f}%)")

    def evaluation_loaders(self, splits: dict, collate: Callable, workers: int, samplers: dict | None = None) -> dict:
        """Prepared, in-order loaders of the validation and test splits."""
        return {split: self.accelerator.prepare(
                    DataLoader(splits[split], batch_size=self.run.train.per_device_eval_batch_size,
                               sampler=(samplers or {}).get(split), collate_fn=collate, num_workers=workers))
                for split in ("validation", "test") if split in splits}

    def start_loop(self, model, streams, compute_loss: Callable, evaluate: Callable, metric_names: dict,
                   policy: str = "together") -> None:
        """`self.loop`, training `model` (the strategy's trainable weights of `self.model`) on `streams`; checks
        --metric_for_best_model first and starts the trackers."""
        run = self.run
        check_metric_for_best_model(run.train.metric_for_best_model, metric_names)
        optimizer = build_optimizer(self.model, run.strategy, run.train, self.accelerator.device)
        self.loop = Loop(self.accelerator, model, optimizer, streams, compute_loss, evaluate, run.train,
                         run.train.output_dir, policy=policy)
        if run.train.report_to != "none":
            self.accelerator.init_trackers("hf_transfer", config=run.to_dict())


class ClassificationRecipe(Recipe):
    """A recipe whose model gives class logits: text, image and audio classification."""

    cached_features = False  # a frozen backbone's features computed once, and only the head trained on them

    def claim_labels(self, data: LabelledSplits) -> None:
        """Checks the decision settings against the labels; `self.data` is `data`."""
        check_decision_settings(self.run.evaluation, data.label_names)
        self.data = data

    def classification_loss(self, labels: list[int]) -> Callable:
        """Cross-entropy with --class_weights (from `labels`, the training split's) and --label_smoothing."""
        return classification_loss(self.class_weights(labels), self.run.train.label_smoothing)

    def class_weights(self, labels: list[int]):
        if self.run.train.class_weights != "auto":
            return None
        return auto_class_weights(labels, len(self.data.label_names))

    def start_classification_loop(self, model, train_loader, compute_loss: Callable, evaluation_loader) -> None:
        self.start_loop(model, train_loader, compute_loss,
                        lambda model: classification_metrics(*predict(self.accelerator, model, evaluation_loader)),
                        classification_metric_names(self.data))

    def details(self) -> dict[str, str]:
        """The modality's settings, for the report and the card."""
        return {}

    def finish(self) -> dict:
        """Score the best model on validation and test, then write model, processor, report and card.

        Scored through the whole model and the processor, as users run it, whichever path trained it."""
        model = self.model if self.cached_features else self.loop.model
        predictions = {split: predict(self.accelerator, model, loader) for split, loader in self.eval_loaders.items()}
        return outputs.write_outputs(
            self.accelerator, model, self.processor, self.run, self.task, self.data, predictions, self.state,
            parameter_counts=(self.trainable, self.total), extra_details=self.details(),
        )
