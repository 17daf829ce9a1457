"""gatelab.nn.LSTMCell, GRUCell, RNNCell: torch.nn's cells (one step), plus the gates of the step.

The step runs through the same engine seam as the sequence modules, as a sequence of
length 1, so a cell and a one-step LSTM compute exactly the same thing. The equations
are those of `gatelab.nn.lstm`, `gatelab.nn.gru` and `gatelab.nn.rnn`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gatelab import engines


class RNNCellBase(nn.Module):
    """Parameters and the one-step engine call shared by the cells (torch.nn.RNNCellBase).

    Arguments:
        input_size: I.   hidden_size: H.   bias: use bias_ih and bias_hh.
        num_chunks: G, gate rows (4 LSTM i|f|g|o, 3 GRU r|z|n, 1 RNN).
        device, dtype: of the parameters.
        backend: keyword-only, "auto" | "fused" | "eager".
    Parameters: weight_ih (G*H, I), weight_hh (G*H, H), bias_ih and bias_hh (G*H,) or None.
    """

    _mode = None  # set by the subclasses
    _name = None

    def __init__(self, input_size, hidden_size, bias, num_chunks, device=None, dtype=None,
                 *, backend="auto"):
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        if backend not in engines.BACKENDS:
            raise ValueError(f"backend must be one of {engines.BACKENDS}, got {backend!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.backend = backend
        self.weight_ih = nn.Parameter(torch.empty((num_chunks * hidden_size, input_size), **factory_kwargs))
        self.weight_hh = nn.Parameter(torch.empty((num_chunks * hidden_size, hidden_size), **factory_kwargs))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(num_chunks * hidden_size, **factory_kwargs))
            self.bias_hh = nn.Parameter(torch.empty(num_chunks * hidden_size, **factory_kwargs))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if "bias" in self.__dict__ and self.bias is not True:
            s += ", bias={bias}"
        if "nonlinearity" in self.__dict__ and self.nonlinearity != "tanh":
            s += ", nonlinearity={nonlinearity}"
        if self.backend != "auto":
            s += ", backend={backend!r}"
        return s.format(**self.__dict__)

    def reset_parameters(self) -> None:
        """Every parameter from U(-sqrt(k), sqrt(k)), k = 1/hidden_size (torch.nn's init)."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def _spec(self) -> engines.CellSpec:
        return engines.CellSpec(mode=self._mode, input_size=self.input_size,
                                hidden_size=self.hidden_size, bias=self.bias)

    def _step(self, input, hx, return_gates, names):
        """Run one step. `hx`: tuple of states or None; `names`: how the states are called.

        Returns (state tuple, gates or None), unbatched again when `input` was 1-D.
        """
        if input.dim() not in (1, 2):
            raise ValueError(f"{self._name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for name, s in zip(names, hx):
                if s.dim() not in (1, 2):
                    raise ValueError(f"{self._name}: Expected {name} to be 1D or 2D, got {s.dim()}D instead")
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)  # (B, I)
        B = x.shape[0]
        if x.shape[1] != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {x.shape[1]} expected {self.input_size}")
        if x.dtype != self.weight_ih.dtype:
            raise RuntimeError(f"input dtype ({x.dtype}) does not match weight dtype ({self.weight_ih.dtype})")
        if hx is None:
            zeros = torch.zeros(B, self.hidden_size, dtype=x.dtype, device=x.device)
            hx = tuple(zeros for _ in names)
        else:
            hx = tuple(s if batched else s.unsqueeze(0) for s in hx)
            for name, s in zip(names, hx):
                if tuple(s.shape) != (B, self.hidden_size):
                    raise RuntimeError(f"{self._name}: Expected {name} of shape {(B, self.hidden_size)} "
                                       f"(batch {B} of the input, hidden_size {self.hidden_size}), "
                                       f"got {tuple(s.shape)}")
        weights = {"weight_ih": self.weight_ih, "weight_hh": self.weight_hh}
        if self.bias:
            weights.update(bias_ih=self.bias_ih, bias_hh=self.bias_hh)
        spec = self._spec()
        x = x.unsqueeze(0)  # (1, B, I)
        engine = engines.select(self.backend, spec, x, return_gates)
        _, state, gates = engine.run(spec, x, hx, weights, record=return_gates, training=self.training)
        squeeze = (lambda t: t.squeeze(0)) if not batched else (lambda t: t)
        state = tuple(squeeze(s) for s in state)  # (B, H) or (H,)
        if gates is not None:
            gates = {k: squeeze(v[0]) for k, v in gates.items()}  # (B, H) or (H,)
        return state, gates


class LSTMCell(RNNCellBase):
    """Drop-in torch.nn.LSTMCell: one step of the LSTM (equations in gatelab.nn.lstm).

    Arguments:
        input_size, hidden_size, bias=True, device=None, dtype=None: as torch.nn.LSTMCell.
        backend: keyword-only, "auto" | "fused" | "eager".

    forward(input, hx=None, *, return_gates=False):
        input (B, I) or (I,); hx optional (h_0, c_0), each (B, H) or (H,).
        Returns (h_1, c_1); with return_gates=True one more element,
        (h_1, c_1, gates) with gates a dict f, i, g, o, c -> (B, H) or (H,).
    """

    _mode, _name = "LSTM", "LSTMCell"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, backend="auto"):
        super().__init__(input_size, hidden_size, bias, num_chunks=4, device=device, dtype=dtype,
                         backend=backend)

    def forward(self, input, hx=None, *, return_gates=False):
        (h, c), gates = self._step(input, None if hx is None else tuple(hx), return_gates,
                                   ("hx[0]", "hx[1]"))
        return (h, c, gates) if return_gates else (h, c)


class GRUCell(RNNCellBase):
    """Drop-in torch.nn.GRUCell: one step of the GRU (equations in gatelab.nn.gru).

    Arguments:
        input_size, hidden_size, bias=True, device=None, dtype=None: as torch.nn.GRUCell.
        backend: keyword-only, "auto" | "fused" | "eager".

    forward(input, hx=None, *, return_gates=False):
        input (B, I) or (I,); hx optional h_0, (B, H) or (H,).
        Returns h_1, and with return_gates=True (h_1, dict r, z, n -> (B, H) or (H,)).
    """

    _mode, _name = "GRU", "GRUCell"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, backend="auto"):
        super().__init__(input_size, hidden_size, bias, num_chunks=3, device=device, dtype=dtype,
                         backend=backend)

    def forward(self, input, hx=None, *, return_gates=False):
        (h,), gates = self._step(input, None if hx is None else (hx,), return_gates, ("hidden",))
        return (h, gates) if return_gates else h


class RNNCell(RNNCellBase):
    """Drop-in torch.nn.RNNCell: h_1 = tanh|relu(W_ih x + b_ih + W_hh h_0 + b_hh).

    Arguments:
        input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None:
        as torch.nn.RNNCell (an unknown nonlinearity raises RuntimeError in forward, as torch).
        backend: keyword-only, "auto" | "fused" | "eager".

    forward(input, hx=None, *, return_gates=False):
        input (B, I) or (I,); hx optional h_0, (B, H) or (H,).
        Returns h_1, and with return_gates=True (h_1, {"h": h_1}).
    """

    _name = "RNNCell"

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None,
                 dtype=None, *, backend="auto"):
        super().__init__(input_size, hidden_size, bias, num_chunks=1, device=device, dtype=dtype,
                         backend=backend)
        self.nonlinearity = nonlinearity

    @property
    def _mode(self):
        if self.nonlinearity == "tanh":
            return "RNN_TANH"
        if self.nonlinearity == "relu":
            return "RNN_RELU"
        raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity!r}, expected 'tanh' or 'relu'")

    def forward(self, input, hx=None, *, return_gates=False):
        (h,), gates = self._step(input, None if hx is None else (hx,), return_gates, ("hidden",))
        return (h, gates) if return_gates else h
