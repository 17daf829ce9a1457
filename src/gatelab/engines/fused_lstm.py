"""The fused LSTM: one layer-direction as a `torch.autograd.Function` with hand-written BPTT.

Forward, with a = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh split into rows i|f|g|o:

    i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g        m_t = o ⊙ tanh(c_t)        h_t = m_t  (or m_t W_hr^T)

    1. xa = X W_ih^T for all steps: one GEMM (T*B, I) x (I, 4H).
    2. per step (forward_loop, all in numba): hw = h_{t-1} W_hh^T, one GEMM; then one
       pass (forward_step) computes the gates, c_t and m_t from xa[t] + hw + b_ih + b_hh;
       with a projection one more GEMM, h_t = m_t W_hr^T.
    Saved for backward: the gates i f g o and c, each (T, B, H), and h (the output):
    6·T·B·H numbers. Without autograd nothing is saved and the gates are not written.

Backward (δ = ∂loss/∂·), per step from the last:

    δh = δout_t + δh_t (carried)       [projection: δm = δh W_hr]
    δo = δm ⊙ tanh(c_t)               δc = δc_t (carried) + δm ⊙ o ⊙ (1 - tanh²(c_t))
    δi = δc ⊙ g    δg = δc ⊙ i    δf = δc ⊙ c_{t-1}    δc_{t-1} = δc ⊙ f
    δa = [δi i(1-i) | δf f(1-f) | δg (1-g²) | δo o(1-o)]      δh_{t-1} = δa W_hh

    then for all steps at once: δW_ih = δA^T X, δW_hh = δA^T H_prev, δb = Σ δA,
    δX = δA W_ih (GEMMs over T*B rows), δW_hr = δH^T M.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch.autograd.function import once_differentiable

from gatelab.engines._kernels import JIT, one, sigmoid, tanh
from gatelab.engines._kernels_blas import gemm
from gatelab.engines._kernels_gemm import packed_weights, scratch, step_gemm
from gatelab.engines.fused_common import (
    add_rows_sum, arr, mm, needs_grad, numba_loop, previous_rows, steps_array, tensor, times_previous)
from gatelab.engines import workspace


@njit(inline="always")
def gate_views(t, b, xa, hw, bias, k0, k1, G):
    """Row b's views of gate blocks i f g o, columns [k0, k1) of each: xa[t] (4), hw (4),
    bias (4). 1-D row views from u0 keep the inner loops simple enough to vectorise."""
    return gate_views_at(t, b, xa, hw, bias, k0, k1, G, 0, 1, 2, 3)


@njit(inline="always")
def gate_views_at(t, b, xa, hw, bias, k0, k1, G, pi, pf, pg, po):
    """gate_views with gate blocks i f g o at block positions pi pf pg po (a units-split
    thread of the LSTM family puts the gates its variant never reads last)."""
    x, h = xa[t, b], hw[b]
    ci, cf, cg, co = pi * G + k0, pf * G + k0, pg * G + k0, po * G + k0
    U = k1 - k0
    return (x[ci:ci + U], x[cf:cf + U], x[cg:cg + U], x[co:co + U],
            h[ci:ci + U], h[cf:cf + U], h[cg:cg + U], h[co:co + U],
            bias[ci:ci + U], bias[cf:cf + U], bias[cg:cg + U], bias[co:co + U])


@njit(**JIT)
def forward_step(t, n, ta, tx, xa, hw, bias, c_state, gi, gf, gg, go, c_seq, m_seq, m_state, u0, u1):
    """One step's gate pass for rows [:n] and units [u0, u1) (all: 0, H); writes gates and
    c at ta (not at all when ta < 0: inference without a record), m at t.

    xa (Tx, B, 4G) input projection, this step's at row tx (t, or t's place in a units-split
    thread's chunk: fused_units.project_chunk); hw (B, 4G) h_{t-1} W_hh^T; bias (4G,)
    b_ih + b_hh: gate blocks i f g o of width G = H (unit u at column gH + u), or G = u1 - u0
    when they hold units [u0, u1) only (unit u at column gG + u - u0: one thread's own buffers);
    c_state (B, H) c_{t-1} in, c_t out; gi gf gg go (Ta, B, H) gates; c_seq (Ta, B, H);
    m_seq (Tm, B, H) and m_state (B, H) receive m_t = o ⊙ tanh(c_t) (m_seq at index t
    when Tm > 1, else 0).
    """
    H = c_state.shape[1]
    tm = t if m_seq.shape[0] > 1 else 0
    keep = ta >= 0
    U = u1 - u0
    G = hw.shape[1] // 4  # gate block width of xa, hw and bias
    k0 = u0 if G == H else 0  # my units' first column in each block
    k1 = k0 + U
    if not keep:  # inference without a record: c and m only
        for b in range(n):
            x_i, x_f, x_g, x_o, h_i, h_f, h_g, h_o, b_i, b_f, b_g, b_o = gate_views(tx, b, xa, hw, bias, k0, k1, G)
            c_, ms_, m_ = c_state[b, u0:u1], m_seq[tm, b, u0:u1], m_state[b, u0:u1]  # (U,)
            for j in range(U):
                i = sigmoid(x_i[j] + h_i[j] + b_i[j])
                f = sigmoid(x_f[j] + h_f[j] + b_f[j])
                g = tanh(x_g[j] + h_g[j] + b_g[j])
                o = sigmoid(x_o[j] + h_o[j] + b_o[j])
                c = f * c_[j] + i * g
                m = o * tanh(c)
                c_[j] = c
                ms_[j] = m
                m_[j] = m
        return
    for b in range(n):  # the same, keeping the gates and c for backward or the record
        x_i, x_f, x_g, x_o, h_i, h_f, h_g, h_o, b_i, b_f, b_g, b_o = gate_views(tx, b, xa, hw, bias, k0, k1, G)
        c_, ms_, m_ = c_state[b, u0:u1], m_seq[tm, b, u0:u1], m_state[b, u0:u1]  # (U,)
        i_, f_, g_, o_ = gi[ta, b, u0:u1], gf[ta, b, u0:u1], gg[ta, b, u0:u1], go[ta, b, u0:u1]  # (U,)
        cs_ = c_seq[ta, b, u0:u1]  # (U,)
        # in two loops, the gates, then c and m from them (one loop with all thirteen arrays
        # ran 1.6x slower: 7.7 against 5.1 ns a unit, B = 32, U = 128, float32)
        for j in range(U):
            i_[j] = sigmoid(x_i[j] + h_i[j] + b_i[j])
            f_[j] = sigmoid(x_f[j] + h_f[j] + b_f[j])
            g_[j] = tanh(x_g[j] + h_g[j] + b_g[j])
            o_[j] = sigmoid(x_o[j] + h_o[j] + b_o[j])
        for j in range(U):
            c = f_[j] * c_[j] + i_[j] * g_[j]
            m = o_[j] * tanh(c)
            c_[j] = c
            cs_[j] = c
            ms_[j] = m
            m_[j] = m


@njit(**JIT)
def backward_step(t, n, tp, n_prev, dm_seq, dh_state, dc_state, gi, gf, gg, go, c_seq, c0,
                  dgates, da, u0, u1):
    """One step of BPTT for rows [:n] and units [u0, u1) (all: 0, H); writes δa[t] and
    carries δc to c_{t-1}.

    dm_seq (Tm, B, H) δ from above (the output's gradient at t, or δm with a projection,
    then at index 0); dh_state (B, H) δh carried from step t+1 (zeros with a projection);
    dc_state (B, H) δc carried, in and out; gi gf gg go c_seq (T, B, H) saved;
    c0 (B, H) initial cell (rows [n_prev, n) start from it); dgates (5, Tg, B, H)
    δ of the recorded f i g o c (Tg = 0 when none); da (T, B, 4H) out.
    """
    H = dc_state.shape[1]
    tm = t if dm_seq.shape[0] > 1 else 0
    has_dg = dgates.shape[1] > 0
    U = u1 - u0
    for b in range(n):  # 1-D row views from u0 keep the inner loops simple enough to vectorise
        i_, f_, g_ = gi[t, b, u0:u1], gf[t, b, u0:u1], gg[t, b, u0:u1]  # (U,)
        o_, c_ = go[t, b, u0:u1], c_seq[t, b, u0:u1]  # (U,)
        cp_ = c_seq[tp, b, u0:u1] if b < n_prev else c0[b, u0:u1]  # (U,) c_{t-1}
        dm_, dh_, dc_ = dm_seq[tm, b, u0:u1], dh_state[b, u0:u1], dc_state[b, u0:u1]  # (U,)
        da_i, da_f = da[t, b, u0:u1], da[t, b, H + u0:H + u1]
        da_g, da_o = da[t, b, 2 * H + u0:2 * H + u1], da[t, b, 3 * H + u0:3 * H + u1]
        if has_dg:  # the recorded c joins the carried δc
            dgc = dgates[4, t, b, u0:u1]  # (U,)
            for j in range(U):
                dc_[j] += dgc[j]
        for j in range(U):
            i, f, g, o = i_[j], f_[j], g_[j], o_[j]
            dm = dm_[j] + dh_[j]
            tc = tanh(c_[j])
            dc = dc_[j] + dm * o * (one(tc) - tc * tc)
            dc_[j] = dc * f
            da_i[j] = dc * g * i * (one(i) - i)  # δa_i = δc g i (1 - i)
            da_f[j] = dc * cp_[j] * f * (one(f) - f)  # δa_f = δc c_{t-1} f (1 - f)
            da_g[j] = dc * i * (one(g) - g * g)  # δa_g = δc i (1 - g²)
            da_o[j] = dm * tc * o * (one(o) - o)  # δa_o = δm tanh(c) o (1 - o)
        if has_dg:  # the recorded f i g o, through their activations
            dgf, dgi = dgates[0, t, b, u0:u1], dgates[1, t, b, u0:u1]
            dgg, dgo = dgates[2, t, b, u0:u1], dgates[3, t, b, u0:u1]
            for j in range(U):
                i, f, g, o = i_[j], f_[j], g_[j], o_[j]
                da_i[j] += dgi[j] * i * (one(i) - i)
                da_f[j] += dgf[j] * f * (one(f) - f)
                da_g[j] += dgg[j] * (one(g) - g * g)
                da_o[j] += dgo[j] * o * (one(o) - o)


@njit(**JIT)
def forward_loop(steps, full, proj, xa, w_hh, bp_hh, tmp, bias, w_hr, h_state, c_state, hw, gi, gf, gg, go,
                 c_seq, m_seq, m_state, out):
    """The forward time loop: per step hw = h_{t-1} W_hh^T (GEMM), the gate pass, and
    with a projection h_t = m_t W_hr^T. steps (S, 4) rows (t, n, tp, n_prev);
    w_hh (4H, H_out) used transposed by the GEMM, bp_hh and tmp: it packed for
    _kernels_gemm.step_gemm and its scratch; w_hr (H_out, H) (any array when not proj); the
    rest as in forward_step, out (T, B, H_out)."""
    for s in range(steps.shape[0]):
        t, n = steps[s, 0], steps[s, 1]
        step_gemm(h_state[:n], w_hh, bp_hh, hw[:n], True, 0.0, tmp)  # (n, H_out) x (4H, H_out)^T
        forward_step(t, n, t if full else -1, t, xa, hw, bias, c_state, gi, gf, gg, go, c_seq,
                     m_seq, m_state, 0, c_state.shape[1])
        if proj:
            gemm(m_state[:n], w_hr, h_state[:n], True, 0.0)  # (n, H) x (H, H_out)
            out[t, :n] = h_state[:n]


@njit(**JIT)
def backward_loop(steps, proj, d_out, dh_state, dc_state, gi, gf, gg, go, c_seq, c0, dgates,
                  da, w_hh, bp, tmp, w_hr, dh_seq, dm, zeros_h):
    """The backward time loop, last step first: the BPTT pass, then δh_{t-1} = δa W_hh.
    With a projection δh_t is kept in dh_seq (T, B, H_out) and δm = δh_t W_hr (1, B, H)
    feeds the pass (with zeros_h (B, H) as its carried δ)."""
    for s in range(steps.shape[0] - 1, -1, -1):
        t, n, tp, n_prev = steps[s, 0], steps[s, 1], steps[s, 2], steps[s, 3]
        if proj:
            dh_seq[t, :n] = d_out[t, :n] + dh_state[:n]  # (n, H_out)
            gemm(dh_seq[t, :n], w_hr, dm[0, :n], False, 0.0)  # (n, H_out) x (H_out, H)
            backward_step(t, n, tp, n_prev, dm, zeros_h, dc_state, gi, gf, gg, go, c_seq, c0,
                          dgates, da, 0, dc_state.shape[1])
        else:
            backward_step(t, n, tp, n_prev, d_out, dh_state, dc_state, gi, gf, gg, go, c_seq,
                          c0, dgates, da, 0, dc_state.shape[1])
        step_gemm(da[t, :n], w_hh, bp, dh_state[:n], False, 0.0, tmp)  # (n, 4H) x (4H, H_out)


def _forward(x, h0, c0, w_ih, w_hh, bias, w_hr, steps, keep, record, units=1):
    """The forward pass on arrays. Returns out (T, B, H_out), h_T, c_T and the saved
    sequences (gates, c) when `keep` or `record`, else None. `units` > 1: each step's units
    split between that many threads (fused_lstm_units; decided by fused_units.unit_threads,
    no projection)."""
    T, B, _ = x.shape  # (T, B, I)
    H = c0.shape[1]
    P = h0.shape[1]  # H_out
    dt = x.dtype
    packed = any(s.n < B for s in steps)
    bias = workspace.zeros(4 * H, dt) if bias is None else bias  # (4H,), added in the gate pass
    full = keep or record
    Ta = T if full else 1
    zeros_or_empty = workspace.zeros if packed else workspace.empty
    gates = tuple(zeros_or_empty((Ta, B, H), dt) for _ in range(4))  # i f g o, (Ta, B, H)
    c_seq = zeros_or_empty((Ta, B, H), dt)  # (Ta, B, H)
    out = zeros_or_empty((T, B, P), dt)  # (T, B, H_out)
    h_state = workspace.copy(h0)  # (B, H_out)
    c_state = workspace.copy(c0)  # (B, H)
    if units > 1:  # the threads also share the input projection
        from gatelab.engines import fused_lstm_units

        fused_lstm_units.forward(units, steps_array(steps), full, x, w_ih, w_hh, bias, h_state, c_state,
                                 gates, c_seq, out)
        return out, h_state, c_state, ((gates, c_seq) if full else None)
    xa = mm(x.reshape(T * B, x.shape[2]), w_ih.T, workspace.empty((T * B, 4 * H), dt))  # (T*B, 4H)
    xa = xa.reshape(T, B, 4 * H)  # (T, B, 4H)
    hw = workspace.empty((B, 4 * H), dt)  # (B, 4H)
    if w_hr is None:
        m_seq, m_state = out, h_state  # m_t is h_t
    else:
        m_state = workspace.empty((B, H), dt)  # (B, H)
        m_seq = workspace.empty((1, B, H), dt)  # (1, B, H): not a view of m_state, which would
        # make LLVM's overlap check fail and the gate pass run scalar
    if numba_loop():
        bp = packed_weights(w_hh, True, len(steps), B)
        forward_loop(steps_array(steps), full, w_hr is not None, xa, w_hh, bp, scratch(dt), bias,
                     w_hh if w_hr is None else w_hr, h_state, c_state, hw, *gates, c_seq,
                     m_seq, m_state, out)
        return out, h_state, c_state, ((gates, c_seq) if full else None)
    w_hr_t = None if w_hr is None else w_hr.T  # (H, H_out)
    for t, n, _, _ in steps:
        mm(h_state[:n], w_hh.T, hw[:n])  # (n, H_out) x (H_out, 4H)
        forward_step(t, n, t if full else -1, t, xa, hw, bias, c_state, *gates, c_seq, m_seq, m_state, 0, H)
        if w_hr is not None:
            mm(m_state[:n], w_hr_t, h_state[:n])  # (n, H) x (H, H_out)
            out[t, :n] = h_state[:n]
    saved = (gates, c_seq) if full else None
    return out, h_state, c_state, saved


def _backward_python(steps, d_out, dh_state, dc_state, gates, c_seq, c0, dgates, da, w_hh,
                     w_hr, dh_seq, dm, zeros_h):
    """backward_loop driven from Python, with NumPy's matmul (the fallback path)."""
    for t, n, tp, n_prev in reversed(steps):
        if w_hr is None:
            backward_step(t, n, tp, n_prev, d_out, dh_state, dc_state, *gates, c_seq, c0,
                          dgates, da, 0, dc_state.shape[1])
        else:
            np.add(d_out[t, :n], dh_state[:n], out=dh_seq[t, :n])  # (n, H_out)
            mm(dh_seq[t, :n], w_hr, dm[0, :n])  # (n, H_out) x (H_out, H)
            backward_step(t, n, tp, n_prev, dm, zeros_h, dc_state, *gates, c_seq, c0,
                          dgates, da, 0, dc_state.shape[1])
        mm(da[t, :n], w_hh, dh_state[:n])  # (n, 4H) x (4H, H_out)


class LSTMFunction(torch.autograd.Function):
    """One LSTM layer-direction; inputs x, h0, c0, weights; outputs out, h_T, c_T and,
    with record, the gates f i g o c (each differentiable)."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, steps, record, units):
        xs, h0s, c0s = arr(x), arr(h0), arr(c0)
        w_ihs, w_hhs, w_hrs = arr(w_ih), arr(w_hh), arr(w_hr)
        bias = None if b_ih is None else arr(b_ih) + arr(b_hh)  # (4H,)
        out, h_T, c_T, saved = _forward(xs, h0s, c0s, w_ihs, w_hhs, bias, w_hrs, steps,
                                        keep=True, record=record, units=units)
        ctx.set_materialize_grads(False)
        ctx.arrays = (xs, h0s, c0s, w_ihs, w_hhs, w_hrs, out, saved)
        ctx.steps, ctx.has_bias, ctx.units = steps, b_ih is not None, units
        outs = (tensor(out), tensor(h_T), tensor(c_T))
        if record:
            (gi, gf, gg, go), c_seq = saved
            outs += tuple(tensor(a) for a in (gf, gi, gg, go, c_seq))
        return outs

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT, d_cT, *d_gates):
        xs, h0s, c0s, w_ihs, w_hhs, w_hrs, out, (gates, c_seq) = ctx.arrays
        steps = ctx.steps
        T, B, _ = xs.shape  # (T, B, I)
        H, P = c0s.shape[1], h0s.shape[1]
        dt = xs.dtype
        d_out = workspace.zeros((T, B, P), dt) if d_out is None else arr(d_out)  # (T, B, H_out)
        dh_state = workspace.zeros((B, P), dt) if d_hT is None else workspace.copy(arr(d_hT))  # (B, H_out)
        dc_state = workspace.zeros((B, H), dt) if d_cT is None else workspace.copy(arr(d_cT))  # (B, H)
        dgates = workspace.zeros((5, 0, B, H), dt)  # (5, 0, B, H): none
        if d_gates and any(g is not None for g in d_gates):
            dgates = np.stack([workspace.zeros((T, B, H), dt) if g is None else arr(g)
                               for g in d_gates])  # (5, T, B, H) f i g o c
        packed = any(s.n < B for s in steps)
        da = (workspace.zeros if packed else workspace.empty)((T, B, 4 * H), dt)  # (T, B, 4H)
        proj = w_hrs is not None
        dh_seq = workspace.zeros((T, B, P) if proj else (1, 1, 1), dt)  # (T, B, H_out) δh_t, for δW_hr
        dm = workspace.empty((1, B, H), dt)  # (1, B, H)
        zeros_h = workspace.zeros((B, H), dt)  # (B, H)
        need = ctx.needs_input_grad
        if ctx.units > 1:  # the threads also share the GEMMs after
            from gatelab.engines import fused_lstm_units

            h_prev = previous_rows(out, h0s, steps) if need[4] else None
            dx, dw_ih, dw_hh, db = fused_lstm_units.backward(
                ctx.units, steps_array(steps), d_out, dh_state, dc_state, gates, c_seq, c0s, dgates, da,
                xs, h_prev, w_ihs, w_hhs, (need[0], need[3], need[4], ctx.has_bias))
        else:
            if numba_loop():
                bp = packed_weights(w_hhs, False, len(steps), B)
                backward_loop(steps_array(steps), proj, d_out, dh_state, dc_state, *gates, c_seq,
                              c0s, dgates, da, w_hhs, bp, scratch(dt), w_hrs if proj else w_hhs,
                              dh_seq, dm, zeros_h)
            else:
                _backward_python(steps, d_out, dh_state, dc_state, gates, c_seq, c0s, dgates, da,
                                 w_hhs, w_hrs, dh_seq, dm, zeros_h)
            da2 = da.reshape(T * B, 4 * H)  # (T*B, 4H)
            dx = mm(da2, w_ihs, workspace.empty((T * B, xs.shape[2]), dt)).reshape(xs.shape) if need[0] else None
            dw_ih = mm(da2.T, xs.reshape(T * B, xs.shape[2]), workspace.empty_like(w_ihs)) if need[3] else None
            dw_hh = (times_previous(da2, previous_rows(out, h0s, steps), workspace.empty_like(w_hhs))
                     if need[4] else None)
            db = add_rows_sum(da) if ctx.has_bias else None  # (4H,)
        dw_hr = None
        if w_hrs is not None and need[7]:
            gi, gf, gg, go = gates
            m = go * np.tanh(c_seq)  # (T, B, H), zero at padded positions
            dw_hr = mm(dh_seq.reshape(T * B, P).T, m.reshape(T * B, H), workspace.empty_like(w_hrs))
        grads = (dx, dh_state, dc_state, dw_ih, dw_hh, db, None if db is None else db.copy(), dw_hr)
        return tuple(None if g is None else tensor(g) for g in grads) + (None, None, None)


def run(spec, x, state, weights, steps, record, units=1):
    """One LSTM layer-direction; see gatelab.engines for the contract. `units` > 1: each
    step's units split between that many threads (fused_lstm_units)."""
    h0, c0 = state
    w_ih, w_hh = weights["weight_ih"], weights["weight_hh"]
    b_ih, b_hh = (weights["bias_ih"], weights["bias_hh"]) if spec.bias else (None, None)
    w_hr = weights["weight_hr"] if spec.proj_size > 0 else None
    inputs = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    if needs_grad(*inputs):
        outs = LSTMFunction.apply(*inputs, steps, record, units)
        out, h_T, c_T, *rec = outs
    else:  # inference: nothing saved, gates kept only when recorded
        bias = None if b_ih is None else arr(b_ih) + arr(b_hh)
        out, h_T, c_T, saved = _forward(arr(x), arr(h0), arr(c0), arr(w_ih), arr(w_hh), bias,
                                        arr(w_hr), steps, keep=False, record=record, units=units)
        out, h_T, c_T = tensor(out), tensor(h_T), tensor(c_T)
        rec = []
        if record:
            (gi, gf, gg, go), c_seq = saved
            rec = [tensor(a) for a in (gf, gi, gg, go, c_seq)]
    gates = dict(zip(("f", "i", "g", "o", "c"), rec)) if record else None
    return out, (h_T, c_T), gates
