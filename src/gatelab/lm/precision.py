"""The arithmetic a training run uses: `--precision float32 | float64 | bf16`.

    float32  parameters and activations in float32 (the default).
    float64  everything in float64: slow, for exactness checks (tests compare runs to 1e-10).
    bf16     mixed precision: parameters, gradients and optimizer state stay float32 (the
             master weights); the forward runs under `torch.autocast(dtype=torch.bfloat16)`
             on the CPU or the GPU, so matrix products take bfloat16 inputs and accumulate
             in float32; the loss is computed in float32.

On the CPU, gatelab.nn's fused engine computes in float32/float64 whatever autocast says
(its kernels are its own, autocast does not reach them), so a bf16 run on the CPU uses the
eager engine, whose matrix products autocast turns into bfloat16 ones: `engine_backend()`
maps `--backend auto` to "eager" there and refuses `--backend fused`.
"""

from __future__ import annotations

import contextlib  # torch is imported inside the functions: config.py imports this module

PRECISIONS = ("float32", "float64", "bf16")


def check(precision: str) -> None:
    """ValueError for an unknown precision name."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def param_dtype(precision: str):
    """The torch dtype of the parameters (the master weights)."""
    import torch

    check(precision)
    return torch.float64 if precision == "float64" else torch.float32


def autocast(precision: str, device):
    """The context a forward pass runs in: bf16 autocast, or nothing."""
    import torch

    check(precision)
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def engine_backend(backend: str, precision: str, device) -> str:
    """The gatelab.nn backend a run uses for `--backend` at this precision and device.

    Arguments:
        backend: "auto" or an engine name, as given.
        precision: the run's precision.
        device: the device the run computes on.

    ValueError when the named backend cannot honour bf16 autocast.
    """
    check(precision)
    if precision != "bf16" or getattr(device, "type", str(device)) != "cpu":
        return backend
    if backend == "fused":
        raise ValueError("--backend fused computes in float32 on the CPU; --precision bf16 needs "
                         "--backend eager (or auto, which picks it)")
    return "eager" if backend == "auto" else backend
