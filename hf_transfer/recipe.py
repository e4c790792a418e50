"""What every recipe does the same way: its phases, the Accelerator, the strategy, the Loop, the outputs.

A recipe subclasses `Recipe` (or `ClassificationRecipe`) and writes what belongs to its modality: how raw examples
become model inputs (processor, collator, augmentation) in `setup`, and its defaults. `run()` calls the phases in
order: setup -> train -> finish -> cleanup.
"""

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

from accelerate import DistributedDataParallelKwargs
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from hf_transfer import outputs
from hf_transfer.config import INVOCATION_ONLY, RunConfig, UsageError, parse
from hf_transfer.console import library_output
from hf_transfer.data.sampling import LengthSortedSampler, data_order
from hf_transfer.data.splits import load_labelled_splits
from hf_transfer.evaluation.operating_point import check_decision_settings
from hf_transfer.evaluation.sanity import linear_probe_accuracy
from hf_transfer.metrics import classification_metric_names
from hf_transfer.models.architectures import output_layers
from hf_transfer.models.loading import load_model
from hf_transfer.models.strategies import apply_strategy, build_optimizer, count_parameters
from hf_transfer.publish.hub import check_token
from hf_transfer.targets import SINGLE_LABEL, loss_function, target_for
from hf_transfer.tasks import Task
from hf_transfer.training.adaptation import add_target_splits
from hf_transfer.training.defaults import apply_defaults
from hf_transfer.training.features import PATH_TEXT, FeatureDataset, TrainingInputs, example_loader, training_inputs
from hf_transfer.training.folder_lock import output_dir_lock
from hf_transfer.training.loop import (
    Loop,
    check_metric_for_best_model,
    dataloader_workers,
    logits_loss,
    new_accelerator,
    predict,
)
from hf_transfer.training.objectives import EVALUATED_SPLITS, Objective, objective_for
from hf_transfer.training.run_folder import check_free_space, claim_output_dir


def run_from_command_line(main: Callable) -> None:
    """Run a recipe's `main` with the process's flags; bad input ends with a message, not a traceback."""
    try:
        main(argv=sys.argv[1:])
    except UsageError as error:
        sys.exit(f"error: {error}")


def recipe_names() -> list[str]:
    return sorted(p.stem for p in resources.files("hf_transfer.recipes").iterdir()
                  if p.name.endswith(".py") and not p.name.startswith("_"))


class Recipe:
    """The phases, and the steps of `setup` that every modality shares."""

    name: str  # the recipe's file name in recipes/: the run record keeps it, to print the command that finishes a run
    task: Task
    modality: type | None = None  # the recipe's own settings dataclass (`ImageArgs`...): its fields become flags
    # Under DDP, whether some trainable weights may get no gradient in a step (LayerDrop skips whole layers).
    find_unused_parameters = False

    def __init__(self, run: RunConfig):
        self.run = run
        handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if self.find_unused_parameters else []
        self.accelerator = new_accelerator(run.train, run.train.output_dir, kwargs_handlers=handlers)
        if run.hub.push_to_hub and self.accelerator.is_main_process:
            check_token(run.hub.hub_token)
        set_seed(run.train.seed)

    @classmethod
    def main(cls, config: dict | str | None, argv: list[str] | None, defaults: dict) -> dict:
        """Parse the settings (`defaults` < `config` < flags), then run; returns what `all_results.json` holds."""
        if argv is None and config is not None:
            argv = []  # in a notebook, sys.argv holds the kernel's flags, not ours
        return cls(parse(argv, config, defaults, task=cls.task.name, modality=cls.modality)).run_phases()

    @classmethod
    def from_settings(cls, settings: dict) -> "Recipe":
        """The recipe for a flat dict of every setting (`runs_of`), as a command that starts runs builds them."""
        return cls(parse([], settings, {}, task=cls.task.name, modality=cls.modality))

    def run_phases(self) -> dict:
        with library_output(self.run.train.verbose):
            with output_dir_lock(self.accelerator, self.run.train.output_dir):
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

    def cleanup(self, keep_process_group: bool = False) -> None:
        """Close the trackers and end a launched run's process group, unless more runs in this process need it
        (`hf-transfer tune` under `accelerate launch`)."""
        if keep_process_group:
            for tracker in self.accelerator.trackers:
                tracker.finish()
        else:
            self.accelerator.end_training()

    # --- steps of setup ----------------------------------------------------------------------------------------
    def apply_strategy(self, model) -> None:
        """`self.model`: `model` with the run's strategy applied (its trainable weights chosen, LoRA added), and the
        settings the user left unset chosen for that strategy and backbone (`choose_defaults`)."""
        self.choose_defaults(model)
        self.model = apply_strategy(model, self.run.strategy, self.task.peft_task_type)

    def choose_defaults(self, model) -> None:
        """Fill the settings the user left unset for the run's strategy and `model`'s backbone (`training.defaults`)
        and say which; once, before the run is recorded, so a resumed run compares the same settings."""
        if self.run.chosen_defaults is None:
            apply_defaults(self.run, model)
            if self.run.chosen_defaults:
                self.accelerator.print(f"defaults: {self.run.chosen_defaults}")

    def count_trainable(self) -> None:
        """Says how much of `self.model` trains, and checks that --output_dir has room for what the run will write;
        once every freezing step is done."""
        self.trainable, self.total = count_parameters(self.model)
        self.accelerator.print(f"{self.run.strategy.strategy}: training {self.trainable:,} of {self.total:,} "
                               f"parameters ({100 * self.trainable / self.total:.2f}%)")
        check_free_space(self.model, self.run.train)

    def evaluation_loaders(self, splits: dict, collate: Callable, workers: int) -> dict:
        """Prepared, in-order loaders of the splits scored after training."""
        return {split: self.accelerator.prepare(
                    DataLoader(splits[split], batch_size=self.run.train.per_device_eval_batch_size,
                               collate_fn=collate, num_workers=workers))
                for split in EVALUATED_SPLITS if split in splits}

    def start_loop(self, model, streams, compute_loss: Callable, evaluate: Callable, metric_names: dict,
                   policy: str = "together", extra_modules: tuple = (), prepare_batch: Callable | None = None) -> None:
        """`self.loop`, training `model` (the strategy's trainable weights of `self.model`, and all of
        `extra_modules`) on `streams` (each batch through `prepare_batch` on the device, see `Loop`); checks
        --metric_for_best_model first and starts the trackers."""
        run = self.run
        check_metric_for_best_model(run.train.metric_for_best_model, metric_names)
        optimizer = build_optimizer(self.model, run.strategy, run.train, self.accelerator.device, extra_modules)
        self.loop = Loop(self.accelerator, model, optimizer, streams, compute_loss, evaluate, run.train,
                         run.train.output_dir, policy=policy, prepare_batch=prepare_batch)
        if run.train.report_to != "none":
            self.accelerator.init_trackers("hf_transfer", config=run.to_dict())


def recipe_class_of(recipe: str) -> type[Recipe]:
    """The Recipe class that the recipe module `recipe` defines."""
    module = importlib.import_module(f"hf_transfer.recipes.{recipe}")
    return next(value for value in vars(module).values() if isinstance(value, type)
                and issubclass(value, Recipe) and value.__module__ == module.__name__)


def runs_of(recipe: str, argv: list[str]) -> tuple[type[Recipe], RunConfig, dict]:
    """For commands that start many runs of one recipe (study cells, tune trials): its class, its settings from
    `argv` (the recipe's defaults < --config < flags), and the same settings flat, without card or push, for each run
    to change."""
    recipe_class = recipe_class_of(recipe)
    defaults = importlib.import_module(recipe_class.__module__).DEFAULTS
    base = parse(argv, None, defaults, task=recipe_class.task.name, modality=recipe_class.modality)
    settings = {k: v for k, v in base.to_dict().items() if k != "task" and k not in INVOCATION_ONLY}
    settings.update(push_to_hub=False, write_card=False)
    return recipe_class, base, settings


def changed_settings(before: dict, now: dict) -> list[str]:
    """`NAME BEFORE then, NOW now` for each setting that differs: why the runs a study or tune kept from an earlier
    command can't be compared with the ones this command would add."""
    def shown(value):
        return "unset" if value is None else repr(value)  # unset: chosen at run time (training.defaults)
    return [f"{name} {shown(before.get(name))} then, {shown(now.get(name))} now"
            for name in sorted(before.keys() | now.keys()) if before.get(name) != now.get(name)]


@dataclass
class ModalityBatches:
    """How a modality batches its prepared splits: what `ClassificationRecipe.start_training` takes from a recipe."""

    splits: dict  # the prepared splits, each with its "labels"
    eval_collate: Callable[[str], Callable]  # split -> its collate_fn, preprocessing as evaluation does
    train_collate: Callable[[str], Callable]  # split -> its collate_fn in training (augmentation included)
    # The splits have a "length" column: evaluation reads them longest first (little padding), and training groups
    # batches by it under --length_grouping.
    by_length: bool = False
    # The settings that give new inputs every epoch (augmentation: no training on cached features), each with the
    # setting that turns it off (`--augment basic` -> `--augment none`), for the console to say so.
    per_step: dict[str, str | None] = field(default_factory=dict)
    prepare_batch: Callable | None = None  # see `Loop`
    compute_loss: Callable | None = None  # one labelled batch's loss; by default the target's loss on the logits


class ClassificationRecipe(Recipe):
    """A recipe whose model gives class logits: text, image and audio classification.

    Its `setup` calls, in order: `load_labels` (inside `main_process_first`, with the modality's preprocessing),
    `load_classifier`, the strategy (`apply_strategy`, `count_trainable`), then `start_training` with the modality's
    batches."""

    cached_features = False  # a frozen backbone's features computed once, and only the head trained on them
    standardiser = None  # a regression's target scaling, folded into the head after training
    frozen_features: dict[str, FeatureDataset] | None = None  # those features, train and validation

    def load_labels(self) -> None:
        """`self.data`: the run's labelled splits, with the target-domain splits (`--target_train_file`,
        `--target_test_file`...) added, for the modality to prepare like the others; the decision settings checked
        against the labels; `self.objective`: what the run trains for."""
        run = self.run
        data = load_labelled_splits(run.data, run.train.seed, layout=self.task.layout)
        self.target = target_for(data.problem_type, run.data.label_separator)
        check_decision_settings(run.evaluation, data.label_names, data.problem_type)
        if run.train.metric_for_best_model is None:
            run.train.metric_for_best_model = self.target.primary_metric
        if run.data.group_column and data.problem_type != SINGLE_LABEL:
            raise UsageError(f"--group_column: per-group scores are for single-label classification so far, not "
                             f"{data.problem_type}")
        adaptation = run.adaptation
        if any((adaptation.target_train_file, adaptation.target_train_dir, adaptation.target_test_file,
                adaptation.target_test_dir)):
            column = f"{self.task.input_kind}_column"
            data = add_target_splits(data, adaptation, self.task,
                                     getattr(run.data, column, None) or getattr(run.modality, column, None),
                                     run.data.label_column)
        self.data = data
        self.objective = self.new_objective()

    def new_objective(self) -> Objective:
        """What the run trains for (`training/objectives.py`): --adaptation's objective. A recipe with another
        objective returns its own."""
        return objective_for(self.run.adaptation, self.run.strategy.strategy, self.data.sources)

    def load_classifier(self):
        """Loads the model with a head for `self.data`'s labels, chooses the defaults it needs, then claims the output
        folder (its run record holds the settings as resolved)."""
        run = self.run
        model = load_model(run.model, self.task.auto_model, self.data.label_names, run.train.dropout,
                           self.data.problem_type)
        self.choose_defaults(model)
        claim_output_dir(self.accelerator, run, self.data, self.name)
        return model

    def loss_function(self, labels: list) -> Callable:
        """(float logits, labels) -> the target's loss (`targets.loss_function`) with the run's --class_weights,
        --label_smoothing and --regression_loss; `labels` are the training split's. A regression keeps its
        standardiser, to fold it into the head after training."""
        args = self.run.train
        loss = loss_function(self.target, labels, len(self.data.label_names), args.class_weights,
                             args.label_smoothing, args.regression_loss)
        self.standardiser = getattr(loss, "standardiser", None)
        return loss

    def training_scores(self, logits):
        """Scores of the model while it trains: a regression's outputs are still standardised."""
        scores = self.target.scores(logits)
        return scores if self.standardiser is None else self.standardiser.in_units(scores)

    def metric_names(self) -> dict[str, str | None]:
        if self.data.problem_type == SINGLE_LABEL:
            return classification_metric_names(self.data.label_names, self.data.splits["validation"]["labels"],
                                               self.data.sources["validation"])
        return dict.fromkeys(self.target.metric_names())

    def start_training(self, batches: ModalityBatches) -> None:
        """Once `self.model` has its strategy: the loaders that score the evaluated splits (`self.eval_loaders`),
        the training streams (on cached features where `training_inputs` allows it), and the loop."""
        run, accelerator, splits = self.run, self.accelerator, batches.splits
        workers = dataloader_workers(run.train)
        # In order (longest first, by length) and preprocessed as in evaluation: for scoring, and for computing cached
        # features. Scores and features come back in the data's order.
        plain_loaders = {split: DataLoader(splits[split], batch_size=run.train.per_device_eval_batch_size,
                                           sampler=LengthSortedSampler(splits[split]["length"]) if batches.by_length
                                           else None, collate_fn=batches.eval_collate(split), num_workers=workers)
                         for split in ("train", *self.objective.evaluated_splits) if split in splits}
        self.prepare_evaluation_loaders(plain_loaders)

        def lengths(examples):
            return examples["length"] if batches.by_length and run.train.length_grouping else None

        def training_loader(split: str) -> DataLoader:
            return example_loader(splits[split], lengths(splits[split]), batches.train_collate(split), run.train,
                                  workers, accelerator.device)

        per_step = {**batches.per_step,  # DANN runs the backbone on target batches every step
                    **({f"--adaptation {run.adaptation.adaptation}": None}
                       if self.objective.needs_backbone_every_step else {})}
        # One loss for the head's fit and for training: a regression's standardiser must be the same in both.
        class_loss = self.loss_function(self.data.splits["train"]["labels"])
        inputs = training_inputs(accelerator, self.model, run.strategy, run.train, per_step, plain_loaders,
                                 self.eval_loaders["validation"], splits["train"], lengths(splits["train"]),
                                 batches.train_collate("train"), workers, class_loss)
        self.cached_features = inputs.cached
        self.frozen_features = inputs.features
        self.start_classification_loop(inputs, training_loader, batches.prepare_batch,
                                       batches.compute_loss or logits_loss(class_loss))

    def start_classification_loop(self, inputs: TrainingInputs, training_loader: Callable[[str], DataLoader],
                                  prepare_batch: Callable | None, compute_loss: Callable) -> None:
        """Train `inputs.model` for `self.objective` on its streams: the labelled `inputs.train_loader`, and what
        else the objective draws through `training_loader(split)`. Scored on `inputs.evaluation_loader` (source
        validation: it also picks the best checkpoint, so no target label ever does). `prepare_batch`: see `Loop`.
        `compute_loss`: one labelled batch's loss (`start_training`: the target's loss on the model's logits)."""
        objective = self.objective

        def evaluate(module):
            scores, references = predict(self.accelerator, objective.scored(module), inputs.evaluation_loader,
                                         self.training_scores)
            return self.target.metrics(scores, references, self.target.decide(scores))

        module = objective.attach(inputs.model, compute_loss)
        self.start_loop(module, objective.streams(inputs.train_loader, training_loader), objective.loss, evaluate,
                        self.metric_names(), policy=objective.policy, extra_modules=objective.extra_modules(),
                        prepare_batch=prepare_batch)

    def details(self) -> dict[str, str]:
        """The modality's settings, for the report and the card."""
        return {}

    def finish(self) -> dict:
        """Score the best model on validation and test, then write model, processor, report and card.

        Scored through the whole model and the processor, as users run it, whichever path trained it."""
        # The loop trained a head on cached features, or what the objective trains: the classifier is in it.
        model = self.model if self.cached_features else self.objective.scored(self.loop.model)
        if self.standardiser is not None:  # from here on the model answers in the user's units
            for layer in output_layers(self.accelerator.unwrap_model(self.model)):
                self.standardiser.fold_into(layer)
        predictions = {}
        for split, loader in self.eval_loaders.items():  # each split's rows back in the data's order
            positions = data_order(self.eval_read_orders[split])
            predictions[split] = tuple(rows[positions] for rows in predict(self.accelerator, model, loader,
                                                                           self.target.scores))
        outputs.check_finite_scores(self.accelerator, model, self.processor, self.run, self.data, predictions)
        details = {**self.details(), **self.feature_extraction_details(), **self.objective.details(),
                   **({"defaults chosen": self.run.chosen_defaults} if self.run.chosen_defaults else {})}
        if self.data.problem_type != SINGLE_LABEL:
            return outputs.write_target_outputs(self.accelerator, model, self.processor, self.run, self.task,
                                                self.data, predictions, self.state, (self.trainable, self.total),
                                                details)
        return outputs.write_outputs(
            self.accelerator, model, self.processor, self.run, self.task, self.data, predictions, self.state,
            parameter_counts=(self.trainable, self.total), extra_details=details, probe_accuracy=self.probe_accuracy(),
        )

    def probe_accuracy(self) -> float | None:
        """A logistic regression's validation accuracy on the frozen features the head trained on: what the head
        should reach. None when no features were cached: computing them only for this would cost a backbone pass."""
        if not self.frozen_features:
            return None
        train, validation = self.frozen_features["train"], self.frozen_features["validation"]
        return linear_probe_accuracy(train.features.numpy(), train.labels.numpy(), validation.features.numpy(),
                                     validation.labels.numpy())

    def prepare_evaluation_loaders(self, plain_loaders: dict[str, DataLoader]) -> None:
        """`self.eval_loaders`: the plain loaders of the scored splits, prepared. Each one's reading order is kept
        (audio reads longest first), so that `finish` pairs every prediction with its own example."""
        scored = {split: loader for split, loader in plain_loaders.items() if split != "train"}
        self.eval_loaders = {split: self.accelerator.prepare(loader) for split, loader in scored.items()}
        self.eval_read_orders = {split: list(loader.sampler) for split, loader in scored.items()}

    def feature_extraction_details(self) -> dict[str, str]:
        if self.run.strategy.strategy != "feature_extraction":
            return {}
        return {"feature extraction": PATH_TEXT[self.cached_features]}
