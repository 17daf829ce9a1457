"""The models the experiments compare: one recurrent layer of a given cell and a linear readout.

The three cells are `rnn` (tanh), `gru` and `lstm`, all of the same hidden size, built from
`gatelab.nn` (drop-in `torch.nn` replacements, fused CPU engine chosen automatically).
Initialisation is seeded locally with `torch.random.fork_rng`, so building a model never
changes the caller's global random state.
"""

from __future__ import annotations

import torch
from torch import nn

from gatelab import nn as gnn

CELLS = ("rnn", "gru", "lstm")
_MODULES = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}
GATE_ROWS = {"rnn": 1, "gru": 3, "lstm": 4}  # weight rows per hidden unit


def recurrent(cell: str, input_size: int, hidden_size: int, options: dict | None = None) -> nn.Module:
    """One time-major layer of `cell` (rnn is tanh) with torch.nn's default initialisation,
    plus gatelab.nn's keyword-only `options` (the LSTM family, docs/variants.md)."""
    if cell not in _MODULES:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    return getattr(gnn, _MODULES[cell])(input_size, hidden_size, **(options or {}))


def set_forget_bias(lstm: nn.Module, value: float) -> None:
    """Set the initial forget-gate bias of every layer-direction of an LSTM to `value`.

    torch.nn stacks the gate rows i|f|g|o and adds two biases, so the f rows of `bias_ih`
    get `value` and those of `bias_hh` get 0 (their sum is the forget bias). This is the one
    place to swap for `gatelab.nn.LSTM(..., forget_bias=value)` once that option exists.
    """
    H = lstm.hidden_size
    with torch.no_grad():
        for name, param in lstm.named_parameters():
            if name.startswith("bias_ih"):
                param[H : 2 * H] = value
            elif name.startswith("bias_hh"):
                param[H : 2 * H] = 0.0


class SequenceModel(nn.Module):
    """A recurrent layer followed by a linear readout of every step's hidden state.

    Arguments:
        cell: "rnn", "gru" or "lstm".
        input_size: features per step.
        hidden_size: hidden units (the same for every cell in a comparison).
        output_size: readout size (1 for regression, the number of classes otherwise).
        forget_bias: LSTM only; None keeps torch.nn's initialisation.
        options: keyword-only gatelab.nn options of the recurrent layer (layer_norm, remove, ...).
    """

    def __init__(
        self, cell: str, input_size: int, hidden_size: int, output_size: int, forget_bias: float | None = None,
        options: dict | None = None,
    ):
        super().__init__()
        self.cell = cell
        self.rnn = recurrent(cell, input_size, hidden_size, options)
        if forget_bias is not None:
            if cell != "lstm":
                raise ValueError("forget_bias applies to the lstm only")
            set_forget_bias(self.rnn, forget_bias)
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x: (T, B, I) -> (T, B, output_size), or (B, output_size) when last_only."""
        hs = self.rnn(x)[0]  # (T, B, H)
        return self.head(hs[-1] if last_only else hs)


def build(
    cell: str, input_size: int, hidden_size: int, output_size: int, seed: int, forget_bias: float | None = None,
    options: dict | None = None,
) -> SequenceModel:
    """A `SequenceModel` whose initial weights depend only on `seed` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SequenceModel(cell, input_size, hidden_size, output_size, forget_bias, options)


def option_pairs(options: dict | None) -> tuple:
    """gatelab.nn options as sorted (name, value) pairs: hashable, for a frozen recipe
    (a list or set value, such as `remove`, becomes a sorted tuple)."""
    def frozen(value):
        if isinstance(value, (set, frozenset)):
            return tuple(sorted(value))
        return tuple(value) if isinstance(value, list) else value

    return tuple(sorted((k, frozen(v)) for k, v in (options or {}).items()))


def cell_options(cell: str, lstm_options: tuple = (), gru_options: tuple = ()) -> dict:
    """The keyword arguments of gatelab.nn for `cell` from a recipe's option pairs
    (`remove` back to a set); the rnn takes none."""
    pairs = {"lstm": lstm_options, "gru": gru_options}.get(cell, ())
    return {k: (set(v) if k == "remove" else v) for k, v in pairs}


def build_from_recipe(cell: str, input_size: int, output_size: int, seed: int, recipe) -> SequenceModel:
    """`build` with a training recipe's hidden size, LSTM forget bias and cell options.

    `recipe` has `hidden`, `lstm_forget_bias`, `lstm_options` and `gru_options`; a
    `forget_bias` among the LSTM options replaces `lstm_forget_bias`.
    """
    options = cell_options(cell, recipe.lstm_options, recipe.gru_options)
    forget_bias = recipe.lstm_forget_bias if cell == "lstm" and "forget_bias" not in options else None
    return build(cell, input_size, recipe.hidden, output_size, seed=seed, forget_bias=forget_bias, options=options)


def _jsonable(value):
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def module_options(module: nn.Module) -> dict:
    """The options a built gatelab.nn module really holds (those that differ from torch.nn),
    JSON-ready: what the experiments record to show the options reached the model."""
    return {k: _jsonable(v) for k, v in module.options.non_defaults().items()}


def parameter_count(cell: str, input_size: int, hidden_size: int, layers: int = 1, bias: bool = True) -> int:
    """Closed-form parameter count of a unidirectional stack of `cell` layers.

    Each layer holds G gate blocks (rnn 1, gru 3, lstm 4) of a (H, I_l) input matrix, a
    (H, H) recurrent matrix and two bias vectors of H: G·(H·I_l + H·H + 2H), where I_l is
    input_size for the first layer and H for the others.
    """
    G, H = GATE_ROWS[cell], hidden_size
    total = 0
    for layer in range(layers):
        inputs = input_size if layer == 0 else H
        total += G * (H * inputs + H * H + (2 * H if bias else 0))
    return total
