"""What LSTM, GRU and RNN share: arguments, parameters, input checks, layers, directions,
PackedSequence, dropout between layers and the assembly of the gate record.

The recurrence of one layer-direction is an engine's job (`gatelab.engines`); this module
never looks at which engine runs: it asks `engines.select(backend, spec, x, record)` and
calls `engine.run(...)` once per layer and direction.

Parameters carry torch.nn's names, shapes, order and initialisation, so a `state_dict`
moves between `torch.nn.LSTM` and `gatelab.nn.LSTM` in both directions:
    weight_ih_l{k}{_reverse} (G*H, I_k)   weight_hh_l{k}{_reverse} (G*H, H_out)
    bias_ih_l{k}{_reverse} (G*H,)         bias_hh_l{k}{_reverse} (G*H,)
    weight_hr_l{k}{_reverse} (H_out, H)   (LSTM with proj_size > 0)
with G = 4 (LSTM, rows i|f|g|o), 3 (GRU, rows r|z|n), 1 (RNN); I_0 = input_size,
I_k = num_directions * H_out; every value drawn from U(-sqrt(k), sqrt(k)), k = 1/hidden_size.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from gatelab import engines, gates as gate_record
from gatelab.engines import masks as engine_masks
from gatelab.nn import options as opts

GATE_ROWS = engines.GATE_ROWS


@dataclass
class _Batch:
    """The input as the engines take it, and what is needed to give it back.

    x: (T, B, I) time-major, or (N, I) packed data when batch_sizes is set.
    batch_sizes: None or T ints; index: (N,) packed row -> t*B + b; sorted_indices /
    unsorted_indices: the PackedSequence's; batched: False for unbatched input;
    hx: the initial states, (L*D, B, H_out) [, (L*D, B, H)], in the engines' batch order.
    """

    x: torch.Tensor
    T: int
    B: int
    batch_sizes: list | None = None
    index: torch.Tensor | None = None
    sorted_indices: torch.Tensor | None = None
    unsorted_indices: torch.Tensor | None = None
    batched: bool = True
    hx: tuple = ()

    @property
    def packed(self) -> bool:
        return self.batch_sizes is not None


class RNNBase(nn.Module):
    """Base of the drop-in LSTM, GRU and RNN (torch.nn.RNNBase's arguments and checks).

    Arguments:
        mode: "LSTM", "GRU", "RNN_TANH" or "RNN_RELU".
        input_size: I, features of x_t.
        hidden_size: H, features of h_t (and c_t).
        num_layers: stacked layers; layer k > 0 reads the output of layer k - 1.
        bias: use bias_ih and bias_hh.
        batch_first: input and output are (B, T, *) instead of (T, B, *).
        dropout: probability of dropout on the output of every layer but the last
            (training mode only; torch.nn's F.dropout, same random numbers).
        bidirectional: add a reverse direction; outputs are concatenated [forward, reverse].
        proj_size: LSTM only: h_t = W_hr (o_t ⊙ tanh(c_t)), of size proj_size < H.
        device, dtype: of the parameters.
        backend: keyword-only, "auto" | "fused" | "eager": which engine runs the recurrence.
            "auto" takes the fused engine when it can run the request, else eager (why is
            logged at DEBUG on logger `gatelab.engines`).
        **options: keyword-only LSTM-family options (gatelab.nn.options): forget_bias,
            peephole, layer_norm, coupled_gates, remove, no_forget_gate, no_input_gate,
            no_output_gate, no_output_activation, no_candidate_activation,
            gate_activation, cell_activation, zoneout, recurrent_dropout, weight_drop,
            reset_after. All off by default (torch.nn's cell).
    """

    options = opts.Options()  # the LSTM-family options; the instance's replaces this default

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, proj_size=0,
                 device=None, dtype=None, *, backend="auto", **options):
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout) if isinstance(dropout, numbers.Number) else dropout
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.backend = backend
        _check_arguments(mode, input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, proj_size, backend)
        self.options = opts.parse_keywords(type(self).__name__, mode, bias, options)
        gate_size = GATE_ROWS[mode] * hidden_size
        num_directions = 2 if bidirectional else 1
        real_hidden_size = proj_size if proj_size > 0 else hidden_size
        self._flat_weights_names = []
        self._all_weights = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                layer_input_size = input_size if layer == 0 else real_hidden_size * num_directions
                shapes = {"weight_ih": (gate_size, layer_input_size),
                          "weight_hh": (gate_size, real_hidden_size)}
                if bias:
                    shapes.update(bias_ih=(gate_size,), bias_hh=(gate_size,))
                if proj_size > 0:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                n_plain = len(shapes)
                shapes.update(opts.extra_shapes(mode, self.options, hidden_size))
                suffix = "_reverse" if direction == 1 else ""
                names = []
                for base, shape in shapes.items():
                    name = f"{base}_l{layer}{suffix}"
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory_kwargs)))
                    names.append(name)
                self._flat_weights_names.extend(names[:n_plain])  # torch.nn's own parameters
                self._all_weights.append(names)  # with the variants' parameters
        self.reset_parameters()

    # ---- torch.nn compatibility -------------------------------------------------------

    def reset_parameters(self) -> None:
        """Every parameter from U(-sqrt(k), sqrt(k)), k = 1/hidden_size (torch.nn's init),
        torch.nn's parameters first and in its order (so a seed gives torch.nn's values),
        then the variants' (weight_ph); then layer-norm gains 1 and biases 0, and with
        forget_bias=b the f rows of bias_ih = b and of bias_hh = 0."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        plain = set(self._flat_weights_names)
        names = [n for ns in self._all_weights for n in ns]
        for name in [n for n in names if n in plain] + [n for n in names if n not in plain]:
            nn.init.uniform_(getattr(self, name), -stdv, stdv)
        for name in names:
            opts.initialise(name.rsplit("_l", 1)[0], getattr(self, name), self.options, self.hidden_size)

    def flatten_parameters(self) -> None:
        """No-op, kept so code written for torch.nn (cuDNN weight flattening) runs unchanged."""

    @property
    def _flat_weights(self):
        return [getattr(self, n) for n in self._flat_weights_names]

    @property
    def all_weights(self):
        """The parameters as a list (one per layer-direction) of lists, like torch.nn."""
        return [[getattr(self, n) for n in names] for names in self._all_weights]

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.proj_size != 0:
            s += ", proj_size={proj_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        if self.backend != "auto":
            s += ", backend={backend!r}"
        s = s.format(**self.__dict__)
        return s + "".join(f", {k}={v}" for k, v in opts.repr_options(self.options, self.mode).items())

    # ---- hooks for the LSTM family (issue 7) -------------------------------------------

    def _cell_spec(self, layer: int) -> engines.CellSpec:
        """The CellSpec of `layer` (variants override this to set their fields)."""
        D = 2 if self.bidirectional else 1
        H_out = self.proj_size if self.proj_size > 0 else self.hidden_size
        return engines.CellSpec(mode=self.mode, hidden_size=self.hidden_size,
                                input_size=self.input_size if layer == 0 else D * H_out,
                                proj_size=self.proj_size, bias=self.bias, **self.options.spec_fields())

    def _layer_weights(self, layer: int, direction: int) -> dict:
        """The engine's weights dict of one layer-direction: torch.nn names without suffix."""
        suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        names = self._all_weights[layer * (2 if self.bidirectional else 1) + direction]
        return {n[: -len(suffix)]: getattr(self, n) for n in names}

    def _mask_shapes(self, T: int, B: int) -> dict:
        """name -> shape of the masks one layer-direction can take (see draw_masks)."""
        H_out = self.proj_size if self.proj_size > 0 else self.hidden_size
        G = GATE_ROWS[self.mode]
        return opts.mask_shapes(self.mode, T, B, self.hidden_size, H_out, (G * self.hidden_size, H_out))

    def draw_masks(self, seq_len: int, batch_size: int, *, dtype=None, device=None) -> list:
        """The masks a forward of this module draws, one dict per layer-direction.

        A forward without `masks=` calls this first (before any dropout between layers),
        so `torch.manual_seed(s); m(x)` equals `torch.manual_seed(s); m(x, masks=m.draw_masks(T, B))`.
        Per layer-direction (index layer * D + direction), drawn in this order from torch's
        global RNG (uniform 32-bit integers U seeded from it: dropout keeps U >= p 2^32,
        zoneout keeps the previous value where U < p 2^32; gatelab.nn.options), only
        for the options on:
            weight_hh (G*H, H_out): M / (1 - weight_drop), the DropConnect mask   (training)
            recurrent_dropout (B, H_out): d / (1 - p), one per sequence            (training)
            zoneout_h (T, B, H_out), zoneout_c (T, B, H) (LSTM): 1 = keep the previous
                value; in evaluation the constant p (the expectation)
        The masks are time-major (T, B, ...) also with batch_first; the batch is in the
        input's order (for a PackedSequence: the order of its sequences, as the output), the
        time axis that of the input in both directions.

        Arguments:
            seq_len: T.   batch_size: B (1 for unbatched input).
            dtype, device: of the masks (default: those of weight_ih_l0).
        """
        return self._draw_masks(seq_len, batch_size, dtype, device, defer=False)

    def _draw_masks(self, T: int, B: int, dtype, device, defer: bool) -> list:
        """draw_masks; defer: zoneout's masks as opts.Deferred on the CPU (filled by the
        engine, see opts.Deferred; the same values)."""
        w = self.weight_ih_l0
        dtype, device = dtype or w.dtype, device or w.device
        H_out = self.proj_size if self.proj_size > 0 else self.hidden_size
        G = GATE_ROWS[self.mode]
        return [opts.draw_masks(self.options, T, B, self.hidden_size, H_out, (G * self.hidden_size, H_out),
                                training=self.training, dtype=dtype, device=device, defer=defer)
                for _ in range(self.num_layers * (2 if self.bidirectional else 1))]

    def _layer_masks(self, batch, masks):
        """Every layer-direction's masks in the engines' batch order: the given `masks`
        (checked) or, when None, freshly drawn ones (draw_masks); a list of dicts."""
        LD = self.num_layers * (2 if self.bidirectional else 1)
        if masks is None:
            if not self.options.stochastic:
                return [{} for _ in range(LD)]
            # zoneout's masks filled by the engine, unless the batch is reordered below
            masks = self._draw_masks(batch.T, batch.B, batch.x.dtype, batch.x.device,
                                     defer=batch.sorted_indices is None)
        elif not isinstance(masks, (list, tuple)) or len(masks) != LD:
            raise ValueError(f"masks: expected a list of {LD} dicts (one per layer-direction), got "
                             f"{type(masks).__name__}{'' if not hasattr(masks, '__len__') else f' of {len(masks)}'}")
        else:
            shapes = self._mask_shapes(batch.T, batch.B)
            masks = [opts.check_given_masks(m, shapes, f"masks[{k}]") for k, m in enumerate(masks)]
        if batch.sorted_indices is not None:  # the engines run the sorted batch
            masks = [{k: v if k == "weight_hh" else v.index_select(0 if v.dim() == 2 else 1, batch.sorted_indices)
                      for k, v in m.items()} for m in masks]
        return masks

    # ---- forward ----------------------------------------------------------------------

    def _forward(self, input, hx, return_gates, masks=None):
        """The shared forward. `hx` is a tuple of state tensors ((h0, c0) or (h0,)) or None;
        `masks` None (drawn as needed) or the list draw_masks returns.

        Returns (output, state tuple, gates or None) in the caller's layout.
        """
        batch = self._time_major(input, hx)
        out, state, records = self._run_layers(batch, return_gates, self._layer_masks(batch, masks))
        gates = None
        if return_gates:
            gates = gate_record.arrange(gate_record.stack_layers(records, self._gate_names()),
                                        unsorted_indices=batch.unsorted_indices,
                                        batch_first=self.batch_first, batched=batch.batched)
        if batch.packed:
            output = PackedSequence(out, input.batch_sizes, batch.sorted_indices, batch.unsorted_indices)
            if batch.unsorted_indices is not None:
                state = tuple(s.index_select(1, batch.unsorted_indices) for s in state)
            return output, state, gates
        output = out.transpose(0, 1) if self.batch_first else out
        if not batch.batched:
            output = output.squeeze(0 if self.batch_first else 1)
            state = tuple(s.squeeze(1) for s in state)
        return output, state, gates

    def _time_major(self, input, hx) -> _Batch:
        """Check the input and the initial states as torch.nn does, and bring them to the
        engines' layout: time-major, batched, initial states in sorted (packed) order."""
        lstm = self.mode == "LSTM"
        D = 2 if self.bidirectional else 1
        H_out = self.proj_size if self.proj_size > 0 else self.hidden_size
        if isinstance(input, PackedSequence):
            data, batch_sizes_t, sorted_indices, unsorted_indices = input
            batch_sizes = [int(b) for b in batch_sizes_t]
            # torch.nn.LSTM skips its Python checks for packed input; its C++ core then
            # raises RuntimeError for a wrong dtype too (GRU and RNN raise ValueError)
            _check_input(self, data, expected_dim=2, dtype_error=RuntimeError if lstm else ValueError)
            batch = _Batch(x=data, T=len(batch_sizes), B=batch_sizes[0], batch_sizes=batch_sizes,
                           index=_packed_index(batch_sizes, data.device), sorted_indices=sorted_indices,
                           unsorted_indices=unsorted_indices)  # x: (N, I) packed data
        else:
            name = "RNN" if self.mode.startswith("RNN") else self.mode
            if input.dim() not in (2, 3):
                raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D instead")
            batched = input.dim() == 3
            _check_state_dims(hx, batched)
            if not batched:
                input = input.unsqueeze(0 if self.batch_first else 1)
                hx = None if hx is None else tuple(s.unsqueeze(1) for s in hx)
            _check_input(self, input, expected_dim=3)
            x = input.transpose(0, 1) if self.batch_first else input  # (T, B, I)
            if x.shape[0] == 0:
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN, "
                                   f"got input of shape {tuple(input.shape)}")
            batch = _Batch(x=x, T=x.shape[0], B=x.shape[1], batched=batched)
        sizes = [(self.num_layers * D, batch.B, H_out), (self.num_layers * D, batch.B, self.hidden_size)]
        sizes = sizes[: 2 if lstm else 1]
        if hx is None:
            hx = tuple(torch.zeros(s, dtype=batch.x.dtype, device=batch.x.device) for s in sizes)
        else:
            for k, (s, size) in enumerate(zip(hx, sizes)):
                if tuple(s.shape) != size:
                    which = f"hidden[{k}]" if lstm else "hidden"
                    raise RuntimeError(f"Expected {which} size {size}, got {list(s.shape)}")
            if batch.sorted_indices is not None:
                hx = tuple(s.index_select(1, batch.sorted_indices) for s in hx)
        batch.hx = hx  # (L*D, B, H_out) [, (L*D, B, H)]
        return batch

    def _run_layers(self, batch: _Batch, record: bool, masks: list):
        """Every layer and direction through its engine, dropout between layers; `masks`
        one dict per layer-direction (weight_hh is applied here, the rest by the engine).

        Returns (output (T, B, D*H_out) or packed data (N, D*H_out), final states
        (L*D, B, *), the engines' gate records in the order layer * D + direction).
        """
        D = 2 if self.bidirectional else 1
        layer_in, final, records = batch.x, [[] for _ in batch.hx], []
        for layer in range(self.num_layers):
            x = _pad(layer_in, batch.index, batch.T, batch.B) if batch.packed else layer_in  # (T, B, I_k)
            spec = self._cell_spec(layer)
            outs = []
            for direction in range(D):
                k = layer * D + direction
                weights = self._layer_weights(layer, direction)
                step_masks = dict(masks[k])
                weights["weight_hh"] = opts.drop_weight(weights["weight_hh"], step_masks.pop("weight_hh", None))
                engine = engines.select(self.backend, spec, x, record, step_masks)
                if not getattr(engine, "FILLS_MASKS", False):
                    step_masks = engine_masks.materialize(step_masks)
                if direction == 0:
                    engines.log.debug("%s layer %d: %s engine (backend=%r)", self.mode, layer,
                                      engine.NAME, self.backend)
                out, state_T, gates = engine.run(
                    spec, x, tuple(s[k] for s in batch.hx), weights,
                    batch_sizes=batch.batch_sizes, reverse=direction == 1, record=record,
                    training=self.training, masks=step_masks or None)
                outs.append(out)  # (T, B, H_out)
                for acc, s in zip(final, state_T):
                    acc.append(s)
                records.append(gates)
            layer_out = outs[0] if D == 1 else torch.cat(outs, dim=2)  # (T, B, D*H_out)
            if batch.packed:
                layer_out = _pack(layer_out, batch.index)  # (N, D*H_out), as torch.nn drops out packed data
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_out = F.dropout(layer_out, self.dropout, training=True)
            layer_in = layer_out
        return layer_in, tuple(torch.stack(acc, 0) for acc in final), records

    def _gate_names(self):
        return gate_record.GATE_NAMES[self.mode]


def _check_arguments(mode, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                     proj_size, backend):
    """torch.nn.RNNBase's constructor checks, same order, same exception types."""
    if not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1 or isinstance(dropout, bool):
        raise ValueError("dropout should be a number in range [0, 1] representing the "
                         f"probability of an element being zeroed, got {dropout!r}")
    if dropout > 0 and num_layers == 1:
        warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero "
                      "dropout expects num_layers greater than 1, but got "
                      f"dropout={dropout} and num_layers={num_layers}", stacklevel=4)
    if not isinstance(bias, bool):
        raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
    if not isinstance(batch_first, bool):
        raise TypeError(f"batch_first should be of type bool, got: {type(batch_first).__name__}")
    if not isinstance(input_size, int):
        raise TypeError(f"input_size should be of type int, got: {type(input_size).__name__}")
    if input_size <= 0:
        raise ValueError(f"input_size must be greater than zero, got {input_size}")
    if not isinstance(hidden_size, int):
        raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
    if hidden_size <= 0:
        raise ValueError(f"hidden_size must be greater than zero, got {hidden_size}")
    if num_layers <= 0:
        raise ValueError(f"num_layers must be greater than zero, got {num_layers}")
    if proj_size < 0:
        raise ValueError("proj_size should be a positive integer or zero to disable projections, "
                         f"got {proj_size}")
    if proj_size >= hidden_size:
        raise ValueError(f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} "
                         f"and hidden_size={hidden_size}")
    if mode not in GATE_ROWS:
        raise ValueError(f"Unrecognized RNN mode: {mode}")
    if backend not in engines.BACKENDS:
        raise ValueError(f"backend must be one of {engines.BACKENDS}, got {backend!r}")


def _check_state_dims(hx, batched):
    """Initial states must be 3-D for batched input, 2-D for unbatched (RuntimeError, as torch)."""
    if hx is None:
        return
    want = 3 if batched else 2
    if any(s.dim() != want for s in hx):
        kind = "batched 3-D" if batched else "unbatched 2-D"
        dims = ", ".join(f"{s.dim()}-D" for s in hx)
        raise RuntimeError(f"For {kind} input, the initial states should also be {want}-D "
                           f"but got ({dims}) tensors")


def _check_input(module, x, expected_dim, dtype_error=ValueError):
    """dtype (ValueError), number of dimensions and input size (RuntimeError), as torch.nn."""
    weight = module.weight_ih_l0
    autocast = getattr(torch._C, "_is_any_autocast_enabled", torch.is_autocast_enabled)  # torch.nn's test
    if x.dtype != weight.dtype and not autocast():
        raise dtype_error(f"RNN input dtype ({x.dtype}) does not match weight dtype ({weight.dtype}). "
                         f"Convert input: input.to({weight.dtype}), or convert model: "
                         f"model.to({x.dtype})")
    if x.dim() != expected_dim:
        raise RuntimeError(f"input must have {expected_dim} dimensions, got {x.dim()}")
    if x.size(-1) != module.input_size:
        raise RuntimeError("input.size(-1) must be equal to input_size. "
                           f"Expected {module.input_size}, got {x.size(-1)}")


def _packed_index(batch_sizes, device):
    """Row of each packed element in the padded (T*B) layout: t*B + b for b < batch_sizes[t]."""
    B = batch_sizes[0]
    return torch.cat([torch.arange(n, device=device) + t * B
                      for t, n in enumerate(batch_sizes)])  # (N,)


def _pad(data, index, T, B):
    """Packed data (N, K) -> time-major padded (T, B, K), zeros at padded positions."""
    K = data.shape[-1]
    return data.new_zeros(T * B, K).index_copy(0, index, data).view(T, B, K)


def _pack(x, index):
    """Time-major padded (T, B, K) -> packed data (N, K)."""
    return x.reshape(-1, x.shape[-1]).index_select(0, index)
