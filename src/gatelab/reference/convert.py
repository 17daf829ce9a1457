"""Reference parameters <-> torch.nn's layout.

The same mathematics in two layouts:

    reference (the equations)                 torch.nn (one layer-direction, suffix _l{k}[_reverse])
    W_k (H, P + I) on [h_{t-1}, x_t]          weight_ih (G*H, I) and weight_hh (G*H, P), rows stacked
                                              LSTM i|f|g|o, GRU r|z|n
    b_k (H,)                                  bias_ih + bias_hh (two biases, only their sum counts)
    GRU b_in, b_hn (H,)                       the n rows of bias_ih and of bias_hh (kept apart)
    LSTM W_hr (P, H)                          weight_hr (proj_size > 0)

LSTM-family extras (gatelab.reference.lstm_family, issue 7):

    p_f, p_i, p_o (H,)                        weight_ph (3, H), rows p_f|p_i|p_o
    ln_x_w, ln_x_b (G*H,), reference order    ln_ih_weight, ln_ih_bias (G*H,), torch row order
    ln_h_w, ln_h_b (G*H,), reference order    ln_hh_weight, ln_hh_bias (G*H,), torch row order
    ln_c_w, ln_c_b (H,)                       ln_c_weight, ln_c_bias (H,)

"reference order" stacks LN gains like the weights W_f|W_i|W_g|W_o (GRU r|z|n).

Going to torch, the whole bias goes into bias_ih and bias_hh is zero (GRU: bias_hh holds
b_hn in its n rows). Going back, the two are added. `to_torch_layout(grads, mode,
gradients=True)` maps *gradients* instead: ∂L/∂bias_ih = ∂L/∂bias_hh = ∂L/∂b.

torch is imported only inside params_from_torch and params_to_torch.
"""

from __future__ import annotations

import numpy as np

# reference gate -> row block in torch's stacking
TORCH_ORDER = {"LSTM": ("i", "f", "g", "o"), "GRU": ("r", "z", "n"), "RNN": ("",)}
REF_ORDER = {"LSTM": ("f", "i", "g", "o"), "GRU": ("r", "z", "n"), "RNN": ("",)}
LN_KEYS = {"ln_x_w": "ln_ih_weight", "ln_x_b": "ln_ih_bias", "ln_h_w": "ln_hh_weight",
           "ln_h_b": "ln_hh_bias"}


def _family(mode: str) -> str:
    """"LSTM" | "GRU" | "RNN" from a torch mode name ("RNN_TANH", "RNN_RELU" -> "RNN")."""
    if mode in ("LSTM", "GRU"):
        return mode
    if mode in ("RNN", "RNN_TANH", "RNN_RELU"):
        return "RNN"
    raise ValueError(f"mode: expected one of 'LSTM', 'GRU', 'RNN', 'RNN_TANH', 'RNN_RELU', got {mode!r}")


def _wkey(mode: str, gate: str) -> str:
    return "W" if mode == "RNN" else f"W_{gate}"


def _has_bias(params: dict, mode: str) -> bool:
    return ("b" if mode == "RNN" else "b_r" if mode == "GRU" else "b_f") in params


def _reorder(v: np.ndarray, src: tuple, dst: tuple) -> np.ndarray:
    """Restack the G row blocks of v from gate order `src` to gate order `dst`."""
    blocks = dict(zip(src, np.split(v, len(src), axis=0)))
    return np.concatenate([blocks[k] for k in dst], axis=0)


def to_torch_layout(params: dict, mode: str, *, gradients: bool = False) -> dict:
    """Reference parameters (or their gradients) as torch.nn-named numpy arrays.

    Arguments:
        params: a reference parameter dict (lstm / gru / rnn / lstm_family); extra keys
            such as `x`, `h0`, `c0` of a gradient dict are ignored.
        mode: "LSTM", "GRU" or "RNN" ("RNN_TANH" / "RNN_RELU" accepted).
        gradients: False maps parameters (bias_hh = 0, GRU n rows b_hn); True maps
            gradients (both bias_ih and bias_hh get ∂L/∂b).

    Returns:
        {"weight_ih", "weight_hh"[, "bias_ih", "bias_hh"][, "weight_hr"][, "weight_ph"]
        [, "ln_ih_weight", ...]} without layer suffix.
    """
    mode = _family(mode)
    W = {k: params[_wkey(mode, k)] for k in REF_ORDER[mode]}
    H = W[REF_ORDER[mode][0]].shape[0]
    P = params["W_hr"].shape[0] if "W_hr" in params else H  # the W_* columns are [h (P), x (I)]
    order = TORCH_ORDER[mode]
    out = {
        "weight_ih": np.concatenate([W[k][:, P:] for k in order], axis=0),  # (G*H, I)
        "weight_hh": np.concatenate([W[k][:, :P] for k in order], axis=0),  # (G*H, P)
    }
    if _has_bias(params, mode):
        if mode == "RNN":
            b_ih = params["b"]
            b_hh = params["b"] if gradients else np.zeros_like(params["b"])
        elif mode == "LSTM":
            b_ih = np.concatenate([params[f"b_{k}"] for k in order])
            b_hh = b_ih.copy() if gradients else np.zeros_like(b_ih)
        else:  # GRU: the n rows keep b_in and b_hn apart
            rz = np.concatenate([params["b_r"], params["b_z"]])
            b_ih = np.concatenate([rz, params["b_in"]])
            b_hh = np.concatenate([rz if gradients else np.zeros_like(rz), params["b_hn"]])
        out["bias_ih"], out["bias_hh"] = b_ih, b_hh
    if "W_hr" in params:
        out["weight_hr"] = params["W_hr"]
    if "p_f" in params:
        out["weight_ph"] = np.stack([params["p_f"], params["p_i"], params["p_o"]])  # (3, H)
    for ref, torch_name in LN_KEYS.items():
        if ref in params:
            out[torch_name] = _reorder(params[ref], REF_ORDER[mode], order)
    if "ln_c_w" in params:
        out["ln_c_weight"], out["ln_c_bias"] = params["ln_c_w"], params["ln_c_b"]
    return out


def from_torch_layout(weights: dict, mode: str) -> dict:
    """torch.nn-named numpy arrays (no layer suffix) -> reference parameters.

    Arguments:
        weights: `weight_ih`, `weight_hh`, optional `bias_ih` + `bias_hh`, `weight_hr`,
            and the LSTM-family names listed in this module's docstring.
        mode: "LSTM", "GRU" or "RNN" ("RNN_TANH" / "RNN_RELU" accepted).

    Returns:
        the reference parameter dict (biases summed; GRU b_in, b_hn kept apart).
    """
    mode = _family(mode)
    order = TORCH_ORDER[mode]
    G = len(order)
    w_ih, w_hh = weights["weight_ih"], weights["weight_hh"]
    if w_ih.ndim != 2 or w_hh.ndim != 2 or w_ih.shape[0] != w_hh.shape[0] or w_ih.shape[0] % G:
        raise ValueError(f"weights: expected weight_ih (G*H, I) and weight_hh (G*H, P) with G={G}, "
                         f"got {w_ih.shape} and {w_hh.shape}")
    ih = dict(zip(order, np.split(w_ih, G, axis=0)))
    hh = dict(zip(order, np.split(w_hh, G, axis=0)))
    params = {_wkey(mode, k): np.concatenate([hh[k], ih[k]], axis=1) for k in REF_ORDER[mode]}
    if ("bias_ih" in weights) != ("bias_hh" in weights):
        raise ValueError("weights: expected both bias_ih and bias_hh or neither")
    if "bias_ih" in weights:
        b_ih = dict(zip(order, np.split(weights["bias_ih"], G)))
        b_hh = dict(zip(order, np.split(weights["bias_hh"], G)))
        if mode == "RNN":
            params["b"] = b_ih[""] + b_hh[""]
        elif mode == "LSTM":
            params.update({f"b_{k}": b_ih[k] + b_hh[k] for k in REF_ORDER[mode]})
        else:
            params.update(b_r=b_ih["r"] + b_hh["r"], b_z=b_ih["z"] + b_hh["z"],
                          b_in=b_ih["n"].copy(), b_hn=b_hh["n"].copy())
    if "weight_hr" in weights:
        params["W_hr"] = weights["weight_hr"].copy()
    if "weight_ph" in weights:
        params.update(p_f=weights["weight_ph"][0].copy(), p_i=weights["weight_ph"][1].copy(),
                      p_o=weights["weight_ph"][2].copy())
    for ref, torch_name in LN_KEYS.items():
        if torch_name in weights:
            params[ref] = _reorder(weights[torch_name], order, REF_ORDER[mode])
    if "ln_c_weight" in weights:
        params["ln_c_w"] = weights["ln_c_weight"].copy()
        params["ln_c_b"] = weights["ln_c_bias"].copy()
    return params


def _module_mode(module) -> str:
    """torch.nn's mode name of an RNN module or cell: LSTM, GRU, RNN_TANH or RNN_RELU."""
    mode = getattr(module, "mode", None)  # torch.nn.RNNBase sets it
    if isinstance(mode, str):
        return mode
    for cls in type(module).__mro__:
        if cls.__name__ in ("LSTMCell", "LSTM"):
            return "LSTM"
        if cls.__name__ in ("GRUCell", "GRU"):
            return "GRU"
        if cls.__name__ in ("RNNCell", "RNN"):
            return "RNN_RELU" if getattr(module, "nonlinearity", "tanh") == "relu" else "RNN_TANH"
    raise ValueError(f"module: expected a torch.nn LSTM, GRU or RNN (or cell), got {type(module).__name__}")


def _suffix(module, layer: int, direction: int) -> str:
    """The parameter-name suffix of one layer-direction: _l{layer}[_reverse]; '' for cells."""
    if not hasattr(module, "num_layers"):  # a cell
        if layer != 0 or direction != 0:
            raise ValueError(f"layer, direction: a cell has only layer 0 direction 0, got {layer}, {direction}")
        return ""
    num_dirs = 2 if module.bidirectional else 1
    if not isinstance(layer, int) or not 0 <= layer < module.num_layers:
        raise ValueError(f"layer: expected an int in [0, {module.num_layers}), got {layer!r}")
    if not isinstance(direction, int) or not 0 <= direction < num_dirs:
        raise ValueError(f"direction: expected an int in [0, {num_dirs}), got {direction!r}")
    return f"_l{layer}" + ("_reverse" if direction == 1 else "")


def _names(module, suffix: str) -> list[str]:
    names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "weight_ph",
             "ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias", "ln_c_weight", "ln_c_bias"]
    return [n for n in names if getattr(module, n + suffix, None) is not None]


def params_from_torch(module, layer: int = 0, direction: int = 0) -> dict:
    """The reference parameters of one layer-direction of a torch.nn LSTM/GRU/RNN (or cell).

    Arguments:
        module: torch.nn.LSTM, GRU, RNN, their cells, or a gatelab.nn drop-in.
        layer: which layer, 0 .. num_layers - 1.
        direction: 0 forward, 1 the `_reverse` direction of a bidirectional module.

    Returns:
        numpy copies, in the module's dtype (float32 or float64), biases summed.
        RNN_RELU modules need `nonlinearity="relu"` passed to rnn_forward.
    """
    mode = _module_mode(module)
    suffix = _suffix(module, layer, direction)
    weights = {}
    for name in _names(module, suffix):
        tensor = getattr(module, name + suffix).detach().cpu()
        array = tensor.numpy().copy()
        if array.dtype not in (np.float32, np.float64):
            raise ValueError(f"module: expected float32 or float64 parameters, got {array.dtype} in {name + suffix}")
        weights[name] = array
    return from_torch_layout(weights, mode)


def params_to_torch(params: dict, module, layer: int = 0, direction: int = 0) -> None:
    """Write reference parameters into one layer-direction of a torch.nn module, in place.

    Arguments:
        params: reference parameters of the matching cell and sizes.
        module: torch.nn.LSTM, GRU, RNN, their cells, or a gatelab.nn drop-in.
        layer: which layer, 0 .. num_layers - 1.
        direction: 0 forward, 1 the `_reverse` direction.

    The whole bias goes into bias_ih and bias_hh is set to zero (GRU: b_hn in the n rows of
    bias_hh). A module without biases accepts only params without biases (or all-zero ones);
    params without biases set a biased module's biases to zero.
    """
    import torch

    mode = _module_mode(module)
    suffix = _suffix(module, layer, direction)
    layout = to_torch_layout(params, mode)
    names = _names(module, suffix)
    if "bias_ih" in layout and "bias_ih" not in names:
        if any(np.any(layout[k] != 0) for k in ("bias_ih", "bias_hh")):
            raise ValueError("params: the module has bias=False but params hold non-zero biases")
        del layout["bias_ih"], layout["bias_hh"]
    missing = sorted(set(names) - set(layout) - {"bias_ih", "bias_hh"})
    extra = sorted(set(layout) - set(names))
    if missing or extra:
        raise ValueError(f"params: do not match the module's parameters {names}: "
                         f"missing {missing}, not in the module {extra}")
    with torch.no_grad():
        for name in names:
            target = getattr(module, name + suffix)
            value = layout.get(name)
            if value is None:  # params without biases into a biased module
                target.zero_()
                continue
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"params: {name + suffix} expected shape {tuple(target.shape)}, "
                                 f"got {tuple(value.shape)}")
            target.copy_(torch.from_numpy(np.ascontiguousarray(value)))
