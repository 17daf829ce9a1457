"""gatelab.reference LSTM against torch.nn.LSTM (float64, same weights) and finite differences."""

import numpy as np
import pytest
import torch
from _refhelp import finite_differences, torch_run

from gatelab.reference import (init_params, lstm_backward, lstm_forward, lstm_gates, params_from_torch,
                               to_torch_layout)

# (T, B, I, H, proj_size): includes T = 1, B = 1, H = 1, and projections
GRID = [(1, 1, 1, 1, 0), (1, 3, 2, 4, 0), (5, 1, 3, 1, 0), (4, 2, 3, 5, 0), (7, 3, 1, 2, 0),
        (4, 2, 3, 5, 2), (3, 1, 2, 3, 1)]


def _data(rng, T, B, I, H, P, dtype=np.float64):
    P = P or H
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((B, P)).astype(dtype)
    c0 = rng.standard_normal((B, H)).astype(dtype)
    dhs = rng.standard_normal((T, B, P)).astype(dtype)
    dh_T = rng.standard_normal((B, P)).astype(dtype)
    dc_T = rng.standard_normal((B, H)).astype(dtype)
    return x, h0, c0, dhs, dh_T, dc_T


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("T,B,I,H,P", GRID)
def test_lstm_matches_torch_forward_and_every_gradient(T, B, I, H, P, bias):
    torch.manual_seed(T * 100 + B * 10 + H)
    module = torch.nn.LSTM(I, H, proj_size=P, bias=bias, dtype=torch.float64)
    params = params_from_torch(module)
    x, h0, c0, dhs, dh_T, dc_T = _data(np.random.default_rng(T + B + I + H), T, B, I, H, P)

    out, (h_T, c_T), tgrads = torch_run(module, x, (h0, c0), dhs, (dh_T, dc_T))
    hs, (rh_T, rc_T), cache = lstm_forward(x, params, h0, c0)
    np.testing.assert_allclose(hs, out, rtol=0, atol=1e-10)
    np.testing.assert_allclose(rh_T, h_T, rtol=0, atol=1e-10)
    np.testing.assert_allclose(rc_T, c_T, rtol=0, atol=1e-10)

    grads = lstm_backward(dhs, cache, dh_T, dc_T)
    assert set(grads) == set(params) | {"x", "h0", "c0"}
    expected_names = set(tgrads) - {"x", "h0", "c0"}
    as_torch = to_torch_layout(grads, "LSTM", gradients=True)
    assert set(as_torch) == expected_names
    for name in expected_names | {"x", "h0", "c0"}:
        got = as_torch[name] if name in as_torch else grads[name]
        np.testing.assert_allclose(got, tgrads[name], rtol=0, atol=1e-10, err_msg=name)


def test_lstm_gates_are_the_equations():
    """The recorded gates satisfy c_t = f ⊙ c_{t-1} + i ⊙ g and h_t = o ⊙ tanh(c_t)."""
    rng = np.random.default_rng(0)
    params = init_params(3, 4, seed=1)
    x, h0, c0, *_ = _data(rng, 6, 2, 3, 4, 0)
    hs, _, cache = lstm_forward(x, params, h0, c0)
    gates = lstm_gates(cache)
    assert set(gates) == {"f", "i", "g", "o", "c"} and all(v.shape == (6, 2, 4) for v in gates.values())
    c_prev = np.concatenate([c0[None], gates["c"][:-1]])
    np.testing.assert_allclose(gates["c"], gates["f"] * c_prev + gates["i"] * gates["g"], atol=1e-14)
    np.testing.assert_allclose(hs, gates["o"] * np.tanh(gates["c"]), atol=1e-14)
    # the forget gate from its own equation, computed here without the reference
    hx0 = np.concatenate([h0, x[0]], axis=1)
    f0 = 1 / (1 + np.exp(-(hx0 @ params["W_f"].T + params["b_f"])))
    np.testing.assert_allclose(gates["f"][0], f0, atol=1e-14)


@pytest.mark.parametrize("P", [0, 2])
def test_lstm_backward_matches_finite_differences(P):
    """Without torch: every gradient equals central differences (float64, step 1e-6)."""
    rng = np.random.default_rng(7)
    T, B, I, H = 3, 2, 3, 3
    params = init_params(I, H, seed=3, proj_size=P)
    x, h0, c0, dhs, dh_T, dc_T = _data(rng, T, B, I, H, P)
    _, _, cache = lstm_forward(x, params, h0, c0)
    grads = lstm_backward(dhs, cache, dh_T, dc_T)
    numeric = finite_differences(lstm_forward, x, params, [h0, c0], dhs, [dh_T, dc_T])
    for name, g in numeric.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-7, atol=1e-8, err_msg=name)


def test_lstm_float32_matches_torch_float32():
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 4)
    params = params_from_torch(module)
    assert params["W_f"].dtype == np.float32
    x, h0, c0, dhs, dh_T, dc_T = _data(np.random.default_rng(1), 5, 2, 3, 4, 0, np.float32)
    out, (h_T, c_T), tgrads = torch_run(module, x, (h0, c0), dhs, (dh_T, dc_T))
    hs, (rh_T, rc_T), cache = lstm_forward(x, params, h0, c0)
    assert hs.dtype == np.float32
    np.testing.assert_allclose(hs, out, rtol=0, atol=1e-5)
    np.testing.assert_allclose(rc_T, c_T, rtol=0, atol=1e-5)
    grads = lstm_backward(dhs, cache, dh_T, dc_T)
    assert all(g.dtype == np.float32 for g in grads.values())
    as_torch = to_torch_layout(grads, "LSTM", gradients=True)
    for name in ("weight_ih", "weight_hh", "bias_ih"):
        np.testing.assert_allclose(as_torch[name], tgrads[name], rtol=0, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(grads["x"], tgrads["x"], rtol=0, atol=1e-5)


def test_lstm_default_states_are_zero():
    params = init_params(2, 3, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 2))
    hs, (h_T, c_T), _ = lstm_forward(x, params)
    hs0, _, _ = lstm_forward(x, params, np.zeros((2, 3)), np.zeros((2, 3)))
    np.testing.assert_array_equal(hs, hs0)


def test_init_params_is_local_and_seeded():
    state = np.random.get_state()[1].copy()
    a, b = init_params(3, 4, seed=5), init_params(3, 4, seed=5)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["W_f"], init_params(3, 4, seed=6)["W_f"])
    assert np.array_equal(state, np.random.get_state()[1])
    assert np.abs(a["W_f"]).max() <= 1 / np.sqrt(4)
    assert sorted(a) == ["W_f", "W_g", "W_i", "W_o", "b_f", "b_g", "b_i", "b_o"]
    assert a["W_f"].shape == (4, 4 + 3)
