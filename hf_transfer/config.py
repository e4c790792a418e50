"""Run configuration: dataclasses with help text, parsed by `HfArgumentParser`.

Precedence, lowest first: dataclass defaults < a recipe's defaults < `--config FILE.yaml` < flags.
"""

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from hf_transfer.io import atomic_write_text

STRATEGIES = ("full", "feature_extraction", "partial", "lora")


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
        metadata={"help": "Hub id or folder of a model config: train from scratch with it instead of pretrained weights."},
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

    def __post_init__(self):
        if not self.model_name_or_path and not self.config_name:
            raise UsageError("give --model_name_or_path (pretrained) or --config_name (train from scratch)")


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


@dataclass
class StrategyArgs:
    strategy: str = field(
        default="lora",
        metadata={"help": "full | feature_extraction (frozen backbone) | partial (top layers) | lora (adapters)."},
    )
    unfreeze_layers: int = field(default=2, metadata={"help": "`partial`: how many top encoder layers train."})
    layerwise_lr_decay: float = field(
        default=1.0,
        metadata={"help": "`full`/`partial`: each layer below the top trains at this factor of the one above (1 = off)."},
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names that get adapters; chosen per architecture when omitted."}
    )

    def __post_init__(self):
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_positive("unfreeze_layers", self.unfreeze_layers, allow_zero=True)
        _check_positive("lora_r", self.lora_r)
        if not 0 < self.layerwise_lr_decay <= 1:
            raise UsageError(f"--layerwise_lr_decay must be in (0, 1]; got {self.layerwise_lr_decay}")
        if not 0 <= self.lora_dropout < 1:
            raise UsageError(f"--lora_dropout must be in [0, 1); got {self.lora_dropout}")


@dataclass
class TrainArgs:
    output_dir: str = field(default="outputs", metadata={"help": "Where the model, report, plots and card go."})
    seed: int = field(default=42, metadata={"help": "Seed for weights, data order and splits."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (AdamW)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (never on biases and norms)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip gradients to this norm (0 = off)."})
    num_train_epochs: float = field(default=3, metadata={"help": "Epochs to train."})
    max_train_steps: int | None = field(default=None, metadata={"help": "Stop after this many optimizer steps."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch per process."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Evaluation batch per process."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "linear | cosine | constant, after warmup."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Fraction of steps spent warming up."})
    mixed_precision: str | None = field(
        default=None, metadata={"help": "no | fp16 | bf16. Unset: the launcher's choice (accelerate launch), else bf16 "
                                "where the CPU (AVX512-BF16, AMX) or GPU runs it fast, else no."}
    )
    label_smoothing: float = field(default=0.0, metadata={"help": "Cross-entropy label smoothing."})
    dropout: float | None = field(default=None, metadata={"help": "Override the checkpoint's dropout rates."})
    class_weights: str = field(
        default="none", metadata={"help": "none | auto (inverse class frequency, for imbalanced data)."}
    )
    length_grouping: bool = field(
        default=True, metadata={"help": "Batch examples of similar length together (less padding, same results)."}
    )
    eval_steps: int | None = field(default=None, metadata={"help": "Evaluate every N optimizer steps (default: each epoch)."})
    metric_for_best_model: str = field(default="accuracy", metadata={"help": "Validation metric that picks the best checkpoint."})
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

    def __post_init__(self):
        _check_choice("lr_scheduler_type", self.lr_scheduler_type, ("linear", "cosine", "constant"))
        if self.mixed_precision is not None:  # None: decided by hf_transfer.precision when training starts
            _check_choice("mixed_precision", self.mixed_precision, ("no", "fp16", "bf16"))
        _check_choice("class_weights", self.class_weights, ("none", "auto"))
        _check_choice("report_to", self.report_to, ("none", "tensorboard", "trackio", "wandb"))
        for name in ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "max_train_steps", "eval_steps", "save_steps", "logging_steps",
                     "save_total_limit"):
            _check_positive(name, getattr(self, name))
        for name in ("weight_decay", "max_grad_norm", "early_stopping_patience"):
            _check_positive(name, getattr(self, name), allow_zero=True)
        for name in ("warmup_ratio", "label_smoothing", "dropout"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise UsageError(f"--{name} must be in [0, 1); got {value}")


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

    def __post_init__(self):
        if self.push_to_hub and not self.hub_model_id:
            raise UsageError("--push_to_hub needs --hub_model_id user/name")


@dataclass
class RunConfig:
    """Everything one run needs, grouped as the recipes and the library use it."""

    model: ModelArgs
    data: DataArgs
    strategy: StrategyArgs
    train: TrainArgs
    hub: HubArgs
    task: str = "text-classification"  # set by the recipe; lets `hf-transfer evaluate` rebuild the model
    modality: Any = None  # the recipe's own settings dataclass (image size, audio duration...), if it has one

    def __post_init__(self):
        if self.hub.merge_adapter and self.strategy.strategy != "lora":
            raise UsageError(f"--merge_adapter needs --strategy lora (got {self.strategy.strategy}: "
                             "there is no adapter to merge)")

    def to_dict(self) -> dict[str, Any]:
        """A flat dict of every setting, for saving with the run. The Hub token is left out."""
        flat = {"task": self.task}
        for group in (self.model, self.data, self.strategy, self.train, self.hub, self.modality):
            if group is not None:
                flat.update(dataclasses.asdict(group))
        flat.pop("hub_token")
        return flat


GROUPS = (ModelArgs, DataArgs, StrategyArgs, TrainArgs, HubArgs)
# A user who names their own data or model source replaces the recipe's default source, not adds to it.
REPLACES_DEFAULT = (("train_file", "dataset_name"), ("train_dir", "dataset_name"), ("config_name", "model_name_or_path"),
                    ("dataset_name", "dataset_config_name"), ("train_file", "dataset_config_name"),
                    ("train_dir", "dataset_config_name"))


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


def parse(
    argv: list[str] | None = None,
    config: dict[str, Any] | str | Path | None = None,
    defaults: dict[str, Any] | None = None,
    task: str = "text-classification",
    modality: type | None = None,
) -> RunConfig:
    """Build a `RunConfig` from a recipe's `defaults`, a config (file path or dict) and command-line flags.

    `argv` may contain `--config FILE.yaml`; flags after it override the file. `modality` is the recipe's own
    settings dataclass; its fields become flags like the others.
    """
    groups = GROUPS + ((modality,) if modality else ())
    known = {f.name for group in groups for f in dataclasses.fields(group)}
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 >= len(argv):
            raise UsageError("--config needs a YAML file path")
        config = argv[at + 1]
        del argv[at : at + 2]
    values = dict(defaults or {})
    _check_keys(values, "recipe defaults", known)
    user_keys = {arg[2:].split("=")[0] for arg in argv if arg.startswith("--")}
    if config is not None:
        file_values = config if isinstance(config, dict) else read_config_file(config)
        _check_keys(file_values, str(config) if not isinstance(config, dict) else "config", known)
        values.update(file_values)
        user_keys |= set(file_values)
    for given, replaced in REPLACES_DEFAULT:
        if given in user_keys and replaced not in user_keys:
            values.pop(replaced, None)
    parser = HfArgumentParser(groups)
    parser.set_defaults(**values)
    namespace, unknown = parser.parse_known_args(argv)
    if unknown:
        raise UsageError(f"unknown flag(s): {' '.join(unknown)}")
    built = []
    for group in groups:
        names = {f.name for f in dataclasses.fields(group)}
        built.append(group(**{k: v for k, v in vars(namespace).items() if k in names}))
    return RunConfig(*built[:len(GROUPS)], task=task, modality=built[len(GROUPS)] if modality else None)


def save_config(run_config: RunConfig, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(run_config.to_dict(), sort_keys=False))
