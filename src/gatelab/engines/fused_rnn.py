"""The fused plain RNN (tanh or ReLU): one layer-direction with hand-written BPTT.

    h_t = φ(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),   φ = tanh or relu

    xa = X W_ih^T for all steps is one GEMM; per step (forward_loop, in numba) one GEMM
    and one pass that adds b_ih + b_hh and applies φ.
    Saved for backward: h only (φ' is read off h: 1 - h² for tanh, [h > 0] for relu).

Backward: δa_t = (δout_t + δh_t) ⊙ φ'(h_t), δh_{t-1} = δa_t W_hh; then over all steps
δW_ih = δA^T X, δW_hh = δA^T H_prev, δb = Σ δA, δX = δA W_ih.
"""

from __future__ import annotations

import torch
from numba import njit
from torch.autograd.function import once_differentiable

from gatelab.engines._kernels import JIT, one, tanh
from gatelab.engines._kernels_blas import gemm
from gatelab.engines.fused_common import (
    add_rows_sum, arr, mm, needs_grad, numba_loop, previous_rows, steps_array, tensor, times_previous)
from gatelab.engines import workspace


@njit(**JIT)
def forward_step(t, n, relu, xa, hw, bias, h_state, out):
    """h_t = φ(xa[t] + hw + bias) for rows [:n]: xa (T, B, H), hw (B, H), bias (H,),
    h_state (B, H), out (T, B, H)."""
    H = h_state.shape[1]
    for b in range(n):  # 1-D row views keep the inner loop simple enough to vectorise
        xa_, hw_, h_, out_ = xa[t, b], hw[b], h_state[b], out[t, b]  # (H,)
        if relu:
            for j in range(H):
                a = xa_[j] + hw_[j] + bias[j]
                h = max(a, a - a)
                out_[j] = h
                h_[j] = h
        else:
            for j in range(H):
                h = tanh(xa_[j] + hw_[j] + bias[j])
                out_[j] = h
                h_[j] = h


@njit(**JIT)
def backward_step(t, n, relu, d_out, d_rec, dh_state, out, da):
    """δa_t = (δout_t + δrecord_t + δh_t) ⊙ φ'(h_t) for rows [:n].

    d_out (T, B, H); d_rec (Tg, B, H) δ of the recorded h (Tg = 0 when none);
    dh_state (B, H) carried δh; out (T, B, H) saved h; da (T, B, H) out.
    """
    H = dh_state.shape[1]
    has_dg = d_rec.shape[0] > 0
    for b in range(n):  # 1-D row views keep the inner loops simple enough to vectorise
        h_, do_, dh_, da_ = out[t, b], d_out[t, b], dh_state[b], da[t, b]  # (H,)
        if has_dg:
            dr_ = d_rec[t, b]  # (H,)
            for j in range(H):
                dh_[j] += dr_[j]
        if relu:
            for j in range(H):
                dh = do_[j] + dh_[j]
                da_[j] = dh if h_[j] > h_[j] - h_[j] else dh - dh
        else:
            for j in range(H):
                h = h_[j]
                da_[j] = (do_[j] + dh_[j]) * (one(h) - h * h)


@njit(**JIT)
def forward_loop(steps, relu, xa, w_hh, bias, h_state, hw, out):
    """The forward time loop: per step hw = h_{t-1} W_hh^T (GEMM) and the pass."""
    for s in range(steps.shape[0]):
        t, n = steps[s, 0], steps[s, 1]
        gemm(h_state[:n], w_hh, hw[:n], True, 0.0)  # (n, H) x (H, H)^T
        forward_step(t, n, relu, xa, hw, bias, h_state, out)


@njit(**JIT)
def backward_loop(steps, relu, d_out, d_rec, dh_state, out, da, w_hh):
    """The backward time loop, last step first: the pass, then δh_{t-1} = δa W_hh."""
    for s in range(steps.shape[0] - 1, -1, -1):
        t, n = steps[s, 0], steps[s, 1]
        backward_step(t, n, relu, d_out, d_rec, dh_state, out, da)
        gemm(da[t, :n], w_hh, dh_state[:n], False, 0.0)  # (n, H) x (H, H)


def _forward(x, h0, w_ih, w_hh, bias, steps, relu):
    """The forward pass on arrays: out (T, B, H) and h_T."""
    T, B, _ = x.shape  # (T, B, I)
    H = h0.shape[1]
    dt = x.dtype
    packed = any(s.n < B for s in steps)
    xa = mm(x.reshape(T * B, x.shape[2]), w_ih.T, workspace.empty((T * B, H), dt))  # (T*B, H)
    xa = xa.reshape(T, B, H)  # (T, B, H)
    bias = workspace.zeros(H, dt) if bias is None else bias  # (H,), added in the pass
    out = (workspace.zeros if packed else workspace.empty)((T, B, H), dt)  # (T, B, H)
    h_state = workspace.copy(h0)  # (B, H)
    hw = workspace.empty((B, H), dt)  # (B, H)
    if numba_loop():
        forward_loop(steps_array(steps), relu, xa, w_hh, bias, h_state, hw, out)
        return out, h_state
    for t, n, _, _ in steps:
        mm(h_state[:n], w_hh.T, hw[:n])  # (n, H) x (H, H)
        forward_step(t, n, relu, xa, hw, bias, h_state, out)
    return out, h_state


class RNNFunction(torch.autograd.Function):
    """One RNN layer-direction; outputs out, h_T and, with record, a copy of out as "h"."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, steps, relu, record):
        xs, h0s, w_ihs, w_hhs = arr(x), arr(h0), arr(w_ih), arr(w_hh)
        bias = None if b_ih is None else arr(b_ih) + arr(b_hh)  # (H,)
        out, h_T = _forward(xs, h0s, w_ihs, w_hhs, bias, steps, relu)
        ctx.set_materialize_grads(False)
        ctx.arrays = (xs, h0s, w_ihs, w_hhs, out)
        ctx.steps, ctx.relu, ctx.has_bias = steps, relu, b_ih is not None
        outs = (tensor(out), tensor(h_T))
        return outs + (tensor(out.copy()),) if record else outs

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT, *d_rec):
        xs, h0s, w_ihs, w_hhs, out = ctx.arrays
        steps = ctx.steps
        T, B, _ = xs.shape  # (T, B, I)
        H = h0s.shape[1]
        dt = xs.dtype
        d_out = workspace.zeros((T, B, H), dt) if d_out is None else arr(d_out)  # (T, B, H)
        dh_state = workspace.zeros((B, H), dt) if d_hT is None else workspace.copy(arr(d_hT))  # (B, H)
        d_rec = arr(d_rec[0]) if d_rec and d_rec[0] is not None else workspace.zeros((0, B, H), dt)
        packed = any(s.n < B for s in steps)
        da = (workspace.zeros if packed else workspace.empty)((T, B, H), dt)  # (T, B, H)
        if numba_loop():
            backward_loop(steps_array(steps), ctx.relu, d_out, d_rec, dh_state, out, da, w_hhs)
        else:
            for t, n, _, _ in reversed(steps):
                backward_step(t, n, ctx.relu, d_out, d_rec, dh_state, out, da)
                mm(da[t, :n], w_hhs, dh_state[:n])  # (n, H) x (H, H)
        need = ctx.needs_input_grad
        da2 = da.reshape(T * B, H)  # (T*B, H)
        dx = mm(da2, w_ihs, workspace.empty((T * B, xs.shape[2]), dt)).reshape(xs.shape) if need[0] else None
        dw_ih = mm(da2.T, xs.reshape(T * B, xs.shape[2]), workspace.empty_like(w_ihs)) if need[2] else None
        dw_hh = (times_previous(da2, previous_rows(out, h0s, steps), workspace.empty_like(w_hhs))
                 if need[3] else None)
        db = add_rows_sum(da) if ctx.has_bias else None  # (H,)
        grads = (dx, dh_state, dw_ih, dw_hh, db, None if db is None else db.copy())
        return tuple(None if g is None else tensor(g) for g in grads) + (None, None, None)


def run(spec, x, state, weights, steps, record):
    """One RNN layer-direction; see gatelab.engines for the contract."""
    (h0,) = state
    relu = spec.mode == "RNN_RELU"
    w_ih, w_hh = weights["weight_ih"], weights["weight_hh"]
    b_ih, b_hh = (weights["bias_ih"], weights["bias_hh"]) if spec.bias else (None, None)
    inputs = (x, h0, w_ih, w_hh, b_ih, b_hh)
    if needs_grad(*inputs):
        out, h_T, *rec = RNNFunction.apply(*inputs, steps, relu, record)
    else:
        bias = None if b_ih is None else arr(b_ih) + arr(b_hh)
        out, h_T = _forward(arr(x), arr(h0), arr(w_ih), arr(w_hh), bias, steps, relu)
        out, h_T = tensor(out), tensor(h_T)
        rec = [out.clone()] if record else []
    return out, (h_T,), ({"h": rec[0]} if record else None)
