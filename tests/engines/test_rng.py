"""The masks' generator (engines._kernels_rng) against SplitMix64 written here in plain
Python integers from its published definition (Steele, Lea and Flood 2014)."""

from __future__ import annotations

import numpy as np
import pytest

from gatelab.engines import _kernels_rng, fused_parallel

MASK64 = (1 << 64) - 1


def splitmix64(seed: int, m: int) -> int:
    """Output m (from 0) of SplitMix64 started at state seed, in Python integers."""
    z = (seed + (m + 1) * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def uniforms(seed: int, n: int) -> list[int]:
    """U_0 .. U_{n-1}: the low, then the high 32 bits of each output."""
    out = []
    for m in range((n + 1) // 2):
        z = splitmix64(seed, m)
        out += [z & 0xFFFFFFFF, z >> 32]
    return out[:n]


def test_splitmix64_reference_values():
    """The first outputs of the generator seeded with 0 (the reference implementation's)."""
    assert [splitmix64(0, m) for m in range(3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("keep", [False, True])
def test_fill_mask_equals_the_python_generator(dtype, keep):
    seed, n, p = (1 << 61) + 12345, 1001, 0.37
    below = int(p * 2 ** 32)
    u = np.array(uniforms(seed, n), dtype=np.uint64)
    scale = 1 / (1 - p)
    expected = np.where(u >= below, scale, 0.0) if keep else np.where(u < below, 1.0, 0.0)
    whole = np.full(n, -1.0, dtype)
    _kernels_rng.fill_mask(seed, below, keep, scale, 0, n, whole)
    np.testing.assert_array_equal(whole, expected.astype(dtype))
    pieces = np.full(n, -1.0, dtype)  # odd and even starts and ends, empty and one-element ranges
    for lo, hi in ((0, 1), (1, 4), (4, 4), (4, 333), (333, 334), (334, 1000), (1000, 1001)):
        _kernels_rng.fill_mask(seed, below, keep, scale, lo, hi, pieces)
    np.testing.assert_array_equal(pieces, whole)


def test_draw_is_the_same_on_any_thread_count(monkeypatch):
    monkeypatch.setattr(_kernels_rng, "MIN_PER_THREAD", 1000)  # so that 3 threads share 5,001 elements

    def team(fn, k):
        fused_parallel.team(fn, k, torch_modes=False)

    masks = [_kernels_rng.draw(99, (3, 1667), 0.2, np.float32, False, k, team) for k in (1, 2, 3)]
    assert masks[0].shape == (3, 1667)
    assert all(np.array_equal(masks[0], m) for m in masks[1:])
    below = int(0.2 * 2 ** 32)
    np.testing.assert_array_equal(masks[0].ravel(), (np.array(uniforms(99, 5001)) < below).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fill_steps_fills_a_zoneout_mask_as_draw_does(dtype):
    """Step by step and unit range by unit range (odd widths: ranges start at odd elements),
    in any step order, the units split's fill gives the mask draw gives at that seed."""
    T, B, H, p, seed = 5, 3, 13, 0.3, 2024
    want = _kernels_rng.draw(seed, (T, B, H), p, dtype, False, 1, None)
    got = np.full((T, B, H), -1.0, dtype)
    below = _kernels_rng.threshold(p)
    for t in (4, 0, 2, 1, 3):  # a reverse or packed schedule visits the steps in any order
        for u0, u1 in ((0, 6), (6, 7), (7, 13)):
            _kernels_rng.fill_steps(seed, below, got, t, u0, u1)
    np.testing.assert_array_equal(got, want)
    assert _kernels_rng.threshold(0.0) == 0 and _kernels_rng.threshold(1.0) == 1 << 32


def test_draw_edges():
    """p = 0 keeps every unit (dropout) and never the previous value (zoneout)."""
    team = None  # never woken for 12 elements
    assert np.array_equal(_kernels_rng.draw(1, (3, 4), 0.0, np.float32, True, 2, team), np.ones((3, 4)))
    assert np.array_equal(_kernels_rng.draw(1, (3, 4), 0.0, np.float32, False, 2, team), np.zeros((3, 4)))
