"""The fused CPU engine equals torch.nn and the eager engine: outputs, final states and the
gradient of every input and weight, for every option of one layer-direction (LSTM, GRU,
RNN tanh/relu; reverse; packed; proj_size; bias=False; recorded gates), float64 to
1e-10 and float32 to 1e-5."""

from __future__ import annotations

import pytest
import torch
from fused_seam import (batch_sizes_of, leaves, make_case, max_diffs, run_engine,
                        run_torch, collect)
from hypothesis import given, settings
from hypothesis import strategies as st

from gatelab.engines import CellSpec, eager, fused_cpu

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
# torch.nn warns that oneDNN has no projection and falls back to its own kernel: expected.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported:UserWarning")
LENGTHS = [5, 5, 3, 1]  # B = 4, T = 5: rows end at different steps, one after one step


def check(mode, dtype, reverse=False, lengths=None, proj=0, bias=True, T=5, B=4, I=3, H=6,
          seed=0):
    x, state, w, g = make_case(mode, T, B, I, H, proj=proj, bias=bias, dtype=dtype,
                               seed=seed, lengths=lengths)
    spec = CellSpec(mode, I, H, proj_size=proj, bias=bias)
    bs = None if lengths is None else batch_sizes_of(lengths, T)
    assert fused_cpu.unsupported(spec, x, False) is None
    ours = run_engine(fused_cpu, spec, x, state, w, g, batch_sizes=bs, reverse=reverse)
    ref = run_torch(mode, x, state, w, g, proj=proj, bias=bias, lengths=lengths,
                    reverse=reverse)
    diffs = max_diffs(ours, ref)
    assert set(diffs) == set(ref), "every output and gradient is compared"
    bad = {k: v for k, v in diffs.items() if not v <= TOL[dtype]}
    assert not bad, f"{mode} reverse={reverse} lengths={lengths}: {bad}"
    if lengths is not None:  # padded positions of the output are zero
        for b, n in enumerate(lengths):
            assert not ours["out"][n:, b].any()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["dense", "packed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("mode", MODES)
def test_matches_torch(mode, reverse, lengths, dtype):
    check(mode, dtype, reverse, lengths)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["dense", "packed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_lstm_projection_matches_torch(reverse, lengths, dtype):
    check("LSTM", dtype, reverse, lengths, proj=4)


@pytest.mark.parametrize("mode", MODES)
def test_without_bias_matches_torch(mode):
    check(mode, torch.float64, reverse=True, lengths=LENGTHS, bias=False)
    if mode == "LSTM":
        check(mode, torch.float64, lengths=LENGTHS, bias=False, proj=2)


@settings(max_examples=12, deadline=None)
@given(mode=st.sampled_from(MODES), reverse=st.booleans(), data=st.data(),
       T=st.integers(1, 7), B=st.integers(1, 5), H=st.integers(1, 9), I=st.integers(1, 4))
def test_random_shapes_and_lengths(mode, reverse, data, T, B, H, I):
    lengths = sorted(data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B)),
                     reverse=True)
    packed = data.draw(st.booleans())
    check(mode, torch.float64, reverse, lengths if packed else None, T=T, B=B, I=I, H=H,
          seed=T * 100 + B * 10 + H)


def gate_case(mode, lengths, reverse, dtype, proj=0):
    T, B, I, H = 5, 4, 3, 6
    x, state, w, g = make_case(mode, T, B, I, H, proj=proj, dtype=dtype, lengths=lengths)
    spec = CellSpec(mode, I, H, proj_size=proj)
    gen = torch.Generator().manual_seed(7)
    gate_grads = {name: torch.randn(T, B, H, generator=gen, dtype=dtype) for name in spec.gates}
    bs = None if lengths is None else batch_sizes_of(lengths, T)
    results = [run_engine(e, spec, x, state, w, g, batch_sizes=bs, reverse=reverse,
                          record=True, gate_grads=gate_grads) for e in (fused_cpu, eager)]
    return spec, results


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["dense", "packed"])
@pytest.mark.parametrize("mode", MODES)
def test_recorded_gates_and_their_gradients_match_eager(mode, lengths, dtype):
    """The record holds the same gates as the eager engine, zero at padded positions, and
    a loss on the gates backpropagates to the same gradients."""
    for reverse in (False, True):
        spec, (ours, ref) = gate_case(mode, lengths, reverse, dtype)
        assert {k for k in ours if k.startswith("gate_")} == {f"gate_{k}" for k in spec.gates}
        diffs = max_diffs(ours, ref)
        bad = {k: v for k, v in diffs.items() if not v <= TOL[dtype]}
        assert not bad, f"{mode} reverse={reverse}: {bad}"
        if lengths is not None:
            for b, n in enumerate(lengths):
                assert all(not ours[f"gate_{k}"][n:, b].any() for k in spec.gates)


def test_recorded_gates_with_projection_match_eager():
    spec, (ours, ref) = gate_case("LSTM", LENGTHS, True, torch.float64, proj=2)
    diffs = max_diffs(ours, ref)
    assert max(diffs.values()) <= 1e-10, diffs


@pytest.mark.parametrize("mode", MODES)
def test_inference_equals_training_path(mode):
    """Without autograd the engine saves nothing, and computes the same values."""
    x, state, w, g = make_case(mode, 5, 4, 3, 6, lengths=LENGTHS)
    spec = CellSpec(mode, 3, 6)
    bs = batch_sizes_of(LENGTHS, 5)
    with_grad = fused_cpu.run(spec, x, state, w, batch_sizes=bs, reverse=True, record=True)
    with torch.inference_mode():
        no_grad = fused_cpu.run(spec, x, state, w, batch_sizes=bs, reverse=True, record=True)
    assert not no_grad[0].requires_grad
    torch.testing.assert_close(no_grad[0], with_grad[0].detach(), rtol=0, atol=0)
    for a, b in zip(no_grad[1], with_grad[1]):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)
    for k in spec.gates:
        torch.testing.assert_close(no_grad[2][k], with_grad[2][k].detach(), rtol=0, atol=0)


def test_gradients_only_for_what_requires_them():
    """Weights alone requiring grad (a frozen input) give the same weight gradients."""
    x, state, w, g = make_case("LSTM", 5, 4, 3, 6)
    spec = CellSpec("LSTM", 3, 6)
    full = run_engine(fused_cpu, spec, x, state, w, g)
    x2 = x.detach()
    state2 = tuple(s.detach() for s in state)
    out, state_T, _ = fused_cpu.run(spec, x2, state2, w)
    part = collect(out, state_T, g, dict(w))
    for name in w:
        torch.testing.assert_close(part[f"d_{name}"], full[f"d_{name}"], rtol=0, atol=0)


def test_double_backward_is_refused_with_a_clear_error():
    x, state, w, g = make_case("GRU", 3, 2, 3, 4)
    out, _, _ = fused_cpu.run(CellSpec("GRU", 3, 4), x, state, w)
    (dx,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)  # a gradient penalty
    with pytest.raises(RuntimeError, match="once_differentiable"):
        dx.sum().backward()


def test_unsupported_says_why():
    spec = CellSpec("LSTM", 3, 4)
    assert fused_cpu.unsupported(spec, torch.zeros(2, 1, 3), False) is None
    assert "float32" in fused_cpu.unsupported(spec, torch.zeros(2, 1, 3, dtype=torch.float16), False)
    assert "CPU" in fused_cpu.unsupported(spec, torch.zeros(2, 1, 3, device="meta"), False)
    assert "reset_after" in fused_cpu.unsupported(CellSpec("GRU", 3, 4, reset_after=False, layer_norm=True),
                                                  torch.zeros(2, 1, 3), False)
    assert "variants" in fused_cpu.unsupported(CellSpec("RNN_TANH", 3, 4, cell_activation="softsign"),
                                               torch.zeros(2, 1, 3), False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "autocast" in fused_cpu.unsupported(spec, torch.zeros(2, 1, 3), False)


def test_masks_of_the_plain_rnn_are_refused():
    x, state, w, _ = make_case("RNN_TANH", 3, 2, 3, 4)
    masks = {"zoneout_h": torch.zeros(3, 2, 4, dtype=x.dtype)}
    with pytest.raises(ValueError, match="masks"):
        fused_cpu.run(CellSpec("RNN_TANH", 3, 4), x, state, w, masks=masks)


def test_leaves_cover_every_input():
    x, state, w, _ = make_case("LSTM", 3, 2, 3, 4, proj=2)
    assert set(leaves(x, state, w)) == {"x", "state0", "state1", "weight_ih", "weight_hh",
                                        "bias_ih", "bias_hh", "weight_hr"}


@pytest.mark.parametrize("mode", MODES)
def test_python_loop_fallback_matches_torch(mode, monkeypatch):
    """The time loop driven from Python with NumPy's matmul (used where NumPy's BLAS has
    no CBLAS symbols to bind) gives the same results."""
    from gatelab.engines import fused_common

    monkeypatch.setattr(fused_common, "LOOP", "python")
    assert not fused_common.numba_loop()
    check(mode, torch.float64, reverse=True, lengths=LENGTHS)
    check(mode, torch.float64)
    if mode == "LSTM":
        check(mode, torch.float64, lengths=LENGTHS, proj=3)
        spec, (ours, ref) = gate_case(mode, LENGTHS, False, torch.float64)
        assert max(max_diffs(ours, ref).values()) <= 1e-10


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gemm_from_numba_equals_numpy(dtype):
    import numpy as np

    from gatelab.engines import _kernels_blas

    if not _kernels_blas.bind():
        pytest.skip("NumPy's BLAS has no CBLAS symbols here; the Python loop runs instead")
    r = np.random.default_rng(0)
    a, w = r.random((5, 7)).astype(dtype), r.random((9, 7)).astype(dtype)
    c = r.random((6, 9)).astype(dtype)
    expected = a[:4] @ w.T + c[:4]
    _kernels_blas.gemm_check(a[:4], w, c[:4], True, 1.0)  # c = a w^T + c on a row prefix
    np.testing.assert_allclose(c[:4], expected, rtol=1e-6)
    b = r.random((7, 9)).astype(dtype)
    _kernels_blas.gemm_check(a, b, c[:5], False, 0.0)  # c = a b
    np.testing.assert_allclose(c[:5], a @ b, rtol=1e-6)
    for trans, m in ((True, w), (False, b)):  # one row: the GEMV path
        c1 = c[2:3].copy()
        expected = a[1:2] @ (m.T if trans else m) + c1
        _kernels_blas.gemm_check(a[1:2], m, c1, trans, 1.0)
        np.testing.assert_allclose(c1, expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gemm_tn_from_numba_equals_numpy(dtype):
    """c = a^T b with a a column slice of a wider array (δA[:, rows] for δW = δA^T X),
    a single row of a (K = 1), and beta accumulating."""
    import numpy as np

    from gatelab.engines import _kernels_blas

    if not _kernels_blas.bind():
        pytest.skip("NumPy's BLAS has no CBLAS symbols here; the Python loop runs instead")
    r = np.random.default_rng(1)
    da, x = r.random((11, 12)).astype(dtype), r.random((11, 5)).astype(dtype)
    c = r.random((7, 5)).astype(dtype)
    tol = 1e-6 if dtype == "float32" else 1e-12  # sums of 11 positive products: ~11 ulp at most
    _kernels_blas.gemm_tn_check(da[:, 3:10], x, c, 0.0)  # columns 3..9 of δA: a (11, 7), ld 12
    np.testing.assert_allclose(c, da[:, 3:10].T @ x, rtol=tol)
    expected = da[:1, 2:9].T @ x[:1] + c
    _kernels_blas.gemm_tn_check(da[:1, 2:9], x[:1], c, 1.0)  # K = 1, beta = 1
    np.testing.assert_allclose(c, expected, rtol=tol)


@pytest.mark.parametrize("mode", MODES)
def test_bfloat16_activations_run_in_float32(mode):
    """bf16 x and state with float32 weights: the result is the float32 computation on
    the bf16 values, cast back to bf16; gradients reach x in bf16 and weights in float32."""
    x, state, w, g = make_case(mode, 5, 4, 3, 6, dtype=torch.float32, lengths=LENGTHS)
    spec = CellSpec(mode, 3, 6)
    bs = batch_sizes_of(LENGTHS, 5)
    xb = x.detach().bfloat16().requires_grad_()
    sb = tuple(s.detach().bfloat16().requires_grad_() for s in state)
    assert fused_cpu.unsupported(spec, xb, True) is None
    out, state_T, gates = fused_cpu.run(spec, xb, sb, w, batch_sizes=bs, record=True)
    ref, ref_T, ref_gates = fused_cpu.run(spec, xb.detach().float(), tuple(s.detach().float() for s in sb),
                                          w, batch_sizes=bs, record=True)
    assert out.dtype == torch.bfloat16 and all(s.dtype == torch.bfloat16 for s in state_T)
    torch.testing.assert_close(out, ref.bfloat16(), rtol=0, atol=0)
    for k in spec.gates:
        torch.testing.assert_close(gates[k], ref_gates[k].bfloat16(), rtol=0, atol=0)
    out.float().sum().backward()
    assert xb.grad.dtype == torch.bfloat16 and w["weight_hh"].grad.dtype == torch.float32


def test_mismatched_dtypes_are_refused():
    x, state, w, _ = make_case("GRU", 3, 2, 3, 4)
    w = {**w, "weight_hh": w["weight_hh"].float()}
    with pytest.raises(RuntimeError, match="weight_hh"):
        fused_cpu.run(CellSpec("GRU", 3, 4), x, state, w)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("T, B", [(0, 3), (3, 0)])
def test_empty_sequence_or_batch(mode, T, B):
    """No steps (T = 0) leaves the state as it was; no rows (B = 0) gives empty results."""
    x, state, w, g = make_case(mode, T, B, 2, 3)
    out, state_T, _ = fused_cpu.run(CellSpec(mode, 2, 3), x, state, w)
    assert out.shape == (T, B, 3)
    for s, s0 in zip(state_T, state):
        torch.testing.assert_close(s, s0.detach(), rtol=0, atol=0)
    d = torch.autograd.grad(sum((s * gs).sum() for s, gs in zip(state_T, g["state"])), state)
    for ds, gs in zip(d, g["state"]):  # the state passes straight through
        torch.testing.assert_close(ds, gs, rtol=0, atol=0)
