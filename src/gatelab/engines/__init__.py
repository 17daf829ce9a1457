"""Engines run one layer-direction of a recurrent network; `gatelab.nn` does the rest.

The modules in `gatelab.nn` own everything around the recurrence: argument checks,
unbatched and batch_first input, PackedSequence, layers, directions, dropout between
layers and the parameters. For each layer and direction they call one engine:

    out, state_T, gates = engine.run(spec, x, state, weights, batch_sizes=...,
                                     reverse=..., record=..., training=..., masks=...)

Arguments:
    spec: a `CellSpec`, what cell to run.
    x: (T, B, I) time-major input. With `batch_sizes`, row b is a real step at time t
        only when b < batch_sizes[t] (rows sorted by decreasing length, as in a
        PackedSequence); what padded positions hold is unspecified.
    state: LSTM `(h0, c0)` with h0 (B, H_out) and c0 (B, H); GRU and RNN `(h0,)`, (B, H).
        H_out is proj_size when the LSTM has a projection, else H.
    weights: the layer-direction's parameters under their torch.nn names without the
        `_l{k}` / `_reverse` suffix: `weight_ih` (G*H, I), `weight_hh` (G*H, H_out),
        `bias_ih` and `bias_hh` (G*H,) when spec.bias, `weight_hr` (H_out, H) when
        proj_size > 0. G*H rows are stacked like torch.nn: LSTM `i|f|g|o`, GRU `r|z|n`.
        Variants (issue 7) add their own names here.
    batch_sizes: None (every row real at every step) or a list of T non-increasing ints,
        batch_sizes[0] == B.
    reverse: run t = T-1 .. 0. With batch_sizes each row starts from the initial state
        at its own last real step, exactly as torch.nn's reverse direction does.
    record: also return the gates.
    training: the module's training flag.
    masks: None, or the random masks of the stochastic variants, drawn by the module
        (so every engine computes the same thing from the same masks):
        `zoneout_h` (T, B, H_out) and `zoneout_c` (T, B, H): 1 where the unit keeps its
        previous value (h_t = m ⊙ h_{t-1} + (1 - m) ⊙ h̃_t); `recurrent_dropout` (B, H_out):
        the scaled dropout mask that multiplies h_{t-1} before the recurrent product.
        (weight_drop is applied by the module to `weight_hh` before the call.)
        An engine that sets FILLS_MASKS may receive zoneout's masks as engines.masks.Deferred
        (the seed drawn, the values to be filled; the module's own draw on the CPU).

Returns:
    out: (T, B, H_out), zero at padded positions.
    state_T: same structure as `state`; each row's state after its last real step.
    gates: None, or a dict gate name -> (T, B, H), zero at padded positions:
        LSTM `f i g o c`, GRU `r z n`, RNN `h`.

The LSTM family (CellSpec fields; shared definitions for the reference and every engine).
σ is spec.gate_activation, φ is spec.cell_activation, a = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
split into rows i|f|g|o:
    plain:        f = σ(a_f), i = σ(a_i), g = φ(a_g), o = σ(a_o),
                  c_t = f ⊙ c_{t-1} + i ⊙ g, h_t = o ⊙ φ(c_t)
    peephole:     a_f += p_f ⊙ c_{t-1}, a_i += p_i ⊙ c_{t-1}, a_o += p_o ⊙ c_t,
                  weights["weight_ph"] (3, H), rows p_f|p_i|p_o
    layer_norm:   a = LN(x_t W_ih^T; ln_ih_weight, ln_ih_bias) + LN(h_{t-1} W_hh^T; ln_hh_weight, ln_hh_bias)
                      + b_ih + b_hh, each LN over all G*H units of its product, eps = 1e-5;
                  LSTM: h_t = o ⊙ φ(LN(c_t; ln_c_weight, ln_c_bias)), the carried c_t stays un-normalised.
                  GRU (reset after): n = φ(LN_ih_n + b_in + r ⊙ (LN_hh_n + b_hn)).
    coupled_gates: i = 1 - f (the i rows of the weights stay, unused, gradient 0)
    remove:       "forget_gate" f = 1; "input_gate" i = 1; "output_gate" o = 1;
                  "output_activation" h_t = o ⊙ c_t; "candidate_activation" g = a_g
                  (rows of a removed gate stay in the weights with gradient 0; the record shows the constant)
    activations:  sigmoid; hard_sigmoid(x) = clip(x / 6 + 1/2, 0, 1) (torch's hardsigmoid);
                  tanh; softsign(x) = x / (1 + |x|)
    GRU reset_after=False (Cho et al. 2014): n = φ(x W_in^T + b_in + (r ⊙ h_{t-1}) W_hn^T + b_hn)
    zoneout (masks): h_t = m_h ⊙ h_{t-1} + (1 - m_h) ⊙ h̃_t, c_t likewise with m_c; in eval the
                  module passes the constant mask p (the expectation), so eval is deterministic.
    recurrent_dropout (mask d): a = x_t W_ih^T + b_ih + (d ⊙ h_{t-1}) W_hh^T + b_hh, one d per sequence.
    weight_drop:  the module passes weight_hh ⊙ M / (1 - p) (DropConnect), one M per forward call.

An engine module provides `NAME`, `run(...)`, `unsupported(spec, x, record) -> str | None`
(None when it can run the request, else the reason in a few words) and, when it applies
masks, `MASKS`: the names of the masks it accepts; `FILLS_MASKS` = True when it takes
Deferred masks (the module fills them first for any other engine).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

log = logging.getLogger("gatelab.engines")

MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
GATES = {"LSTM": ("f", "i", "g", "o", "c"), "GRU": ("r", "z", "n"), "RNN_TANH": ("h",), "RNN_RELU": ("h",)}
GATE_ROWS = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
ABLATIONS = ("forget_gate", "input_gate", "output_gate", "output_activation", "candidate_activation")

# backend name -> module; "auto" tries these in order.
ENGINES = {
    "cudnn": "gatelab.engines.cudnn",  # torch's own CUDA kernel, for exactly the torch.nn cell on a GPU
    "fused": "gatelab.engines.fused_cpu",  # hand-written BPTT on the CPU
    "eager": "gatelab.engines.eager",  # autograd over the equations, anywhere
}
BACKENDS = ("auto", *ENGINES)


@dataclass(frozen=True)
class CellSpec:
    """What one layer-direction computes. Defaults mean exactly torch.nn's cell."""

    mode: str  # "LSTM" | "GRU" | "RNN_TANH" | "RNN_RELU"
    input_size: int
    hidden_size: int
    proj_size: int = 0  # LSTM only: h_t = W_hr (o_t ⊙ tanh(c_t)), (H_out, H)
    bias: bool = True
    # The LSTM family (issue 7). Every default is torch.nn's cell; an engine that cannot
    # run a field's non-default value says so in unsupported().
    peephole: bool = False  # weights["weight_ph"] (3, H) rows f|i|o: f,i read c_{t-1}, o reads c_t
    layer_norm: bool = False  # weights ln_ih_weight/ln_ih_bias (G*H,), ln_hh_* (G*H,), LSTM ln_c_* (H,)
    coupled_gates: bool = False  # CIFG: i_t = 1 - f_t
    remove: frozenset = frozenset()  # ablations: subset of ABLATIONS
    gate_activation: str = "sigmoid"  # sigmoid | hard_sigmoid
    cell_activation: str = "tanh"  # tanh | softsign | ... (candidate and output activation)
    reset_after: bool = True  # GRU: False = Cho et al. 2014 "reset before"

    @property
    def is_plain(self) -> bool:
        """True when this is exactly the torch.nn cell (no variant field set)."""
        return (not self.peephole and not self.layer_norm and not self.coupled_gates
                and not self.remove and self.gate_activation == "sigmoid"
                and self.cell_activation == "tanh" and self.reset_after)

    @property
    def out_size(self) -> int:
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    @property
    def gates(self) -> tuple[str, ...]:
        return GATES[self.mode]


def _load(name: str):
    try:
        return importlib.import_module(ENGINES[name])
    except ImportError as err:  # an engine whose dependency is missing is simply unavailable
        log.debug("engine %s unavailable: %s", name, err)
        return None


def select(backend: str, spec: CellSpec, x, record: bool, masks: dict | None = None):
    """The engine module that runs `spec` on `x` for `backend` ("auto" or an ENGINES name:
    "cudnn", "fused", "eager").

    An engine declares the masks it applies in its MASKS attribute (none when absent).
    "auto" takes the first engine that supports the request (spec, device, record, masks)
    and logs (at DEBUG, logger `gatelab.engines`) why it passed over the others; a named
    backend that cannot run the request raises ValueError with the reason.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    names = list(ENGINES) if backend == "auto" else [backend]
    for name in names:
        engine = _load(name)
        reason = "not installed" if engine is None else engine.unsupported(spec, x, record)
        if reason is None and masks:
            missing = sorted(set(masks) - set(getattr(engine, "MASKS", ())))
            if missing:
                reason = f"masks {missing} (zoneout / recurrent_dropout) not supported"
        if reason is None:
            return engine
        if backend != "auto":
            raise ValueError(f"backend={name!r} cannot run this request: {reason}")
        log.debug("backend auto: not %s (%s)", name, reason)
    raise ValueError(f"no engine can run {spec} on {getattr(x, 'device', '?')}")
