"""Test helpers: run one layer-direction through an engine's seam and through torch.nn
with the same weights, and collect outputs, final states and every gradient of both."""

from __future__ import annotations

import torch
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

TORCH_CLASS = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN_TANH": torch.nn.RNN,
               "RNN_RELU": torch.nn.RNN}
ROWS = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def make_case(mode, T, B, I, H, proj=0, bias=True, dtype=torch.float64, seed=0,
              lengths=None):
    """Random x (T, B, I), state and weights (leaf tensors requiring grad), and upstream
    gradients for out, the final states and the gates. Padded positions of x are zero."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return ((torch.rand(*shape, generator=g, dtype=dtype) * 2 - 1) * scale).requires_grad_()

    P = proj if proj else H
    k = H ** -0.5
    x = rand(T, B, I)
    if lengths is not None:
        with torch.no_grad():
            for b, n in enumerate(lengths):
                x[n:, b] = 0
    state = (rand(B, P), rand(B, H)) if mode == "LSTM" else (rand(B, H),)
    weights = {"weight_ih": rand(ROWS[mode] * H, I, scale=k),
               "weight_hh": rand(ROWS[mode] * H, P, scale=k)}
    if bias:
        weights["bias_ih"] = rand(ROWS[mode] * H, scale=k)
        weights["bias_hh"] = rand(ROWS[mode] * H, scale=k)
    if proj:
        weights["weight_hr"] = rand(P, H, scale=k)
    grads = {"out": torch.randn(T, B, P, generator=g, dtype=dtype),
             "state": [torch.randn(*s.shape, generator=g, dtype=dtype) for s in state]}
    return x, state, weights, grads


def batch_sizes_of(lengths, T):
    """PackedSequence batch_sizes for lengths sorted decreasingly."""
    return [sum(1 for n in lengths if n > t) for t in range(T)]


def leaves(x, state, weights):
    return {"x": x, **{f"state{k}": s for k, s in enumerate(state)}, **weights}


def collect(out, state_T, grads, inputs, gates=None, gate_grads=None):
    """Backpropagate a fixed random projection of everything returned; return the values
    and the gradient of every input."""
    loss = (out * grads["out"]).sum()
    for s, gs in zip(state_T, grads["state"]):
        loss = loss + (s * gs).sum()
    if gates is not None and gate_grads is not None:
        for name, gg in gate_grads.items():
            loss = loss + (gates[name] * gg).sum()
    params = list(inputs.values())
    d = torch.autograd.grad(loss, params, allow_unused=True)
    result = {"out": out.detach(), **{f"state_T{k}": s.detach() for k, s in enumerate(state_T)}}
    result.update({f"d_{name}": (torch.zeros_like(p) if gp is None else gp)
                   for name, p, gp in zip(inputs, params, d)})
    return result


def run_engine(engine, spec, x, state, weights, grads, batch_sizes=None, reverse=False,
               record=False, gate_grads=None):
    out, state_T, gates = engine.run(spec, x, tuple(state), weights, batch_sizes=batch_sizes,
                                     reverse=reverse, record=record)
    res = collect(out, state_T, grads, leaves(x, state, weights), gates, gate_grads)
    if record:
        res.update({f"gate_{k}": v.detach() for k, v in gates.items()})
    return res


def run_torch(mode, x, state, weights, grads, proj=0, bias=True, lengths=None,
              reverse=False):
    """torch.nn with the same weights; reverse runs a bidirectional module and keeps the
    reverse direction (its forward direction gets copies of the same weights)."""
    T, B, I = x.shape
    H = weights["weight_hh"].shape[0] // ROWS[mode]
    P = proj if proj else H
    kwargs = {"nonlinearity": "relu" if mode == "RNN_RELU" else "tanh"} if mode.startswith("RNN") else {}
    if proj:
        kwargs["proj_size"] = proj
    module = TORCH_CLASS[mode](I, H, bias=bias, bidirectional=reverse, dtype=x.dtype, **kwargs)
    suffixes = ["_l0", "_l0_reverse"] if reverse else ["_l0"]
    params = {}
    for name, w in weights.items():
        for sfx in suffixes:
            params[name + sfx] = w
    D = len(suffixes)
    st = tuple(s.unsqueeze(0).expand(D, *s.shape) for s in state)  # (D, B, *)
    inp = x if lengths is None else pack_padded_sequence(x, lengths)
    arg = st if mode == "LSTM" else st[0]
    out, state_T = functional_call(module, params, (inp, arg))
    if lengths is not None:
        out, _ = pad_packed_sequence(out, total_length=T)
    state_T = state_T if mode == "LSTM" else (state_T,)
    d = D - 1
    out = out[..., d * P:(d + 1) * P]  # (T, B, H_out) of the direction
    state_T = tuple(s[d] for s in state_T)
    return collect(out, state_T, grads, leaves(x, state, weights))


def max_diffs(a, b):
    """Largest absolute difference per key present in both."""
    return {k: (a[k] - b[k]).abs().max().item() for k in a if k in b}
