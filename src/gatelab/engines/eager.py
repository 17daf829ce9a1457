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

With `batch_sizes` only the first batch_sizes[t] rows take step t; the other rows keep
their state (a finished row keeps its final state; in the reverse direction a row that
has not started yet still holds the initial state, so it starts from h0 at its own last
step, as torch.nn does). Outputs and recorded gates are zero at padded positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "eager"

# Activations by name, so the LSTM-family options (issue 7) can slot into the step.
ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": F.hardsigmoid,
    "tanh": torch.tanh,
    "softsign": F.softsign,
    "relu": torch.relu,
}


def unsupported(spec, x, record) -> str | None:
    """None when the eager engine can run `spec` on `x`, else the reason in a few words."""
    if spec.mode not in ("LSTM", "GRU", "RNN_TANH", "RNN_RELU"):
        return f"unknown mode {spec.mode!r}"
    if not spec.is_plain:
        return "LSTM-family variants are not implemented in the eager engine yet (issue 7)"
    return None


def _linear(x, weight, bias):
    """x W^T (+ b): the affine map of torch.nn.functional.linear, bias optional."""
    return F.linear(x, weight, bias)


def lstm_step(xw_t, h, c, weights, spec):
    """One LSTM step on the rows of `h`, `c`.

    Arguments:
        xw_t: (n, 4H) the hoisted x_t W_ih^T + b_ih + b_hh of these rows.
        h: (n, H_out) h_{t-1}.   c: (n, H) c_{t-1}.
        weights: the layer-direction's parameters (weight_hh, bias_hh, weight_hr).
        spec: the CellSpec (activations by name).
    Returns (h_t, c_t, gates) with gates a dict f, i, g, o, c of (n, H).
    """
    sigma = ACTIVATIONS[spec.gate_activation]
    phi = ACTIVATIONS[spec.cell_activation]
    a = torch.addmm(xw_t, h, weights["weight_hh"].t())  # (n, 4H): xw_t already holds b_ih + b_hh
    a_i, a_f, a_g, a_o = a.chunk(4, dim=1)  # each (n, H)
    f = sigma(a_f)
    i = sigma(a_i)
    g = phi(a_g)
    o = sigma(a_o)
    c_t = f * c + i * g  # (n, H)
    h_t = o * phi(c_t)  # (n, H)
    if spec.proj_size > 0:
        h_t = _linear(h_t, weights["weight_hr"], None)  # (n, H_out)
    return h_t, c_t, {"f": f, "i": i, "g": g, "o": o, "c": c_t}


def gru_step(xw_t, h, weights, spec):
    """One GRU step ("reset after"): returns (h_t, gates) with gates r, z, n of (n, H).

    Arguments:
        xw_t: (n, 3H) x_t W_ih^T + b_ih.   h: (n, H) h_{t-1}.
        weights: weight_hh (3H, H), bias_hh (3H,) when spec.bias.   spec: the CellSpec.
    """
    sigma = ACTIVATIONS[spec.gate_activation]
    phi = ACTIVATIONS[spec.cell_activation]
    hw = _linear(h, weights["weight_hh"], weights.get("bias_hh"))  # (n, 3H)
    x_r, x_z, x_n = xw_t.chunk(3, dim=1)  # each (n, H)
    h_r, h_z, h_n = hw.chunk(3, dim=1)  # each (n, H)
    r = sigma(x_r + h_r)
    z = sigma(x_z + h_z)
    n = phi(x_n + r * h_n)
    h_t = (1 - z) * n + z * h  # (n, H)
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
        training: unused by the plain cells.
        masks: the stochastic variants' masks (issue 7); must be None for now.
    Returns (out (T, B, H_out), state_T, gates or None).
    """
    if masks:
        raise NotImplementedError("eager engine: masks (zoneout, recurrent dropout) come with issue 7")
    T, B, _ = x.shape
    if batch_sizes is not None and any(int(n) < B for n in batch_sizes):
        # padded positions may hold anything (even NaN): zero them so that nothing of
        # theirs reaches an output or, through x^T·∂xw, the gradient of weight_ih
        real = torch.arange(B, device=x.device)[None, :] < torch.as_tensor(
            [int(n) for n in batch_sizes], device=x.device)[:, None]  # (T, B)
        x = x.masked_fill(~real[:, :, None], 0)  # (T, B, I)
    xw = _linear(x, weights["weight_ih"], _hoisted_bias(spec, weights))  # (T, B, G*H)
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
        if lstm:
            h_t, c_t, gates = lstm_step(xw_t, h_prev, c[:n] if n < B else c, weights, spec)
            c = _merge_rows(c_t, c)
        elif spec.mode == "GRU":
            h_t, gates = gru_step(xw_t, h_prev, weights, spec)
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
