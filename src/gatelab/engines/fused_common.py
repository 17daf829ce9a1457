"""What the fused LSTM, GRU and RNN engines share: the step schedule, tensor <-> array
conversion, and the GEMMs.

The fused engines keep a running state `h_state` (B, H_out) (and `c_state` (B, H)) that
holds, for every row, its latest state. At step t only the first n = batch_sizes[t] rows
are real (a PackedSequence sorts rows by decreasing length), so every step works on the
row prefix `[:n]`: rows beyond it keep their state untouched. This one rule gives both
directions of a packed sequence: forward, a row that has ended keeps its final state;
reverse (t = T-1 .. 0), a row that has not started yet still holds the initial state.

GEMMs run through NumPy's OpenBLAS: on this machine it is faster than torch's MKL for
both the large input projection and the small per-step product (benchmarks/README.md).
The time loop itself runs inside numba (`LOOP = "numba"`), calling the same OpenBLAS
through `_kernels_blas`, so a step costs no Python; `LOOP = "python"` (or a NumPy without
OpenBLAS's CBLAS symbols) runs the same steps from Python with NumPy's matmul.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch

from gatelab.engines import _kernels_blas
from gatelab.engines import workspace

LOOP = "numba"  # "numba" | "python": who drives the time loop (see the module docstring)

class Step(NamedTuple):
    """One step of the recurrence in processing order.

    t: time index; n: rows real at t (the prefix [:n]); tp: the time index the state
    comes from (t-1 forward, t+1 reverse, -1 for the first step); n_prev: how many of
    the n rows take their previous state from step tp (the rest from the initial state).
    """

    t: int
    n: int
    tp: int
    n_prev: int


def schedule(T: int, B: int, batch_sizes, reverse: bool) -> tuple[Step, ...]:
    """The steps in the order the forward pass runs them (backward runs them reversed).
    The same schedule object for the same arguments (cached: a call's Python costs count
    at small shapes, and steps_array then finds its array cached too)."""
    sizes = None if batch_sizes is None else tuple(batch_sizes.tolist() if hasattr(batch_sizes, "tolist")
                                                   else (int(s) for s in batch_sizes))
    return _schedule(T, B, sizes, reverse)


@functools.lru_cache(maxsize=256)
def _schedule(T: int, B: int, sizes: tuple[int, ...] | None, reverse: bool) -> tuple[Step, ...]:
    sizes = (B,) * T if sizes is None else sizes
    order = range(T - 1, -1, -1) if reverse else range(T)
    steps, tp = [], -1
    for t in order:
        n = sizes[t]
        n_prev = 0 if tp < 0 else min(n, sizes[tp])
        steps.append(Step(t, n, tp, n_prev))
        tp = t
    return tuple(steps)


def numba_loop() -> bool:
    """True when the time loop runs in numba (OpenBLAS bound), False for the Python loop."""
    return LOOP == "numba" and _kernels_blas.bind()


@functools.lru_cache(maxsize=256)
def steps_array(steps: tuple[Step, ...]) -> np.ndarray:
    """The schedule as an (S, 4) int64 array of (t, n, tp, n_prev) for numba (read-only:
    cached, shared by every call with the same schedule)."""
    array = np.asarray(steps, dtype=np.int64).reshape(-1, 4)  # (S, 4)
    array.flags.writeable = False
    return array


def previous(seq: np.ndarray, init: np.ndarray, steps: tuple[Step, ...]) -> np.ndarray:
    """The state each real row starts a step from, for all steps at once.

    seq: (T, B, K) the states after each step; init: (B, K) the initial state.
    Returns (T, B, K): row b at t holds seq[tp, b] or init[b]; padded rows are zero.
    """
    T, B, K = seq.shape
    if not steps:  # T = 0
        return workspace.zeros_like(seq)
    if all(s.n == B for s in steps):  # no packing: one shifted copy
        out = workspace.empty_like(seq)  # (T, B, K)
        if steps[0].t == 0:  # forward
            out[0] = init
            out[1:] = seq[:-1]
        else:  # reverse
            out[T - 1] = init
            out[:-1] = seq[1:]
        return out
    out = workspace.zeros_like(seq)  # (T, B, K)
    for t, n, tp, n_prev in steps:
        if n_prev:
            out[t, :n_prev] = seq[tp, :n_prev]
        out[t, n_prev:n] = init[n_prev:n]
    return out


class Previous(NamedTuple):
    """H_prev (T*B, K), the state each row started its step from, in two parts: rows
    [main_at, main_at + len(main)) are `main`, rows [init_at, init_at + len(init)) are `init`
    (the initial state; no rows when `main` is all of H_prev). See previous_rows."""

    main: np.ndarray  # (R, K)
    main_at: int
    init: np.ndarray  # (R0, K)
    init_at: int


def previous_rows(seq: np.ndarray, init: np.ndarray, steps: tuple[Step, ...], d: np.ndarray | None = None
                  ) -> Previous:
    """previous_dropped(seq, init, steps, d) as the Previous that δW_hh = δA^T H_prev reads
    (times_previous, fused_units.grads_of_my_rows). Without packing or a mask, H_prev is the
    outputs shifted by one step and the initial state: views, no copy (the copy: 0.73 ms
    at (T,B,H) = (128,64,256) with cold caches, on the calling thread before the team)."""
    T, B, K = seq.shape
    if d is None and steps and all(s.n == B for s in steps):
        seq2, init2 = seq.reshape(T * B, K), init.reshape(B, K)
        if steps[0].t == 0:  # forward: step t starts from out[t-1], step 0 from init
            return Previous(seq2[:(T - 1) * B], B, init2, 0)
        return Previous(seq2[B:], 0, init2, (T - 1) * B)  # reverse: from out[t+1], step T-1 from init
    return Previous(previous_dropped(seq, init, steps, d).reshape(T * B, K), 0, np.empty((0, K), seq.dtype), 0)


def times_previous(d2: np.ndarray, prev: Previous, out: np.ndarray) -> np.ndarray:
    """out = d2^T H_prev: d2 (T*B, G) δ of the recurrent product, H_prev as prev's parts."""
    mm(d2[prev.main_at:prev.main_at + len(prev.main)].T, prev.main, out)  # (G, R) x (R, K); zeros when R = 0
    if len(prev.init):  # the initial state's rows, through pooled scratch
        out += mm(d2[prev.init_at:prev.init_at + len(prev.init)].T, prev.init, workspace.empty_like(out))
    return out


def previous_dropped(seq: np.ndarray, init: np.ndarray, steps: tuple[Step, ...], d: np.ndarray | None) -> np.ndarray:
    """previous(seq, init, steps) times the recurrent-dropout mask d (B, K) when given:
    d ⊙ h_{t-1} for every step, what the recurrent product read (padded rows stay zero)."""
    out = previous(seq, init, steps)  # (T, B, K)
    if d is not None:
        out *= d
    return out


def arr(t: torch.Tensor | None) -> np.ndarray | None:
    """A C-contiguous NumPy view (or copy) of a CPU tensor, detached from autograd."""
    if t is None:
        return None
    return np.ascontiguousarray(t.detach().numpy())


def tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing memory with the array."""
    return torch.from_numpy(a)


def needs_grad(*tensors) -> bool:
    """True when autograd will record this call (some input requires grad, grad mode on)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def mm(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = a @ b (OpenBLAS GEMM into a preallocated array; transposed views are free)."""
    return np.matmul(a, b, out=out)


def add_rows_sum(da: np.ndarray) -> np.ndarray:
    """The bias gradient: da (T, B, G*H) summed over steps and rows -> (G*H,), as the
    GEMV 1^T dA (a streaming BLAS pass; NumPy's axis-0 sum is ~5x slower here)."""
    rows = da.reshape(-1, da.shape[-1])  # (T*B, G*H)
    return np.matmul(np.ones(rows.shape[0], da.dtype), rows)  # (G*H,)
