"""The LSTM family (issue 7): every variant of gatelab's LSTM, forward and hand-derived BPTT.

The definitions are the ones in the docstring of `gatelab.engines` ("The LSTM family"),
shared by every engine. Written per step t, σ the gate activation and φ the cell
activation, [h, x] the concatenation, a = (a_f, a_i, a_g, a_o) the pre-activations:

    d ⊙ h_{t-1}                                     recurrent dropout mask d (B, P), else h_{t-1}
    a   = x_t·W_xᵀ + (d ⊙ h_{t-1})·W_hᵀ + b         W_x, W_h: the x and h columns of W_f|W_i|W_g|W_o
    a   = LN(x_t·W_xᵀ; ln_x) + LN((d ⊙ h_{t-1})·W_hᵀ; ln_h) + b     layer_norm (over all 4H units)
    a_f += p_f ⊙ c_{t-1},  a_i += p_i ⊙ c_{t-1}     peephole
    f   = σ(a_f)                                    1 when "forget_gate" is removed
    i   = σ(a_i)                                    1 − f with coupled_gates; 1 when "input_gate" is removed
    g   = φ(a_g)                                    a_g when "candidate_activation" is removed
    c̃_t = f ⊙ c_{t-1} + i ⊙ g                       the new cell
    a_o += p_o ⊙ c̃_t                                peephole (o reads the new cell)
    o   = σ(a_o)                                    1 when "output_gate" is removed
    y   = φ(LN(c̃_t; ln_c)) (layer_norm) or φ(c̃_t);  without φ when "output_activation" is removed
    h̃_t = o ⊙ y, projected W_hr·(o ⊙ y) when W_hr is given
    c_t = m_c ⊙ c_{t-1} + (1 − m_c) ⊙ c̃_t           zoneout mask m_c (T, B, H), else c_t = c̃_t
    h_t = m_h ⊙ h_{t-1} + (1 − m_h) ⊙ h̃_t           zoneout mask m_h (T, B, P), else h_t = h̃_t

Zoneout follows Krueger et al. 2016: the output gate's peephole and the output read the
new cell c̃_t; only the carried states are zoned out. The rows of a removed or coupled
gate stay in the parameters with gradient 0. coupled_gates with "input_gate" removed is
a contradiction and raises ValueError.

Parameters (reference names; one dtype, float32 or float64):
    W_f, W_i, W_g, W_o (H, P + I), b_f, b_i, b_g, b_o (H,)   as gatelab.reference.lstm
        (biases optional: absent for a bias-free layer; under layer_norm b = b_ih + b_hh)
    W_hr (P, H)                                             projection, optional
    p_f, p_i, p_o (H,)                                      peephole: torch-style weight_ph rows
    ln_x_w, ln_x_b (4H,)                                    layer_norm of x·W_xᵀ, stacked f|i|g|o
    ln_h_w, ln_h_b (4H,)                                    layer_norm of h·W_hᵀ, stacked f|i|g|o
    ln_c_w, ln_c_b (H,)                                     layer_norm of the cell
`to_torch_layout(params, "LSTM")` gives the engine names (weight_ih, weight_hh, bias_ih,
bias_hh, weight_hr, weight_ph (3, H), ln_ih_weight/bias and ln_hh_weight/bias in torch's
i|f|g|o row order, ln_c_weight/bias) and `from_torch_layout` goes back.
"""

from __future__ import annotations

import numpy as np

from ._activations import CELL_ACTIVATIONS, GATE_ACTIVATIONS, activation
from ._checks import check_array, check_input, check_params, check_sizes, check_state, uniform_init
from ._layernorm import layer_norm as _ln, layer_norm_backward as _ln_backward

GATES = ("f", "i", "g", "o")
ABLATIONS = ("forget_gate", "input_gate", "output_gate", "output_activation", "candidate_activation")
MASKS = ("zoneout_h", "zoneout_c", "recurrent_dropout")


def options_from_spec(spec) -> dict:
    """The keyword options of the family forward for a gatelab.engines.CellSpec.

    LSTM: those of lstm_family_forward; GRU: those of gru_family_forward (layer_norm,
    gate_activation, cell_activation, reset_after); RNN: none.
    """
    if spec.mode == "GRU":
        return dict(layer_norm=spec.layer_norm, gate_activation=spec.gate_activation,
                    cell_activation=spec.cell_activation, reset_after=spec.reset_after)
    if spec.mode != "LSTM":
        return {}
    return dict(peephole=spec.peephole, layer_norm=spec.layer_norm, coupled_gates=spec.coupled_gates,
                remove=frozenset(spec.remove), gate_activation=spec.gate_activation,
                cell_activation=spec.cell_activation)


def family_init_params(input_size: int, hidden_size: int, seed: int = 0, *, proj_size: int = 0,
                       bias: bool = True, peephole: bool = False, layer_norm: bool = False,
                       dtype=np.float64) -> dict:
    """Random LSTM-family parameters: torch.nn's U(-√k, √k), k = 1/H, for weights, biases and
    peepholes; layer-norm gains 1 and biases 0 (torch.nn.LayerNorm's init).

    Arguments:
        input_size, hidden_size: I and H.
        seed: seed of a local numpy Generator (the global RNG is not touched).
        proj_size: P > 0 adds W_hr (P, H).
        bias: False leaves out b_f, b_i, b_g, b_o.
        peephole: add p_f, p_i, p_o (H,).
        layer_norm: add ln_x_*, ln_h_* (4H,) and ln_c_* (H,).
        dtype: np.float64 (default) or np.float32.
    """
    check_sizes(input_size, hidden_size)
    if not isinstance(proj_size, int) or not 0 <= proj_size < hidden_size:
        raise ValueError(f"proj_size: expected an int in [0, hidden_size={hidden_size}), got {proj_size!r}")
    rng = np.random.default_rng(seed)
    H, P = hidden_size, proj_size or hidden_size
    params = {f"W_{k}": uniform_init(rng, (H, P + input_size), H, dtype) for k in GATES}
    if bias:
        params.update({f"b_{k}": uniform_init(rng, (H,), H, dtype) for k in GATES})
    if proj_size:
        params["W_hr"] = uniform_init(rng, (P, H), H, dtype)
    if peephole:
        params.update({f"p_{k}": uniform_init(rng, (H,), H, dtype) for k in ("f", "i", "o")})
    if layer_norm:
        for name, n in (("x", 4 * H), ("h", 4 * H), ("c", H)):
            params[f"ln_{name}_w"] = np.ones(n, dtype=dtype)
            params[f"ln_{name}_b"] = np.zeros(n, dtype=dtype)
    return params


def _check_options(peephole, layer_norm, coupled_gates, remove, gate_activation, cell_activation):
    for name, value in (("peephole", peephole), ("layer_norm", layer_norm), ("coupled_gates", coupled_gates)):
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected True or False, got {value!r}")
    remove = frozenset(remove)
    unknown = sorted(remove - set(ABLATIONS))
    if unknown:
        raise ValueError(f"remove: expected a subset of {ABLATIONS}, got unknown {unknown}")
    if coupled_gates and "input_gate" in remove:
        raise ValueError("remove: 'input_gate' cannot be removed with coupled_gates=True (i = 1 - f)")
    sig = activation(gate_activation, GATE_ACTIVATIONS, "gate_activation")
    phi = activation(cell_activation, CELL_ACTIVATIONS, "cell_activation")
    return remove, sig, phi


def _check_family_params(x, params, peephole, layer_norm):
    """(T, B, I, H, P) after checking that params hold exactly what the options need."""
    T, B, I = x.shape
    if not isinstance(params, dict) or "W_f" not in params or not hasattr(params["W_f"], "shape"):
        raise ValueError("params: expected a dict with 'W_f' of shape (H, P + I) and the other LSTM keys")
    H = params["W_f"].shape[0]
    P = params["W_hr"].shape[0] if "W_hr" in params and hasattr(params["W_hr"], "shape") else H
    expected = {f"W_{k}": (H, P + I) for k in GATES} | {f"b_{k}": (H,) for k in GATES}
    if "W_hr" in params:
        expected["W_hr"] = (P, H)
    if peephole:
        expected |= {f"p_{k}": (H,) for k in ("f", "i", "o")}
    if layer_norm:
        expected |= {"ln_x_w": (4 * H,), "ln_x_b": (4 * H,), "ln_h_w": (4 * H,), "ln_h_b": (4 * H,),
                     "ln_c_w": (H,), "ln_c_b": (H,)}
    check_params(params, expected, x.dtype, optional=tuple(f"b_{k}" for k in GATES))
    present = [f"b_{k}" for k in GATES if f"b_{k}" in params]
    if present and len(present) != 4:
        raise ValueError(f"params: expected all of b_f, b_i, b_g, b_o or none, got {present}")
    return T, B, I, H, P


def check_masks(masks, shapes: dict, dtype) -> dict:
    """masks: None or a dict with some of `shapes`' keys, each of that shape and dtype."""
    if masks is None:
        return {}
    if not isinstance(masks, dict):
        raise ValueError(f"masks: expected None or a dict with keys from {tuple(shapes)}, got {type(masks).__name__}")
    unknown = sorted(set(masks) - set(shapes))
    if unknown:
        raise ValueError(f"masks: expected keys from {tuple(shapes)}, got unknown {unknown}")
    return {k: check_array(f"masks[{k!r}]", v, shapes[k], dtype) for k, v in masks.items() if v is not None}


def lstm_family_forward(x: np.ndarray, params: dict, h0: np.ndarray | None = None,
                        c0: np.ndarray | None = None, *, peephole: bool = False, layer_norm: bool = False,
                        coupled_gates: bool = False, remove=frozenset(), gate_activation: str = "sigmoid",
                        cell_activation: str = "tanh", masks: dict | None = None):
    """Run an LSTM-family cell over a sequence (equations in the module docstring).

    Arguments:
        x: (T, B, I) time-major input, float32 or float64.
        params: reference names, see the module docstring (family_init_params makes one).
        h0: (B, P) initial hidden state, zeros when None.
        c0: (B, H) initial cell, zeros when None.
        peephole, layer_norm, coupled_gates, remove, gate_activation, cell_activation:
            the CellSpec fields of the same name (options_from_spec(spec) gives them).
        masks: None or a dict with any of `zoneout_h` (T, B, P) and `zoneout_c` (T, B, H),
            1 where a unit keeps its previous value, and `recurrent_dropout` (B, P), the
            scaled dropout mask d on h_{t-1} before the recurrent product.

    Returns:
        hs: (T, B, P) the outputs h_t (after zoneout).
        (h_T, c_T): the final carried states, (B, P) and (B, H).
        cache: for lstm_family_backward and lstm_family_gates. Per step, time first:
            `f`, `i`, `g`, `o` (T, B, H) the gate values (constants for removed gates),
            `c` (T, B, H) the carried cell c_t, `c_new` (T, B, H) the new cell c̃_t,
            `c_prev` (T, B, H), `h_prev` (T, B, P), `a` (T, B, 4H) the pre-activations
            f|i|g|o (after layer norm, bias and peepholes), `y` (T, B, H) the output
            activation, `m` (T, B, H) = o ⊙ y, `h` (T, B, P) = hs; plus the options.
    """
    x = check_input(x)
    remove, (sig, _), (phi, _) = _check_options(peephole, layer_norm, coupled_gates, remove,
                                                gate_activation, cell_activation)
    T, B, I, H, P = _check_family_params(x, params, peephole, layer_norm)
    masks = check_masks(masks, {"zoneout_h": (T, B, P), "zoneout_c": (T, B, H), "recurrent_dropout": (B, P)},
                        x.dtype)
    h0 = h = check_state("h0", h0, (B, P), x.dtype)
    c0 = c = check_state("c0", c0, (B, H), x.dtype)
    W = np.concatenate([params[f"W_{k}"] for k in GATES], axis=0)  # (4H, P + I), rows f|i|g|o
    W_h, W_x = W[:, :P], W[:, P:]  # (4H, P), (4H, I)
    b = np.concatenate([params[f"b_{k}"] for k in GATES]) if "b_f" in params else np.zeros(4 * H, x.dtype)
    W_hr = params.get("W_hr")
    d = masks.get("recurrent_dropout")
    one = np.ones((B, H), dtype=x.dtype)

    per_step = {"f": H, "i": H, "g": H, "o": H, "c": H, "c_new": H, "c_prev": H, "h_prev": P,
                "a": 4 * H, "y": H, "m": H, "h": P}
    cache = {k: np.empty((T, B, n), dtype=x.dtype) for k, n in per_step.items()}
    ln_saved = {"x": [], "h": [], "c": []}
    for t in range(T):
        h_prev, c_prev = h, c
        h_in = h_prev * d if d is not None else h_prev  # (B, P): d ⊙ h_{t-1}
        ax = x[t] @ W_x.T  # (B, 4H)
        ah = h_in @ W_h.T  # (B, 4H)
        if layer_norm:
            ax, saved_x = _ln(ax, params["ln_x_w"], params["ln_x_b"])  # LN over all 4H units
            ah, saved_h = _ln(ah, params["ln_h_w"], params["ln_h_b"])
            ln_saved["x"].append(saved_x)
            ln_saved["h"].append(saved_h)
        a = ax + ah + b  # (B, 4H)
        a_f, a_i, a_g, a_o = np.split(a, 4, axis=1)  # (B, H) each, views: the peepholes below land in a
        if peephole:
            a_f += params["p_f"] * c_prev  # a_f += p_f ⊙ c_{t-1}
            a_i += params["p_i"] * c_prev  # a_i += p_i ⊙ c_{t-1}
        f = one if "forget_gate" in remove else sig(a_f)
        i = 1.0 - f if coupled_gates else one if "input_gate" in remove else sig(a_i)
        g = a_g.copy() if "candidate_activation" in remove else phi(a_g)
        c_new = f * c_prev + i * g  # c̃_t = f ⊙ c_{t-1} + i ⊙ g
        if peephole:
            a_o += params["p_o"] * c_new  # a_o += p_o ⊙ c̃_t
        o = one if "output_gate" in remove else sig(a_o)
        c_out = c_new
        if layer_norm:
            c_out, saved_c = _ln(c_new, params["ln_c_w"], params["ln_c_b"])  # LN(c̃_t), (B, H)
            ln_saved["c"].append(saved_c)
        y = c_out if "output_activation" in remove else phi(c_out)
        m = o * y  # (B, H)
        h_new = m @ W_hr.T if W_hr is not None else m  # (B, P)
        if "zoneout_c" in masks:
            # c_t = m_c ⊙ c_{t-1} + (1 − m_c) ⊙ c̃_t
            c = masks["zoneout_c"][t] * c_prev + (1.0 - masks["zoneout_c"][t]) * c_new
        else:
            c = c_new
        if "zoneout_h" in masks:
            # h_t = m_h ⊙ h_{t-1} + (1 − m_h) ⊙ h̃_t
            h = masks["zoneout_h"][t] * h_prev + (1.0 - masks["zoneout_h"][t]) * h_new
        else:
            h = h_new
        for name, value in (("f", f), ("i", i), ("g", g), ("o", o), ("c", c), ("c_new", c_new),
                            ("c_prev", c_prev), ("h_prev", h_prev), ("a", a), ("y", y), ("m", m), ("h", h)):
            cache[name][t] = value
    cache.update(x=x, params=params, h0=h0, c0=c0, masks=masks, ln_saved=ln_saved, sizes=(T, B, I, H, P),
                 options=dict(peephole=peephole, layer_norm=layer_norm, coupled_gates=coupled_gates,
                              remove=remove, gate_activation=gate_activation, cell_activation=cell_activation))
    return cache["h"], (h, c), cache


def lstm_family_backward(dhs: np.ndarray, cache: dict, dh_T: np.ndarray | None = None,
                         dc_T: np.ndarray | None = None) -> dict:
    """Backpropagation through time for lstm_family_forward.

    Arguments:
        dhs: (T, B, P) ∂L/∂h_t for every step.
        cache: the cache returned by lstm_family_forward.
        dh_T: (B, P) ∂L/∂h_T through the final state, zeros when None.
        dc_T: (B, H) ∂L/∂c_T through the final cell, zeros when None.

    Returns:
        grads: every key of params plus `x` (T, B, I), `h0` (B, P), `c0` (B, H). The masks
        are constants (no gradient).
    """
    T, B, I, H, P = cache["sizes"]
    params, masks, opts = cache["params"], cache["masks"], cache["options"]
    remove = opts["remove"]
    dtype = cache["a"].dtype
    _, dsig = activation(opts["gate_activation"], GATE_ACTIVATIONS, "gate_activation")
    _, dphi = activation(opts["cell_activation"], CELL_ACTIVATIONS, "cell_activation")
    dhs = check_array("dhs", dhs, (T, B, P), dtype)
    dh_next = check_state("dh_T", dh_T, (B, P), dtype)  # ∂L/∂h_t from step t+1 (and the final state)
    dc_next = check_state("dc_T", dc_T, (B, H), dtype)  # ∂L/∂c_t from step t+1
    W = np.concatenate([params[f"W_{k}"] for k in GATES], axis=0)  # (4H, P + I)
    W_h, W_x = W[:, :P], W[:, P:]
    W_hr = params.get("W_hr")
    d = masks.get("recurrent_dropout")
    x = cache["x"]
    g_acc = {k: np.zeros_like(v) for k, v in params.items() if not k.startswith("W_") or k == "W_hr"}
    dW_h, dW_x = np.zeros_like(W_h), np.zeros_like(W_x)
    dx = np.empty((T, B, I), dtype=dtype)

    for t in reversed(range(T)):
        f, i, g, o = (cache[k][t] for k in GATES)
        c_new, c_prev, h_prev, a = cache["c_new"][t], cache["c_prev"][t], cache["h_prev"][t], cache["a"][t]
        a_f, a_i, a_g, a_o = np.split(a, 4, axis=1)
        dh = dhs[t] + dh_next  # ∂L/∂h_t: the output at t and everything after
        dc = dc_next  # ∂L/∂c_t from step t+1
        # zoneout: h_t = m_h ⊙ h_{t-1} + (1 − m_h) ⊙ h̃_t (c likewise)
        if "zoneout_h" in masks:
            dh_prev_zone = dh * masks["zoneout_h"][t]  # ∂h_t/∂h_{t-1} = m_h
            dh = dh * (1.0 - masks["zoneout_h"][t])  # ∂h_t/∂h̃_t = 1 − m_h
        else:
            dh_prev_zone = 0.0
        if "zoneout_c" in masks:
            dc_prev = dc * masks["zoneout_c"][t]  # ∂c_t/∂c_{t-1} = m_c
            dc_new = dc * (1.0 - masks["zoneout_c"][t])  # ∂c_t/∂c̃_t = 1 − m_c
        else:
            dc_prev, dc_new = 0.0, dc
        if W_hr is not None:  # h̃_t = W_hr·m_t
            g_acc["W_hr"] += dh.T @ cache["m"][t]
            dm = dh @ W_hr
        else:
            dm = dh
        # m = o ⊙ y
        do = dm * cache["y"][t]  # ∂m/∂o = y
        dy = dm * o  # ∂m/∂y = o
        # y = φ(LN(c̃)): through φ, then through LN
        c_out_grad = dy if "output_activation" in remove else dy * dphi(_c_out(cache, t, params, opts))
        if opts["layer_norm"]:
            dcn, dw, db_ = _ln_backward(c_out_grad, cache["ln_saved"]["c"][t], params["ln_c_w"])
            g_acc["ln_c_w"] += dw
            g_acc["ln_c_b"] += db_
            dc_new = dc_new + dcn
        else:
            dc_new = dc_new + c_out_grad
        da_o = np.zeros_like(do) if "output_gate" in remove else do * dsig(a_o)  # o = σ(a_o)
        if opts["peephole"]:  # a_o += p_o ⊙ c̃_t
            g_acc["p_o"] += (da_o * c_new).sum(axis=0)
            dc_new = dc_new + da_o * params["p_o"]
        # c̃_t = f ⊙ c_{t-1} + i ⊙ g
        df = dc_new * c_prev  # ∂c̃/∂f = c_{t-1}
        di = dc_new * g  # ∂c̃/∂i = g
        dg = dc_new * i  # ∂c̃/∂g = i
        dc_prev = dc_prev + dc_new * f  # ∂c̃/∂c_{t-1} = f: the additive cell path
        if opts["coupled_gates"]:  # i = 1 − f: ∂i/∂f = −1, and a_i is unused
            df = df - di
            da_i = np.zeros_like(di)
        elif "input_gate" in remove:
            da_i = np.zeros_like(di)
        else:
            da_i = di * dsig(a_i)  # i = σ(a_i)
        da_f = np.zeros_like(df) if "forget_gate" in remove else df * dsig(a_f)  # f = σ(a_f)
        da_g = dg if "candidate_activation" in remove else dg * dphi(a_g)  # g = φ(a_g)
        if opts["peephole"]:  # a_f += p_f ⊙ c_{t-1}, a_i += p_i ⊙ c_{t-1}
            g_acc["p_f"] += (da_f * c_prev).sum(axis=0)
            g_acc["p_i"] += (da_i * c_prev).sum(axis=0)
            dc_prev = dc_prev + da_f * params["p_f"] + da_i * params["p_i"]
        da = np.concatenate([da_f, da_i, da_g, da_o], axis=1)  # (B, 4H)
        if "b_f" in params:  # a = ax + ah + b
            for k, block in zip(GATES, np.split(da.sum(axis=0), 4)):
                g_acc[f"b_{k}"] += block
        dax = dah = da
        if opts["layer_norm"]:  # ax = LN(x W_xᵀ), ah = LN((d ⊙ h) W_hᵀ)
            dax, dw, db_ = _ln_backward(da, cache["ln_saved"]["x"][t], params["ln_x_w"])
            g_acc["ln_x_w"] += dw
            g_acc["ln_x_b"] += db_
            dah, dw, db_ = _ln_backward(da, cache["ln_saved"]["h"][t], params["ln_h_w"])
            g_acc["ln_h_w"] += dw
            g_acc["ln_h_b"] += db_
        h_in = h_prev * d if d is not None else h_prev
        dW_x += dax.T @ x[t]  # ∂(x W_xᵀ)/∂W_x = x_tᵀ
        dW_h += dah.T @ h_in  # ∂(h W_hᵀ)/∂W_h = (d ⊙ h_{t-1})ᵀ
        dx[t] = dax @ W_x
        dh_in = dah @ W_h  # (B, P)
        dh_next = (dh_in * d if d is not None else dh_in) + dh_prev_zone  # ∂(d ⊙ h)/∂h = d
        dc_next = dc_prev

    grads = {}
    for n, k in enumerate(GATES):
        rows = slice(n * H, (n + 1) * H)
        grads[f"W_{k}"] = np.concatenate([dW_h[rows], dW_x[rows]], axis=1)  # (H, P + I)
    grads.update(g_acc)
    grads.update(x=dx, h0=dh_next, c0=dc_next)
    return grads


def _c_out(cache: dict, t: int, params: dict, opts: dict) -> np.ndarray:
    """The argument of the output activation at step t: LN(c̃_t) or c̃_t."""
    if opts["layer_norm"]:
        v_hat, _ = cache["ln_saved"]["c"][t]
        return v_hat * params["ln_c_w"] + params["ln_c_b"]
    return cache["c_new"][t]


def lstm_family_gates(cache: dict) -> dict:
    """The gate record of lstm_family_forward: `f`, `i`, `g`, `o` and the carried cell `c`,
    each (T, B, H); removed gates show their constant 1, coupled i shows 1 − f."""
    return {k: cache[k] for k in ("f", "i", "g", "o", "c")}
