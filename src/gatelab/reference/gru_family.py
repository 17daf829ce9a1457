"""The GRU options of issue 7, forward and hand-derived BPTT: layer norm, gate and cell
activations, "reset before", zoneout and recurrent dropout (the definitions of
`gatelab.engines`, "The LSTM family").

Per step t, σ the gate activation, φ the cell activation, W_x and W_h the x and h columns
of W_r|W_z|W_n stacked (3H rows), d the recurrent dropout mask (else d = 1):

    ax = x_t·W_xᵀ,  ah = (d ⊙ h_{t-1})·W_hᵀ                (both (B, 3H), rows r|z|n)
    ax = LN(ax; ln_x), ah = LN(ah; ln_h)                    layer_norm (over all 3H units)
    r = σ(ax_r + ah_r + b_r),  z = σ(ax_z + ah_z + b_z)
    n = φ(ax_n + b_in + r ⊙ (ah_n + b_hn))                  reset after (torch.nn)
    n = φ(ax_n + b_in + (r ⊙ d ⊙ h_{t-1})·W_hnᵀ + b_hn)     reset before (Cho et al. 2014)
    h̃_t = (1 − z) ⊙ n + z ⊙ h_{t-1}
    h_t = m_h ⊙ h_{t-1} + (1 − m_h) ⊙ h̃_t                  zoneout mask m_h, else h_t = h̃_t

layer_norm needs reset_after=True (under "reset before" the n rows of the recurrent product
depend on r, so no single 3H product exists to normalise); the combination raises ValueError.

Parameters: those of gatelab.reference.gru (W_r, W_z, W_n (H, H + I); b_r, b_z, b_in, b_hn
(H,), biases optional) plus, with layer_norm, ln_x_w, ln_x_b, ln_h_w, ln_h_b (3H,) stacked
r|z|n (the same order as torch's rows, so to_torch_layout copies them as they are).
"""

from __future__ import annotations

import numpy as np

from ._activations import CELL_ACTIVATIONS, GATE_ACTIVATIONS, activation
from ._checks import check_array, check_input, check_params, check_state
from ._layernorm import layer_norm as _ln
from ._layernorm import layer_norm_backward as _ln_backward
from .gru import BIASES, WEIGHTS
from .lstm_family import check_masks


def gru_family_init_params(input_size: int, hidden_size: int, seed: int = 0, *, bias: bool = True,
                           layer_norm: bool = False, dtype=np.float64) -> dict:
    """gatelab.reference.gru.init_params plus, with layer_norm, gains 1 and biases 0 (3H,)."""
    from .gru import init_params

    params = init_params(input_size, hidden_size, seed, bias=bias, dtype=dtype)
    if layer_norm:
        for name in ("x", "h"):
            params[f"ln_{name}_w"] = np.ones(3 * hidden_size, dtype=dtype)
            params[f"ln_{name}_b"] = np.zeros(3 * hidden_size, dtype=dtype)
    return params


def _check(x, params, layer_norm, reset_after):
    for name, value in (("layer_norm", layer_norm), ("reset_after", reset_after)):
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected True or False, got {value!r}")
    if layer_norm and not reset_after:
        raise ValueError("layer_norm: expected reset_after=True with layer_norm=True, got reset_after=False")
    T, B, I = x.shape
    if not isinstance(params, dict) or "W_r" not in params or not hasattr(params["W_r"], "shape"):
        raise ValueError("params: expected a dict with 'W_r' of shape (H, H + I) and the other GRU keys")
    H = params["W_r"].shape[0]
    expected = {k: (H, H + I) for k in WEIGHTS} | {k: (H,) for k in BIASES}
    if layer_norm:
        expected |= {k: (3 * H,) for k in ("ln_x_w", "ln_x_b", "ln_h_w", "ln_h_b")}
    check_params(params, expected, x.dtype, optional=BIASES)
    present = [k for k in BIASES if k in params]
    if present and len(present) != len(BIASES):
        raise ValueError(f"params: expected all of {list(BIASES)} or none, got {present}")
    return T, B, I, H


def gru_family_forward(x: np.ndarray, params: dict, h0: np.ndarray | None = None, *,
                       layer_norm: bool = False, gate_activation: str = "sigmoid",
                       cell_activation: str = "tanh", reset_after: bool = True, masks: dict | None = None):
    """Run a GRU-family cell over a sequence (equations in the module docstring).

    Arguments:
        x: (T, B, I) time-major input, float32 or float64.
        params: see the module docstring.
        h0: (B, H) initial state, zeros when None.
        layer_norm, gate_activation, cell_activation, reset_after: the CellSpec fields.
        masks: None or a dict with any of `zoneout_h` (T, B, H) and `recurrent_dropout` (B, H).

    Returns:
        hs: (T, B, H), h_T: (B, H), cache: per step, time first, `r`, `z`, `n` (T, B, H)
        the gates, `a` (T, B, 3H) the pre-activations of r|z|n, `h_prev` (T, B, H), and
        `hn` (T, B, H) = ah_n + b_hn (reset after) or `rh` (T, B, H) = r ⊙ d ⊙ h_{t-1}
        (reset before); plus the options.
    """
    x = check_input(x)
    (sig, _), (phi, _) = (activation(gate_activation, GATE_ACTIVATIONS, "gate_activation"),
                          activation(cell_activation, CELL_ACTIVATIONS, "cell_activation"))
    T, B, I, H = _check(x, params, layer_norm, reset_after)
    masks = check_masks(masks, {"zoneout_h": (T, B, H), "recurrent_dropout": (B, H)}, x.dtype)
    h0 = h = check_state("h0", h0, (B, H), x.dtype)
    W = np.concatenate([params[k] for k in WEIGHTS], axis=0)  # (3H, H + I), rows r|z|n
    W_h, W_x = W[:, :H], W[:, H:]  # (3H, H), (3H, I)
    zero = np.zeros(H, dtype=x.dtype)
    b_r, b_z, b_in, b_hn = (params.get(k, zero) for k in BIASES)
    d = masks.get("recurrent_dropout")

    names = ("r", "z", "n", "h_prev", "hn" if reset_after else "rh", "h")
    cache = {k: np.empty((T, B, H), dtype=x.dtype) for k in names}
    cache["a"] = np.empty((T, B, 3 * H), dtype=x.dtype)
    ln_saved = {"x": [], "h": []}
    for t in range(T):
        h_prev = h
        h_in = h_prev * d if d is not None else h_prev  # (B, H): d ⊙ h_{t-1}
        ax = x[t] @ W_x.T  # (B, 3H)
        if reset_after:
            ah = h_in @ W_h.T  # (B, 3H)
            if layer_norm:
                ax, saved_x = _ln(ax, params["ln_x_w"], params["ln_x_b"])
                ah, saved_h = _ln(ah, params["ln_h_w"], params["ln_h_b"])
                ln_saved["x"].append(saved_x)
                ln_saved["h"].append(saved_h)
        else:
            ah = np.concatenate([h_in @ W_h[:2 * H].T, np.zeros((B, H), x.dtype)], axis=1)  # n rows below
        ax_r, ax_z, ax_n = np.split(ax, 3, axis=1)
        ah_r, ah_z, ah_n = np.split(ah, 3, axis=1)
        a_r = ax_r + ah_r + b_r
        a_z = ax_z + ah_z + b_z
        r, z = sig(a_r), sig(a_z)  # r = σ(a_r), z = σ(a_z)
        if reset_after:
            hn = ah_n + b_hn  # (B, H)
            a_n = ax_n + b_in + r * hn  # a_n = ax_n + b_in + r ⊙ (ah_n + b_hn)
            cache["hn"][t] = hn
        else:
            rh = r * h_in  # (B, H): r ⊙ d ⊙ h_{t-1}
            a_n = ax_n + b_in + rh @ W_h[2 * H:].T + b_hn  # a_n = ax_n + b_in + (r ⊙ h)·W_hnᵀ + b_hn
            cache["rh"][t] = rh
        n = phi(a_n)
        h = (1.0 - z) * n + z * h_prev  # h̃_t = (1 − z) ⊙ n + z ⊙ h_{t-1}
        if "zoneout_h" in masks:
            h = masks["zoneout_h"][t] * h_prev + (1.0 - masks["zoneout_h"][t]) * h
        for name, value in (("r", r), ("z", z), ("n", n), ("h_prev", h_prev), ("h", h)):
            cache[name][t] = value
        cache["a"][t] = np.concatenate([a_r, a_z, a_n], axis=1)
    cache.update(x=x, params=params, h0=h0, masks=masks, ln_saved=ln_saved, sizes=(T, B, I, H),
                 options=dict(layer_norm=layer_norm, gate_activation=gate_activation,
                              cell_activation=cell_activation, reset_after=reset_after))
    return cache["h"], h, cache


def gru_family_backward(dhs: np.ndarray, cache: dict, dh_T: np.ndarray | None = None) -> dict:
    """Backpropagation through time for gru_family_forward.

    Arguments:
        dhs: (T, B, H) ∂L/∂h_t for every step.
        cache: the cache returned by gru_family_forward.
        dh_T: (B, H) ∂L/∂h_T through the final state, zeros when None.

    Returns:
        grads: every key of params plus `x` (T, B, I) and `h0` (B, H).
    """
    T, B, I, H = cache["sizes"]
    params, masks, opts = cache["params"], cache["masks"], cache["options"]
    dtype = cache["a"].dtype
    _, dsig = activation(opts["gate_activation"], GATE_ACTIVATIONS, "gate_activation")
    _, dphi = activation(opts["cell_activation"], CELL_ACTIVATIONS, "cell_activation")
    dhs = check_array("dhs", dhs, (T, B, H), dtype)
    dh_next = check_state("dh_T", dh_T, (B, H), dtype)
    W = np.concatenate([params[k] for k in WEIGHTS], axis=0)  # (3H, H + I)
    W_h, W_x = W[:, :H], W[:, H:]
    d = masks.get("recurrent_dropout")
    x = cache["x"]
    acc = {k: np.zeros_like(v) for k, v in params.items() if k not in WEIGHTS}
    dW_h, dW_x = np.zeros_like(W_h), np.zeros_like(W_x)
    dx = np.empty((T, B, I), dtype=dtype)

    for t in reversed(range(T)):
        r, z, n, h_prev = (cache[k][t] for k in ("r", "z", "n", "h_prev"))
        a_r, a_z, a_n = np.split(cache["a"][t], 3, axis=1)
        h_in = h_prev * d if d is not None else h_prev
        dh = dhs[t] + dh_next  # ∂L/∂h_t: the output at t and everything after
        if "zoneout_h" in masks:  # h_t = m ⊙ h_{t-1} + (1 − m) ⊙ h̃_t
            dh_prev = dh * masks["zoneout_h"][t]
            dh = dh * (1.0 - masks["zoneout_h"][t])
        else:
            dh_prev = 0.0
        # h̃_t = (1 − z) ⊙ n + z ⊙ h_{t-1}
        dn = dh * (1.0 - z)  # ∂h̃/∂n = 1 − z
        dz = dh * (h_prev - n)  # ∂h̃/∂z = h_{t-1} − n
        dh_prev = dh_prev + dh * z  # ∂h̃/∂h_{t-1} = z (direct path)
        da_n = dn * dphi(a_n)  # n = φ(a_n)
        dax_n = da_n  # ∂a_n/∂ax_n = 1
        if opts["reset_after"]:  # a_n = ax_n + b_in + r ⊙ hn, hn = ah_n + b_hn
            dr = da_n * cache["hn"][t]  # ∂a_n/∂r = hn
            dhn = da_n * r  # ∂a_n/∂hn = r
        else:  # a_n = ax_n + b_in + rh·W_hnᵀ + b_hn, rh = r ⊙ h_in
            rh = cache["rh"][t]
            dW_h[2 * H:] += da_n.T @ rh  # ∂a_n/∂W_hn = rhᵀ
            drh = da_n @ W_h[2 * H:]  # (B, H)
            dr = drh * h_in  # ∂rh/∂r = h_in
            dhn = da_n  # b_hn is added outside the reset
        da_r = dr * dsig(a_r)  # r = σ(a_r)
        da_z = dz * dsig(a_z)  # z = σ(a_z)
        if "b_r" in params:
            acc["b_r"] += da_r.sum(axis=0)
            acc["b_z"] += da_z.sum(axis=0)
            acc["b_in"] += da_n.sum(axis=0)
            acc["b_hn"] += dhn.sum(axis=0)
        dax = np.concatenate([da_r, da_z, dax_n], axis=1)  # (B, 3H)
        if opts["reset_after"]:
            dah = np.concatenate([da_r, da_z, dhn], axis=1)  # (B, 3H)
            if opts["layer_norm"]:  # ax = LN(x W_xᵀ), ah = LN(h_in W_hᵀ)
                dax, dw, db = _ln_backward(dax, cache["ln_saved"]["x"][t], params["ln_x_w"])
                acc["ln_x_w"] += dw
                acc["ln_x_b"] += db
                dah, dw, db = _ln_backward(dah, cache["ln_saved"]["h"][t], params["ln_h_w"])
                acc["ln_h_w"] += dw
                acc["ln_h_b"] += db
            dW_h += dah.T @ h_in  # ∂ah/∂W_h = h_inᵀ
            dh_in = dah @ W_h
        else:
            dah = np.concatenate([da_r, da_z], axis=1)  # (B, 2H): r and z rows
            dW_h[:2 * H] += dah.T @ h_in
            dh_in = dah @ W_h[:2 * H] + drh * r  # ∂rh/∂h_in = r
        dW_x += dax.T @ x[t]  # ∂ax/∂W_x = x_tᵀ
        dx[t] = dax @ W_x
        dh_next = dh_prev + (dh_in * d if d is not None else dh_in)  # ∂h_in/∂h_{t-1} = d

    grads = {}
    for n_, k in enumerate(WEIGHTS):
        rows = slice(n_ * H, (n_ + 1) * H)
        grads[k] = np.concatenate([dW_h[rows], dW_x[rows]], axis=1)  # (H, H + I)
    grads.update(acc)
    grads.update(x=dx, h0=dh_next)
    return grads


def gru_family_gates(cache: dict) -> dict:
    """The gate record of gru_family_forward: `r`, `z`, `n`, each (T, B, H)."""
    return {k: cache[k] for k in ("r", "z", "n")}
