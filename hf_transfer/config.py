"""Run configuration: dataclasses with help text, parsed by `HfArgumentParser`.

Precedence, lowest first: dataclass defaults < a recipe's defaults < `--config FILE.yaml` < flags.
"""

import argparse
import dataclasses
import importlib.util
import sys
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from hf_transfer.io import atomic_write_text

STRATEGIES = ("full", "feature_extraction", "partial", "lora")
BUILTIN_PREFIX = "builtin:"  # a checkpoint or data set that works offline: models/builtin.py, data/builtin.py
# --report_to choice -> (module it needs, how to install it).
TRACKERS = {"tensorboard": ("tensorboard", "pip install 'hf-transfer-kit[tensorboard]'"),
            "trackio": ("trackio", "pip install trackio"), "wandb": ("wandb", "pip install wandb")}


CLASSIFIER_POOLINGS = ("model", "mean", "cls")  # --pooling: the architecture's own head, or a pooled linear one
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # --torch_compile_mode: torch.compile's own names
AUGMENT_PLACES = ("auto", "loader", "device")  # --augment_on (images, audio): where training augmentation runs


class UsageError(ValueError):
    """Bad input from the user (a flag, a file, a column). Printed as a message, never a traceback."""


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise UsageError(f"--{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def _check_positive(name: str, value: float | None, allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise UsageError(f"--{name} must be {'>= 0' if allow_zero else '> 0'}; got {value}")


@dataclass
class ModelArgs:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or local folder of the checkpoint to adapt."}
    )
    config_name: str | None = field(
        default=None,
        metadata={"help": "Hub id or folder of a model config: train from scratch with it instead of pretrained "
                          "weights."},
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer/processor to use when it differs from the checkpoint."}
    )
    base_model_id: str | None = field(
        default=None,
        metadata={"help": "Hub id recorded as `base_model` in the card when the weights come from a local folder."},
    )
    revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the Hub checkpoint."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom modelling code from the Hub. Off unless you trust the repo."}
    )
    pooling: str = field(
        default="model",
        metadata={"help": "How a classifier reads the backbone: `model`, the architecture's own head (loads in "
                          "pipeline()); `mean`, a linear head on the mean over tokens or frames (what sentence-"
                          "transformers bodies such as all-MiniLM-L6-v2 were trained for); `cls`, on the first "
                          "token's final state, without the pooler."},
    )

    def __post_init__(self):
        if not self.model_name_or_path and not self.config_name:
            raise UsageError("give --model_name_or_path (pretrained) or --config_name (train from scratch)")
        _check_choice("pooling", self.pooling, CLASSIFIER_POOLINGS)


@dataclass
class DataArgs:
    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub data set id, or `builtin:NAME` for a data set shipped with hf_transfer."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Config (subset) of the Hub data set."})
    train_file: str | None = field(default=None, metadata={"help": "csv/tsv/json/jsonl/parquet file to train on."})
    validation_file: str | None = field(default=None, metadata={"help": "File to evaluate on during training."})
    test_file: str | None = field(default=None, metadata={"help": "File to evaluate the final model on."})
    train_dir: str | None = field(
        default=None, metadata={"help": "Folder with one subfolder of files per class (images, audio) to train on."}
    )
    validation_dir: str | None = field(default=None, metadata={"help": "Class-subfolder layout, for validation."})
    test_dir: str | None = field(default=None, metadata={"help": "Class-subfolder layout, for the final test."})
    text_column: str | None = field(default=None, metadata={"help": "Column with the text (guessed if omitted)."})
    text_pair_column: str | None = field(
        default=None, metadata={"help": "Second text column, for sentence-pair tasks (NLI, paraphrase)."}
    )
    label_column: str | None = field(default=None, metadata={"help": "Column with the label (guessed if omitted)."})
    problem_type: str | None = field(
        default=None,
        metadata={"help": "single_label_classification | multi_label_classification (several labels per row: a list "
                          "in JSON, else separated by --label_separator; empty is none) | regression (a number per "
                          "row). Default: regression for a label column of numbers with fractions, else single-label."},
    )
    label_separator: str = field(default="|", metadata={"help": "Separates a multi-label cell's labels in CSV/TSV."})
    label_map: dict[str, str] | str | None = field(
        default=None,
        metadata={"help": "What the data's label values mean, as FROM=TO pairs (a mapping in a config): "
                          "`pos=positive,neg=negative`, or `Positive=positive,1=positive` for labels that differ "
                          "only in case, spaces or type. Values are matched without their surrounding spaces."},
    )
    validation_split_percentage: float = field(
        default=10.0, metadata={"help": "Percent of train held out (stratified) when there is no validation split."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on a seeded random subset of this many examples."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on at most this many examples."})
    samples_per_class: int | None = field(
        default=None, metadata={"help": "Few-shot label budget: keep this many training examples of each class."}
    )
    max_seq_length: int = field(default=128, metadata={"help": "Truncate inputs to this many tokens."})
    group_column: str | None = field(
        default=None,
        metadata={"help": "Column naming who or where an example comes from (speaker, patient, site): a carved "
                          "validation split keeps each group on one side, and the report scores each group."},
    )

    def __post_init__(self):
        if not (self.dataset_name or self.train_file or self.train_dir):
            raise UsageError("give --dataset_name, --train_file or --train_dir")
        if self.train_file and self.train_dir:
            raise UsageError("give --train_file or --train_dir, not both")
        if not 0 < self.validation_split_percentage < 100:
            raise UsageError(
                f"--validation_split_percentage must be between 0 and 100; got {self.validation_split_percentage}"
            )
        for name in ("max_train_samples", "max_eval_samples", "samples_per_class", "max_seq_length"):
            _check_positive(name, getattr(self, name))
        if self.problem_type is not None:
            _check_choice("problem_type", self.problem_type,
                          ("single_label_classification", "multi_label_classification", "regression"))
        if not self.label_separator.strip():
            raise UsageError("--label_separator can't be empty or spaces")
        if isinstance(self.label_map, str):
            pairs = [pair.partition("=") for pair in self.label_map.split(",") if pair.strip()]
            if not pairs or any(not equals or not old.strip() or not new.strip() for old, equals, new in pairs):
                raise UsageError(f"--label_map {self.label_map!r}: write FROM=TO pairs separated by commas, such as "
                                 "pos=positive,neg=negative")
            self.label_map = {old.strip(): new.strip() for old, _, new in pairs}
        elif self.label_map is not None:
            if not isinstance(self.label_map, dict):
                raise UsageError(f"label_map: give a mapping (FROM: TO lines), not {self.label_map!r}")
            self.label_map = {str(old).strip(): str(new).strip() for old, new in self.label_map.items()}


@dataclass
class StrategyArgs:
    strategy: str = field(
        default="lora",
        metadata={"help": "full | feature_extraction (frozen backbone) | partial (top layers) | lora (adapters)."},
    )
    unfreeze_layers: int = field(default=2, metadata={"help": "`partial`: how many top encoder layers train."})
    layerwise_lr_decay: float | None = field(
        default=None,
        metadata={"help": "`full`/`partial`: each layer below the top trains at this factor of the one above "
                          "(1 = off). Unset: chosen by strategy and backbone (0.8 for a BatchNorm CNN, 0.9 for a "
                          "transformer, 1 elsewhere)."},
    )
    fit_head_first: bool | None = field(
        default=None,
        metadata={"help": "true | false. Before training, fit the new head as a logistic regression (least squares "
                          "for a regression) on the frozen pretrained backbone's features of the training split, so "
                          "the backbone never gets a random head's gradients (LP-FT). Unset: on for a pretrained "
                          "checkpoint whose features hf_transfer can read, off from scratch."},
    )
    batchnorm: str | None = field(
        default=None,
        metadata={"help": "update | frozen: whether BatchNorm layers normalise each training batch with its own "
                          "statistics and update their running ones, or keep the pretrained statistics (their scale "
                          "and shift still train). Unset: chosen by strategy for a BatchNorm CNN."},
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names that get adapters; chosen per architecture when omitted."}
    )
    cache_features: bool = field(
        default=True,
        metadata={"help": "`feature_extraction` without augmentation: run the frozen backbone once and train the "
                          "head on its cached features (same model, much faster). False: backbone forward every step."},
    )

    def __post_init__(self):
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_positive("unfreeze_layers", self.unfreeze_layers, allow_zero=True)
        _check_positive("lora_r", self.lora_r)
        if self.batchnorm is not None:
            _check_choice("batchnorm", self.batchnorm, ("update", "frozen"))
        if self.layerwise_lr_decay is not None and not 0 < self.layerwise_lr_decay <= 1:
            raise UsageError(f"--layerwise_lr_decay must be in (0, 1]; got {self.layerwise_lr_decay}")
        if not 0 <= self.lora_dropout < 1:
            raise UsageError(f"--lora_dropout must be in [0, 1); got {self.lora_dropout}")


@dataclass
class TrainArgs:
    output_dir: str = field(default="outputs", metadata={"help": "Where the model, report, plots and card go."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Delete the earlier run's files in --output_dir first (a non-empty folder is refused "
                          "otherwise, so two runs never mix)."},
    )
    seed: int = field(default=42, metadata={"help": "Seed for weights, data order and splits."})
    learning_rate: float | None = field(
        default=None, metadata={"help": "Peak learning rate (AdamW). Unset: chosen by strategy and backbone, and "
                                        "recorded with its reason in run_config.yaml and the report."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (never on biases and norms)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip gradients to this norm (0 = off)."})
    num_train_epochs: float | None = field(
        default=None, metadata={"help": "Epochs to train. Unset: chosen by strategy and backbone."})
    max_train_steps: int | None = field(default=None, metadata={"help": "Stop after this many optimizer steps."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch per process."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Evaluation batch per process."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "linear | cosine | constant, after warmup."})
    warmup_ratio: float | None = field(
        default=None, metadata={"help": "Fraction of steps spent warming up. Unset: chosen by strategy and backbone."})
    mixed_precision: str | None = field(
        default=None, metadata={"help": "no | fp16 (GPU only) | bf16. Unset: the launcher's choice (accelerate "
                                "launch), else bf16 where the CPU (AVX512-BF16, AMX) or GPU runs it fast, else no."}
    )
    label_smoothing: float = field(default=0.0, metadata={"help": "Cross-entropy label smoothing."})
    regression_loss: str = field(
        default="mse", metadata={"help": "mse | huber | l1: the loss of a regression, on standardised targets."})
    dropout: float | None = field(default=None, metadata={"help": "Override the checkpoint's dropout rates."})
    class_weights: str = field(
        default="none", metadata={"help": "none | auto (inverse class frequency, for imbalanced data)."}
    )
    length_grouping: bool = field(
        default=True, metadata={"help": "Batch examples of similar length together (less padding, same results)."}
    )
    eval_steps: int | None = field(
        default=None, metadata={"help": "Evaluate every N optimizer steps (default: each epoch)."})
    metric_for_best_model: str | None = field(
        default=None, metadata={"help": "Validation metric that picks the best checkpoint. Default: accuracy, "
                                        "f1_micro (multi-label) or rmse (regression)."})
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without improvement."}
    )
    save_steps: int | None = field(default=None, metadata={"help": "Save a resumable checkpoint every N steps."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep this many periodic checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "`latest` or a checkpoint folder: continue that run where it stopped."}
    )
    report_to: str = field(default="none", metadata={"help": "none | tensorboard | trackio | wandb."})
    logging_steps: int = field(default=10, metadata={"help": "Log loss and learning rate every N steps."})
    torch_compile: bool = field(
        default=False,
        metadata={"help": "Compile the model with torch.compile, once per input shape: text batches pad to multiples "
                          "of 32 tokens and audio training clips to --max_duration_seconds, so few shapes occur "
                          "(evaluation pads as predict does: past 64 shapes it runs uncompiled). Off by "
                          "default: on a 2-core CPU compiled training ran slower (BENCHMARKS.md)."},
    )
    padding_free: bool = field(
        default=False,
        metadata={"help": "Text encoders (BERT, RoBERTa): the encoder layers compute only the real tokens of each "
                          "batch, packed into one row (attention stays within each sentence). Pays where batches "
                          "carry padding; with --length_grouping (the default) little is left (BENCHMARKS.md)."},
    )
    torch_compile_mode: str | None = field(
        default=None,
        metadata={"help": "torch.compile's mode, implying --torch_compile: default | reduce-overhead (CUDA graphs: "
                          "each shape's kernels recorded once and replayed with one launch, for GPUs whose small "
                          "steps wait on kernel launches) | max-autotune (CUDA graphs too, and a search over kernel "
                          "configurations: minutes more compiling)."},
    )
    dataloader_num_workers: int | None = field(
        default=None,
        metadata={"help": "Processes that decode and augment batches beside training (0 = in the training process). "
                          "Default: min(4, CPUs per process - 1) where that is 2 or more, else 0."},
    )
    verbose: bool = field(
        default=False, metadata={"help": "Also show the libraries' own warnings and load reports."}
    )

    def __post_init__(self):
        _check_choice("lr_scheduler_type", self.lr_scheduler_type, ("linear", "cosine", "constant"))
        if self.mixed_precision is not None:  # None: decided by hf_transfer.training.precision when training starts
            _check_choice("mixed_precision", self.mixed_precision, ("no", "fp16", "bf16"))
        _check_choice("class_weights", self.class_weights, ("none", "auto"))
        _check_choice("regression_loss", self.regression_loss, ("mse", "huber", "l1"))
        if self.torch_compile_mode is not None:
            _check_choice("torch_compile_mode", self.torch_compile_mode, COMPILE_MODES)
            self.torch_compile = True
        if self.padding_free and self.torch_compile:
            raise UsageError("--padding_free with --torch_compile: the packed row's length changes with every batch, "
                             "so the model would compile again at every step; drop one")
        _check_choice("report_to", self.report_to, ("none", *TRACKERS))
        if self.report_to in TRACKERS and importlib.util.find_spec(TRACKERS[self.report_to][0]) is None:
            raise UsageError(f"--report_to {self.report_to}: {self.report_to} is not installed; "
                             f"{TRACKERS[self.report_to][1]}")
        for name in ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "max_train_steps", "eval_steps", "save_steps", "logging_steps",
                     "save_total_limit"):
            _check_positive(name, getattr(self, name))
        for name in ("weight_decay", "max_grad_norm", "early_stopping_patience", "dataloader_num_workers"):
            _check_positive(name, getattr(self, name), allow_zero=True)
        for name in ("warmup_ratio", "label_smoothing", "dropout"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise UsageError(f"--{name} must be in [0, 1); got {value}")


@dataclass
class EvalArgs:
    """How the final model is scored and which operating point it keeps; all chosen on validation, never test."""

    decision_threshold: str = field(
        default="argmax",
        metadata={"help": "argmax (the top class) | auto (binary tasks: a threshold on the positive class's "
                          "probability, chosen on validation for --threshold_goal; saved with the model)."},
    )
    threshold_goal: str | None = field(
        default=None,
        metadata={"help": "f1 (max F1 of the positive class) | recall (--target_recall) | precision "
                          "(--target_precision). Default: the target given, else f1."},
    )
    target_recall: float | None = field(
        default=None, metadata={"help": "Goal: the highest threshold whose validation recall reaches this."}
    )
    target_precision: float | None = field(
        default=None, metadata={"help": "Goal: the lowest threshold whose validation precision reaches this."}
    )
    calibrate: str = field(
        default="none",
        metadata={"help": "none | temperature (fit one softmax temperature on validation; saved with the model)."},
    )
    confidence_level: float = field(default=0.95, metadata={"help": "Coverage of the bootstrap intervals."})
    bootstrap_resamples: int = field(default=1000, metadata={"help": "Resamples of the test items per interval."})

    def __post_init__(self):
        _check_choice("decision_threshold", self.decision_threshold, ("argmax", "auto"))
        _check_choice("calibrate", self.calibrate, ("none", "temperature"))
        if self.target_recall is not None and self.target_precision is not None:
            raise UsageError("give --target_recall or --target_precision, not both")
        for name in ("target_recall", "target_precision", "confidence_level"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise UsageError(f"--{name} must be between 0 and 1; got {value}")
        _check_positive("bootstrap_resamples", self.bootstrap_resamples)
        implied = "recall" if self.target_recall is not None else "precision" if self.target_precision is not None \
            else "f1"
        if self.decision_threshold == "argmax":
            if self.threshold_goal is not None or implied != "f1":
                raise UsageError("--threshold_goal and --target_recall/--target_precision choose a threshold: "
                                 "add --decision_threshold auto")
            return
        self.threshold_goal = self.threshold_goal or implied
        _check_choice("threshold_goal", self.threshold_goal, ("f1", "recall", "precision"))
        if self.threshold_goal != implied:
            raise UsageError(f"--threshold_goal {self.threshold_goal} needs --target_{self.threshold_goal}"
                             if self.threshold_goal != "f1" else
                             f"--threshold_goal f1 can't be combined with --target_{implied}")


@dataclass
class HubArgs:
    push_to_hub: bool = field(default=False, metadata={"help": "Push the result to the Hub after training."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo to push to, `user/name`."})
    hub_private: bool = field(default=False, metadata={"help": "Create the repo as private."})
    hub_revision: str | None = field(default=None, metadata={"help": "Branch to push to (created if missing)."})
    hub_token: str | None = field(
        default=None, metadata={"help": "Token; defaults to HF_TOKEN or your login. Never written anywhere."}
    )
    merge_adapter: bool = field(default=False, metadata={"help": "Push LoRA merged into the base weights."})
    language: str | None = field(default=None, metadata={"help": "Language code for the card, e.g. `en`."})
    license: str | None = field(default=None, metadata={"help": "License for the card, e.g. `apache-2.0`."})
    write_card: bool = field(default=True, metadata={"help": "Write the model card, README.md (`hf-transfer study` "
                                                             "leaves it out of its cells)."})

    def __post_init__(self):
        if self.push_to_hub and not self.hub_model_id:
            raise UsageError("--push_to_hub needs --hub_model_id user/name")
        if self.push_to_hub and not self.write_card:
            raise UsageError("--push_to_hub needs the model card: drop --write_card false")


ADAPTATIONS = ("none", "dann")  # see hf_transfer/training/adaptation.py


@dataclass
class AdaptationArgs:
    adaptation: str = field(
        default="none",
        metadata={"help": "Domain adaptation: `none`, or `dann` (adversarial alignment of source and target features: "
                          "give unlabelled target data with --target_train_file or --target_train_dir)."},
    )
    target_train_file: str | None = field(
        default=None, metadata={"help": "Unlabelled data from the domain the model will run on (labels ignored)."}
    )
    target_train_dir: str | None = field(
        default=None, metadata={"help": "Folder of target-domain files (class subfolders or not; labels ignored)."}
    )
    target_test_file: str | None = field(
        default=None, metadata={"help": "Labelled target-domain test data, scored apart from the source test."}
    )
    target_test_dir: str | None = field(
        default=None, metadata={"help": "Class-subfolder layout of labelled target-domain test data."}
    )
    domain_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the domain loss (DANN)."})
    discriminator_hidden_size: int = field(
        default=1024, metadata={"help": "Width of the domain discriminator's two hidden layers (DANN)."}
    )

    def __post_init__(self):
        _check_choice("adaptation", self.adaptation, ADAPTATIONS)
        _check_positive("domain_loss_weight", self.domain_loss_weight)
        _check_positive("discriminator_hidden_size", self.discriminator_hidden_size)
        for what in ("train", "test"):
            if getattr(self, f"target_{what}_file") and getattr(self, f"target_{what}_dir"):
                raise UsageError(f"give --target_{what}_file or --target_{what}_dir, not both")
        has_target = bool(self.target_train_file or self.target_train_dir)
        if self.adaptation == "dann" and not has_target:
            raise UsageError("--adaptation dann needs unlabelled target data: --target_train_file or "
                             "--target_train_dir")
        if self.adaptation == "none" and has_target:
            raise UsageError("--target_train_file/--target_train_dir are read by --adaptation dann; add it, or drop "
                             "the target data")


@dataclass
class RunConfig:
    """Everything one run needs, grouped as the recipes and the library use it."""

    model: ModelArgs
    data: DataArgs
    strategy: StrategyArgs
    train: TrainArgs
    hub: HubArgs
    evaluation: EvalArgs
    adaptation: AdaptationArgs
    task: str = "text-classification"  # set by the recipe; lets `hf-transfer evaluate` rebuild the model
    modality: Any = None  # the recipe's own settings dataclass (image size, audio duration...), if it has one
    # What hf_transfer chose for settings the user left unset, and why (training.defaults): not a setting itself.
    chosen_defaults: str | None = None

    def __post_init__(self):
        if self.hub.merge_adapter and self.strategy.strategy != "lora":
            raise UsageError(f"--merge_adapter needs --strategy lora (got {self.strategy.strategy}: "
                             "there is no adapter to merge)")
        if self.train.torch_compile and self.adaptation.adaptation != "none":
            raise UsageError(f"--torch_compile with --adaptation {self.adaptation.adaptation}: the gradient reversal "
                             "weight changes every step, so the model would compile again at every step; drop one")

    def to_dict(self) -> dict[str, Any]:
        """A flat dict of every setting, for saving with the run. The Hub token is left out."""
        flat = {"task": self.task}
        for group in (self.model, self.data, self.strategy, self.train, self.hub, self.evaluation, self.adaptation,
                      self.modality):
            if group is not None:
                flat.update(dataclasses.asdict(group))
        flat.pop("hub_token")
        return flat


GROUPS = (ModelArgs, DataArgs, StrategyArgs, TrainArgs, HubArgs, EvalArgs, AdaptationArgs)
# A user who names their own data or model source replaces the recipe's default source, not adds to it.
REPLACES_DEFAULT = (("train_file", "dataset_name"), ("train_dir", "dataset_name"),
                    ("config_name", "model_name_or_path"),
                    ("dataset_name", "dataset_config_name"), ("train_file", "dataset_config_name"),
                    ("train_dir", "dataset_config_name"))


CLASSIFICATION = ("text-classification", "image-classification", "audio-classification")
# Settings only some tasks read: the other recipes leave them out of --help and refuse them.
ONLY_FOR = {
    **dict.fromkeys(("text_column", "text_pair_column", "max_seq_length"), ("text-classification",)),
    **dict.fromkeys(("train_dir", "validation_dir", "test_dir"), ("image-classification", "audio-classification")),
    **dict.fromkeys(("samples_per_class", "class_weights", "label_column", "label_map", "pooling", "problem_type",
                     "label_separator", "regression_loss", "fit_head_first"), CLASSIFICATION),
    **dict.fromkeys((f.name for f in dataclasses.fields(AdaptationArgs)), CLASSIFICATION),
    "length_grouping": ("text-classification", "audio-classification", "automatic-speech-recognition"),
    "padding_free": ("text-classification",),
    # Generation's growing decoder inputs would compile a graph per length.
    **dict.fromkeys(("torch_compile", "torch_compile_mode"), CLASSIFICATION),
}


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UsageError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise UsageError(f"{path} must hold `key: value` lines")
    return values


def _check_keys(values: dict[str, Any], source: str, known: set[str]) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"unknown setting(s) in {source}: {', '.join(unknown)}")


def _takes(annotation, kind: type) -> bool:
    """Whether a field annotated `annotation` (`list[str] | None`...) may hold a `kind` (list, dict)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_takes(arg, kind) for arg in typing.get_args(annotation))
    return (typing.get_origin(annotation) or annotation) is kind


def _check_value_kinds(values: dict[str, Any], source: str, groups: tuple) -> None:
    """A YAML list or mapping where a setting takes one value: flags can't give one, so argparse never sees it."""
    annotations = {f.name: f.type for group in groups for f in dataclasses.fields(group)}
    for key, value in values.items():
        for kind, name in ((list, "a list"), (dict, "a mapping")):
            if isinstance(value, kind) and not _takes(annotations[key], kind):
                raise UsageError(f"{source}: {key} holds {name} ({value!r}); it takes one value")


def _underscored(arg: str) -> str:
    """`--train-file` (the form argparse also accepts) as `--train_file`: the settings are named with underscores."""
    if not arg.startswith("--"):
        return arg
    name, equals, value = arg[2:].partition("=")
    return f"--{name.replace('-', '_')}{equals}{value}"


def _pop_config_flag(argv: list[str]) -> str | None:
    """Take `--config FILE` or `--config=FILE` out of `argv`; returns FILE."""
    for at, arg in enumerate(argv):
        if arg.startswith("--config="):
            del argv[at]
            return arg.removeprefix("--config=")
        if arg == "--config":
            if at + 1 >= len(argv):
                raise UsageError("--config needs a YAML file path")
            path = argv[at + 1]
            del argv[at : at + 2]
            return path
    return None


def parse(
    argv: list[str] | None = None,
    config: dict[str, Any] | str | Path | None = None,
    defaults: dict[str, Any] | None = None,
    task: str = "text-classification",
    modality: type | None = None,
) -> RunConfig:
    """Build a `RunConfig` from a recipe's `defaults`, a config (file path or dict) and command-line flags.

    `argv` may contain `--config FILE.yaml`; flags after it override the file. `modality` is the recipe's own
    settings dataclass; its fields become flags like the others. Settings that `task` does not read are left out
    of `--help` and refused when given.
    """
    groups = GROUPS + ((modality,) if modality else ())
    not_read = {name for name, tasks in ONLY_FOR.items() if task not in tasks}
    field_defaults = {f.name: f.default for group in groups for f in dataclasses.fields(group)}
    known = set(field_defaults)
    argv = [_underscored(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    config = _pop_config_flag(argv) or config
    values = dict(defaults or {})
    _check_keys(values, "recipe defaults", known)
    user_flags = {arg[2:].split("=")[0] for arg in argv if arg.startswith("--")}
    user_keys = set(user_flags)
    if config is not None:
        file_values = dict(config) if isinstance(config, dict) else read_config_file(config)
        # A run's saved run_config.yaml names its task: it may be fed back to the same recipe, not another.
        saved_task = file_values.pop("task", task)
        if saved_task != task:
            raise UsageError(f"{config} is the config of a {saved_task} run; this recipe trains {task}")
        _check_keys(file_values, str(config) if not isinstance(config, dict) else "config", known)
        _check_value_kinds(file_values, str(config) if not isinstance(config, dict) else "config", groups)
        values.update(file_values)
        user_keys |= set(file_values)
    for given, replaced in REPLACES_DEFAULT:
        if given in user_keys and replaced not in user_keys:
            values.pop(replaced, None)
    # No abbreviations: `--train_fi` must not quietly become `--train_file` (or `--config` `--config_name`).
    parser = HfArgumentParser(groups, allow_abbrev=False)
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="Settings as `key: value` lines; flags given after it override them.")
    for action in parser._actions:
        if action.dest in not_read:
            action.help = argparse.SUPPRESS
    parser.set_defaults(**values)
    namespace, unknown = parser.parse_known_args(argv)
    # A saved run_config.yaml holds every setting: one the task does not read counts only when it was changed.
    given_not_read = sorted(key for key in user_keys & not_read
                            if key in user_flags or values.get(key) != field_defaults[key])
    if given_not_read:
        raise UsageError(f"--{given_not_read[0]} does not apply to {task} (it is read by "
                         f"{', '.join(ONLY_FOR[given_not_read[0]])})")
    if unknown:
        raise UsageError(f"unknown flag(s): {' '.join(unknown)}")
    built = []
    for group in groups:
        names = {f.name for f in dataclasses.fields(group)}
        built.append(group(**{k: v for k, v in vars(namespace).items() if k in names}))
    return RunConfig(*built[:len(GROUPS)], task=task, modality=built[len(GROUPS)] if modality else None)


# How one command treated the output folder, not a setting of the run: the saved config leaves them out, so it
# can be run again with --resume_from_checkpoint or --overwrite_output_dir added.
INVOCATION_ONLY = ("overwrite_output_dir", "resume_from_checkpoint")


def save_config(run_config: RunConfig, path: str | Path) -> None:
    """Every setting as YAML that `--config` reads back; the defaults hf_transfer chose are said in a comment."""
    settings = {k: v for k, v in run_config.to_dict().items() if k not in INVOCATION_ONLY}
    why = "".join(f"# {line}\n" for line in textwrap.wrap(f"Chosen by hf_transfer: {run_config.chosen_defaults}", 116)
                  ) if run_config.chosen_defaults else ""
    atomic_write_text(path, why + yaml.safe_dump(settings, sort_keys=False))
