"""The LSTM as its six equations, forward and hand-derived backpropagation through time.

For each step t, with [h_{t-1}, x_t] the concatenation (h first, as written):

    f_t = σ(W_f·[h_{t-1}, x_t] + b_f)          forget gate
    i_t = σ(W_i·[h_{t-1}, x_t] + b_i)          input gate
    g_t = tanh(W_g·[h_{t-1}, x_t] + b_g)       candidate memory C̃_t
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t            cell update (additive)
    o_t = σ(W_o·[h_{t-1}, x_t] + b_o)          output gate
    h_t = o_t ⊙ tanh(c_t)                      hidden output

With a projection (torch.nn.LSTM's proj_size = P > 0) the output is projected,
h_t = W_hr·(o_t ⊙ tanh(c_t)), h has P units and the W_* act on [h_{t-1} (P), x_t].

Parameters (a dict of numpy arrays, one dtype, float32 or float64):
    W_f, W_i, W_g, W_o: (H, P + I), acting on [h_{t-1}, x_t] (P = H without projection)
    b_f, b_i, b_g, b_o: (H,); absent for a bias-free layer (then the biases are zero)
    W_hr: (P, H), only with a projection
"""

from __future__ import annotations

import numpy as np

from ._checks import check_array, check_input, check_params, check_sizes, check_state, sigmoid, uniform_init

GATES = ("f", "i", "g", "o")


def init_params(input_size: int, hidden_size: int, seed: int = 0, *, proj_size: int = 0,
                bias: bool = True, dtype=np.float64) -> dict:
    """Random LSTM parameters with torch.nn's init, U(-√k, √k), k = 1 / hidden_size.

    Arguments:
        input_size: I, the number of input features.
        hidden_size: H, the number of cell units.
        seed: seed of a local numpy Generator (the global RNG is not touched).
        proj_size: P > 0 adds the projection W_hr (P, H); 0 means none.
        bias: False leaves out b_f, b_i, b_g, b_o.
        dtype: np.float64 (default) or np.float32.
    """
    check_sizes(input_size, hidden_size)
    if not isinstance(proj_size, int) or not 0 <= proj_size < hidden_size:
        raise ValueError(f"proj_size: expected an int in [0, hidden_size={hidden_size}), got {proj_size!r}")
    rng = np.random.default_rng(seed)
    H = hidden_size
    P = proj_size or H
    params = {f"W_{k}": uniform_init(rng, (H, P + input_size), H, dtype) for k in GATES}
    if bias:
        params.update({f"b_{k}": uniform_init(rng, (H,), H, dtype) for k in GATES})
    if proj_size:
        params["W_hr"] = uniform_init(rng, (P, H), H, dtype)
    return params


def _sizes(x: np.ndarray, params: dict) -> tuple[int, int, int, int, int]:
    """(T, B, I, H, P) from x and the parameters, after checking every parameter."""
    T, B, I = x.shape
    if not isinstance(params, dict) or "W_f" not in params or not hasattr(params["W_f"], "shape"):
        raise ValueError("params: expected a dict with 'W_f' of shape (H, P + I) and the other LSTM keys")
    H = params["W_f"].shape[0]
    P = params["W_hr"].shape[0] if "W_hr" in params and hasattr(params["W_hr"], "shape") else H
    expected = {f"W_{k}": (H, P + I) for k in GATES} | {f"b_{k}": (H,) for k in GATES}
    if "W_hr" in params:
        expected["W_hr"] = (P, H)
    check_params(params, expected, x.dtype, optional=tuple(f"b_{k}" for k in GATES))
    bias_keys = [f"b_{k}" for k in GATES if f"b_{k}" in params]
    if bias_keys and len(bias_keys) != 4:
        raise ValueError(f"params: expected all of b_f, b_i, b_g, b_o or none, got {bias_keys}")
    return T, B, I, H, P


def lstm_forward(x: np.ndarray, params: dict, h0: np.ndarray | None = None,
                 c0: np.ndarray | None = None):
    """Run the LSTM over a sequence.

    Arguments:
        x: (T, B, I) time-major input, float32 or float64.
        params: see the module docstring (init_params or params_from_torch make one).
        h0: (B, P) initial hidden state, zeros when None.
        c0: (B, H) initial cell state, zeros when None.

    Returns:
        hs: (T, B, P) the hidden outputs h_1..h_T.
        (h_T, c_T): the final states, (B, P) and (B, H).
        cache: a dict for lstm_backward and for reading the gates; every per-step entry
            has time first: `f`, `i`, `g`, `o`, `c` (T, B, H) the gates, candidate and
            cell at each step; `c_prev` (T, B, H) c_{t-1}; `hx` (T, B, P + I) the
            concatenation [h_{t-1}, x_t]; `h` (T, B, P) = hs; with a projection `m`
            (T, B, H) = o ⊙ tanh(c) before W_hr; and `params`, `h0`, `c0`.
    """
    x = check_input(x)
    T, B, I, H, P = _sizes(x, params)
    h0 = h = check_state("h0", h0, (B, P), x.dtype)
    c0 = c = check_state("c0", c0, (B, H), x.dtype)
    W_f, W_i, W_g, W_o = (params[f"W_{k}"] for k in GATES)
    zero = np.zeros(H, dtype=x.dtype)
    b_f, b_i, b_g, b_o = (params.get(f"b_{k}", zero) for k in GATES)
    W_hr = params.get("W_hr")

    cache = {k: np.empty((T, B, H), dtype=x.dtype) for k in ("f", "i", "g", "o", "c", "c_prev", "m")}
    cache["hx"] = np.empty((T, B, P + I), dtype=x.dtype)
    hs = np.empty((T, B, P), dtype=x.dtype)
    for t in range(T):
        hx = np.concatenate([h, x[t]], axis=1)  # (B, P + I): [h_{t-1}, x_t]
        c_prev = c
        f = sigmoid(hx @ W_f.T + b_f)  # f_t = σ(W_f·[h_{t-1}, x_t] + b_f)
        i = sigmoid(hx @ W_i.T + b_i)  # i_t = σ(W_i·[h_{t-1}, x_t] + b_i)
        g = np.tanh(hx @ W_g.T + b_g)  # C̃_t = tanh(W_C·[h_{t-1}, x_t] + b_C)
        c = f * c_prev + i * g  # C_t = f_t ⊙ C_{t-1} + i_t ⊙ C̃_t
        o = sigmoid(hx @ W_o.T + b_o)  # o_t = σ(W_o·[h_{t-1}, x_t] + b_o)
        h = o * np.tanh(c)  # h_t = o_t ⊙ tanh(C_t)
        cache["m"][t] = h  # (B, H)
        if W_hr is not None:
            h = h @ W_hr.T  # (B, P): h_t = W_hr·(o_t ⊙ tanh(C_t))
        for name, value in (("f", f), ("i", i), ("g", g), ("o", o), ("c", c), ("c_prev", c_prev), ("hx", hx)):
            cache[name][t] = value
        hs[t] = h
    if W_hr is None:
        del cache["m"]
    cache.update(h=hs, params=params, h0=h0, c0=c0, sizes=(T, B, I, H, P))
    return hs, (h, c), cache


def lstm_backward(dhs: np.ndarray, cache: dict, dh_T: np.ndarray | None = None,
                  dc_T: np.ndarray | None = None) -> dict:
    """Backpropagation through time for lstm_forward.

    Given the gradient of a loss L with respect to every output, return the gradient of L
    with respect to every parameter, the input and the initial states.

    Arguments:
        dhs: (T, B, P) ∂L/∂h_t for every step (the gradient arriving from above).
        cache: the cache returned by lstm_forward.
        dh_T: (B, P) ∂L/∂h_T through the returned final state, zeros when None.
        dc_T: (B, H) ∂L/∂c_T through the returned final cell, zeros when None.

    Returns:
        grads: a dict with every key of params plus `x` (T, B, I), `h0` (B, P), `c0` (B, H).
    """
    T, B, I, H, P = cache["sizes"]
    params = cache["params"]
    dtype = cache["hx"].dtype

    dhs = check_array("dhs", dhs, (T, B, P), dtype)
    dh_next = check_state("dh_T", dh_T, (B, P), dtype)  # ∂L/∂h_t arriving from step t+1
    dc_next = check_state("dc_T", dc_T, (B, H), dtype)  # ∂L/∂c_t arriving from step t+1
    W = {k: params[f"W_{k}"] for k in GATES}
    W_hr = params.get("W_hr")
    grads = {f"W_{k}": np.zeros_like(W[k]) for k in GATES}
    db = {k: np.zeros(H, dtype=dtype) for k in GATES}
    if W_hr is not None:
        grads["W_hr"] = np.zeros_like(W_hr)
    dx = np.empty((T, B, I), dtype=dtype)

    for t in reversed(range(T)):
        f, i, g, o, c = (cache[k][t] for k in ("f", "i", "g", "o", "c"))
        c_prev, hx = cache["c_prev"][t], cache["hx"][t]
        dh = dhs[t] + dh_next  # h_t feeds the output at t and the gates at t+1
        if W_hr is not None:  # h_t = W_hr·m_t
            grads["W_hr"] += dh.T @ cache["m"][t]  # ∂L/∂W_hr = Σ_b dh ⊗ m
            dh = dh @ W_hr  # ∂L/∂m_t = W_hrᵀ·dh
        tanh_c = np.tanh(c)
        # h_t = o_t ⊙ tanh(c_t)
        do = dh * tanh_c  # ∂h_t/∂o_t = tanh(c_t)
        # ∂h_t/∂c_t = o_t ⊙ (1 − tanh²(c_t)), plus the path from c_{t+1}
        dc = dc_next + dh * o * (1.0 - tanh_c**2)
        # c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        df = dc * c_prev  # ∂c_t/∂f_t = c_{t-1}
        di = dc * g  # ∂c_t/∂i_t = g_t
        dg = dc * i  # ∂c_t/∂g_t = i_t
        # ── the cell gradient: ∂c_t/∂c_{t-1} = f_t, an element-wise product, no matrix, no squashing ──
        dc_prev = dc * f
        # through the activations to the pre-activations a = W·[h_{t-1}, x_t] + b
        da = {
            "f": df * f * (1.0 - f),  # σ'(a) = σ(a)(1 − σ(a))
            "i": di * i * (1.0 - i),
            "g": dg * (1.0 - g**2),  # tanh'(a) = 1 − tanh²(a)
            "o": do * o * (1.0 - o),
        }
        dhx = np.zeros_like(hx)  # (B, P + I)
        for k in GATES:  # a_k = W_k·hx + b_k
            grads[f"W_{k}"] += da[k].T @ hx  # ∂a_k/∂W_k = hxᵀ
            db[k] += da[k].sum(axis=0)  # ∂a_k/∂b_k = 1
            dhx += da[k] @ W[k]  # ∂a_k/∂hx = W_k
        dh_next = dhx[:, :P]  # the h_{t-1} part of [h_{t-1}, x_t]
        dx[t] = dhx[:, P:]  # the x_t part
        dc_next = dc_prev

    if "b_f" in params:
        grads.update({f"b_{k}": db[k] for k in GATES})
    grads.update(x=dx, h0=dh_next, c0=dc_next)
    return grads


def lstm_gates(cache: dict) -> dict:
    """The gates recorded by lstm_forward: `f`, `i`, `g`, `o`, `c`, each (T, B, H).

    The same names and layout (per layer-direction) as gatelab.nn's return_gates=True.
    """
    return {k: cache[k] for k in ("f", "i", "g", "o", "c")}
