"""The gate and cell activations of the LSTM family, each with its derivative.

Every derivative is written in terms of the pre-activation `a` (hard_sigmoid and softsign
cannot be recovered from their output alone):

    sigmoid(a)      = 1 / (1 + e^(−a))               sigmoid'(a) = σ(a)(1 − σ(a))
    hard_sigmoid(a) = clip(a / 6 + 1/2, 0, 1)        hard_sigmoid'(a) = 1/6 where −3 < a < 3, else 0
    tanh(a)                                          tanh'(a) = 1 − tanh²(a)
    softsign(a)     = a / (1 + |a|)                  softsign'(a) = 1 / (1 + |a|)²

hard_sigmoid is torch.nn.functional.hardsigmoid (gradient 0 at a = ±3 exactly, as torch).
"""

from __future__ import annotations

import numpy as np

from ._checks import sigmoid

GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid")
CELL_ACTIVATIONS = ("tanh", "softsign")


def _hard_sigmoid(a):
    return np.clip(a / 6.0 + 0.5, 0.0, 1.0)


def _softsign(a):
    return a / (1.0 + np.abs(a))


FUNCTIONS = {
    "sigmoid": (sigmoid, lambda a: sigmoid(a) * (1.0 - sigmoid(a))),
    "hard_sigmoid": (_hard_sigmoid, lambda a: (((a > -3.0) & (a < 3.0)) / 6.0).astype(a.dtype)),
    "tanh": (np.tanh, lambda a: 1.0 - np.tanh(a) ** 2),
    "softsign": (_softsign, lambda a: 1.0 / (1.0 + np.abs(a)) ** 2),
}


def activation(name: str, allowed: tuple, argument: str):
    """(φ, φ') for `name`, a ValueError naming `argument` when it is not in `allowed`."""
    if name not in allowed:
        raise ValueError(f"{argument}: expected one of {allowed}, got {name!r}")
    return FUNCTIONS[name]
