"""The fused GRU (torch.nn's "reset after" form): one layer-direction with hand-written BPTT.

Forward, with rows r|z|n of xa = x_t W_ih^T + b_ih and hw = h_{t-1} W_hh^T:

    r = σ(xa_r + hw_r + b_hr)     z = σ(xa_z + hw_z + b_hz)
    n = tanh(xa_n + r ⊙ (hw_n + b_hn))          h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

    xa = X W_ih^T for all steps is one GEMM; per step (forward_loop, all in numba) one
    GEMM for hw and one pass (forward_step) that adds the biases (b_ih + [b_hr, b_hz, 0],
    and b_hn inside r ⊙ (.)). Saved for backward: r, z, n, hn = hw_n + b_hn, each
    (T, B, H), and h: 5·T·B·H numbers.

Backward, per step from the last:

    δh = δout_t + δh_t (carried)
    δn = δh ⊙ (1 - z)   δz = δh ⊙ (h_{t-1} - n)   δa_n = δn ⊙ (1 - n²)   δr = δa_n ⊙ hn
    δxa = [δr r(1-r) | δz z(1-z) | δa_n]      δhw = [δr r(1-r) | δz z(1-z) | δa_n ⊙ r]
    δh_{t-1} = δh ⊙ z + δhw W_hh

    then over all steps: δW_ih = δXA^T X, δW_hh = δHW^T H_prev, δb_ih = Σ δXA,
    δb_hh = Σ δHW, δX = δXA W_ih.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch.autograd.function import once_differentiable

from gatelab.engines._kernels import JIT, one, sigmoid, tanh
from gatelab.engines._kernels_gemm import packed_weights, scratch, step_gemm
from gatelab.engines.fused_common import (
    add_rows_sum, arr, mm, needs_grad, numba_loop, previous_rows, steps_array, tensor, times_previous)
from gatelab.engines import workspace


@njit(**JIT)
def forward_step(t, n, ta, tx, xa, hw, bias, b_hn, h_state, gr, gz, gn, hn_seq, out, u0, u1):
    """One step's gate pass for rows [:n] and units [u0, u1) (all: 0, H).

    xa (Tx, B, 3G) x W_ih^T, this step's at row tx (t, or t's place in a units-split
    thread's chunk: fused_units.project_chunk); hw (B, 3G) h_{t-1} W_hh^T; bias (3G,)
    b_ih + [b_hr, b_hz, 0]; b_hn (G,): gate blocks r z n of width G = H (unit u at column
    gH + u), or G = u1 - u0 when they hold units [u0, u1) only (one thread's own buffers,
    fused_gru_units);
    h_state (B, H) h_{t-1} in, h_t out; gr gz gn hn_seq (Ta, B, H) written at ta;
    out (T, B, H) written at t.
    """
    H = h_state.shape[1]
    U = u1 - u0
    G = hw.shape[1] // 3  # gate block width of xa, hw, bias and b_hn
    k0 = u0 if G == H else 0  # my units' first column in each block
    k1 = k0 + U
    for b in range(n):  # 1-D row views from u0 keep the inner loop simple enough to vectorise
        x_r, x_z, x_n = xa[tx, b, k0:k1], xa[tx, b, G + k0:G + k1], xa[tx, b, 2 * G + k0:2 * G + k1]  # (U,)
        h_r, h_z, h_n = hw[b, k0:k1], hw[b, G + k0:G + k1], hw[b, 2 * G + k0:2 * G + k1]  # (U,)
        b_r, b_z, b_n = bias[k0:k1], bias[G + k0:G + k1], bias[2 * G + k0:2 * G + k1]  # (U,)
        b_hn_ = b_hn[k0:k1]  # (U,)
        h_, r_, z_, n_ = h_state[b, u0:u1], gr[ta, b, u0:u1], gz[ta, b, u0:u1], gn[ta, b, u0:u1]  # (U,)
        hn_, out_ = hn_seq[ta, b, u0:u1], out[t, b, u0:u1]  # (U,)
        # two loops, r and z first (one loop with all seventeen arrays ran 1.2x slower: 4.4
        # against 3.6 ns a unit, B = 64, U = 128, float32)
        for j in range(U):
            r_[j] = sigmoid(x_r[j] + h_r[j] + b_r[j])
            z_[j] = sigmoid(x_z[j] + h_z[j] + b_z[j])
            hn_[j] = h_n[j] + b_hn_[j]
        for j in range(U):
            z = z_[j]
            nn = tanh(x_n[j] + b_n[j] + r_[j] * hn_[j])
            h = (one(z) - z) * nn + z * h_[j]
            n_[j] = nn
            out_[j] = h
            h_[j] = h


@njit(**JIT)
def backward_step(t, n, tp, n_prev, d_out, dh_state, gr, gz, gn, hn_seq, out, h0, dgates,
                  dxa, dhw, u0, u1):
    """One step of BPTT for rows [:n] and units [u0, u1) (all: 0, H).

    d_out (T, B, H); dh_state (B, H) δh carried in, δh ⊙ z out (the GEMM adds δhw W_hh);
    gr gz gn hn_seq out (T, B, H) saved; h0 (B, H) initial state of rows [n_prev, n);
    dgates (3, Tg, B, H) δ of the recorded r z n (Tg = 0 when none);
    dxa, dhw (T, B, 3H) out.
    """
    H = dh_state.shape[1]
    U = u1 - u0
    has_dg = dgates.shape[1] > 0
    for b in range(n):  # 1-D row views from u0 keep the inner loops simple enough to vectorise
        r_, z_, n_, hn_ = gr[t, b, u0:u1], gz[t, b, u0:u1], gn[t, b, u0:u1], hn_seq[t, b, u0:u1]  # (U,)
        do_, dh_ = d_out[t, b, u0:u1], dh_state[b, u0:u1]  # (U,)
        hp_ = out[tp, b, u0:u1] if b < n_prev else h0[b, u0:u1]  # (U,) h_{t-1}
        dx_r, dx_z, dx_n = dxa[t, b, u0:u1], dxa[t, b, H + u0:H + u1], dxa[t, b, 2 * H + u0:2 * H + u1]
        dw_r, dw_z, dw_n = dhw[t, b, u0:u1], dhw[t, b, H + u0:H + u1], dhw[t, b, 2 * H + u0:2 * H + u1]
        for j in range(U):
            r, z, nn, hn = r_[j], z_[j], n_[j], hn_[j]
            dh = do_[j] + dh_[j]
            dan = dh * (one(z) - z) * (one(nn) - nn * nn)  # δa_n = δh (1 - z)(1 - n²)
            dar = dan * hn * r * (one(r) - r)  # δa_r = δa_n hn r (1 - r)
            daz = dh * (hp_[j] - nn) * z * (one(z) - z)  # δa_z = δh (h_{t-1} - n) z (1 - z)
            dx_r[j] = dar
            dx_z[j] = daz
            dx_n[j] = dan
            dw_r[j] = dar
            dw_z[j] = daz
            dw_n[j] = dan * r
            dh_[j] = dh * z
        if has_dg:  # the recorded r z n: δn joins before tanh', δr after, δz after
            dgr, dgz, dgn = dgates[0, t, b, u0:u1], dgates[1, t, b, u0:u1], dgates[2, t, b, u0:u1]  # (U,)
            for j in range(U):
                r, z, nn, hn = r_[j], z_[j], n_[j], hn_[j]
                dan = dgn[j] * (one(nn) - nn * nn)
                dar = (dan * hn + dgr[j]) * r * (one(r) - r)
                dx_r[j] += dar
                dx_z[j] += dgz[j] * z * (one(z) - z)
                dx_n[j] += dan
                dw_r[j] += dar
                dw_z[j] += dgz[j] * z * (one(z) - z)
                dw_n[j] += dan * r


@njit(**JIT)
def forward_loop(steps, full, xa, w_hh, bp_hh, tmp, bias, b_hn, h_state, hw, gr, gz, gn, hn_seq, out):
    """The forward time loop: per step hw = h_{t-1} W_hh^T (GEMM) and the gate pass.
    steps (S, 4) rows (t, n, tp, n_prev); w_hh (3H, H), used transposed; the rest as in
    forward_step."""
    for s in range(steps.shape[0]):
        t, n = steps[s, 0], steps[s, 1]
        step_gemm(h_state[:n], w_hh, bp_hh, hw[:n], True, 0.0, tmp)  # (n, H) x (3H, H)^T
        forward_step(t, n, t if full else 0, t, xa, hw, bias, b_hn, h_state, gr, gz, gn, hn_seq,
                     out, 0, h_state.shape[1])


@njit(**JIT)
def backward_loop(steps, d_out, dh_state, gr, gz, gn, hn_seq, out, h0, dgates, dxa, dhw,
                  w_hh, bp, tmp):
    """The backward time loop, last step first: the BPTT pass leaves δh ⊙ z in dh_state,
    then the GEMM adds δhw W_hh (beta = 1)."""
    for s in range(steps.shape[0] - 1, -1, -1):
        t, n, tp, n_prev = steps[s, 0], steps[s, 1], steps[s, 2], steps[s, 3]
        backward_step(t, n, tp, n_prev, d_out, dh_state, gr, gz, gn, hn_seq, out, h0, dgates,
                      dxa, dhw, 0, dh_state.shape[1])
        step_gemm(dhw[t, :n], w_hh, bp, dh_state[:n], False, 1.0, tmp)  # += (n, 3H) x (3H, H)


def _forward(x, h0, w_ih, w_hh, b_ih, b_hh, steps, keep, record, units=1):
    """The forward pass on arrays: out (T, B, H), h_T and the saved (r, z, n, hn).
    `units` > 1: each step's units split between that many threads (fused_gru_units;
    decided by fused_units.unit_threads)."""
    T, B, _ = x.shape  # (T, B, I)
    H = h0.shape[1]
    dt = x.dtype
    packed = any(s.n < B for s in steps)
    bias, b_hn = workspace.zeros(3 * H, dt), workspace.zeros(H, dt)  # (3H,), (H,)
    if b_ih is not None:
        bias = b_ih.copy()  # (3H,)
        bias[:2 * H] += b_hh[:2 * H]  # b_hr, b_hz join the input bias; b_hn stays inside r ⊙ (.)
        b_hn = b_hh[2 * H:]
    full = keep or record
    Ta = T if full else 1
    zeros_or_empty = workspace.zeros if packed else workspace.empty
    saved = tuple(zeros_or_empty((Ta, B, H), dt) for _ in range(4))  # r z n hn, (Ta, B, H)
    out = zeros_or_empty((T, B, H), dt)  # (T, B, H)
    h_state = workspace.copy(h0)  # (B, H)
    if units > 1:  # the threads also share the input projection
        from gatelab.engines import fused_gru_units

        fused_gru_units.forward(units, steps_array(steps), full, x, w_ih, w_hh, bias, b_hn, h_state,
                                saved, out)
        return out, h_state, (saved if full else None)
    xa = mm(x.reshape(T * B, x.shape[2]), w_ih.T, workspace.empty((T * B, 3 * H), dt))  # (T*B, 3H)
    xa = xa.reshape(T, B, 3 * H)  # (T, B, 3H)
    hw = workspace.empty((B, 3 * H), dt)  # (B, 3H)
    if numba_loop():
        bp = packed_weights(w_hh, True, len(steps), B)
        forward_loop(steps_array(steps), full, xa, w_hh, bp, scratch(dt), bias, b_hn, h_state, hw, *saved, out)
        return out, h_state, (saved if full else None)
    for t, n, _, _ in steps:
        mm(h_state[:n], w_hh.T, hw[:n])  # (n, H) x (H, 3H)
        forward_step(t, n, t if full else 0, t, xa, hw, bias, b_hn, h_state, *saved, out, 0, H)
    return out, h_state, (saved if full else None)


class GRUFunction(torch.autograd.Function):
    """One GRU layer-direction; outputs out, h_T and, with record, the gates r z n."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, steps, record, units):
        xs, h0s, w_ihs, w_hhs = arr(x), arr(h0), arr(w_ih), arr(w_hh)
        out, h_T, saved = _forward(xs, h0s, w_ihs, w_hhs, arr(b_ih), arr(b_hh), steps,
                                   keep=True, record=record, units=units)
        ctx.set_materialize_grads(False)
        ctx.arrays = (xs, h0s, w_ihs, w_hhs, out, saved)
        ctx.steps, ctx.has_bias, ctx.units = steps, b_ih is not None, units
        outs = (tensor(out), tensor(h_T))
        if record:
            outs += tuple(tensor(a) for a in saved[:3])
        return outs

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT, *d_gates):
        xs, h0s, w_ihs, w_hhs, out, saved = ctx.arrays
        steps = ctx.steps
        T, B, _ = xs.shape  # (T, B, I)
        H = h0s.shape[1]
        dt = xs.dtype
        d_out = workspace.zeros((T, B, H), dt) if d_out is None else arr(d_out)  # (T, B, H)
        dh_state = workspace.zeros((B, H), dt) if d_hT is None else workspace.copy(arr(d_hT))  # (B, H)
        dgates = workspace.zeros((3, 0, B, H), dt)  # (3, 0, B, H): none
        if d_gates and any(g is not None for g in d_gates):
            dgates = np.stack([workspace.zeros((T, B, H), dt) if g is None else arr(g)
                               for g in d_gates])  # (3, T, B, H) r z n
        packed = any(s.n < B for s in steps)
        dxa = (workspace.zeros if packed else workspace.empty)((T, B, 3 * H), dt)  # (T, B, 3H)
        dhw = (workspace.zeros if packed else workspace.empty)((T, B, 3 * H), dt)  # (T, B, 3H)
        need = ctx.needs_input_grad
        if ctx.units > 1:  # the threads also share the GEMMs after
            from gatelab.engines import fused_gru_units

            h_prev = previous_rows(out, h0s, steps) if need[3] else None
            dx, dw_ih, dw_hh, db_ih, db_hh = fused_gru_units.backward(
                ctx.units, steps_array(steps), d_out, dh_state, saved, out, h0s, dgates, dxa, dhw, xs,
                h_prev, w_ihs, w_hhs, (need[0], need[2], need[3], ctx.has_bias))
        else:
            if numba_loop():
                backward_loop(steps_array(steps), d_out, dh_state, *saved, out, h0s, dgates, dxa,
                              dhw, w_hhs, packed_weights(w_hhs, False, len(steps), B), scratch(dt))
            else:
                tmp = workspace.empty((B, H), dt)  # (B, H)
                for t, n, tp, n_prev in reversed(steps):
                    backward_step(t, n, tp, n_prev, d_out, dh_state, *saved, out, h0s, dgates,
                                  dxa, dhw, 0, H)
                    mm(dhw[t, :n], w_hhs, tmp[:n])  # (n, 3H) x (3H, H)
                    np.add(dh_state[:n], tmp[:n], out=dh_state[:n])
            dxa2, dhw2 = dxa.reshape(T * B, 3 * H), dhw.reshape(T * B, 3 * H)  # (T*B, 3H)
            dx = mm(dxa2, w_ihs, workspace.empty((T * B, xs.shape[2]), dt)).reshape(xs.shape) if need[0] else None
            dw_ih = mm(dxa2.T, xs.reshape(T * B, xs.shape[2]), workspace.empty_like(w_ihs)) if need[2] else None
            dw_hh = (times_previous(dhw2, previous_rows(out, h0s, steps), workspace.empty_like(w_hhs))
                     if need[3] else None)
            db_ih = add_rows_sum(dxa) if ctx.has_bias else None  # (3H,)
            db_hh = add_rows_sum(dhw) if ctx.has_bias else None  # (3H,)
        grads = (dx, dh_state, dw_ih, dw_hh, db_ih, db_hh)
        return tuple(None if g is None else tensor(g) for g in grads) + (None, None, None)


def run(spec, x, state, weights, steps, record, units=1):
    """One GRU layer-direction; see gatelab.engines for the contract. `units` > 1: each
    step's units split between that many threads (fused_gru_units)."""
    (h0,) = state
    w_ih, w_hh = weights["weight_ih"], weights["weight_hh"]
    b_ih, b_hh = (weights["bias_ih"], weights["bias_hh"]) if spec.bias else (None, None)
    inputs = (x, h0, w_ih, w_hh, b_ih, b_hh)
    if needs_grad(*inputs):
        out, h_T, *rec = GRUFunction.apply(*inputs, steps, record, units)
    else:  # inference: nothing saved, gates kept only when recorded
        out, h_T, saved = _forward(arr(x), arr(h0), arr(w_ih), arr(w_hh), arr(b_ih),
                                   arr(b_hh), steps, keep=False, record=record, units=units)
        out, h_T = tensor(out), tensor(h_T)
        rec = [tensor(a) for a in saved[:3]] if record else []
    gates = dict(zip(("r", "z", "n"), rec)) if record else None
    return out, (h_T,), gates
