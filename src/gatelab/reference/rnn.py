"""The plain (Elman) RNN, forward and hand-derived backpropagation through time.

    h_t = φ(W·[h_{t-1}, x_t] + b),   φ = tanh (default) or relu

Its gradient crosses a step as ∂h_t/∂h_{t-1} = diag(φ'(a_t))·W_h: a matrix product and a
squashing at every step, which is why it vanishes (or explodes) over long spans.

Parameters (a dict of numpy arrays, one dtype, float32 or float64):
    W: (H, H + I), acting on [h_{t-1}, x_t] (h first)
    b: (H,) (torch's bias_ih + bias_hh); absent for a bias-free layer
"""

from __future__ import annotations

import numpy as np

from ._checks import check_array, check_input, check_params, check_sizes, check_state, uniform_init

NONLINEARITIES = ("tanh", "relu")


def init_params(input_size: int, hidden_size: int, seed: int = 0, *, bias: bool = True,
                dtype=np.float64) -> dict:
    """Random RNN parameters with torch.nn's init, U(-√k, √k), k = 1 / hidden_size.

    Arguments:
        input_size: I, the number of input features.
        hidden_size: H, the number of units.
        seed: seed of a local numpy Generator (the global RNG is not touched).
        bias: False leaves out b.
        dtype: np.float64 (default) or np.float32.
    """
    check_sizes(input_size, hidden_size)
    rng = np.random.default_rng(seed)
    params = {"W": uniform_init(rng, (hidden_size, hidden_size + input_size), hidden_size, dtype)}
    if bias:
        params["b"] = uniform_init(rng, (hidden_size,), hidden_size, dtype)
    return params


def rnn_forward(x: np.ndarray, params: dict, h0: np.ndarray | None = None, *,
                nonlinearity: str = "tanh"):
    """Run the plain RNN over a sequence.

    Arguments:
        x: (T, B, I) time-major input, float32 or float64.
        params: `W` (H, H + I) and optionally `b` (H,).
        h0: (B, H) initial hidden state, zeros when None.
        nonlinearity: "tanh" (default) or "relu", as torch.nn.RNN.

    Returns:
        hs: (T, B, H) the hidden outputs.
        h_T: (B, H) the final state.
        cache: a dict for rnn_backward; `hx` (T, B, H + I) [h_{t-1}, x_t], `h` (T, B, H) = hs,
            `params`, `h0`, `nonlinearity`.
    """
    x = check_input(x)
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected one of {NONLINEARITIES}, got {nonlinearity!r}")
    T, B, I = x.shape
    if not isinstance(params, dict) or "W" not in params or not hasattr(params["W"], "shape"):
        raise ValueError("params: expected a dict with 'W' of shape (H, H + I) and optionally 'b' (H,)")
    H = params["W"].shape[0]
    check_params(params, {"W": (H, H + I), "b": (H,)}, x.dtype, optional=("b",))
    W, b = params["W"], params.get("b", np.zeros(H, dtype=x.dtype))
    h0 = h = check_state("h0", h0, (B, H), x.dtype)

    hxs = np.empty((T, B, H + I), dtype=x.dtype)
    hs = np.empty((T, B, H), dtype=x.dtype)
    for t in range(T):
        hx = np.concatenate([h, x[t]], axis=1)  # (B, H + I): [h_{t-1}, x_t]
        a = hx @ W.T + b  # a_t = W·[h_{t-1}, x_t] + b
        h = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0.0)  # h_t = φ(a_t)
        hxs[t], hs[t] = hx, h
    cache = dict(hx=hxs, h=hs, params=params, h0=h0, nonlinearity=nonlinearity, sizes=(T, B, I, H))
    return hs, h, cache


def rnn_backward(dhs: np.ndarray, cache: dict, dh_T: np.ndarray | None = None) -> dict:
    """Backpropagation through time for rnn_forward.

    Arguments:
        dhs: (T, B, H) ∂L/∂h_t for every step.
        cache: the cache returned by rnn_forward.
        dh_T: (B, H) ∂L/∂h_T through the returned final state, zeros when None.

    Returns:
        grads: a dict with every key of params plus `x` (T, B, I) and `h0` (B, H).
    """
    T, B, I, H = cache["sizes"]
    params = cache["params"]
    dtype = cache["hx"].dtype
    dhs = check_array("dhs", dhs, (T, B, H), dtype)
    dh_next = check_state("dh_T", dh_T, (B, H), dtype)
    W = params["W"]
    dW = np.zeros_like(W)
    db = np.zeros(H, dtype=dtype)
    dx = np.empty((T, B, I), dtype=dtype)
    for t in reversed(range(T)):
        h, hx = cache["h"][t], cache["hx"][t]
        dh = dhs[t] + dh_next  # h_t feeds the output at t and step t+1
        if cache["nonlinearity"] == "tanh":
            da = dh * (1.0 - h**2)  # tanh'(a) = 1 − tanh²(a) = 1 − h²
        else:
            da = dh * (h > 0)  # relu'(a) = 1 where a > 0 (h > 0 exactly there)
        dW += da.T @ hx  # ∂a/∂W = [h_{t-1}, x_t]ᵀ
        db += da.sum(axis=0)  # ∂a/∂b = 1
        dhx = da @ W  # ∂a/∂[h_{t-1}, x_t] = W: a full matrix product at every step
        dh_next = dhx[:, :H]
        dx[t] = dhx[:, H:]
    grads = {"W": dW}
    if "b" in params:
        grads["b"] = db
    grads.update(x=dx, h0=dh_next)
    return grads
