"""Argument checks shared by the reference cells: one clear ValueError per bad input.

Every message names the argument, what was expected and what was received, e.g.
`h0: expected shape (2, 5), got (2, 4)`.
"""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_input(x) -> np.ndarray:
    """x must be a float32/float64 array of shape (T, B, I) with T, B, I >= 1."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"x: expected a numpy array of shape (T, B, I), got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"x: expected shape (T, B, I) (3 dimensions), got {x.shape}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"x: expected dtype float32 or float64, got {x.dtype}")
    if min(x.shape) < 1:
        raise ValueError(f"x: expected shape (T, B, I) with every size >= 1, got {x.shape}")
    return x


def check_array(name: str, value, shape: tuple, dtype) -> np.ndarray:
    """`value` must be a numpy array of exactly `shape` and `dtype`."""
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array of shape {shape}, got {type(value).__name__}")
    if value.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {value.shape}")
    if value.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype)} (the dtype of x), got {value.dtype}")
    return value


def check_params(params: dict, expected: dict, dtype, optional: tuple = ()) -> None:
    """Every key of `expected` (name -> shape) is in `params` with that shape and dtype.

    Keys listed in `optional` may be absent (e.g. the biases of a bias=False layer);
    any key that is neither expected nor optional is an error, so typos do not pass silently.
    """
    if not isinstance(params, dict):
        raise ValueError(f"params: expected a dict of numpy arrays, got {type(params).__name__}")
    for name, shape in expected.items():
        if name not in params:
            if name in optional:
                continue
            raise ValueError(f"params: missing key {name!r} (expected shape {tuple(shape)})")
        check_array(f"params[{name!r}]", params[name], shape, dtype)
    unknown = sorted(set(params) - set(expected))
    if unknown:
        raise ValueError(f"params: unexpected keys {unknown}; expected keys {sorted(expected)}")


def check_state(name: str, value, shape: tuple, dtype) -> np.ndarray:
    """An initial state or output gradient: zeros when None, else checked."""
    if value is None:
        return np.zeros(shape, dtype=dtype)
    return check_array(name, value, shape, dtype)


def sigmoid(a: np.ndarray) -> np.ndarray:
    """σ(a) = 1 / (1 + exp(-a)), computed without overflow for large |a|."""
    out = np.empty_like(a)
    pos = a >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-a[pos]))
    e = np.exp(a[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def uniform_init(rng: np.random.Generator, shape: tuple, hidden_size: int, dtype) -> np.ndarray:
    """torch.nn's init: U(-√k, √k) with k = 1 / hidden_size."""
    bound = 1.0 / np.sqrt(hidden_size)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def check_sizes(input_size, hidden_size) -> None:
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
