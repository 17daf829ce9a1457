"""The noise experiment's gate statistics and gate source."""

import torch

from gatelab.experiments.models import build
from gatelab.experiments.noise import gate_means, write_gate


def test_gate_means_by_hand():
    gate = torch.zeros(3, 2, 2)  # (T, B, H)
    signal = torch.tensor([[True, False], [False, True], [False, False]])  # (T, B)
    gate[..., 0] = 0.5  # unit 0: the same everywhere
    gate[..., 1] = 0.1  # unit 1: open (0.9) only on the signal steps
    gate[0, 0, 1] = gate[1, 1, 1] = 0.9
    m = gate_means(gate, signal)
    assert abs(m["write_gate_signal"] - (0.5 + 0.9) / 2) < 1e-6
    assert abs(m["write_gate_distractor"] - (0.5 + 0.1) / 2) < 1e-6
    assert abs(m["top_unit_signal"] - 0.9) < 1e-6 and abs(m["top_unit_distractor"] - 0.1) < 1e-6
    assert gate_means(None, signal)["write_gate_signal"] is None


def test_write_gate_is_lstm_input_gate_and_gru_one_minus_z():
    x = torch.randn(4, 3, 5)
    lstm, gru = build("lstm", 5, 6, 2, seed=0), build("gru", 5, 6, 2, seed=0)
    # LSTM: i = σ(W_ii x + b_ii + b_hi) at t = 0 (h_0 = 0), rows i|f|g|o
    W, b = lstm.rnn.weight_ih_l0[:6].detach(), (lstm.rnn.bias_ih_l0 + lstm.rnn.bias_hh_l0)[:6].detach()
    torch.testing.assert_close(write_gate(lstm, x)[0], torch.sigmoid(x[0] @ W.T + b))
    # GRU: z = σ(W_iz x + b_iz + b_hz) at t = 0, rows r|z|n; the write gate is 1 − z
    W, b = gru.rnn.weight_ih_l0[6:12].detach(), (gru.rnn.bias_ih_l0 + gru.rnn.bias_hh_l0)[6:12].detach()
    torch.testing.assert_close(write_gate(gru, x)[0], 1 - torch.sigmoid(x[0] @ W.T + b))
    assert write_gate(build("rnn", 5, 6, 2, seed=0), x) is None
