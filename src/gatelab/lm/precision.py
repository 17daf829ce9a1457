"""The arithmetic a training run uses: `--precision float32 | float64 | bf16`.

    float32  parameters and activations in float32 (the default).
    float64  everything in float64: slow, for exactness checks (tests compare runs to 1e-10).
    bf16     mixed precision: parameters, gradients and optimizer state stay float32 (the
             master weights); the forward runs under `torch.autocast(dtype=torch.bfloat16)`
             on the CPU or the GPU, so matrix products take bfloat16 inputs and accumulate
             in float32; the loss is computed in float32.

On the CPU, gatelab.nn's fused engine computes in float32/float64 only, so under bf16
autocast `backend="auto"` runs the eager engine, whose matrix products autocast turns into
bfloat16 ones (see `gatelab.engines`' selection log).
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("float32", "float64", "bf16")


def check(precision: str) -> None:
    """ValueError for an unknown precision name."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def param_dtype(precision: str) -> torch.dtype:
    """The dtype of the parameters (the master weights)."""
    check(precision)
    return torch.float64 if precision == "float64" else torch.float32


def autocast(precision: str, device: torch.device):
    """The context a forward pass runs in: bf16 autocast, or nothing."""
    check(precision)
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
