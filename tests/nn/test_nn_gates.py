"""Recorded gates equal what the NumPy reference computes (an independent implementation of the
equations), in every layout: (L*D, T, B, H), batch_first (L*D, B, T, H), unbatched (L*D, T, H),
packed input in the original batch order with zeros at the padded steps."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from nn_oracle import as_tuple, backend_params, make_pair, reference_stack, runnable
from torch.nn.utils.rnn import pack_padded_sequence

import gatelab.nn as gnn
from gatelab import engines

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


@st.composite
def cases(draw):
    mode = draw(st.sampled_from(["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]))
    hidden = draw(st.integers(2, 4))
    kw = dict(input_size=draw(st.integers(1, 3)), hidden_size=hidden,
              num_layers=draw(st.integers(1, 3)), bias=draw(st.booleans()),
              batch_first=draw(st.booleans()), bidirectional=draw(st.booleans()),
              dtype=draw(st.sampled_from([torch.float64, torch.float32])))
    if mode == "LSTM":
        kw["proj_size"] = draw(st.sampled_from([0, draw(st.integers(1, hidden - 1))]))
    T, B = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["batched", "unbatched", "packed"]))
    if kind == "unbatched":
        B = 1
    lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B)) if kind == "packed" else [T] * B
    return dict(mode=mode, kw=kw, T=T, B=B, kind=kind, lengths=lengths,
                with_h0=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("backend", backend_params())
@settings(max_examples=100, deadline=None)
@given(case=cases())
def test_recorded_gates_equal_the_reference(backend, case):
    kw, T, B, dtype = case["kw"], case["T"], case["B"], case["kw"]["dtype"]
    ref, ours = make_pair(case["mode"], backend, **kw)
    ours.eval()
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((T, B, kw["input_size"]))  # (T, B, I) time-major
    D = 2 if kw["bidirectional"] else 1
    H_out = kw.get("proj_size", 0) or kw["hidden_size"]
    sizes = [H_out, kw["hidden_size"]][: 2 if case["mode"] == "LSTM" else 1]
    h0 = tuple(rng.standard_normal((kw["num_layers"] * D, B, s)) if case["with_h0"]
               else np.zeros((kw["num_layers"] * D, B, s)) for s in sizes)
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    x, h0 = x.astype(np_dtype), tuple(s.astype(np_dtype) for s in h0)
    want_out, want_state, want_gates = reference_stack(ref, x, case["lengths"], h0)

    xt = torch.from_numpy(x)  # (T, B, I)
    hx = tuple(torch.from_numpy(s) for s in h0)
    if kw["batch_first"]:
        xt = xt.transpose(0, 1)  # (B, T, I)
    if case["kind"] == "unbatched":
        xt = xt.squeeze(0 if kw["batch_first"] else 1)
        hx = tuple(s.squeeze(1) for s in hx)
    elif case["kind"] == "packed":
        xt = pack_padded_sequence(xt, case["lengths"], batch_first=kw["batch_first"], enforce_sorted=False)
    assume(runnable(backend, ours, torch.from_numpy(x), True))
    hx = hx if case["mode"] == "LSTM" else hx[0]
    out, state, gates = ours(xt, hx if case["with_h0"] else None, return_gates=True)

    tol = TOL[dtype]
    assert set(gates) == set(engines.GATES[case["mode"]])
    T_packed = max(case["lengths"])  # packed input: T is the longest sequence, as pad_packed_sequence
    for name, want in want_gates.items():  # (L*D, T, B, H)
        want = want[:, :T_packed]
        if case["kind"] == "unbatched":
            want = want[:, :, 0]  # (L*D, T, H)
        elif kw["batch_first"]:
            want = want.transpose(0, 2, 1, 3)  # (L*D, B, T, H)
        got = gates[name]
        assert got.dtype == dtype and tuple(got.shape) == want.shape, name
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=0, atol=tol, err_msg=name)
    for got, want in zip(as_tuple(state), want_state):
        want = want[:, 0] if case["kind"] == "unbatched" else want
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=0, atol=tol)
    if case["kind"] != "packed":
        want = want_out[:, 0] if case["kind"] == "unbatched" else want_out
        want = want.transpose(1, 0, 2) if kw["batch_first"] and case["kind"] == "batched" else want
        np.testing.assert_allclose(out.detach().numpy(), want, rtol=0, atol=tol)


@pytest.mark.parametrize("backend", backend_params())
def test_forget_gate_record_is_what_the_cell_update_used(backend):
    """c_t = f ⊙ c_{t-1} + i ⊙ g holds between the recorded tensors at every step."""
    torch.manual_seed(0)
    lstm = gnn.LSTM(3, 5, num_layers=2, dtype=torch.float64, backend=backend)
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    c0 = torch.randn(2, 2, 5, dtype=torch.float64)
    _, (_, c_n), g = lstm(x, (torch.zeros(2, 2, 5, dtype=torch.float64), c0), return_gates=True)
    c_prev = torch.cat([c0[:, None], g["c"][:, :-1]], dim=1)  # (L, T, B, H)
    torch.testing.assert_close(g["c"], g["f"] * c_prev + g["i"] * g["g"], rtol=0, atol=1e-12)
    torch.testing.assert_close(g["c"][:, -1], c_n, rtol=0, atol=0)


def test_gates_keep_the_autograd_graph_with_the_eager_engine():
    """The eager engine's record is part of the graph: a loss on a gate reaches the weights."""
    lstm = gnn.LSTM(2, 3, backend="eager")
    _, _, g = lstm(torch.randn(4, 1, 2), return_gates=True)
    g["f"].sum().backward()
    assert lstm.weight_hh_l0.grad is not None and lstm.weight_hh_l0.grad.abs().sum() > 0


def test_summary_averages_only_the_real_steps():
    from gatelab.gates import summary

    lstm = gnn.LSTM(2, 3, num_layers=2, dtype=torch.float64)
    lengths = [4, 2]
    packed = pack_padded_sequence(torch.randn(4, 2, 2, dtype=torch.float64), lengths)
    _, _, g = lstm(packed, return_gates=True)  # (L, T, B, H), zeros at padded steps
    means = summary(g, lengths)
    for name, v in g.items():
        real = torch.cat([v[:, :4, 0], v[:, :2, 1]], dim=1)  # (L, 6, H): the real steps only
        torch.testing.assert_close(means[name], real.mean(dim=(1, 2)), rtol=0, atol=1e-12)
    torch.testing.assert_close(summary(g)["f"], g["f"].mean(dim=(1, 2, 3)), rtol=0, atol=0)
