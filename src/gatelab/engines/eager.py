"""The eager engine: autograd over the equations, one time step at a time.

The readable engine. It runs one layer-direction (see `gatelab.engines` for the
contract) as the equations are written, and lets autograd do backpropagation through
time. The input projection `x_t W_ih^T + b_ih` of every step is hoisted out of the loop
as one matmul (LSTM and RNN fold b_hh into it too); the loop walks the steps with `unbind`
(indexing `x[t]` would make backward quadratic in T).

LSTM (rows of the weights stacked i|f|g|o, as in torch.nn):
    a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
    f = σ(a_f)   i = σ(a_i)   g = tanh(a_g)   o = σ(a_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)                 (proj_size > 0: h_t = (o ⊙ tanh(c_t)) W_hr^T)
GRU (rows r|z|n, "reset after" as torch.nn):
    r = σ(x W_ir^T + b_ir + h W_hr^T + b_hr)   z = σ(x W_iz^T + b_iz + h W_hz^T + b_hz)
    n = tanh(x W_in^T + b_in + r ⊙ (h W_hn^T + b_hn))
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
RNN:
    h_t = tanh(x W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)     (RNN_RELU: relu)

Every CellSpec field of the LSTM family (peephole, layer_norm, coupled_gates, remove,
gate_activation, cell_activation, GRU reset_after) and every mask (zoneout_h, zoneout_c,
recurrent_dropout) runs here, as defined in `gatelab.engines` ("The LSTM family"); a
removed gate is recorded as its constant 1, a coupled i as 1 - f.

With `batch_sizes` only the first batch_sizes[t] rows take step t; the other rows keep
their state (a finished row keeps its final state; in the reverse direction a row that
has not started yet still holds the initial state, so it starts from h0 at its own last
step, as torch.nn does). Outputs and recorded gates are zero at padded positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "eager"
MASKS = ("zoneout_h", "zoneout_c", "recurrent_dropout")  # the masks `run` accepts
LN_EPS = 1e-5  # layer-norm ε, torch.nn.LayerNorm's default (as the reference)


def hard_sigmoid(a):
    """clip(a / 6 + 1/2, 0, 1): torch's hardsigmoid, written out because
    F.hardsigmoid's float64 backward rounds 1/6 to float32."""
    return torch.clamp(a / 6 + 0.5, 0, 1)


# Activations by name (σ the gate activation, φ the cell activation).
ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": hard_sigmoid,
    "tanh": torch.tanh,
    "softsign": F.softsign,
    "relu": torch.relu,
}
GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid")
CELL_ACTIVATIONS = ("tanh", "softsign")


def unsupported(spec, x, record) -> str | None:
    """None when the eager engine can run `spec` on `x`, else the reason in a few words."""
    if spec.mode not in ("LSTM", "GRU", "RNN_TANH", "RNN_RELU"):
        return f"unknown mode {spec.mode!r}"
    if spec.mode.startswith("RNN"):
        return None if spec.is_plain else "the plain RNN has no LSTM-family variants"
    if spec.gate_activation not in GATE_ACTIVATIONS:
        return f"unknown gate_activation {spec.gate_activation!r}"
    if spec.cell_activation not in CELL_ACTIVATIONS:
        return f"unknown cell_activation {spec.cell_activation!r}"
    if spec.mode == "GRU" and (spec.peephole or spec.coupled_gates or spec.remove):
        return "peephole, coupled_gates and remove are LSTM options"
    if spec.mode == "GRU" and spec.layer_norm and not spec.reset_after:
        return "GRU layer_norm needs reset_after=True"
    if spec.mode == "LSTM" and not spec.reset_after:
        return "reset_after is a GRU option"
    if spec.coupled_gates and "input_gate" in spec.remove:
        return "coupled_gates with the input gate removed"
    return None


def _linear(x, weight, bias):
    """x W^T (+ b): the affine map of torch.nn.functional.linear, bias optional."""
    return F.linear(x, weight, bias)


def _ln(v, weights, name):
    """LN(v; w, b) = w ⊙ (v − μ) / √(σ² + ε) + b over the last axis, μ and σ² (biased) that
    axis's mean and variance, ε = 1e-5, w, b = ln_{name}_weight, ln_{name}_bias (Ba et al. 2016).

    Written out rather than F.layer_norm: torch's kernel opens a thread pool per call, which
    costs milliseconds per step on a busy CPU at the small sizes of one step.
    """
    mu = v.mean(dim=-1, keepdim=True)  # (..., 1)
    var = (v - mu).square().mean(dim=-1, keepdim=True)  # (..., 1)
    return (v - mu) * torch.rsqrt(var + LN_EPS) * weights[f"ln_{name}_weight"] + weights[f"ln_{name}_bias"]


def _recurrent(xw_t, h_in, weights, spec):
    """a = xw_t + h_in W_hh^T (layer_norm: xw_t + LN(h_in W_hh^T)); (n, G*H)."""
    if spec.layer_norm:
        return xw_t + _ln(h_in @ weights["weight_hh"].t(), weights, "hh")
    return torch.addmm(xw_t, h_in, weights["weight_hh"].t())


def _zoneout(m, prev, new):
    """m ⊙ prev + (1 - m) ⊙ new (m None: new), Krueger et al. 2016."""
    return new if m is None else m * prev + (1 - m) * new


def lstm_step(xw_t, h, c, weights, spec, d=None, m_h=None, m_c=None):
    """One LSTM-family step on the rows of `h`, `c` (equations: gatelab.engines, "The LSTM family").

        a = xw_t + (d ⊙ h_{t-1}) W_hh^T            (layer_norm: + LN(...) instead)
        a_f += p_f ⊙ c_{t-1}, a_i += p_i ⊙ c_{t-1}  (peephole)
        f = σ(a_f) | 1,  i = σ(a_i) | 1 - f | 1,  g = φ(a_g) | a_g
        c̃_t = f ⊙ c_{t-1} + i ⊙ g,   a_o += p_o ⊙ c̃_t (peephole),   o = σ(a_o) | 1
        h̃_t = o ⊙ φ(LN(c̃_t)) (LN with layer_norm, φ unless "output_activation" is removed)
        c_t = m_c ⊙ c_{t-1} + (1 - m_c) ⊙ c̃_t,   h_t = m_h ⊙ h_{t-1} + (1 - m_h) ⊙ W_hr h̃_t

    Arguments:
        xw_t: (n, 4H) the hoisted input part of a (LN(x_t W_ih^T) with layer_norm) + b_ih + b_hh.
        h: (n, H_out) h_{t-1}.   c: (n, H) c_{t-1}.
        weights: the layer-direction's parameters (weight_hh, weight_hr, weight_ph, ln_*).
        spec: the CellSpec.
        d: None or (n, H_out) the recurrent dropout mask.
        m_h, m_c: None or (n, H_out), (n, H) the zoneout masks of this step.
    Returns (h_t, c_t, gates) with gates a dict f, i, g, o, c (the carried c_t) of (n, H).
    """
    sigma = ACTIVATIONS[spec.gate_activation]
    phi = ACTIVATIONS[spec.cell_activation]
    removed = spec.remove
    a = _recurrent(xw_t, h if d is None else d * h, weights, spec)  # (n, 4H)
    a_i, a_f, a_g, a_o = a.chunk(4, dim=1)  # each (n, H), torch's row order i|f|g|o
    if spec.peephole:
        p_f, p_i, p_o = weights["weight_ph"].unbind(0)  # each (H,)
        a_f = a_f + p_f * c
        a_i = a_i + p_i * c
    one = torch.ones_like(c) if removed or spec.coupled_gates else None
    f = one if "forget_gate" in removed else sigma(a_f)
    i = 1 - f if spec.coupled_gates else one if "input_gate" in removed else sigma(a_i)
    g = a_g if "candidate_activation" in removed else phi(a_g)
    c_new = f * c + i * g  # (n, H): c̃_t
    if spec.peephole:
        a_o = a_o + p_o * c_new
    o = one if "output_gate" in removed else sigma(a_o)
    c_out = _ln(c_new, weights, "c") if spec.layer_norm else c_new
    y = c_out if "output_activation" in removed else phi(c_out)
    h_new = o * y  # (n, H)
    if spec.proj_size > 0:
        h_new = _linear(h_new, weights["weight_hr"], None)  # (n, H_out)
    c_t = _zoneout(m_c, c, c_new)
    h_t = _zoneout(m_h, h, h_new)
    return h_t, c_t, {"f": f, "i": i, "g": g, "o": o, "c": c_t}


def gru_step(xw_t, h, weights, spec, d=None, m_h=None):
    """One GRU step: returns (h_t, gates) with gates r, z, n of (n, H).

        reset after (torch.nn):   hw = (d ⊙ h) W_hh^T (LN with layer_norm) + b_hh
            r = σ(x_r + hw_r),  z = σ(x_z + hw_z),  n = φ(x_n + r ⊙ hw_n)
        reset before (Cho et al. 2014): r, z as above from the r|z rows,
            n = φ(x_n + (r ⊙ d ⊙ h) W_hn^T + b_hn)
        h_t = m_h ⊙ h + (1 - m_h) ⊙ ((1 - z) ⊙ n + z ⊙ h)

    Arguments:
        xw_t: (n, 3H) LN(x_t W_ih^T) or x_t W_ih^T, + b_ih.   h: (n, H) h_{t-1}.
        weights: weight_hh (3H, H), bias_hh (3H,) when spec.bias, ln_hh_* with layer_norm.
        spec: the CellSpec.   d: None or (n, H) recurrent dropout mask.
        m_h: None or (n, H) the zoneout mask of this step.
    """
    sigma = ACTIVATIONS[spec.gate_activation]
    phi = ACTIVATIONS[spec.cell_activation]
    h_in = h if d is None else d * h  # (n, H)
    x_r, x_z, x_n = xw_t.chunk(3, dim=1)  # each (n, H)
    b_hh = weights.get("bias_hh")
    if spec.reset_after:
        if spec.layer_norm:
            hw = _ln(h_in @ weights["weight_hh"].t(), weights, "hh")  # (n, 3H)
            hw = hw if b_hh is None else hw + b_hh
        else:
            hw = _linear(h_in, weights["weight_hh"], b_hh)  # (n, 3H)
        h_r, h_z, h_n = hw.chunk(3, dim=1)  # each (n, H)
        r = sigma(x_r + h_r)
        z = sigma(x_z + h_z)
        n = phi(x_n + r * h_n)
    else:
        H = h.shape[1]
        w_rz, w_n = weights["weight_hh"][: 2 * H], weights["weight_hh"][2 * H:]  # (2H, H), (H, H)
        b_rz, b_n = (None, None) if b_hh is None else (b_hh[: 2 * H], b_hh[2 * H:])
        h_r, h_z = _linear(h_in, w_rz, b_rz).chunk(2, dim=1)  # each (n, H)
        r = sigma(x_r + h_r)
        z = sigma(x_z + h_z)
        n = phi(x_n + _linear(r * h_in, w_n, b_n))
    h_t = _zoneout(m_h, h, (1 - z) * n + z * h)  # (n, H)
    return h_t, {"r": r, "z": z, "n": n}


def rnn_step(xw_t, h, weights, spec):
    """One plain RNN step: h_t = tanh|relu(x W_ih^T + b_ih + h W_hh^T + b_hh); gates {"h": h_t}.

    Arguments:
        xw_t: (n, H) the hoisted x_t W_ih^T + b_ih + b_hh.   h: (n, H) h_{t-1}.
        weights: weight_hh (H, H).   spec: the CellSpec.
    """
    act = torch.relu if spec.mode == "RNN_RELU" else ACTIVATIONS[spec.cell_activation]
    h_t = act(torch.addmm(xw_t, h, weights["weight_hh"].t()))  # (n, H): xw_t holds b_ih + b_hh
    return h_t, {"h": h_t}


def _hoisted_bias(spec, weights):
    """The bias added to the hoisted input projection: b_ih + b_hh for the LSTM and the RNN
    (both sit outside every nonlinearity's product), b_ih alone for the GRU, whose b_hn
    sits inside r ⊙ (h W_hn^T + b_hn); None without biases."""
    if not spec.bias:
        return None
    if spec.mode == "GRU":
        return weights["bias_ih"]
    return weights["bias_ih"] + weights["bias_hh"]  # (G*H,)


def _input_projection(spec, x, weights):
    """The hoisted input part of every step's pre-activation, (T, B, G*H):
    x W_ih^T + bias, or LN(x W_ih^T; ln_ih) + bias with layer_norm (LN is per row, so it
    can be taken for all steps at once)."""
    bias = _hoisted_bias(spec, weights)
    if not spec.layer_norm:
        return _linear(x, weights["weight_ih"], bias)
    ax = _ln(_linear(x, weights["weight_ih"], None), weights, "ih")  # (T, B, G*H)
    return ax if bias is None else ax + bias


def _check_masks(spec, masks, T, B):
    """The masks as a dict (empty for None), each checked against its expected shape."""
    if not masks:
        return {}
    H, P = spec.hidden_size, spec.out_size
    shapes = {"zoneout_h": (T, B, P), "zoneout_c": (T, B, H), "recurrent_dropout": (B, P)}
    if spec.mode != "LSTM":
        del shapes["zoneout_c"]
    if spec.mode.startswith("RNN"):
        shapes = {}
    for name, mask in masks.items():
        if name not in shapes:
            raise ValueError(f"masks: expected keys from {tuple(shapes)} for {spec.mode}, got {name!r}")
        if tuple(mask.shape) != shapes[name]:
            raise ValueError(f"masks[{name!r}]: expected shape {shapes[name]}, got {tuple(mask.shape)}")
    return masks


def _pad_rows(t, B):
    """Rows of `t` (n, K) followed by zeros up to B rows: (B, K)."""
    n = t.shape[0]
    if n == B:
        return t
    return torch.cat([t, t.new_zeros(B - n, *t.shape[1:])], dim=0)


def _merge_rows(new, old):
    """The first n rows from `new` (n, K), the rest from `old` (B, K): (B, K)."""
    n = new.shape[0]
    if n == old.shape[0]:
        return new
    return torch.cat([new, old[n:]], dim=0)


def run(spec, x, state, weights, *, batch_sizes=None, reverse=False, record=False,
        training=False, masks=None):
    """Run one layer-direction; see `gatelab.engines` for the full contract.

    Arguments:
        spec: the CellSpec.
        x: (T, B, I) time-major input.
        state: LSTM (h0 (B, H_out), c0 (B, H)); GRU/RNN (h0 (B, H),).
        weights: weight_ih, weight_hh, bias_ih, bias_hh (when spec.bias), weight_hr (proj).
        batch_sizes: None or T non-increasing ints (rows b < batch_sizes[t] are real).
        reverse: walk t = T-1 .. 0.
        record: also return the gates, dict name -> (T, B, H).
        training: unused (the module draws the masks; the engine applies what it is given).
        masks: None or a dict with any of zoneout_h (T, B, H_out), zoneout_c (T, B, H)
            (LSTM), recurrent_dropout (B, H_out); indexed by the time t of x in both directions.
    Returns (out (T, B, H_out), state_T, gates or None).
    """
    T, B, _ = x.shape
    masks = _check_masks(spec, masks, T, B)
    d = masks.get("recurrent_dropout")  # (B, H_out)
    m_h, m_c = masks.get("zoneout_h"), masks.get("zoneout_c")  # (T, B, H_out), (T, B, H)
    if batch_sizes is not None and any(int(n) < B for n in batch_sizes):
        # padded positions may hold anything (even NaN): zero them so that nothing of
        # theirs reaches an output or, through x^T·∂xw, the gradient of weight_ih
        real = torch.arange(B, device=x.device)[None, :] < torch.as_tensor(
            [int(n) for n in batch_sizes], device=x.device)[:, None]  # (T, B)
        x = x.masked_fill(~real[:, :, None], 0)  # (T, B, I)
    xw = _input_projection(spec, x, weights)  # (T, B, G*H)
    steps = list(zip(range(T), xw.unbind(0)))
    if reverse:
        steps.reverse()
    lstm = spec.mode == "LSTM"
    h = state[0]  # (B, H_out)
    c = state[1] if lstm else None  # (B, H)
    outs = [None] * T
    recs = [None] * T
    for t, xw_t in steps:
        n = B if batch_sizes is None else int(batch_sizes[t])
        xw_t = xw_t[:n] if n < B else xw_t  # (n, G*H)
        h_prev = h[:n] if n < B else h  # (n, H_out)
        d_t = None if d is None else d[:n]  # (n, H_out)
        mh_t = None if m_h is None else m_h[t, :n]  # (n, H_out)
        if lstm:
            mc_t = None if m_c is None else m_c[t, :n]  # (n, H)
            h_t, c_t, gates = lstm_step(xw_t, h_prev, c[:n] if n < B else c, weights, spec, d_t, mh_t, mc_t)
            c = _merge_rows(c_t, c)
        elif spec.mode == "GRU":
            h_t, gates = gru_step(xw_t, h_prev, weights, spec, d_t, mh_t)
        else:
            h_t, gates = rnn_step(xw_t, h_prev, weights, spec)
        h = _merge_rows(h_t, h)
        outs[t] = _pad_rows(h_t, B)
        if record:
            recs[t] = {k: _pad_rows(v, B) for k, v in gates.items()}
    out = torch.stack(outs, 0)  # (T, B, H_out)
    gates = None
    if record:
        gates = {k: torch.stack([r[k] for r in recs], 0) for k in spec.gates}  # (T, B, H)
    state_T = (h, c) if lstm else (h,)
    return out, state_T, gates
