"""gatelab.reference GRU and RNN against torch.nn (float64, same weights) and finite differences."""

import numpy as np
import pytest
import torch
from _refhelp import finite_differences, torch_run

from gatelab.reference import (gru_backward, gru_forward, gru_gates, gru_init_params, params_from_torch,
                               rnn_backward, rnn_forward, rnn_init_params, to_torch_layout)

GRID = [(1, 1, 1, 1), (1, 3, 2, 4), (5, 1, 3, 1), (4, 2, 3, 5), (7, 3, 1, 2)]  # (T, B, I, H)


def _data(rng, T, B, I, H, dtype=np.float64):
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    dhs = rng.standard_normal((T, B, H)).astype(dtype)
    dh_T = rng.standard_normal((B, H)).astype(dtype)
    return x, h0, dhs, dh_T


def _compare(mode, module, forward, backward, T, B, I, H, atol=1e-10, dtype=np.float64, **kw):
    params = params_from_torch(module)
    x, h0, dhs, dh_T = _data(np.random.default_rng(T * 7 + B + I + H), T, B, I, H, dtype)
    out, (h_T,), tgrads = torch_run(module, x, (h0,), dhs, (dh_T,))
    hs, rh_T, cache = forward(x, params, h0, **kw)
    np.testing.assert_allclose(hs, out, rtol=0, atol=atol)
    np.testing.assert_allclose(rh_T, h_T, rtol=0, atol=atol)
    grads = backward(dhs, cache, dh_T)
    assert set(grads) == set(params) | {"x", "h0"}
    as_torch = to_torch_layout(grads, mode, gradients=True)
    assert set(as_torch) == set(tgrads) - {"x", "h0"}
    for name in set(tgrads):
        got = as_torch[name] if name in as_torch else grads[name]
        np.testing.assert_allclose(got, tgrads[name], rtol=0, atol=atol, err_msg=name)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("T,B,I,H", GRID)
def test_gru_matches_torch_forward_and_every_gradient(T, B, I, H, bias):
    torch.manual_seed(T + 10 * H)
    module = torch.nn.GRU(I, H, bias=bias, dtype=torch.float64)
    _compare("GRU", module, gru_forward, gru_backward, T, B, I, H)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("T,B,I,H", GRID)
def test_rnn_matches_torch_forward_and_every_gradient(T, B, I, H, bias, nonlinearity):
    torch.manual_seed(T + 10 * H)
    module = torch.nn.RNN(I, H, nonlinearity=nonlinearity, bias=bias, dtype=torch.float64)
    _compare("RNN", module, rnn_forward, rnn_backward, T, B, I, H, nonlinearity=nonlinearity)


def test_gru_and_rnn_float32_match_torch_float32():
    torch.manual_seed(0)
    _compare("GRU", torch.nn.GRU(3, 4), gru_forward, gru_backward, 5, 2, 3, 4, atol=1e-5, dtype=np.float32)
    _compare("RNN", torch.nn.RNN(3, 4), rnn_forward, rnn_backward, 5, 2, 3, 4, atol=1e-5, dtype=np.float32)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_backward_matches_finite_differences(reset_after):
    """Without torch, both forms; "reset before" has no torch.nn counterpart at all."""
    rng = np.random.default_rng(3)
    T, B, I, H = 3, 2, 3, 3
    params = gru_init_params(I, H, seed=4)
    x, h0, dhs, dh_T = _data(rng, T, B, I, H)
    _, _, cache = gru_forward(x, params, h0, reset_after=reset_after)
    grads = gru_backward(dhs, cache, dh_T)
    numeric = finite_differences(gru_forward, x, params, [h0], dhs, [dh_T], reset_after=reset_after)
    for name, g in numeric.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-7, atol=1e-8, err_msg=name)


def test_gru_reset_before_is_cho_et_al():
    """One step of "reset before" computed here from Cho et al.'s equations."""
    rng = np.random.default_rng(5)
    H, I = 3, 2
    p = gru_init_params(I, H, seed=2)
    x, h0, _, _ = _data(rng, 1, 2, I, H)
    hs, _, cache = gru_forward(x, p, h0, reset_after=False)
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    hx = np.concatenate([h0, x[0]], axis=1)
    r = sig(hx @ p["W_r"].T + p["b_r"])
    z = sig(hx @ p["W_z"].T + p["b_z"])
    n = np.tanh(np.concatenate([r * h0, x[0]], axis=1) @ p["W_n"].T + p["b_in"] + p["b_hn"])
    np.testing.assert_allclose(hs[0], (1 - z) * n + z * h0, atol=1e-14)
    np.testing.assert_allclose(gru_gates(cache)["r"][0], r, atol=1e-14)
    # and it differs from "reset after" (r multiplies b_hn there)
    assert not np.allclose(hs, gru_forward(x, p, h0)[0])


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_backward_matches_finite_differences(nonlinearity):
    rng = np.random.default_rng(11)
    T, B, I, H = 4, 2, 3, 3
    params = rnn_init_params(I, H, seed=1)
    x, h0, dhs, dh_T = _data(rng, T, B, I, H)
    _, _, cache = rnn_forward(x, params, h0, nonlinearity=nonlinearity)
    grads = rnn_backward(dhs, cache, dh_T)
    numeric = finite_differences(rnn_forward, x, params, [h0], dhs, [dh_T], nonlinearity=nonlinearity)
    for name, g in numeric.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-7, atol=1e-8, err_msg=name)
