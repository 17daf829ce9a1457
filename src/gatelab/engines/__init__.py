"""Engines run one layer-direction of a recurrent network; `gatelab.nn` does the rest.

The modules in `gatelab.nn` own everything around the recurrence: argument checks,
unbatched and batch_first input, PackedSequence, layers, directions, dropout between
layers and the parameters. For each layer and direction they call one engine:

    out, state_T, gates = engine.run(spec, x, state, weights,
                                     batch_sizes=..., reverse=..., record=..., training=...)

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
    training: the module's training flag (for the stochastic variants).

Returns:
    out: (T, B, H_out), zero at padded positions.
    state_T: same structure as `state`; each row's state after its last real step.
    gates: None, or a dict gate name -> (T, B, H), zero at padded positions:
        LSTM `f i g o c`, GRU `r z n`, RNN `h`.

An engine module provides `NAME`, `run(...)` and `unsupported(spec, x, record) -> str | None`
(None when it can run the request, else the reason in a few words).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

log = logging.getLogger("gatelab.engines")

MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
GATES = {"LSTM": ("f", "i", "g", "o", "c"), "GRU": ("r", "z", "n"), "RNN_TANH": ("h",), "RNN_RELU": ("h",)}
GATE_ROWS = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}

# backend name -> module; "auto" tries these in order.
ENGINES = {"fused": "gatelab.engines.fused_cpu", "eager": "gatelab.engines.eager"}
BACKENDS = ("auto", *ENGINES)


@dataclass(frozen=True)
class CellSpec:
    """What one layer-direction computes. Defaults mean exactly torch.nn's cell."""

    mode: str  # "LSTM" | "GRU" | "RNN_TANH" | "RNN_RELU"
    input_size: int
    hidden_size: int
    proj_size: int = 0  # LSTM only: h_t = W_hr (o_t ⊙ tanh(c_t)), (H_out, H)
    bias: bool = True

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


def select(backend: str, spec: CellSpec, x, record: bool):
    """The engine module that runs `spec` on `x` for `backend` ("auto", "fused", "eager").

    "auto" takes the first engine that supports the request and logs (at DEBUG, logger
    `gatelab.engines`) why it passed over the others; a named backend that cannot run
    the request raises ValueError with the reason.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    names = list(ENGINES) if backend == "auto" else [backend]
    for name in names:
        engine = _load(name)
        reason = "not installed" if engine is None else engine.unsupported(spec, x, record)
        if reason is None:
            return engine
        if backend != "auto":
            raise ValueError(f"backend={name!r} cannot run this request: {reason}")
        log.debug("backend auto: not %s (%s)", name, reason)
    raise ValueError(f"no engine can run {spec} on {getattr(x, 'device', '?')}")
