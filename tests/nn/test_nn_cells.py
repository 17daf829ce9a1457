"""LSTMCell, GRUCell, RNNCell: same step, state and gradients as torch.nn's cells; the recorded
gates of the step equal the NumPy reference's; recording changes nothing."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from nn_oracle import backend_params, runnable

import gatelab.nn as gnn
from gatelab import reference

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


@st.composite
def cases(draw):
    cls = draw(st.sampled_from(["LSTMCell", "GRUCell", "RNNCell"]))
    kw = dict(input_size=draw(st.integers(1, 4)), hidden_size=draw(st.integers(1, 4)),
              bias=draw(st.booleans()), dtype=draw(st.sampled_from([torch.float64, torch.float32])))
    if cls == "RNNCell":
        kw["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    return dict(cls=cls, kw=kw, batch=draw(st.sampled_from([None, 1, 3])),
                with_hx=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def _leaves(case):
    kw, B = case["kw"], case["batch"]
    g = torch.Generator().manual_seed(case["seed"])
    lead = () if B is None else (B,)
    x = torch.randn((*lead, kw["input_size"]), generator=g, dtype=kw["dtype"]).requires_grad_()
    n_states = 2 if case["cls"] == "LSTMCell" else 1
    hx = tuple(torch.randn((*lead, kw["hidden_size"]), generator=g, dtype=kw["dtype"]).requires_grad_()
               for _ in range(n_states)) if case["with_hx"] else ()
    return x, hx


def _step(cell, x, hx, record, seed):
    arg = None if not hx else (hx if len(hx) == 2 else hx[0])
    result = cell(x, arg, return_gates=True) if record else cell(x, arg)
    gates = None
    if record:  # one more element: (h, c, gates) or (h, gates)
        *result, gates = result
        assert isinstance(gates, dict)
    state = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    g = torch.Generator().manual_seed(seed)
    loss = sum((s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum() for s in state)
    grads = torch.autograd.grad(loss, [x, *hx, *cell.parameters()])
    return state, grads, gates


@pytest.mark.parametrize("backend", backend_params())
@settings(max_examples=100, deadline=None)
@given(case=cases())
def test_cells_match_torch_and_record_the_reference_gates(backend, case):
    torch.manual_seed(case["seed"])
    ref = getattr(torch.nn, case["cls"])(**case["kw"])
    ours = getattr(gnn, case["cls"])(backend=backend, **case["kw"])
    ours.load_state_dict(ref.state_dict())
    x, hx = _leaves(case)
    assume(runnable(backend, ours, x.detach().reshape(1, -1, x.shape[-1]), True))
    tol = TOL[case["kw"]["dtype"]]
    want_state, want_grads, _ = _step(ref, x, hx, False, case["seed"])
    state, grads, gates = _step(ours, x, hx, True, case["seed"])
    plain_state, plain_grads, _ = _step(ours, x, hx, False, case["seed"])
    for a, b, c in zip(state, want_state, plain_state):
        torch.testing.assert_close(a, b, rtol=0, atol=tol)
        assert torch.equal(a, c)
    for a, b, c in zip(grads, want_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=tol)
        assert torch.equal(a, c)

    # the gates of the step against the NumPy reference, one step of a sequence
    params = reference.params_from_torch(ref)
    xs = x.detach().reshape(1, -1, x.shape[-1]).numpy()  # (1, B, I)
    init = [s.detach().reshape(-1, s.shape[-1]).numpy() for s in hx] or [None] * len(state)  # (B, H)
    if case["cls"] == "LSTMCell":
        want = reference.lstm_gates(reference.lstm_forward(xs, params, *init)[2])
    elif case["cls"] == "GRUCell":
        want = reference.gru_gates(reference.gru_forward(xs, params, init[0])[2])
    else:
        want = {"h": reference.rnn_forward(xs, params, init[0], nonlinearity=case["kw"]["nonlinearity"])[0]}
    assert set(gates) == set(want)
    for name, value in want.items():
        expected = value[0] if case["batch"] is not None else value[0, 0]  # (B, H) or (H,)
        assert tuple(gates[name].shape) == expected.shape, name
        np.testing.assert_allclose(gates[name].detach().numpy(), expected, rtol=0, atol=tol, err_msg=name)


def test_a_cell_step_equals_a_one_step_lstm():
    torch.manual_seed(0)
    cell, lstm = gnn.LSTMCell(3, 4, dtype=torch.float64), gnn.LSTM(3, 4, dtype=torch.float64)
    lstm.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    x = torch.randn(2, 3, dtype=torch.float64)
    h, c, g = cell(x, return_gates=True)
    _, (h_n, c_n), g_seq = lstm(x[None], return_gates=True)
    assert torch.equal(h, h_n[0]) and torch.equal(c, c_n[0])
    assert all(torch.equal(g[k], g_seq[k][0, 0]) for k in g)
