"""The learning rate, epochs, warm-up and layer-wise decay a run trains with when the user names none, and whether
the head is fitted on frozen features first: chosen by strategy and backbone, not by recipe.

One rate can't serve every strategy: a head alone or LoRA's zero-initialised adapters want ~1e-3, while full
fine-tuning at that rate wrecks a pretrained transformer's features in a few steps. A BatchNorm CNN tolerates ~10x a
transformer's full fine-tuning rate. Fitting the head first (LP-FT, Kumar et al. 2022) sends the backbone the
gradients of a head that already answers well, not a random one's: with it, the backbone rates are those of a second
stage. BENCHMARKS.md ("Defaults that transfer") measures each row against a linear probe on small data.
"""

from dataclasses import dataclass

from torch import nn

from hf_transfer.config import ONLY_FOR, RunConfig

BATCHNORM_CNN, TRANSFORMER = "BatchNorm CNN", "transformer"
SETTINGS = ("learning_rate", "num_train_epochs", "warmup_ratio", "layerwise_lr_decay", "fit_head_first", "batchnorm")


@dataclass(frozen=True)
class Schedule:
    learning_rate: float
    num_train_epochs: float
    warmup_ratio: float
    layerwise_lr_decay: float
    fit_head_first: bool
    why: str
    batchnorm: str | None = None  # where BatchNorm layers train: full and partial fine-tuning of a CNN


def backbone_family(model: nn.Module) -> str:
    """BatchNorm CNN (EfficientNet, MobileNet, ResNet) or transformer (BERT, ViT, Whisper): the layer-norm
    families want ~10x lower full fine-tuning rates."""
    batchnorm = any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())
    return BATCHNORM_CNN if batchnorm else TRANSFORMER


def schedule_for(strategy: str, family: str, pretrained: bool) -> Schedule:
    """The defaults of one (strategy, backbone family, pretrained or not)."""
    if not pretrained:
        return Schedule(1e-3, 30, 0.1, 1.0, False, "from scratch: every weight starts random, so a high rate and "
                        "many epochs; no features to fit a head on")
    if strategy == "feature_extraction":
        return Schedule(1e-3, 10, 0.0, 1.0, True, "a head alone on frozen features: fitted first as a logistic "
                        "regression, then trained on at a head's rate")
    if strategy == "lora":
        return Schedule(1e-3, 8, 0.1, 1.0, True, "LoRA: the adapters start at zero and need a head's rate to move "
                        "within a few epochs; the head is fitted first, so they start from a useful gradient")
    if family == BATCHNORM_CNN:
        return Schedule(3e-4, 8, 0.1, 0.8, True, f"{strategy} fine-tuning of a pretrained BatchNorm CNN after "
                        "fitting the head: a second-stage rate, each block 0.8x the rate of the one above; "
                        "BatchNorm keeps its pretrained statistics, which small batches of shifted inputs would "
                        "overwrite with noise", batchnorm="frozen")
    return Schedule(3e-5, 5, 0.1, 0.9, True, f"{strategy} fine-tuning of a pretrained transformer after fitting "
                    "the head: a low rate keeps its features, each layer 0.9x the rate of the one above")


def apply_defaults(run: RunConfig, model: nn.Module) -> None:
    """Fill every setting of `SETTINGS` that the user left unset (None) and the task reads from `schedule_for`, and
    say in `run.chosen_defaults` what was chosen and why. Settings the user gave are kept."""
    schedule = schedule_for(run.strategy.strategy, backbone_family(model), pretrained=run.model.config_name is None)
    chosen = []
    for name in SETTINGS:
        group = run.train if hasattr(run.train, name) else run.strategy
        value = getattr(schedule, name)
        if getattr(group, name) is None and value is not None and run.task in ONLY_FOR.get(name, (run.task,)):
            setattr(group, name, value)
            chosen.append(f"--{name} {value if isinstance(value, bool | str) else f'{value:g}'}")
    if chosen:
        run.chosen_defaults = f"{', '.join(chosen)}. Why: {schedule.why}. Each can be set with its flag."
