"""The GRU as its equations, forward and hand-derived backpropagation through time.

For each step t, with W_n = [W_hn | W_in] split into the columns acting on h and on x:

    r_t = σ(W_r·[h_{t-1}, x_t] + b_r)                          reset gate
    z_t = σ(W_z·[h_{t-1}, x_t] + b_z)                          update gate
    n_t = tanh(W_in·x_t + b_in + r_t ⊙ (W_hn·h_{t-1} + b_hn))   candidate ("reset after", torch.nn)
    n_t = tanh(W_n·[r_t ⊙ h_{t-1}, x_t] + b_in + b_hn)          candidate ("reset before", Cho et al. 2014)
    h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}                       hidden output

Parameters (a dict of numpy arrays, one dtype, float32 or float64):
    W_r, W_z, W_n: (H, H + I), acting on [h_{t-1}, x_t] (h first)
    b_r, b_z: (H,) (torch's bias_ih + bias_hh of those rows)
    b_in, b_hn: (H,) the candidate's input and recurrent biases, kept apart because under
        "reset after" r_t multiplies b_hn but not b_in (under "reset before" only their sum counts)
    All four biases are absent for a bias-free layer.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_array, check_input, check_params, check_sizes, check_state, sigmoid, uniform_init

WEIGHTS = ("W_r", "W_z", "W_n")
BIASES = ("b_r", "b_z", "b_in", "b_hn")


def init_params(input_size: int, hidden_size: int, seed: int = 0, *, bias: bool = True,
                dtype=np.float64) -> dict:
    """Random GRU parameters with torch.nn's init, U(-√k, √k), k = 1 / hidden_size.

    Arguments:
        input_size: I, the number of input features.
        hidden_size: H, the number of units.
        seed: seed of a local numpy Generator (the global RNG is not touched).
        bias: False leaves out the biases.
        dtype: np.float64 (default) or np.float32.
    """
    check_sizes(input_size, hidden_size)
    rng = np.random.default_rng(seed)
    H = hidden_size
    params = {k: uniform_init(rng, (H, H + input_size), H, dtype) for k in WEIGHTS}
    if bias:
        params.update({k: uniform_init(rng, (H,), H, dtype) for k in BIASES})
    return params


def _sizes(x: np.ndarray, params: dict) -> tuple[int, int, int, int]:
    T, B, I = x.shape
    if not isinstance(params, dict) or "W_r" not in params or not hasattr(params["W_r"], "shape"):
        raise ValueError("params: expected a dict with 'W_r' of shape (H, H + I) and the other GRU keys")
    H = params["W_r"].shape[0]
    expected = {k: (H, H + I) for k in WEIGHTS} | {k: (H,) for k in BIASES}
    check_params(params, expected, x.dtype, optional=BIASES)
    present = [k for k in BIASES if k in params]
    if present and len(present) != len(BIASES):
        raise ValueError(f"params: expected all of {list(BIASES)} or none, got {present}")
    return T, B, I, H


def gru_forward(x: np.ndarray, params: dict, h0: np.ndarray | None = None, *,
                reset_after: bool = True):
    """Run the GRU over a sequence.

    Arguments:
        x: (T, B, I) time-major input, float32 or float64.
        params: see the module docstring (init_params or params_from_torch make one).
        h0: (B, H) initial hidden state, zeros when None.
        reset_after: True (default) is torch.nn's GRU; False is the original "reset before".

    Returns:
        hs: (T, B, H) the hidden outputs.
        h_T: (B, H) the final state.
        cache: a dict for gru_backward and for reading the gates; per-step entries, time
            first: `r`, `z`, `n` (T, B, H); `h_prev` (T, B, H); `hx` (T, B, H + I) the
            concatenation [h_{t-1}, x_t]; `hn` (T, B, H) W_hn·h_{t-1} + b_hn (reset after)
            or `rhx` (T, B, H + I) [r ⊙ h_{t-1}, x_t] (reset before); `h` = hs; and
            `params`, `h0`, `reset_after`.
    """
    x = check_input(x)
    if not isinstance(reset_after, bool):
        raise ValueError(f"reset_after: expected True or False, got {reset_after!r}")
    T, B, I, H = _sizes(x, params)
    h0 = h = check_state("h0", h0, (B, H), x.dtype)
    zero = np.zeros(H, dtype=x.dtype)
    W_r, W_z, W_n = (params[k] for k in WEIGHTS)
    b_r, b_z, b_in, b_hn = (params.get(k, zero) for k in BIASES)
    W_hn, W_in = W_n[:, :H], W_n[:, H:]  # (H, H), (H, I)

    names = ("r", "z", "n", "h_prev", "hx") + (("hn",) if reset_after else ("rhx",))
    cache = {k: np.empty((T, B, H + I if k in ("hx", "rhx") else H), dtype=x.dtype) for k in names}
    hs = np.empty((T, B, H), dtype=x.dtype)
    for t in range(T):
        h_prev = h
        hx = np.concatenate([h_prev, x[t]], axis=1)  # (B, H + I): [h_{t-1}, x_t]
        r = sigmoid(hx @ W_r.T + b_r)  # r_t = σ(W_r·[h_{t-1}, x_t] + b_r)
        z = sigmoid(hx @ W_z.T + b_z)  # z_t = σ(W_z·[h_{t-1}, x_t] + b_z)
        if reset_after:
            hn = h_prev @ W_hn.T + b_hn  # (B, H): W_hn·h_{t-1} + b_hn
            # n_t = tanh(W_in·x_t + b_in + r_t ⊙ (W_hn·h_{t-1} + b_hn))
            n = np.tanh(x[t] @ W_in.T + b_in + r * hn)
            cache["hn"][t] = hn
        else:
            rhx = np.concatenate([r * h_prev, x[t]], axis=1)  # (B, H + I): [r_t ⊙ h_{t-1}, x_t]
            n = np.tanh(rhx @ W_n.T + b_in + b_hn)  # n_t = tanh(W_n·[r_t ⊙ h_{t-1}, x_t] + b_n)
            cache["rhx"][t] = rhx
        h = (1.0 - z) * n + z * h_prev  # h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}
        for name, value in (("r", r), ("z", z), ("n", n), ("h_prev", h_prev), ("hx", hx)):
            cache[name][t] = value
        hs[t] = h
    cache.update(h=hs, params=params, h0=h0, reset_after=reset_after, sizes=(T, B, I, H))
    return hs, h, cache


def gru_backward(dhs: np.ndarray, cache: dict, dh_T: np.ndarray | None = None) -> dict:
    """Backpropagation through time for gru_forward.

    Arguments:
        dhs: (T, B, H) ∂L/∂h_t for every step.
        cache: the cache returned by gru_forward.
        dh_T: (B, H) ∂L/∂h_T through the returned final state, zeros when None.

    Returns:
        grads: a dict with every key of params plus `x` (T, B, I) and `h0` (B, H).
    """
    T, B, I, H = cache["sizes"]
    params = cache["params"]
    dtype = cache["hx"].dtype
    dhs = check_array("dhs", dhs, (T, B, H), dtype)
    dh_next = check_state("dh_T", dh_T, (B, H), dtype)
    W_r, W_z, W_n = (params[k] for k in WEIGHTS)
    W_hn, W_in = W_n[:, :H], W_n[:, H:]
    grads = {k: np.zeros_like(params[k]) for k in WEIGHTS}
    db = {k: np.zeros(H, dtype=dtype) for k in BIASES}
    dx = np.empty((T, B, I), dtype=dtype)

    for t in reversed(range(T)):
        r, z, n, h_prev, hx = (cache[k][t] for k in ("r", "z", "n", "h_prev", "hx"))
        dh = dhs[t] + dh_next  # h_t feeds the output at t and the gates at t+1
        # h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}
        dn = dh * (1.0 - z)  # ∂h_t/∂n_t = 1 − z_t
        dz = dh * (h_prev - n)  # ∂h_t/∂z_t = h_{t-1} − n_t
        dh_prev = dh * z  # ∂h_t/∂h_{t-1} (direct path) = z_t, element-wise like the LSTM's f_t
        da_n = dn * (1.0 - n**2)  # tanh'(a) = 1 − tanh²(a)
        if cache["reset_after"]:
            # a_n = W_in·x_t + b_in + r_t ⊙ hn_t, hn_t = W_hn·h_{t-1} + b_hn
            hn = cache["hn"][t]
            dr = da_n * hn  # ∂a_n/∂r_t = hn_t
            dhn = da_n * r  # ∂a_n/∂hn_t = r_t
            grads["W_n"][:, :H] += dhn.T @ h_prev  # ∂hn/∂W_hn = h_{t-1}ᵀ
            grads["W_n"][:, H:] += da_n.T @ hx[:, H:]  # ∂a_n/∂W_in = x_tᵀ
            db["b_hn"] += dhn.sum(axis=0)  # ∂hn/∂b_hn = 1
            db["b_in"] += da_n.sum(axis=0)  # ∂a_n/∂b_in = 1
            dh_prev += dhn @ W_hn  # ∂hn/∂h_{t-1} = W_hn
            dx_t = da_n @ W_in  # ∂a_n/∂x_t = W_in
        else:
            # a_n = W_n·[r_t ⊙ h_{t-1}, x_t] + b_in + b_hn
            rhx = cache["rhx"][t]
            grads["W_n"] += da_n.T @ rhx  # ∂a_n/∂W_n = [r ⊙ h_{t-1}, x_t]ᵀ
            db["b_in"] += da_n.sum(axis=0)
            db["b_hn"] += da_n.sum(axis=0)
            drhx = da_n @ W_n  # (B, H + I)
            dr = drhx[:, :H] * h_prev  # ∂(r ⊙ h)/∂r = h_{t-1}
            dh_prev += drhx[:, :H] * r  # ∂(r ⊙ h)/∂h_{t-1} = r_t
            dx_t = drhx[:, H:]
        da_r = dr * r * (1.0 - r)  # σ'(a) = σ(a)(1 − σ(a))
        da_z = dz * z * (1.0 - z)
        # a_r = W_r·hx + b_r, a_z = W_z·hx + b_z
        grads["W_r"] += da_r.T @ hx
        grads["W_z"] += da_z.T @ hx
        db["b_r"] += da_r.sum(axis=0)
        db["b_z"] += da_z.sum(axis=0)
        dhx = da_r @ W_r + da_z @ W_z  # (B, H + I)
        dh_next = dh_prev + dhx[:, :H]
        dx[t] = dx_t + dhx[:, H:]

    if "b_r" in params:
        grads.update(db)
    grads.update(x=dx, h0=dh_next)
    return grads


def gru_gates(cache: dict) -> dict:
    """The gates recorded by gru_forward: `r`, `z`, `n`, each (T, B, H)."""
    return {k: cache[k] for k in ("r", "z", "n")}
