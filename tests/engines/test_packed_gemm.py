"""The per-step GEMM on packed weights (engines/_kernels_gemm.py) against float64 NumPy:
every row-tile height (1..6 and their sums), the last 1-3 rows run over two or three panels
at once (with panels left over, and a cut last panel), panels cut short (N not a multiple
of 16), strided rows of A and C (the engines pass slices), overwrite and accumulate."""

import numpy as np
import pytest
from numba import njit

from gatelab.engines import _kernels_blas
from gatelab.engines._kernels_gemm import _pack_panels, packed_gemm, packed_weights, scratch, step_gemm


@njit
def _step(a, w, bp, c, trans_b, beta, tmp):
    step_gemm(a, w, bp, c, trans_b, beta, tmp)


def _reference(a, w, trans_b):
    return a.astype(np.float64) @ (w.T if trans_b else w).astype(np.float64)


@pytest.mark.parametrize("trans_b", [True, False], ids=["w^T", "w"])
@pytest.mark.parametrize(("M", "K", "N"), [(1, 256, 1024), (5, 7, 3), (6, 16, 16), (7, 33, 17), (12, 64, 48),
                                           (13, 128, 200), (32, 256, 512), (32, 1024, 128)])
def test_packed_gemm_equals_numpy(M, K, N, trans_b):
    _check(M, K, N, trans_b)


@pytest.mark.parametrize("N", [16, 32, 48, 64, 80, 100, 112])
@pytest.mark.parametrize("M", [1, 2, 3, 8, 9, 31, 32, 33])
def test_tail_rows_over_several_panels(M, N):
    _check(M, 40, N, True)


def _check(M, K, N, trans_b):
    rng = np.random.default_rng(M * 1000 + K + N)
    w = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    wide = rng.standard_normal((M, K + 5)).astype(np.float32)
    a = wide[:, 2:2 + K]  # rows with stride K + 5, as the engines' row slices
    out = np.full((M, N + 9), 7.0, np.float32)
    c = out[:, 4:4 + N]  # a column slice, as δh[:, my units]
    bp = packed_weights(w, trans_b, 100, 32)  # packed whatever M: the kernel handles one row too
    assert bp.shape == (-(-N // 16), K, 16)
    ref = _reference(a, w, trans_b)
    tol = 1e-6 * np.sqrt(K) * np.abs(ref).max()
    packed_gemm(a, bp, c, False, scratch(np.float32))
    np.testing.assert_allclose(c, ref, rtol=0, atol=tol)
    packed_gemm(a, bp, c, True, scratch(np.float32))  # accumulate: c = 2 (a @ B)
    np.testing.assert_allclose(c, 2 * ref, rtol=0, atol=2 * tol)
    assert (out[:, :4] == 7.0).all() and (out[:, 4 + N:] == 7.0).all()  # nothing written outside c


@pytest.mark.parametrize("trans_b", [True, False], ids=["w^T", "w"])
@pytest.mark.parametrize("N", [16, 40, 100])
def test_panels_packed_in_shares_equal_one_pack(N, trans_b):
    """Threads packing one buffer each its share of the panels (fused_units.pack_my_panels)
    leave what one pack leaves, the cut last panel's zeros included, over what was there."""
    rng = np.random.default_rng(N)
    w = rng.standard_normal((N, 24) if trans_b else (24, N)).astype(np.float32)
    whole = packed_weights(w, trans_b, 100, 32)
    P = whole.shape[0]
    shared = np.full_like(whole, np.nan)
    for p0, p1 in [(0, P // 3), (P // 3, P - 1), (P - 1, P)]:
        _pack_panels(w, trans_b, shared, p0, p1)
    np.testing.assert_array_equal(shared, whole)


def test_step_gemm_uses_openblas_for_float64_and_when_turned_off(monkeypatch):
    assert _kernels_blas.bind()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((9, 20))
    w = rng.standard_normal((30, 20))
    assert packed_weights(w, True, 100, 32).shape[0] == 0  # float64: OpenBLAS
    c = np.zeros((9, 30))
    _step(a, w, packed_weights(w, True, 100, 32), c, True, 0.0, scratch(np.float64))
    np.testing.assert_allclose(c, a @ w.T, rtol=1e-13, atol=1e-13)
    monkeypatch.setenv("GATELAB_PACKED_GEMM", "0")
    w32, a32 = w.astype(np.float32), a.astype(np.float32)
    assert packed_weights(w32, True, 100, 32).shape[0] == 0
    c32 = np.ones((9, 30), np.float32)
    _step(a32, w32, packed_weights(w32, True, 100, 32), c32, True, 1.0, scratch(np.float32))
    np.testing.assert_allclose(c32, 1 + _reference(a32, w32, True), rtol=1e-5, atol=1e-5)


def test_short_loops_and_single_rows_keep_openblas():
    w = np.ones((40, 24), np.float32)
    assert packed_weights(w, True, 100, 32).shape == (3, 24, 16)
    assert packed_weights(w, True, 3, 32).shape[0] == 0  # packing would not pay for 3 steps
    assert packed_weights(w, True, 100, 1).shape[0] == 0  # a batch of one: OpenBLAS's GEMV


@pytest.mark.parametrize(("a_shape", "c_shape"), [((9, 24), (8, 40)), ((9, 23), (9, 40)), ((9, 24), (9, 49))],
                         ids=["c-rows", "a-cols", "c-cols"])
def test_products_refuse_shapes_that_do_not_match(a_shape, c_shape):
    """The kernels take M from a and write c for it: a slice that does not match raises
    instead of writing past c (packed, OpenBLAS through step_gemm, and gemm_tn)."""
    assert _kernels_blas.bind()
    w = np.ones((40, 24), np.float32)  # op(B) = w^T: K = 24, N = 40
    a, c = np.ones(a_shape, np.float32), np.zeros(c_shape, np.float32)
    with pytest.raises(ValueError, match="packed_gemm: .* do not match"):
        packed_gemm(a, packed_weights(w, True, 100, 32), c, False, scratch(np.float32))
    with pytest.raises(ValueError, match="gemm: .* do not match"):
        _step(a, w, np.empty((0, 1, 16), np.float32), c, True, 0.0, scratch(np.float32))
    with pytest.raises(ValueError, match="gemm_tn: .* do not match"):
        _kernels_blas.gemm_tn_check(np.ones((a_shape[0], 40), np.float32), np.ones((9, 24), np.float32),
                                    np.zeros((41, 24), np.float32), 0.0)
