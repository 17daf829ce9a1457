"""Masks an engine may fill itself, and the fill the module draws with on the CPU.

A module's forward draws zoneout's masks on the CPU as `Deferred`: the seed is taken from
torch's global RNG at once (so the RNG advances exactly as for a filled mask, and
`torch.manual_seed(s); m(x)` still equals `torch.manual_seed(s); m(x, masks=m.draw_masks(T, B))`),
the values are left to the engine. An engine that sets FILLS_MASKS receives them as they
are: the fused LSTM's and GRU's units splits fill each thread's own units of each step
inside their time loops (fused_lstm_family_units, fused_gru_family_units, from the arrays
and draws `as_arrays` gives; at (50,16,64,128) drawing an LSTM's two masks beforehand took
~0.27 ms of a 5.3 ms training step). Every other engine and path receives them filled
(`materialize`), and so does any code that reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Deferred:
    """uniform_below(shape, p) (gatelab.nn.options) at `seed`, not yet filled: 1 where the
    SplitMix64 integer U_k of element k (engines._kernels_rng) is below ⌊p 2^32⌋."""

    seed: int
    p: float
    shape: tuple
    dtype: torch.dtype

    @property
    def below(self) -> int:
        """⌊p 2^32⌋: the mask is 1 where U < below."""
        from gatelab.engines import _kernels_rng

        return _kernels_rng.threshold(self.p)

    def tensor(self) -> torch.Tensor:
        """The mask's values, as uniform_below draws them at this seed."""
        return fill(self.seed, self.shape, self.p, self.dtype, keep=False)


def materialize(masks: dict | None) -> dict | None:
    """masks with every Deferred one filled (the dict itself when none is)."""
    if not masks or not any(isinstance(m, Deferred) for m in masks.values()):
        return masks
    return {k: m.tensor() if isinstance(m, Deferred) else m for k, m in masks.items()}


def as_arrays(masks: dict | None, names: tuple, dt, fill_later: bool) -> tuple[list, np.ndarray]:
    """The masks `names` as arrays in dtype dt (None where absent), and draws (len(names), 3)
    int64: row k is (1, seed, below) where masks[names[k]] is Deferred and fill_later (its
    array is then left unfilled, for the engine's threads to fill in their time loop), else
    zeros (a Deferred mask is then filled here)."""
    from gatelab.engines import workspace  # here: it loads numba (see fill)
    from gatelab.engines.fused_common import arr

    masks = masks or {}
    draws = np.zeros((len(names), 3), np.int64)
    arrays = []
    for k, name in enumerate(names):
        m = masks.get(name)
        if isinstance(m, Deferred) and fill_later:
            draws[k] = (1, m.seed, m.below)
            arrays.append(workspace.empty(m.shape, dt))
        else:
            arrays.append(arr(m.tensor() if isinstance(m, Deferred) else m))
    return arrays, draws


def fill(seed: int, shape, p: float, dtype, keep: bool) -> torch.Tensor:
    """A CPU mask of `shape` in `dtype` from SplitMix64 at `seed` (_kernels_rng.draw, on the
    engine's threads): keep False, 1 where U < ⌊p 2^32⌋; keep True, 1 / (1 - p) where
    U >= ⌊p 2^32⌋."""
    from gatelab.engines import _kernels_rng, fused_parallel  # here: they load numba, which
    # `import gatelab.nn` need not

    mask = _kernels_rng.draw(seed, tuple(shape), p, np.float64 if dtype == torch.float64 else np.float32, keep,
                             fused_parallel.threads(), lambda fn, k: fused_parallel.team(fn, k, torch_modes=False))
    return torch.from_numpy(mask).to(dtype)
