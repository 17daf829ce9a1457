"""params_from_torch / params_to_torch: exact round trips, layers, directions, bias=False,
projection, cells; and a multi-layer bidirectional module rebuilt from reference layers."""

import numpy as np
import pytest
import torch

from gatelab.reference import (from_torch_layout, gru_forward, gru_init_params, init_params, lstm_forward,
                               params_from_torch, params_to_torch, rnn_forward, rnn_init_params,
                               to_torch_layout)

MODULES = {
    "lstm": lambda: torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64),
    "lstm_proj": lambda: torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64),
    "lstm_nobias": lambda: torch.nn.LSTM(3, 4, num_layers=2, bias=False, dtype=torch.float64),
    "gru": lambda: torch.nn.GRU(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64),
    "gru_nobias": lambda: torch.nn.GRU(3, 4, bias=False, bidirectional=True, dtype=torch.float64),
    "rnn_relu": lambda: torch.nn.RNN(3, 4, num_layers=3, nonlinearity="relu", dtype=torch.float64),
    "lstm_cell": lambda: torch.nn.LSTMCell(3, 4, dtype=torch.float64),
    "gru_cell": lambda: torch.nn.GRUCell(3, 4, dtype=torch.float64),
    "rnn_cell": lambda: torch.nn.RNNCell(3, 4, bias=False, dtype=torch.float64),
}


def _layer_directions(module):
    layers = getattr(module, "num_layers", 1)
    dirs = 2 if getattr(module, "bidirectional", False) else 1
    return [(layer, d) for layer in range(layers) for d in range(dirs)]



@pytest.mark.parametrize("kind", sorted(MODULES))
def test_torch_to_reference_to_torch_round_trip(kind):
    torch.manual_seed(0)
    src, dst = MODULES[kind](), MODULES[kind]()
    for layer, d in _layer_directions(src):
        params_to_torch(params_from_torch(src, layer, d), dst, layer, d)
        # reference -> torch -> reference is exact
        back = params_from_torch(dst, layer, d)
        ref = params_from_torch(src, layer, d)
        assert sorted(back) == sorted(ref)
        for k in ref:
            np.testing.assert_array_equal(back[k], ref[k], err_msg=k)
    # the two modules compute the same function
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    if not hasattr(src, "num_layers"):
        x = x[0]
    a, b = src(x), dst(x)
    a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
def test_reference_to_torch_layout_round_trip_is_exact(mode):
    p = {"LSTM": init_params, "GRU": gru_init_params, "RNN": rnn_init_params}[mode](3, 4, seed=9)
    back = from_torch_layout(to_torch_layout(p, mode), mode)
    assert sorted(back) == sorted(p)
    for k in p:
        np.testing.assert_array_equal(back[k], p[k], err_msg=k)


def _stack(forward, module, x, **kw):
    """Run a multi-layer (bidirectional) module as reference layers, the reverse on flipped time."""
    dirs = 2 if module.bidirectional else 1
    for layer in range(module.num_layers):
        outs = []
        for d in range(dirs):
            p = params_from_torch(module, layer, d)
            xin = x[::-1].copy() if d else x
            hs = forward(xin, p, **kw)[0]
            outs.append(hs[::-1] if d else hs)
        x = np.concatenate(outs, axis=2)  # (T, B, D*H)
    return x


@pytest.mark.parametrize("kind,forward,kw", [("lstm", lstm_forward, {}), ("lstm_proj", lstm_forward, {}),
                                              ("gru", gru_forward, {}),
                                              ("rnn_relu", rnn_forward, {"nonlinearity": "relu"})])
def test_multilayer_bidirectional_module_equals_stacked_reference(kind, forward, kw):
    torch.manual_seed(1)
    module = MODULES[kind]()
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    out = module(torch.tensor(x))[0].detach().numpy()
    np.testing.assert_allclose(_stack(forward, module, x, **kw), out, rtol=0, atol=1e-10)


def test_params_to_torch_rejects_mismatches():
    module = torch.nn.LSTM(3, 4, bias=False, dtype=torch.float64)
    with pytest.raises(ValueError, match="bias=False"):
        params_to_torch(init_params(3, 4, seed=0), module)
    with pytest.raises(ValueError, match=r"weight_ih_l0 expected shape \(16, 3\), got \(16, 2\)"):
        params_to_torch(init_params(2, 4, seed=0, bias=False), module)
    with pytest.raises(ValueError, match="layer: expected an int in \\[0, 1\\), got 1"):
        params_from_torch(module, layer=1)
    with pytest.raises(ValueError, match="direction"):
        params_from_torch(module, direction=1)
    with pytest.raises(ValueError, match="module: expected a torch.nn LSTM, GRU or RNN"):
        params_from_torch(torch.nn.Linear(2, 2))
    # params without biases zero a biased module's biases
    biased = torch.nn.LSTM(3, 4, dtype=torch.float64)
    params_to_torch(init_params(3, 4, seed=0, bias=False), biased)
    assert float((biased.bias_ih_l0.abs().sum() + biased.bias_hh_l0.abs().sum()).detach()) == 0.0
