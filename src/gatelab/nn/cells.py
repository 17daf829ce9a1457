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
from gatelab.nn import options as opts


class RNNCellBase(nn.Module):
    """Parameters and the one-step engine call shared by the cells (torch.nn.RNNCellBase).

    Arguments:
        input_size: I.   hidden_size: H.   bias: use bias_ih and bias_hh.
        num_chunks: G, gate rows (4 LSTM i|f|g|o, 3 GRU r|z|n, 1 RNN).
        device, dtype: of the parameters.
        backend: keyword-only, "auto" | "fused" | "eager".
        options: the LSTM-family options (gatelab.nn.options), LSTMCell and GRUCell only.
    Parameters: weight_ih (G*H, I), weight_hh (G*H, H), bias_ih and bias_hh (G*H,) or None;
        with peephole weight_ph (3, H); with layer_norm ln_ih_weight, ln_ih_bias,
        ln_hh_weight, ln_hh_bias (G*H,) and (LSTMCell) ln_c_weight, ln_c_bias (H,).
    """

    _mode = None  # set by the subclasses
    _name = None
    options = opts.Options()  # the LSTM-family options; the instance's replaces this default
    _extra_names = ()  # the options' parameters (weight_ph, ln_*)

    def __init__(self, input_size, hidden_size, bias, num_chunks, device=None, dtype=None,
                 *, backend="auto", options=None):
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        if backend not in engines.BACKENDS:
            raise ValueError(f"backend must be one of {engines.BACKENDS}, got {backend!r}")
        self.options = (opts.parse_keywords(self._name, self._mode, bias, options) if options
                        else opts.Options())
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
        self._extra_names = []
        if options:
            for name, shape in opts.extra_shapes(self._mode, self.options, hidden_size).items():
                setattr(self, name, nn.Parameter(torch.empty(shape, **factory_kwargs)))
                self._extra_names.append(name)
        self.reset_parameters()

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if "bias" in self.__dict__ and self.bias is not True:
            s += ", bias={bias}"
        if "nonlinearity" in self.__dict__ and self.nonlinearity != "tanh":
            s += ", nonlinearity={nonlinearity}"
        if self.backend != "auto":
            s += ", backend={backend!r}"
        s = s.format(**self.__dict__)
        if not self.options.non_defaults():
            return s
        return s + "".join(f", {k}={v}" for k, v in opts.repr_options(self.options, self._mode).items())

    def reset_parameters(self) -> None:
        """Every parameter from U(-sqrt(k), sqrt(k)), k = 1/hidden_size (torch.nn's init);
        then layer-norm gains 1, biases 0, and with forget_bias=b the f rows of bias_ih = b,
        of bias_hh = 0 (see gatelab.nn.options)."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)
        for name, param in self.named_parameters():
            opts.initialise(name, param, self.options, self.hidden_size)

    def _spec(self) -> engines.CellSpec:
        return engines.CellSpec(mode=self._mode, input_size=self.input_size,
                                hidden_size=self.hidden_size, bias=self.bias, **self.options.spec_fields())

    def draw_masks(self, batch_size=None, *, dtype=None, device=None) -> dict:
        """The masks one training-mode step draws (a forward without `masks=` calls this).

        Draw them once and pass them to every step of a sequence (`cell(x_t, hx, masks=m)`)
        for one recurrent-dropout / DropConnect mask per sequence (Gal & Ghahramani 2016);
        a cell alone cannot know where a sequence starts. Keys as in
        gatelab.nn.LSTM.draw_masks, for one step: weight_hh (G*H, H), recurrent_dropout,
        zoneout_h, zoneout_c (LSTMCell), each (B, H), or (H,) when batch_size is None.

        Arguments:
            batch_size: B, or None for unbatched input.
            dtype, device: of the masks (default those of weight_ih).
        """
        B = 1 if batch_size is None else batch_size
        H = self.hidden_size
        masks = opts.draw_masks(self.options, 1, B, H, H, tuple(self.weight_hh.shape), training=self.training,
                                dtype=dtype or self.weight_ih.dtype, device=device or self.weight_ih.device)
        return {k: v if k == "weight_hh" else v.reshape(B, H) if batch_size is not None else v.reshape(H)
                for k, v in masks.items()}

    def _step_masks(self, masks, B, batched):
        """The engine's masks of this step (zoneout (1, B, H), recurrent_dropout (B, H)) and
        the DropConnect mask of weight_hh (or None), from `masks` or freshly drawn."""
        if masks is None:
            if not self.options.stochastic:
                return {}, None
            masks = self.draw_masks(B if batched else None)
        else:
            lead = (B,) if batched else ()
            shapes = opts.mask_shapes(self._mode, 1, 1, self.hidden_size, self.hidden_size,
                                      tuple(self.weight_hh.shape))
            shapes = {k: v if k == "weight_hh" else (*lead, self.hidden_size) for k, v in shapes.items()}
            masks = opts.check_given_masks(masks, shapes, "masks")
        masks = dict(masks)
        drop = masks.pop("weight_hh", None)
        step = {k: v.reshape(1, B, self.hidden_size) if k.startswith("zoneout") else v.reshape(B, self.hidden_size)
                for k, v in masks.items()}
        return step, drop

    def _step(self, input, hx, return_gates, names, masks=None):
        """Run one step. `hx`: tuple of states or None; `names`: how the states are called;
        `masks`: None or a dict as draw_masks returns.

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
        step_masks, drop = self._step_masks(masks, B, batched)
        weights = {"weight_ih": self.weight_ih, "weight_hh": opts.drop_weight(self.weight_hh, drop)}
        if self.bias:
            weights.update(bias_ih=self.bias_ih, bias_hh=self.bias_hh)
        weights.update({name: getattr(self, name) for name in self._extra_names})
        spec = self._spec()
        x = x.unsqueeze(0)  # (1, B, I)
        engine = engines.select(self.backend, spec, x, return_gates, step_masks)
        _, state, gates = engine.run(spec, x, hx, weights, record=return_gates, training=self.training,
                                     masks=step_masks or None)
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
        **options: keyword-only LSTM-family options, as gatelab.nn.LSTM (forget_bias,
            peephole, layer_norm, coupled_gates, remove / no_*, gate_activation,
            cell_activation, zoneout, recurrent_dropout, weight_drop).

    forward(input, hx=None, *, return_gates=False, masks=None):
        input (B, I) or (I,); hx optional (h_0, c_0), each (B, H) or (H,).
        masks: None (drawn per call in training mode) or the dict draw_masks returns.
        Returns (h_1, c_1); with return_gates=True one more element,
        (h_1, c_1, gates) with gates a dict f, i, g, o, c -> (B, H) or (H,).
    """

    _mode, _name = "LSTM", "LSTMCell"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, backend="auto",
                 **options):
        super().__init__(input_size, hidden_size, bias, num_chunks=4, device=device, dtype=dtype,
                         backend=backend, options=options)

    def forward(self, input, hx=None, *, return_gates=False, masks=None):
        (h, c), gates = self._step(input, None if hx is None else tuple(hx), return_gates,
                                   ("hx[0]", "hx[1]"), masks)
        return (h, c, gates) if return_gates else (h, c)


class GRUCell(RNNCellBase):
    """Drop-in torch.nn.GRUCell: one step of the GRU (equations in gatelab.nn.gru).

    Arguments:
        input_size, hidden_size, bias=True, device=None, dtype=None: as torch.nn.GRUCell.
        backend: keyword-only, "auto" | "fused" | "eager".
        **options: keyword-only GRU options, as gatelab.nn.GRU (layer_norm, gate_activation,
            cell_activation, zoneout, recurrent_dropout, weight_drop, reset_after).

    forward(input, hx=None, *, return_gates=False, masks=None):
        input (B, I) or (I,); hx optional h_0, (B, H) or (H,).
        masks: None (drawn per call in training mode) or the dict draw_masks returns.
        Returns h_1, and with return_gates=True (h_1, dict r, z, n -> (B, H) or (H,)).
    """

    _mode, _name = "GRU", "GRUCell"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, backend="auto",
                 **options):
        super().__init__(input_size, hidden_size, bias, num_chunks=3, device=device, dtype=dtype,
                         backend=backend, options=options)

    def forward(self, input, hx=None, *, return_gates=False, masks=None):
        (h,), gates = self._step(input, None if hx is None else (hx,), return_gates, ("hidden",), masks)
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
