"""Shared helpers of the gatelab.nn tests: the backends to cover, module pairs built from one
state_dict, and the NumPy reference run over a whole stack (the independent gate oracle)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import gatelab.nn as gnn
from gatelab import engines, reference


def _fused_missing() -> str | None:
    """Why the fused engine cannot be tested here (None when it can)."""
    try:
        fused = importlib.import_module("gatelab.engines.fused_cpu")
    except ImportError as err:
        return f"gatelab.engines.fused_cpu cannot be imported: {err}"
    probe = engines.CellSpec(mode="LSTM", input_size=1, hidden_size=1)
    reason = fused.unsupported(probe, torch.zeros(1, 1, 1), False)
    return None if reason is None else f"the fused engine declines a plain float32 LSTM: {reason}"


def backend_params():
    """pytest params over the backends: auto, eager, and fused when it can be imported."""
    reason = _fused_missing()
    return ["auto", "eager",
            pytest.param("fused", marks=pytest.mark.skipif(reason is not None, reason=reason or ""))]


def runnable(backend, module, x, record) -> bool:
    """False when a *named* backend declares it cannot run one of the module's layers.

    auto always runs (it falls back to eager); a named engine's unsupported() is its contract.
    """
    if backend == "auto":
        return True
    engine = importlib.import_module(engines.ENGINES[backend])
    layers = getattr(module, "num_layers", 1)
    specs = [module._cell_spec(k) for k in range(layers)] if hasattr(module, "_cell_spec") else [module._spec()]
    return all(engine.unsupported(s, x, record) is None for s in specs)


CLASS = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}


def make_pair(mode, backend="auto", **kw):
    """(torch.nn module, gatelab.nn module) of `mode` with the same parameters."""
    if mode.startswith("RNN"):
        kw["nonlinearity"] = "relu" if mode == "RNN_RELU" else "tanh"
    ref = getattr(torch.nn, CLASS[mode])(**kw)
    ours = getattr(gnn, CLASS[mode])(backend=backend, **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def reference_stack(module, x, lengths, h0):
    """Run the NumPy reference over every layer, direction and sequence of `module`.

    Arguments:
        module: a torch.nn or gatelab.nn LSTM/GRU/RNN (eval semantics: no dropout).
        x: (T, B, I) numpy, time-major; sequence b is x[:lengths[b], b].
        lengths: B ints.
        h0: tuple of (L*D, B, H_out) [and (L*D, B, H)] numpy initial states.
    Returns (out (T, B, D*H_out), states tuple (L*D, B, *), gates dict name -> (L*D, T, B, H)),
    zero at padded steps, batch in the order of x.
    """
    mode = module.mode
    D = 2 if module.bidirectional else 1
    L, H = module.num_layers, module.hidden_size
    T, B, _ = x.shape
    names = engines.GATES[mode]
    gates = {k: np.zeros((L * D, T, B, H), dtype=x.dtype) for k in names}
    finals = [np.zeros_like(s) for s in h0]
    layer_in = x
    for layer in range(L):
        outs = []
        for d in range(D):
            k = layer * D + d
            params = reference.params_from_torch(module, layer, d)
            H_out = h0[0].shape[-1]
            out = np.zeros((T, B, H_out), dtype=x.dtype)
            for b, n in enumerate(lengths):
                seq = layer_in[:n, b : b + 1]  # (n, 1, I)
                if d == 1:
                    seq = seq[::-1].copy()
                init = [s[k, b : b + 1] for s in h0]
                if mode == "LSTM":
                    hs, (h_T, c_T), cache = reference.lstm_forward(seq, params, *init)
                    state_T = (h_T, c_T)
                    rec = reference.lstm_gates(cache)
                elif mode == "GRU":
                    hs, h_T, cache = reference.gru_forward(seq, params, *init)
                    state_T, rec = (h_T,), reference.gru_gates(cache)
                else:
                    nl = "relu" if mode == "RNN_RELU" else "tanh"
                    hs, h_T, cache = reference.rnn_forward(seq, params, *init, nonlinearity=nl)
                    state_T, rec = (h_T,), {"h": hs}
                if d == 1:
                    hs = hs[::-1]
                    rec = {g: v[::-1] for g, v in rec.items()}
                out[:n, b] = hs[:, 0]
                for g in names:
                    gates[g][k, :n, b] = rec[g][:, 0]
                for acc, s in zip(finals, state_T):
                    acc[k, b] = s[0]
            outs.append(out)
        layer_in = np.concatenate(outs, axis=2)
    return layer_in, tuple(finals), gates
