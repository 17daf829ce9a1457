"""gatelab.nn.RNN: torch.nn.RNN (Elman), plus its hidden states as the gate record.

    h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)      (nonlinearity="relu": relu)
"""

from __future__ import annotations

from gatelab.nn.base import RNNBase


class RNN(RNNBase):
    """Drop-in torch.nn.RNN (same arguments, parameters, outputs, gradients and errors).

    Arguments:
        input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
        batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None:
        as torch.nn.RNN (nonlinearity is the 4th positional argument, as in torch).
        backend: keyword-only, "auto" | "fused" | "eager".

    forward(input, hx=None, *, return_gates=False):
        input: (T, B, I), (B, T, I) with batch_first, (T, I) unbatched, or a PackedSequence.
        hx: optional h_0, (L*D, B, H) ((L*D, H) unbatched).
        Returns (output, h_n), and with return_gates=True a third element: dict
        h -> (L*D, T, B, H), every layer-direction's hidden state (zero at padded steps).
    """

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif self.nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(mode, *args, **kwargs)

    def forward(self, input, hx=None, *, return_gates=False):
        output, (h_n,), gates = self._forward(input, None if hx is None else (hx,), return_gates)
        if return_gates:
            return output, h_n, gates
        return output, h_n
