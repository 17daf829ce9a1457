"""The eager engine on its own, through the engine seam: packed batches (batch_sizes) in both
directions against the NumPy reference run per sequence, garbage at padded positions, autograd
against finite differences, what it declines, and the shape of its autograd graph."""

import logging
import types

import numpy as np
import pytest
import torch

import gatelab.nn as gnn
from gatelab import engines, reference
from gatelab.engines import eager

F64 = torch.float64


def _weights(mode, I, H, P=0, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    G = engines.GATE_ROWS[mode]
    H_out = P or H
    w = {"weight_ih": torch.randn(G * H, I, generator=g, dtype=F64),
         "weight_hh": torch.randn(G * H, H_out, generator=g, dtype=F64)}
    if bias:
        w["bias_ih"] = torch.randn(G * H, generator=g, dtype=F64)
        w["bias_hh"] = torch.randn(G * H, generator=g, dtype=F64)
    if P:
        w["weight_hr"] = torch.randn(P, H, generator=g, dtype=F64)
    return {k: (v * 0.5).requires_grad_() for k, v in w.items()}


def _reference(mode, seq, w, init):
    """The NumPy reference on one sequence (T, 1, I): hs, final states, gates."""
    weights = {k: v.detach().numpy() for k, v in w.items()}
    params = reference.from_torch_layout(weights, mode)
    if mode == "LSTM":
        hs, (h, c), cache = reference.lstm_forward(seq, params, *init)
        return hs, (h, c), reference.lstm_gates(cache)
    if mode == "GRU":
        hs, h, cache = reference.gru_forward(seq, params, init[0])
        return hs, (h,), reference.gru_gates(cache)
    hs, h, _ = reference.rnn_forward(seq, params, init[0], nonlinearity="relu" if mode == "RNN_RELU" else "tanh")
    return hs, (h,), {"h": hs}


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("reverse", [False, True])
def test_batch_sizes_run_each_row_as_its_own_sequence(mode, reverse):
    """Row b takes steps 0..len_b-1; reverse starts each row from h0 at its own last step."""
    I, H, P = 3, 4, (2 if mode == "LSTM" else 0)
    lengths = [5, 3, 3, 1]
    T, B = 5, len(lengths)
    batch_sizes = [sum(n > t for n in lengths) for t in range(T)]
    spec = engines.CellSpec(mode=mode, input_size=I, hidden_size=H, proj_size=P)
    w = _weights(mode, I, H, P)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I))
    state = [rng.standard_normal((B, P or H))] + ([rng.standard_normal((B, H))] if mode == "LSTM" else [])
    out, state_T, gates = eager.run(spec, torch.from_numpy(x), tuple(torch.from_numpy(s) for s in state), w,
                                    batch_sizes=batch_sizes, reverse=reverse, record=True)
    for b, n in enumerate(lengths):
        seq = x[:n, b : b + 1]
        seq = seq[::-1].copy() if reverse else seq
        hs, finals, rec = _reference(mode, seq, w, [s[b : b + 1] for s in state])
        if reverse:
            hs, rec = hs[::-1], {k: v[::-1] for k, v in rec.items()}
        np.testing.assert_allclose(out[:n, b].detach().numpy(), hs[:, 0], rtol=0, atol=1e-10)
        assert torch.all(out[n:, b] == 0)
        for got, want in zip(state_T, finals):
            np.testing.assert_allclose(got[b].detach().numpy(), want[0], rtol=0, atol=1e-10)
        for k in spec.gates:
            np.testing.assert_allclose(gates[k][:n, b].detach().numpy(), rec[k][:, 0], rtol=0, atol=1e-10)
            assert torch.all(gates[k][n:, b] == 0)


def test_garbage_at_padded_positions_reaches_nothing():
    """Padded positions may hold NaN: outputs, states and every gradient stay those of zeros."""
    spec = engines.CellSpec(mode="LSTM", input_size=2, hidden_size=3)
    batch_sizes = [3, 2, 1]
    x = torch.randn(3, 3, 2, dtype=F64)
    results = []
    for fill in (0.0, float("nan")):
        w = _weights("LSTM", 2, 3)
        xf = x.clone()
        for t, n in enumerate(batch_sizes):
            xf[t, n:] = fill
        xf.requires_grad_()
        h0 = (torch.zeros(3, 3, dtype=F64), torch.zeros(3, 3, dtype=F64))
        out, (h, c), _ = eager.run(spec, xf, h0, w, batch_sizes=batch_sizes)
        grads = torch.autograd.grad(out.sum() + h.sum() + c.sum(), [xf, *w.values()])
        results.append((out, h, c, *grads))
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_autograd_through_the_engine_matches_finite_differences(mode):
    P = 2 if mode == "LSTM" else 0
    spec = engines.CellSpec(mode=mode, input_size=2, hidden_size=3, proj_size=P)
    w = _weights(mode, 2, 3, P)
    names = list(w)
    x = torch.randn(4, 2, 2, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, P or 3, dtype=F64, requires_grad=True)
    c0 = torch.randn(2, 3, dtype=F64, requires_grad=True)

    def f(x, h0, c0, *ws):
        state = (h0, c0) if mode == "LSTM" else (h0,)
        out, st, _ = eager.run(spec, x, state, dict(zip(names, ws)), batch_sizes=[2, 2, 1, 1], reverse=True)
        return (out, *st)

    assert torch.autograd.gradcheck(f, (x, h0, c0, *w.values()))


def test_steps_are_taken_with_unbind_not_indexing():
    """x[t] indexing would put a SelectBackward per step into the graph (quadratic backward)."""
    lstm = gnn.LSTM(2, 3, backend="eager")
    out, _ = lstm(torch.randn(6, 2, 2, requires_grad=True))
    seen, todo = set(), [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo.extend(n for n, _ in node.next_functions)
    names = {type(n).__name__ for n in seen}
    assert "UnbindBackward0" in names
    assert "SelectBackward0" not in names


def test_runs_variants_and_declines_what_no_cell_defines():
    plain = engines.CellSpec(mode="GRU", input_size=2, hidden_size=3)
    assert eager.unsupported(plain, torch.zeros(1, 1, 2), True) is None
    peephole = engines.CellSpec(mode="LSTM", input_size=2, hidden_size=3, peephole=True, layer_norm=True)
    assert eager.unsupported(peephole, torch.zeros(1, 1, 2), False) is None
    bad = {"gate activation": dict(mode="LSTM", gate_activation="relu"),
           "cell activation": dict(mode="GRU", cell_activation="sigmoid"),
           "GRU peephole": dict(mode="GRU", peephole=True),
           "GRU layer norm reset before": dict(mode="GRU", layer_norm=True, reset_after=False),
           "RNN variant": dict(mode="RNN_TANH", layer_norm=True),
           "coupled without input gate": dict(mode="LSTM", coupled_gates=True, remove=frozenset({"input_gate"}))}
    for case, fields in bad.items():
        spec = engines.CellSpec(input_size=2, hidden_size=3, **fields)
        assert isinstance(eager.unsupported(spec, torch.zeros(1, 1, 2), False), str), case
    w = _weights("GRU", 2, 3)
    with pytest.raises(ValueError, match="zoneout_c"):  # the GRU has no cell
        eager.run(plain, torch.zeros(1, 1, 2, dtype=F64), (torch.zeros(1, 3, dtype=F64),), w,
                  masks={"zoneout_c": torch.ones(1, 1, 3, dtype=F64)})
    with pytest.raises(ValueError, match="recurrent_dropout"):
        eager.run(plain, torch.zeros(1, 1, 2, dtype=F64), (torch.zeros(1, 3, dtype=F64),), w,
                  masks={"recurrent_dropout": torch.ones(2, 3, dtype=F64)})


def test_auto_falls_back_to_eager_and_says_why(monkeypatch, caplog):
    declining = types.SimpleNamespace(NAME="fused", unsupported=lambda spec, x, record: "declined in this test")
    real_load = engines._load
    monkeypatch.setattr(engines, "_load", lambda name: declining if name == "fused" else real_load(name))
    torch.manual_seed(0)
    auto = gnn.GRU(2, 3)
    explicit = gnn.GRU(2, 3, backend="eager")
    explicit.load_state_dict(auto.state_dict())
    x = torch.randn(4, 1, 2)
    with caplog.at_level(logging.DEBUG, logger="gatelab.engines"):
        out, _ = auto(x)
    assert "backend auto: not fused (declined in this test)" in caplog.text
    assert "GRU layer 0: eager engine (backend='auto')" in caplog.text
    assert torch.equal(out, explicit(x)[0])
