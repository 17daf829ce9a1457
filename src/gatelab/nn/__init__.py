"""Drop-in replacements for torch.nn's recurrent modules that can record their gates.

    from gatelab import nn
    lstm = nn.LSTM(10, 20, num_layers=2)          # instead of torch.nn.LSTM(10, 20, num_layers=2)
    out, (h, c), gates = lstm(x, return_gates=True)
    gates["f"]                                     # (2, T, B, 20): the forget gate of every step
"""

from gatelab.nn.cells import GRUCell, LSTMCell, RNNCell
from gatelab.nn.gru import GRU
from gatelab.nn.lstm import LSTM
from gatelab.nn.rnn import RNN

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"]
