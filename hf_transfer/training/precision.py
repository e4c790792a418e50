"""The training precision when nobody chose one: bf16 where the hardware runs it fast, fp32 elsewhere."""

import os

import torch

# `accelerate launch` passes its --mixed_precision (or its config file's) to the script in this variable.
LAUNCHER_VARIABLE = "ACCELERATE_MIXED_PRECISION"


def fast_bf16(use_cpu: bool = False) -> tuple[bool, str]:
    """Whether the device accelerate will train on has bf16 matmuls in hardware, and what it is.

    Elsewhere bf16 is emulated and slower than fp32: GPUs before Ampere, CPUs without AVX512-BF16 or AMX.
    """
    if torch.cuda.is_available() and not use_cpu:
        return torch.cuda.is_bf16_supported(including_emulation=False), torch.cuda.get_device_name()
    if torch.cpu._is_amx_tile_supported():
        return True, "a CPU with AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return True, "a CPU with AVX512-BF16"
    return False, "a CPU without AVX512-BF16 or AMX"


def choose_mixed_precision(requested: str | None, use_cpu: bool = False) -> str:
    """`requested` if the user set it; else the launcher's choice if `accelerate launch` made one; else bf16 where
    `fast_bf16`, "no" elsewhere. A choice made here is printed, so a run never changes precision silently."""
    if requested is not None:
        return requested
    launcher = os.environ.get(LAUNCHER_VARIABLE)
    if launcher:
        return launcher.lower()
    fast, device = fast_bf16(use_cpu)
    chosen = "bf16" if fast else "no"
    if os.environ.get("RANK", "0") == "0":
        reason = "runs bf16 matmuls in hardware" if fast else "has no fast bf16"
        print(f"mixed_precision: {chosen} (none set; {device} {reason}; --mixed_precision overrides)")
    return chosen
