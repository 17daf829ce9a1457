"""The masks' uniform integers: SplitMix64 outputs, each element of a mask from its own index.

SplitMix64 (Steele, Lea and Flood 2014; the generator that seeds xoshiro) advances its
state by the constant γ = 0x9E3779B97F4A7C15 and outputs a mix of the state:

    z = s + (m + 1) γ      (the m-th output of the generator started at state s)
    z = (z ^ (z >> 30)) · 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) · 0x94D049BB133111EB
    out_m = z ^ (z >> 31)

Output m is computed from m alone, so any range of a mask can be filled by any thread and
the mask is the same whatever the thread count. Element 2m of a mask takes the low 32 bits
of out_m, element 2m + 1 the high 32 bits: U_k, uniform on [0, 2^32).

    fill_mask(seed, below, keep, scale, lo, hi, out)   out[k] for k in [lo, hi)

keep False: out[k] = 1 where U_k < below (zoneout: keep the previous value), else 0;
keep True: out[k] = scale where U_k >= below (dropout: keep the unit), else 0.

    fill_steps(seed, below, mask, t, u0, u1)   a (T, B, H) zoneout mask's step t, units [u0, u1)

the same values, filled by the LSTM's units split inside its time loop (engines.masks.Deferred).
0.7 ns an element on one core for float32 (0.9 float64); with the set-up, a (50,16,128)
mask in 0.11 ms and a (100,32,256) one in 0.36 on 2 threads, against 0.25 and 0.87 with
NumPy's SFC64 streams, whose set-up (SeedSequence, spawn, a generator per stream) alone
cost ~40 µs a mask.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, uint64

from gatelab.engines._kernels import JIT

MIN_PER_THREAD = 1 << 16  # elements a thread below which waking the team costs more (measured:
# 65,536 elements in 48 µs on one thread, 56 on two; 131,072 in 95 against 80)
GAMMA = uint64(0x9E3779B97F4A7C15)
MIX1 = uint64(0xBF58476D1CE4E5B9)
MIX2 = uint64(0x94D049BB133111EB)


@njit(inline="always")
def splitmix64(seed, m):
    """The m-th output of SplitMix64 started at state `seed` (both uint64)."""
    z = seed + (m + uint64(1)) * GAMMA
    z = (z ^ (z >> uint64(30))) * MIX1
    z = (z ^ (z >> uint64(27))) * MIX2
    return z ^ (z >> uint64(31))


@njit(**JIT)
def fill_mask(seed, below, keep, scale, lo, hi, out):
    """out[k] for k in [lo, hi), out 1-D float32 or float64 (see the module docstring);
    seed and below as int64 (seed's bits are taken as uint64, below in [0, 2^32]).
    The output index runs as its own uint64 counter, the loop over a plain range and a view
    from lo: converting the int64 loop index at every step, a range with a step of 2 or
    indices lo + 2i kept LLVM from vectorising (3.5 ns an element against 0.7)."""
    s = uint64(seed)
    b = uint64(below)
    zero = out.dtype.type(0.0)
    hit, miss = (zero, out.dtype.type(scale)) if keep else (out.dtype.type(1.0), zero)  # U < below, U >= below
    low = uint64(0xFFFFFFFF)
    if lo < hi and lo & 1:  # an odd first element: the high half of output lo // 2
        out[lo] = hit if (splitmix64(s, uint64(lo >> 1)) >> uint64(32)) < b else miss
        lo += 1
    m = uint64(lo >> 1)
    pairs = out[lo:hi]
    for i in range(pairs.shape[0] // 2):  # whole outputs: elements lo + 2i = 2m and 2m + 1
        z = splitmix64(s, m)
        m += uint64(1)
        pairs[2 * i] = hit if (z & low) < b else miss
        pairs[2 * i + 1] = hit if (z >> uint64(32)) < b else miss
    if lo < hi and hi & 1:  # an even last element: the low half of output hi // 2
        out[hi - 1] = hit if (splitmix64(s, uint64(hi >> 1)) & low) < b else miss


@njit(**JIT)
def fill_steps(seed, below, mask, t, u0, u1):
    """Zoneout's mask (T, B, H) at step t, units [u0, u1) of every row, as fill_mask(seed,
    below, False, ...) fills those elements of the whole (C-contiguous) mask: the fused
    LSTM's units split fills its masks this way inside its time loop."""
    B, H = mask.shape[1], mask.shape[2]
    flat = mask.reshape(mask.size)
    for b in range(B):
        k = (t * B + b) * H
        fill_mask(seed, below, False, 0.0, k + u0, k + u1, flat)


def threshold(p: float) -> int:
    """⌊p 2^32⌋, `below` for probability p (0 for p = 0, 2^32 for p = 1)."""
    return min(int(p * 2.0 ** 32), 1 << 32) if p > 0 else 0


def draw(seed: int, shape, p: float, dtype, keep: bool, threads: int, team) -> np.ndarray:
    """A mask of `shape` in dtype (np.float32 or np.float64) from SplitMix64 at `seed`:
    keep False, 1 where U < ⌊p 2^32⌋; keep True, 1 / (1 - p) where U >= ⌊p 2^32⌋. Filled in
    contiguous ranges by team(member, threads) when it has at least MIN_PER_THREAD elements
    a thread."""
    n = math.prod(shape)
    out = np.empty(n, dtype)
    below = threshold(p)
    scale = 1.0 / (1.0 - p) if keep and p < 1 else 0.0
    k = max(1, min(threads, n // MIN_PER_THREAD))
    if k == 1:
        fill_mask(seed, below, keep, scale, 0, n, out)
    else:
        def member(j, size):
            fill_mask(seed, below, keep, scale, j * n // size, (j + 1) * n // size, out)

        team(member, k)
    return out.reshape(shape)

