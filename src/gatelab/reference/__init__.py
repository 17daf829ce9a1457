"""gatelab.reference: the LSTM, GRU and plain RNN as their equations, in NumPy.

Forward and hand-derived backpropagation through time, float32 or float64, no PyTorch.
This is the executable specification every engine is tested against.

    hs, (h_T, c_T), cache = lstm_forward(x, params, h0, c0)     # x (T, B, I), hs (T, B, H)
    grads = lstm_backward(dhs, cache, dh_T, dc_T)               # every params key + x, h0, c0
    lstm_gates(cache)                                           # f, i, g, o, c: (T, B, H) each

The same for gru_* (reset_after=True is torch.nn's GRU) and rnn_* (nonlinearity tanh|relu).
The LSTM family of issue 7 (peephole, layer norm, coupled gates, ablations, activations,
zoneout and recurrent dropout masks) is lstm_family_forward / lstm_family_backward, the GRU
options gru_family_forward / gru_family_backward; to_torch_layout / from_torch_layout map
their parameters to and from the engines' torch-style names (weight_ph, ln_ih_weight, ...).

params_from_torch / params_to_torch convert one layer-direction of a torch.nn module
(they import torch when called; importing this package does not).
"""

from .convert import from_torch_layout, params_from_torch, params_to_torch, to_torch_layout
from .gru import gru_backward, gru_forward, gru_gates
from .gru_family import gru_family_backward, gru_family_forward, gru_family_gates, gru_family_init_params
from .gru import init_params as gru_init_params
from .lstm import init_params, lstm_backward, lstm_forward, lstm_gates
from .lstm_family import (family_init_params, lstm_family_backward, lstm_family_forward, lstm_family_gates,
                          options_from_spec)
from .rnn import init_params as rnn_init_params
from .rnn import rnn_backward, rnn_forward

lstm_init_params = init_params

__all__ = [
    "init_params", "lstm_init_params", "lstm_forward", "lstm_backward", "lstm_gates",
    "gru_init_params", "gru_forward", "gru_backward", "gru_gates",
    "rnn_init_params", "rnn_forward", "rnn_backward",
    "family_init_params", "lstm_family_forward", "lstm_family_backward", "lstm_family_gates",
    "options_from_spec", "gru_family_init_params", "gru_family_forward", "gru_family_backward",
    "gru_family_gates",
    "params_from_torch", "params_to_torch", "to_torch_layout", "from_torch_layout",
]
