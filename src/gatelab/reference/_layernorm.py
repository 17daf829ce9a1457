"""Layer normalisation over the last axis (Ba et al. 2016), forward and backward.

    LN(v; w, b) = w ⊙ v̂ + b,   v̂ = (v − μ) / √(σ² + ε),   μ, σ² the mean and (biased)
    variance of v over its last axis, ε = 1e-5 (torch.nn.LayerNorm's default).
"""

from __future__ import annotations

import numpy as np

EPS = 1e-5


def layer_norm(v: np.ndarray, w: np.ndarray, b: np.ndarray):
    """Return (LN(v), (v̂, 1/√(σ² + ε))) for v (B, N), w and b (N,)."""
    mu = v.mean(axis=-1, keepdims=True)  # (B, 1)
    rstd = 1.0 / np.sqrt(v.var(axis=-1, keepdims=True) + EPS)  # (B, 1)
    v_hat = (v - mu) * rstd  # (B, N)
    return v_hat * w + b, (v_hat, rstd)


def layer_norm_backward(dy: np.ndarray, saved: tuple, w: np.ndarray):
    """Return (dv, dw, db) for dy (B, N) = ∂L/∂LN(v).

    dv = (1/σ̃)·(dv̂ − mean(dv̂) − v̂ ⊙ mean(dv̂ ⊙ v̂)) with dv̂ = dy ⊙ w, σ̃ = √(σ² + ε):
    the derivative of v̂ through the mean and the variance it was normalised by.
    """
    v_hat, rstd = saved
    dw = (dy * v_hat).sum(axis=0)  # ∂(w ⊙ v̂ + b)/∂w = v̂
    db = dy.sum(axis=0)  # ∂/∂b = 1
    dv_hat = dy * w  # ∂/∂v̂ = w
    dv = rstd * (dv_hat - dv_hat.mean(axis=-1, keepdims=True)
                 - v_hat * (dv_hat * v_hat).mean(axis=-1, keepdims=True))
    return dv, dw, db
