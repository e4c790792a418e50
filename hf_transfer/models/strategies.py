"""Transfer strategies: decide what trains, and at which learning rate."""

import re

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from hf_transfer.config import StrategyArgs, TrainArgs, UsageError
from hf_transfer.models.architectures import (
    base_model,
    encoder_layers,
    fixed_parameter_names,
    has_decoder,
    head_module_names,
    lora_target_modules,
    matches_target,
    top_modules,
)


def apply_strategy(model: nn.Module, args: StrategyArgs, peft_task_type: str | None) -> nn.Module:
    """Freeze what the strategy keeps fixed (or wrap in LoRA); returns the model to train.

    Frozen parts then run as in inference even while the rest trains (see `keep_frozen_in_eval`)."""
    model = _freeze(model, args, peft_task_type)
    keep_frozen_in_eval(model, batchnorm_only=args.strategy == "lora")
    if args.batchnorm == "frozen":  # trainable ones too: they normalise with the pretrained statistics
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.register_forward_pre_hook(_run_in_eval)
    return model


def _freeze(model: nn.Module, args: StrategyArgs, peft_task_type: str | None) -> nn.Module:
    heads = head_module_names(model)
    fixed = fixed_parameter_names(model)
    if args.strategy == "lora":
        targets = args.lora_target_modules or lora_target_modules(model)
        _check_lora_targets(model, targets, args.lora_r)
        # Resolved here so the saved config and the card name the modules that got adapters.
        args.lora_target_modules = targets
        config = LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=args.lora_target_modules,
            # The head is new: train it fully and save it with the adapter, or a reload gets a random head.
            modules_to_save=heads,
            task_type=peft_task_type,
        )
        return get_peft_model(model, config)
    model.requires_grad_(args.strategy == "full")
    for name in heads:
        model.get_submodule(name).requires_grad_(True)
    if has_decoder(model):  # the encoder's features stay as they are; the decoder learns to write
        model.get_decoder().requires_grad_(True)
    if args.strategy == "partial" and args.unfreeze_layers:
        layers = encoder_layers(model)
        for module in [*layers[len(layers) - args.unfreeze_layers:], *top_modules(model)]:
            module.requires_grad_(True)
    parameters = dict(model.named_parameters())
    for name in fixed:
        parameters[name].requires_grad_(False)
    return model


def _check_lora_targets(model: nn.Module, targets: list[str], rank: int) -> None:
    """Each target names some layer: peft drops one that matches nothing silently (or fails deep inside when none
    does). peft adapts a grouped (depthwise) convolution only when the rank divides by its groups, and never merges
    it; say so before peft fails deep inside, and name the layers that work."""
    names = [name for name, _ in model.named_modules()]
    for target in targets:  # peft's match: the module's name, or its end after a dot
        if not any(name == target or name.endswith(f".{target}") for name in names):
            layers = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                             if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d))})
            raise UsageError(f"--lora_target_modules {target}: no layer of the model is "
                             f"named so; its layers: {', '.join(layers)}")
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.groups > 1 and any(matches_target(name, t) for t in targets):
            raise UsageError(f"--lora_target_modules: {name} is a depthwise convolution (groups={module.groups}); "
                             "LoRA on it can't be merged and needs a rank divisible by its groups. Target the 1x1 "
                             f"convolutions instead (for {model.config.model_type}: "
                             f"{', '.join(lora_target_modules(model))}) or use --strategy partial")


def _run_in_eval(module: nn.Module, _inputs) -> None:
    if module.training:
        module.eval()


def keep_frozen_in_eval(model: nn.Module, batchnorm_only: bool = False) -> None:
    """Make frozen modules run as in inference whenever they run, though the loop calls `model.train()` each epoch.

    A frozen BatchNorm in train mode would normalise with each batch's statistics and overwrite the pretrained
    running ones. A frozen backbone drops no activations either, so it gives the same features every epoch (what
    lets `training.features` cache them). `batchnorm_only` (LoRA): only the frozen BatchNorm layers, since the
    adapted blocks keep their dropout.
    """
    for module in _frozen_modules(model, batchnorm_only):
        module.register_forward_pre_hook(_run_in_eval)


def _frozen_modules(module: nn.Module, batchnorm_only: bool) -> list[nn.Module]:
    """The largest submodules whose parameters are all frozen (only BatchNorm layers when `batchnorm_only`)."""
    parameters = list(module.parameters())
    if parameters and not any(p.requires_grad for p in parameters):
        if not batchnorm_only or isinstance(module, nn.modules.batchnorm._BatchNorm):
            return [module]
    return [found for child in module.children() for found in _frozen_modules(child, batchnorm_only)]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def _layer_depths(model: nn.Module) -> dict[str, int]:
    """How far below the head each trainable parameter sits: 0 for head and top, L - i for layer i, L + 1 below."""
    layers = encoder_layers(model)
    layer_ids = {id(p): i for i, layer in enumerate(layers) for p in layer.parameters()}
    backbone = {id(p) for p in base_model(model).parameters()}
    depths = {}
    for name, param in model.named_parameters():
        if id(param) in layer_ids:
            depths[name] = len(layers) - layer_ids[id(param)]
        elif id(param) in backbone and re.search(r"embed|feature_extractor|feature_projection", name):
            depths[name] = len(layers) + 1
        else:
            depths[name] = 0
    return depths


def parameter_groups(model: nn.Module, strategy: StrategyArgs, train: TrainArgs,
                     extra_modules: tuple[nn.Module, ...] = ()) -> list[dict]:
    """AdamW groups: no weight decay on biases and norms (1-d tensors); layer-wise LR decay when asked. Modules
    trained beside the model (DANN's discriminator, in `extra_modules`) take the base learning rate."""
    use_decay = strategy.layerwise_lr_decay < 1 and strategy.strategy in ("full", "partial")
    depths = _layer_depths(model) if use_decay else {}
    rated = [(train.learning_rate * strategy.layerwise_lr_decay ** depths.get(name, 0), param)
             for name, param in model.named_parameters() if param.requires_grad]
    rated += [(train.learning_rate, param) for module in extra_modules for param in module.parameters()]
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for lr, param in rated:
        weight_decay = train.weight_decay if param.ndim >= 2 else 0.0
        groups.setdefault((lr, weight_decay), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in groups.items()]


def build_optimizer(model: nn.Module, strategy: StrategyArgs, train: TrainArgs, device: torch.device,
                    extra_modules: tuple[nn.Module, ...] = ()):
    return torch.optim.AdamW(
        parameter_groups(model, strategy, train, extra_modules),
        lr=train.learning_rate,
        betas=(train.adam_beta1, train.adam_beta2),
        fused=device.type in ("cuda", "cpu"),
    )


def _trainable_entries(model: nn.Module) -> dict[str, torch.Tensor]:
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return {name: tensor for name, tensor in model.state_dict().items() if name not in frozen}


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only what trains (plus buffers): enough to restore the best weights without copying a frozen backbone."""
    return {name: tensor.detach().cpu().clone() for name, tensor in _trainable_entries(model).items()}


def load_trainable_state_dict(model: nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load what `trainable_state_dict` saved, strictly: every trainable tensor and nothing else (torch's
    strict=True would also ask for the frozen ones). Checked before loading, so a mismatch changes nothing."""
    expected = _trainable_entries(model)
    missing, unexpected = sorted(expected.keys() - weights.keys()), sorted(weights.keys() - expected.keys())
    if missing or unexpected:
        raise RuntimeError(f"{source} does not fit the model: missing {', '.join(missing) or 'none'}; "
                           f"unexpected {', '.join(unexpected) or 'none'}")
    model.load_state_dict(weights, strict=False)  # the frozen tensors are the only ones left out


def is_adapter(model: nn.Module) -> bool:
    return isinstance(model, PeftModel)
