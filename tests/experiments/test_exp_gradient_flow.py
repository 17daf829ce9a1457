"""The gradient-flow measurement against closed-form backpropagation and torch.nn."""

import math

import torch

from gatelab.experiments.gradient_flow import decay_orders, hidden_gradients, profile
from gatelab.experiments.models import build


def test_rnn_gradient_matches_the_closed_form_recursion():
    # h_t = tanh(W_ih x_t + b + W_hh h_{t-1}), ŷ = w·h_T:
    # ∂ŷ/∂h_T = w,  ∂ŷ/∂h_t = W_hh^T [(1 − h_{t+1}²) ⊙ ∂ŷ/∂h_{t+1}]
    model = build("rnn", 2, 6, 1, seed=1).double()
    x = torch.randn(9, 3, 2, dtype=torch.float64)
    W_ih, W_hh = model.rnn.weight_ih_l0.detach(), model.rnn.weight_hh_l0.detach()
    b = (model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0).detach()
    h, hs = torch.zeros(3, 6, dtype=torch.float64), []
    for t in range(9):
        h = torch.tanh(x[t] @ W_ih.T + b + h @ W_hh.T)  # (B, H)
        hs.append(h)
    grad = model.head.weight.detach().expand(3, 6)  # (B, H)
    expected = [None] * 9
    expected[8] = grad.norm(dim=-1).mean()
    for t in range(7, -1, -1):
        grad = ((1 - hs[t + 1] ** 2) * grad) @ W_hh
        expected[t] = grad.norm(dim=-1).mean()
    torch.testing.assert_close(hidden_gradients(model, x), torch.stack(expected))


def test_lstm_gradient_matches_torch_nn_lstm_cell():
    model = build("lstm", 2, 5, 1, seed=2, forget_bias=1.0).double()
    cell = torch.nn.LSTMCell(2, 5).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(model.rnn, f"{name}_l0"))
    x = torch.randn(12, 4, 2, dtype=torch.float64)
    h = torch.zeros(4, 5, dtype=torch.float64, requires_grad=True)
    c = torch.zeros(4, 5, dtype=torch.float64)
    hs = []
    for t in range(12):
        h, c = cell(x[t], (h, c))
        h.retain_grad()
        hs.append(h)
    model.head(hs[-1]).sum().backward()
    expected = torch.stack([h.grad.norm(dim=-1).mean() for h in hs])
    torch.testing.assert_close(hidden_gradients(model, x), expected)


def test_profile_is_indexed_by_distance_and_leaves_no_gradients():
    model = build("gru", 2, 4, 1, seed=3)
    x = torch.randn(6, 2, 2)
    assert profile(model, x) and model.head.weight.dtype == torch.float32  # model left as it was
    g = profile(model, x)
    expected = hidden_gradients(model.double(), x.double()).detach().flip(0)
    torch.testing.assert_close(torch.tensor(g, dtype=torch.float64), expected)
    model.zero_grad(set_to_none=True)
    profile(model, x)
    assert all(p.grad is None for p in model.parameters())
    # at distance 0 the gradient is the readout weight itself
    assert math.isclose(g[0], float(model.head.weight.detach().norm()), rel_tol=1e-5)


def test_decay_orders():
    assert decay_orders([1.0, 0.1, 1e-3], 2) == 3.0
    assert decay_orders([2.0, 2.0], 5) == 0.0
    assert decay_orders([1.0, 0.0], 1) == math.inf
