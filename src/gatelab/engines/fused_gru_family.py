"""The fused GRU family (issue 7): the GRU with the gate and cell activations by name,
layer_norm, the stochastic masks (zoneout_h, recurrent_dropout) and "reset before"
(reset_after=False), hand-written BPTT.

The plain GRU keeps its own kernels (fused_gru); this module runs the rest of what the
fused engine accepts for the GRU (layer_norm with reset_after=False is no GRU: declined).
Definitions: gatelab.engines, "The LSTM family". Per step t, reset after (torch.nn):

    xa = x_t W_ih^T, or LN(x_t W_ih^T; ln_ih) (all steps at once, before the loop)
    hw = (d ⊙ h_{t-1}) W_hh^T, or LN(...; ln_hh)   d: recurrent_dropout mask (only inside the product)
    r = σ(xa_r + hw_r + b_r)   z = σ(xa_z + hw_z + b_z)   hn = hw_n + b_hn
    n = φ(xa_n + b_in + r ⊙ hn)      h̃ = (1 - z) ⊙ n + z ⊙ h_{t-1}
    h_t = z_h ⊙ h_{t-1} + (1 - z_h) ⊙ h̃              (zoneout)

Backward, per step from the last:

    δh = δout_t + δh_t;  δh̃ = (1 - z_h) δh
    δa_n = (δh̃ (1 - z) + δn_rec) φ'(n)   δa_r = (δa_n hn + δr_rec) σ'(r)
    δa_z = (δh̃ (h_{t-1} - n) + δz_rec) σ'(z)
    δxa = [δa_r | δa_z | δa_n]    δhw = [δa_r | δa_z | δa_n ⊙ r]
    δh_{t-1} = δh̃ ⊙ z + z_h δh + (δhw W_hh) ⊙ d

    then over all steps: δW_ih = δXA^T X, δW_hh = δHW^T (d ⊙ H_prev), δb_ih = Σ δXA,
    δb_hh = Σ δHW, δX = δXA W_ih.

Reset before (Cho et al. 2014, reset_after=False): the recurrent product splits in two
GEMMs per step, the second one reading r:

    hw_rz = (d ⊙ h_{t-1}) W_hrz^T   (first 2H rows of W_hh)
    r = σ(xa_r + hw_rz_r + b_r)   z = σ(xa_z + hw_rz_z + b_z)   u = r ⊙ d ⊙ h_{t-1}
    hw_n = u W_hn^T   (last H rows)   n = φ(xa_n + b_in + hw_n + b_hn)
    h̃, h_t as above.

Backward, per step from the last (δh, δh̃ as above):

    δa_n = (δh̃ (1 - z) + δn_rec) φ'(n)   δa_z = (δh̃ (h_{t-1} - n) + δz_rec) σ'(z)
    δu = δa_n W_hn (GEMM)   δa_r = (δu ⊙ d ⊙ h_{t-1} + δr_rec) σ'(r)
    δh_{t-1} = δh̃ ⊙ z + z_h δh + (δu ⊙ r + [δa_r | δa_z] W_hrz (GEMM)) ⊙ d

    δxa = [δa_r | δa_z | δa_n] is also the δ of the recurrent products and of both biases:
    δW_hrz = δXA_rz^T (d ⊙ H_prev), δW_hn = δXA_n^T U with U = r ⊙ d ⊙ H_prev rebuilt
    from the saved r (only r, z, n are saved per step).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from numba import njit
from torch.autograd.function import once_differentiable

from gatelab.engines._kernels import JIT, one
from gatelab.engines._kernels_gemm import packed_weights, scratch, step_gemm
from gatelab.engines.fused_common import (
    add_rows_sum, arr, mm, needs_grad, numba_loop, previous_dropped, previous_rows, steps_array, tensor,
    times_previous)
from gatelab.engines.fused_lstm_family import (
    CELL_KINDS, GATE_KINDS, _cell, _cell_grad, _gate, _gate_grad, _ln_all, _ln_all_backward, dropped,
    ln_back_rows, ln_rows, recurrent_product)
from gatelab.engines import workspace
from gatelab.engines.masks import as_arrays


@njit(**JIT)
def forward_step(t, n, ta, tx, xa, hw, bias, b_hn, gk, ck, has_zh, zh, h_state, gr, gz, gn, hn_seq, out, u0,
                 u1):
    """One step's gate pass for rows [:n] and units [u0, u1) (all: 0, H): h_state (B, H)
    h_{t-1} in, h_t out; out[t]; gates r z n and hn written at ta. zh (T|1, B, H) zoneout
    mask, read when has_zh. xa (its row tx), hw, bias and b_hn hold gate blocks r z n of
    width G = H, or G = u1 - u0 in one thread's own buffers, as in fused_gru.forward_step."""
    H = h_state.shape[1]
    U = u1 - u0
    G = hw.shape[1] // 3  # gate block width of xa, hw, bias and b_hn
    k0 = u0 if G == H else 0  # my units' first column in each block
    k1 = k0 + U
    tz = t if has_zh else 0
    for b in range(n):  # 1-D row views from u0 keep the inner loop simple enough to vectorise
        x_r, x_z, x_n = xa[tx, b, k0:k1], xa[tx, b, G + k0:G + k1], xa[tx, b, 2 * G + k0:2 * G + k1]
        h_r, h_z, h_n = hw[b, k0:k1], hw[b, G + k0:G + k1], hw[b, 2 * G + k0:2 * G + k1]
        b_r, b_z, b_n = bias[k0:k1], bias[G + k0:G + k1], bias[2 * G + k0:2 * G + k1]
        b_hn_ = b_hn[k0:k1]
        h_, r_, z_, n_ = h_state[b, u0:u1], gr[ta, b, u0:u1], gz[ta, b, u0:u1], gn[ta, b, u0:u1]
        hn_, out_ = hn_seq[ta, b, u0:u1], out[t, b, u0:u1]
        m_ = zh[tz, b, u0:u1]
        for j in range(U):  # r and z first, then the rest (as fused_gru.forward_step)
            r_[j] = _gate(x_r[j] + h_r[j] + b_r[j], gk)
            z_[j] = _gate(x_z[j] + h_z[j] + b_z[j], gk)
            hn_[j] = h_n[j] + b_hn_[j]
        for j in range(U):
            hp, z = h_[j], z_[j]
            nn = _cell(x_n[j] + b_n[j] + r_[j] * hn_[j], ck)
            h = (one(z) - z) * nn + z * hp
            if has_zh:
                h = m_[j] * hp + (one(z) - m_[j]) * h
            n_[j] = nn
            out_[j] = h
            h_[j] = h


@njit(**JIT)
def backward_step(t, n, tp, n_prev, gk, ck, has_zh, zh, d_out, dh_state, gr, gz, gn, hn_seq, out, h0,
                  dgates, dxa, dhw, u0, u1):
    """One step of BPTT for rows [:n] and units [u0, u1) (all: 0, H): dh_state (B, H) δh_t
    in, δh̃ ⊙ z + z_h δh out (the loop adds (δhw W_hh) ⊙ d); dgates (3, Tg, B, H) δ of the
    recorded r z n (zeros, Tg = 1, when none); dxa, dhw (T, B, 3H) out."""
    H = dh_state.shape[1]
    U = u1 - u0
    tg = t if dgates.shape[1] > 1 else 0
    tz = t if has_zh else 0
    for b in range(n):
        r_, z_, n_, hn_ = gr[t, b, u0:u1], gz[t, b, u0:u1], gn[t, b, u0:u1], hn_seq[t, b, u0:u1]
        do_, dh_ = d_out[t, b, u0:u1], dh_state[b, u0:u1]
        hp_ = out[tp, b, u0:u1] if b < n_prev else h0[b, u0:u1]  # (U,) h_{t-1}
        m_ = zh[tz, b, u0:u1]
        dgr, dgz, dgn = dgates[0, tg, b, u0:u1], dgates[1, tg, b, u0:u1], dgates[2, tg, b, u0:u1]
        dx_r, dx_z, dx_n = dxa[t, b, u0:u1], dxa[t, b, H + u0:H + u1], dxa[t, b, 2 * H + u0:2 * H + u1]
        dw_r, dw_z, dw_n = dhw[t, b, u0:u1], dhw[t, b, H + u0:H + u1], dhw[t, b, 2 * H + u0:2 * H + u1]
        for j in range(U):
            r, z, nn, hn = r_[j], z_[j], n_[j], hn_[j]
            dh = do_[j] + dh_[j]
            dht = dh * (one(z) - m_[j]) if has_zh else dh
            dan = (dht * (one(z) - z) + dgn[j]) * _cell_grad(nn, ck)
            dar = (dan * hn + dgr[j]) * _gate_grad(r, gk)
            daz = (dht * (hp_[j] - nn) + dgz[j]) * _gate_grad(z, gk)
            dx_r[j] = dar
            dx_z[j] = daz
            dx_n[j] = dan
            dw_r[j] = dar
            dw_z[j] = daz
            dw_n[j] = dan * r
            dh_[j] = dht * z + dh * m_[j] if has_zh else dht * z


@njit(**JIT)
def add_dropped(n, has_d, d, tmp, dh_state):
    """dh_state += tmp ⊙ d (or tmp), rows [:n]."""
    H = dh_state.shape[1]
    for b in range(n):
        for j in range(H):
            dh_state[b, j] += tmp[b, j] * d[b, j] if has_d else tmp[b, j]


@njit(**JIT)
def forward_loop(steps, full, xa, w_hh, bp_hh, tmp, bias, b_hn, gk, ck, has_d, d, has_zh, zh, h_state, hd, hw,
                 gr, gz, gn, hn_seq, out, ln, lnh, hhat, rs_h):
    """Per step: hw = (d ⊙ h) W_hh^T (GEMM), with layer_norm hw <- LN(hw; lnh) (v̂ into hhat
    (Ta, B, 3H), 1/σ into rs_h (Ta, B)), then the gate pass."""
    for s in range(steps.shape[0]):
        t, n = steps[s, 0], steps[s, 1]
        recurrent_product(n, has_d, d, h_state, hd, w_hh, bp_hh, hw, tmp)  # (n, H) x (3H, H)^T
        if ln:
            tk = t if full else 0
            ln_rows(n, hw, lnh[0], lnh[1], hhat[tk], rs_h[tk])
        forward_step(t, n, t if full else 0, t, xa, hw, bias, b_hn, gk, ck, has_zh, zh, h_state, gr,
                     gz, gn, hn_seq, out, 0, h_state.shape[1])


@njit(**JIT)
def backward_loop(steps, gk, ck, has_d, d, has_zh, zh, d_out, dh_state, gr, gz, gn, hn_seq, out, h0,
                  dgates, dxa, dhw, w_hh, bp, gtmp, tmp, ln, lnh, hhat, rs_h, dhw_raw):
    """Per step from the last: the BPTT pass (δ of LN(hw) + b_hh into dhw), with layer_norm
    through LN's backward into dhw_raw (T, B, 3H), then δh_{t-1} += (δ W_hh) ⊙ d."""
    for s in range(steps.shape[0] - 1, -1, -1):
        t, n, tp, n_prev = steps[s, 0], steps[s, 1], steps[s, 2], steps[s, 3]
        backward_step(t, n, tp, n_prev, gk, ck, has_zh, zh, d_out, dh_state, gr, gz, gn, hn_seq, out,
                      h0, dgates, dxa, dhw, 0, dh_state.shape[1])
        dv = dhw
        if ln:
            ln_back_rows(n, dhw[t], hhat[t], rs_h[t], lnh[0], dhw_raw[t])
            dv = dhw_raw
        if has_d:
            step_gemm(dv[t, :n], w_hh, bp, tmp[:n], False, 0.0, gtmp)  # (n, 3H) x (3H, H)
            add_dropped(n, has_d, d, tmp, dh_state)
        else:
            step_gemm(dv[t, :n], w_hh, bp, dh_state[:n], False, 1.0, gtmp)  # += (n, 3H) x (3H, H)


@njit(**JIT)
def rz_step(t, n, ta, xa, hw, bias, gk, has_d, d, h_state, gr, gz, u):
    """Reset before, first pass for rows [:n]: r, z from hw[:, :2H] (the r|z product) into
    gr, gz at ta, and u = r ⊙ d ⊙ h_{t-1} (B, H), the input of the n product."""
    H = h_state.shape[1]
    for b in range(n):
        x_r, x_z = xa[t, b, :H], xa[t, b, H:2 * H]
        h_r, h_z = hw[b, :H], hw[b, H:2 * H]
        b_r, b_z = bias[:H], bias[H:2 * H]
        h_, r_, z_, u_, d_ = h_state[b], gr[ta, b], gz[ta, b], u[b], d[b]
        for j in range(H):
            hp = d_[j] * h_[j] if has_d else h_[j]
            r = _gate(x_r[j] + h_r[j] + b_r[j], gk)
            z = _gate(x_z[j] + h_z[j] + b_z[j], gk)
            r_[j] = r
            z_[j] = z
            u_[j] = r * hp


@njit(**JIT)
def n_step(t, n, ta, xa, hw, bias, ck, has_zh, zh, h_state, gz, gn, out):
    """Reset before, second pass for rows [:n]: n from hw[:, 2H:] = u W_hn^T (bias holds
    b_in + b_hn), h_t into h_state and out[t]; n written at ta."""
    H = h_state.shape[1]
    tz = t if has_zh else 0
    for b in range(n):
        x_n, h_n, b_n = xa[t, b, 2 * H:], hw[b, 2 * H:], bias[2 * H:]
        h_, z_, n_, out_, m_ = h_state[b], gz[ta, b], gn[ta, b], out[t, b], zh[tz, b]
        for j in range(H):
            hp = h_[j]
            z = z_[j]
            nn = _cell(x_n[j] + b_n[j] + h_n[j], ck)
            h = (one(z) - z) * nn + z * hp
            if has_zh:
                h = m_[j] * hp + (one(z) - m_[j]) * h
            n_[j] = nn
            out_[j] = h
            h_[j] = h


@njit(**JIT)
def backward_nz_step(t, n, tp, n_prev, gk, ck, has_zh, zh, d_out, dh_state, gz, gn, out, h0, dgates,
                     dxa):
    """Reset before, first BPTT pass for rows [:n]: δa_z, δa_n into dxa[t] (T, B, 3H);
    dh_state (B, H) δh_t in, δh̃ ⊙ z + z_h δh out."""
    H = dh_state.shape[1]
    tg = t if dgates.shape[1] > 1 else 0
    tz = t if has_zh else 0
    for b in range(n):
        z_, n_, do_, dh_ = gz[t, b], gn[t, b], d_out[t, b], dh_state[b]
        hp_ = out[tp, b] if b < n_prev else h0[b]  # (H,) h_{t-1}
        m_ = zh[tz, b]
        dgz, dgn = dgates[1, tg, b], dgates[2, tg, b]
        dx_z, dx_n = dxa[t, b, H:2 * H], dxa[t, b, 2 * H:]
        for j in range(H):
            z, nn = z_[j], n_[j]
            dh = do_[j] + dh_[j]
            dht = dh * (one(z) - m_[j]) if has_zh else dh
            dx_n[j] = (dht * (one(z) - z) + dgn[j]) * _cell_grad(nn, ck)
            dx_z[j] = (dht * (hp_[j] - nn) + dgz[j]) * _gate_grad(z, gk)
            dh_[j] = dht * z + dh * m_[j] if has_zh else dht * z


@njit(**JIT)
def backward_r_step(t, n, tp, n_prev, gk, has_d, d, gr, out, h0, dgates, tmp, dxa):
    """Reset before, second BPTT pass for rows [:n]: tmp (B, H) δu = δa_n W_hn in, δu ⊙ r
    out (the part of δ(d ⊙ h_{t-1}) through u); δa_r into dxa[t]."""
    H = tmp.shape[1]
    tg = t if dgates.shape[1] > 1 else 0
    for b in range(n):
        r_, du_, d_ = gr[t, b], tmp[b], d[b]
        hp_ = out[tp, b] if b < n_prev else h0[b]  # (H,) h_{t-1}
        dgr, dx_r = dgates[0, tg, b], dxa[t, b, :H]
        for j in range(H):
            r, du = r_[j], du_[j]
            hp = d_[j] * hp_[j] if has_d else hp_[j]
            dx_r[j] = (du * hp + dgr[j]) * _gate_grad(r, gk)
            du_[j] = du * r


@njit(**JIT)
def forward_loop_before(steps, full, xa, w_hh, bp_rz, bp_n, gtmp, bias, gk, ck, has_d, d, has_zh, zh, h_state,
                        hd, hw, u, gr, gz, gn, out):
    """Reset before, per step: hw_rz = (d ⊙ h) W_hrz^T (GEMM), r and z, hw_n = u W_hn^T
    (GEMM), n and h. w_hh (3H, H), used transposed; bp_rz, bp_n: W_hrz^T and W_hn^T packed
    for step_gemm (before_packs), gtmp its scratch; hw (B, 3H); u (B, H)."""
    H = h_state.shape[1]
    w_rz, w_n = w_hh[:2 * H], w_hh[2 * H:]  # (2H, H), (H, H)
    for s in range(steps.shape[0]):
        t, n = steps[s, 0], steps[s, 1]
        ta = t if full else 0
        if has_d:
            dropped(n, h_state, d, hd)
            step_gemm(hd[:n], w_rz, bp_rz, hw[:n, :2 * H], True, 0.0, gtmp)  # (n, H) x (2H, H)^T
        else:
            step_gemm(h_state[:n], w_rz, bp_rz, hw[:n, :2 * H], True, 0.0, gtmp)
        rz_step(t, n, ta, xa, hw, bias, gk, has_d, d, h_state, gr, gz, u)
        step_gemm(u[:n], w_n, bp_n, hw[:n, 2 * H:], True, 0.0, gtmp)  # (n, H) x (H, H)^T
        n_step(t, n, ta, xa, hw, bias, ck, has_zh, zh, h_state, gz, gn, out)


@njit(**JIT)
def backward_loop_before(steps, gk, ck, has_d, d, has_zh, zh, d_out, dh_state, gr, gz, gn, out, h0,
                         dgates, dxa, w_hh, bp_rz, bp_n, gtmp, tmp):
    """Reset before, per step from the last: δa_z, δa_n; δu = δa_n W_hn (GEMM); δa_r;
    δh_{t-1} += (δu ⊙ r + [δa_r | δa_z] W_hrz (GEMM)) ⊙ d. w_hh (3H, H); bp_rz, bp_n: W_hrz
    and W_hn packed for step_gemm (before_packs), gtmp its scratch."""
    H = dh_state.shape[1]
    w_rz, w_n = w_hh[:2 * H], w_hh[2 * H:]  # (2H, H), (H, H)
    for s in range(steps.shape[0] - 1, -1, -1):
        t, n, tp, n_prev = steps[s, 0], steps[s, 1], steps[s, 2], steps[s, 3]
        backward_nz_step(t, n, tp, n_prev, gk, ck, has_zh, zh, d_out, dh_state, gz, gn, out, h0,
                         dgates, dxa)
        step_gemm(dxa[t, :n, 2 * H:], w_n, bp_n, tmp[:n], False, 0.0, gtmp)  # (n, H) x (H, H)
        backward_r_step(t, n, tp, n_prev, gk, has_d, d, gr, out, h0, dgates, tmp, dxa)
        step_gemm(dxa[t, :n, :2 * H], w_rz, bp_rz, tmp[:n], False, 1.0, gtmp)  # += (n, 2H) x (2H, H)
        add_dropped(n, has_d, d, tmp, dh_state)


def before_packs(w_hh, trans_b, steps, B):
    """Reset before's two recurrent weights W_hrz (2H, H) and W_hn (H, H), each packed for
    step_gemm (transposed for the forward products, as they are for backward's), and the
    scratch: (bp_rz, bp_n, gtmp)."""
    H = w_hh.shape[1]
    S, dt = len(steps), w_hh.dtype
    return packed_weights(w_hh[:2 * H], trans_b, S, B), packed_weights(w_hh[2 * H:], trans_b, S, B), scratch(dt)


def dropped_rows(n, has_d, h_state, d, hd):
    """(d ⊙ h_state)[:n] (into hd) or h_state[:n]: the rows a recurrent product reads."""
    if not has_d:
        return h_state[:n]
    dropped(n, h_state, d, hd)
    return hd[:n]


def _masks(masks, T, B, H, dt, units):
    """(has_d, d (B, H), has_zh, zh (T|1, B, H)); absent masks are zero placeholders. And
    draws (2, 3), rows d zh, as engines.masks.as_arrays gives them: a Deferred mask is filled
    by the units split (units > 1) in its time loop, else here."""
    (d, zh), draws = as_arrays(masks, ("recurrent_dropout", "zoneout_h"), dt, units > 1)
    return (d is not None, workspace.zeros((B, H), dt) if d is None else d,
            zh is not None, workspace.zeros((1, B, H), dt) if zh is None else zh), draws


def _kinds(spec):
    return GATE_KINDS[spec.gate_activation], CELL_KINDS[spec.cell_activation]


def _forward(spec, x, h0, w_ih, w_hh, b_ih, b_hh, ln, masks, steps, keep, record, units=1, draws=None):
    """The forward pass on arrays: out (T, B, H), h_T and the saved ((r, z, n, hn) reset after,
    (r, z, n) reset before; layer-norm saves). ln: None or (ih_w, ih_b, hh_w, hh_b) arrays.
    `units` > 1: each step's units split between that many threads (fused_gru_family_units;
    reset after, no layer_norm), which also fill the zoneout mask `draws` marks (see _masks)."""
    T, B, _ = x.shape
    H = h0.shape[1]
    dt = x.dtype
    has_d, d, has_zh, zh = masks
    gk, ck = _kinds(spec)
    packed = any(s.n < B for s in steps)
    xa = None  # with the units split, each thread projects its own units' inputs
    if units == 1:
        xa = mm(x.reshape(T * B, x.shape[2]), w_ih.T, workspace.empty((T * B, 3 * H), dt)).reshape(T, B, 3 * H)
    bias, b_hn = workspace.zeros(3 * H, dt), workspace.zeros(H, dt)
    after = spec.reset_after
    if b_ih is not None:
        bias = b_ih.copy()
        if after:  # b_hn sits inside r ⊙ (hw_n + b_hn)
            bias[:2 * H] += b_hh[:2 * H]
            b_hn = b_hh[2 * H:]
        else:  # every recurrent bias sits outside its product
            bias += b_hh
    full = keep or record
    Ta = T if full else 1
    alloc = workspace.zeros if packed else workspace.empty
    xhat = rs_x = None
    if ln is not None and not after:
        raise ValueError("fused GRU: layer_norm needs reset_after=True")
    if ln is not None:  # LN of the input products, all steps at once
        xa, xhat, rs_x = _ln_all(xa, ln[0], ln[1])
        lnh = np.stack([ln[2], ln[3]])  # (2, 3H)
        hhat, rs_h = alloc((Ta, B, 3 * H), dt), workspace.zeros((Ta, B), dt)
    else:
        lnh, hhat, rs_h = workspace.zeros((2, 3 * H), dt), workspace.zeros((1, 1, 1), dt), workspace.zeros((1, 1), dt)
    saved = tuple(alloc((Ta, B, H), dt) for _ in range(4 if after else 3))  # r z n (hn)
    out = alloc((T, B, H), dt)
    h_state = workspace.copy(h0)
    hd = workspace.empty((B, H), dt)
    hw = workspace.empty((B, 3 * H), dt)
    if not after:
        u = workspace.empty((B, H), dt)
        if numba_loop():
            forward_loop_before(steps_array(steps), full, xa, w_hh, *before_packs(w_hh, True, steps, B), bias, gk,
                                ck, has_d, d, has_zh, zh, h_state, hd, hw, u, *saved, out)
        else:
            for t, n, _, _ in steps:
                ta = t if full else 0
                mm(dropped_rows(n, has_d, h_state, d, hd), w_hh[:2 * H].T, hw[:n, :2 * H])
                rz_step(t, n, ta, xa, hw, bias, gk, has_d, d, h_state, *saved[:2], u)
                mm(u[:n], w_hh[2 * H:].T, hw[:n, 2 * H:])
                n_step(t, n, ta, xa, hw, bias, ck, has_zh, zh, h_state, *saved[1:], out)
    elif units > 1:
        from gatelab.engines import fused_gru_family_units

        fused_gru_family_units.forward(units, steps_array(steps), full, x, w_ih, w_hh, bias, b_hn, gk, ck, masks,
                                       h_state, saved, out, np.zeros((2, 3), np.int64) if draws is None else draws)
    elif numba_loop():
        bp = packed_weights(w_hh, True, len(steps), B)
        forward_loop(steps_array(steps), full, xa, w_hh, bp, scratch(dt), bias, b_hn, gk, ck, has_d, d, has_zh, zh,
                     h_state, hd, hw, *saved, out, ln is not None, lnh, hhat, rs_h)
    else:
        for t, n, _, _ in steps:
            if has_d:
                dropped(n, h_state, d, hd)
                mm(hd[:n], w_hh.T, hw[:n])
            else:
                mm(h_state[:n], w_hh.T, hw[:n])
            if ln is not None:
                tk = t if full else 0
                ln_rows(n, hw, lnh[0], lnh[1], hhat[tk], rs_h[tk])
            forward_step(t, n, t if full else 0, t, xa, hw, bias, b_hn, gk, ck, has_zh, zh, h_state,
                         *saved, out, 0, H)
    return out, h_state, ((saved, (xhat, rs_x, lnh, hhat, rs_h)) if full else None)


class GRUFamilyFunction(torch.autograd.Function):
    """One GRU-family layer-direction; outputs out, h_T and, with record, r z n."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, ln_ih_w, ln_ih_b, ln_hh_w, ln_hh_b, spec, masks,
                steps, record, units, draws):
        xs, h0s = arr(x), arr(h0)
        w_ihs, w_hhs, b_ihs, b_hhs, ln = weight_arrays(w_ih, w_hh, b_ih, b_hh, ln_ih_w, ln_ih_b, ln_hh_w, ln_hh_b)
        out, h_T, saved = _forward(spec, xs, h0s, w_ihs, w_hhs, b_ihs, b_hhs, ln, masks, steps, keep=True,
                                   record=record, units=units, draws=draws)
        ctx.set_materialize_grads(False)
        ctx.arrays = (xs, h0s, w_ihs, w_hhs, out, *saved)
        ctx.spec, ctx.masks, ctx.steps, ctx.has_bias, ctx.units = spec, masks, steps, b_ih is not None, units
        ctx.ln_ih_w = None if ln is None else ln[0]
        return tuple(tensor(a) for a in (out, h_T, *(recorded(saved) if record else ())))

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT, *d_gates):
        grads = backward_arrays(ctx, d_out, (d_hT,), d_gates)
        return tuple(None if g is None else tensor(np.ascontiguousarray(g)) for g in grads) + (None,) * 6


def backward_arrays(ctx, d_out, d_states, d_gates) -> tuple:
    """GRUFamilyFunction's backward: the gradients (arrays, None where not needed) of its 10
    tensor inputs, for the gradients of its outputs (tensors or None; d_states: (δh_T,)).
    ctx: the Function's context, or any object with the attributes its forward sets (arrays,
    spec, masks, steps, has_bias, units, ln_ih_w) and needs_input_grad (block_forward's, one
    per row block of fused_family_rows)."""
    xs, h0s, w_ihs, w_hhs, out, saved, (xhat, rs_x, lnh, hhat, rs_h) = ctx.arrays
    (d_hT,) = d_states
    ln = ctx.spec.layer_norm
    steps = ctx.steps
    has_d, d, has_zh, zh = ctx.masks
    gk, ck = _kinds(ctx.spec)
    T, B, _ = xs.shape
    H = h0s.shape[1]
    dt = xs.dtype
    d_out = workspace.zeros((T, B, H), dt) if d_out is None else arr(d_out)
    dh_state = workspace.zeros((B, H), dt) if d_hT is None else workspace.copy(arr(d_hT))
    dgates = workspace.zeros((3, 1, B, H), dt)
    if d_gates and any(g is not None for g in d_gates):
        dgates = np.stack([workspace.zeros((T, B, H), dt) if g is None else arr(g) for g in d_gates])
    packed = any(s.n < B for s in steps)
    dxa = (workspace.zeros if packed else workspace.empty)((T, B, 3 * H), dt)
    if not ctx.spec.reset_after:
        return _backward_before(ctx, xs, h0s, w_ihs, w_hhs, out, saved, d_out, dh_state, dgates, dxa)
    dhw = (workspace.zeros if packed else workspace.empty)((T, B, 3 * H), dt)
    tmp = workspace.empty((B, H), dt)
    alloc = workspace.zeros if packed else workspace.empty
    dhw_raw = alloc((T, B, 3 * H), dt) if ln else workspace.zeros((1, 1, 1), dt)
    need = ctx.needs_input_grad
    if ctx.units > 1:  # the threads also share the GEMMs after
        from gatelab.engines import fused_gru_family_units

        h_prev = previous_rows(out, h0s, steps, d if has_d else None) if need[3] else None  # d ⊙ H_prev
        dx, dw_ih, dw_hh, db_ih, db_hh = fused_gru_family_units.backward(
            ctx.units, steps_array(steps), gk, ck, ctx.masks, d_out, dh_state, saved, out, h0s, dgates, dxa,
            dhw, xs, h_prev, w_ihs, w_hhs, (need[0], need[2], need[3], ctx.has_bias))
        return dx, dh_state, dw_ih, dw_hh, db_ih, db_hh, None, None, None, None
    if numba_loop():
        bp = packed_weights(w_hhs, False, len(steps), B)
        backward_loop(steps_array(steps), gk, ck, has_d, d, has_zh, zh, d_out, dh_state, *saved,
                      out, h0s, dgates, dxa, dhw, w_hhs, bp, scratch(dt), tmp, ln, lnh, hhat, rs_h, dhw_raw)
    else:
        for t, n, tp, n_prev in reversed(steps):
            backward_step(t, n, tp, n_prev, gk, ck, has_zh, zh, d_out, dh_state, *saved, out, h0s,
                          dgates, dxa, dhw, 0, H)
            if ln:
                ln_back_rows(n, dhw[t], hhat[t], rs_h[t], lnh[0], dhw_raw[t])
            mm((dhw_raw if ln else dhw)[t, :n], w_hhs, tmp[:n])
            add_dropped(n, has_d, d, tmp, dh_state)
    dln = (None,) * 4
    if ln:  # dxa, dhw are δ of the normalised products (+ bias): through LN's backward
        dln = (np.einsum("tbk,tbk->k", dxa, xhat), add_rows_sum(dxa),
               np.einsum("tbk,tbk->k", dhw, hhat), add_rows_sum(dhw))
        dxa_raw, dhw_raw_all = _ln_all_backward(dxa, xhat, rs_x, ctx.ln_ih_w), dhw_raw
    else:
        dxa_raw, dhw_raw_all = dxa, dhw
    dxa2, dhw2 = dxa_raw.reshape(T * B, 3 * H), dhw_raw_all.reshape(T * B, 3 * H)
    dx = mm(dxa2, w_ihs, workspace.empty((T * B, xs.shape[2]), dt)).reshape(xs.shape) if need[0] else None
    dw_ih = mm(dxa2.T, xs.reshape(T * B, xs.shape[2]), workspace.empty_like(w_ihs)) if need[2] else None
    dw_hh = None
    if need[3]:
        h_prev = previous_rows(out, h0s, steps, d if has_d else None)  # d ⊙ H_prev (T*B, H)
        dw_hh = times_previous(dhw2, h_prev, workspace.empty_like(w_hhs))
    db_ih = add_rows_sum(dxa) if ctx.has_bias else None
    db_hh = add_rows_sum(dhw) if ctx.has_bias else None
    return dx, dh_state, dw_ih, dw_hh, db_ih, db_hh, *dln


def _backward_before(ctx, xs, h0s, w_ihs, w_hhs, out, saved, d_out, dh_state, dgates, dxa):
    """backward_arrays for reset before: BPTT into dxa (T, B, 3H), which is also the δ of both
    recurrent products and of b_hh; then the GEMMs over all steps."""
    steps = ctx.steps
    has_d, d, has_zh, zh = ctx.masks
    gk, ck = _kinds(ctx.spec)
    T, B, I = xs.shape
    H = h0s.shape[1]
    dt = xs.dtype
    gr, gz, gn = saved
    tmp = workspace.empty((B, H), dt)
    if numba_loop():
        backward_loop_before(steps_array(steps), gk, ck, has_d, d, has_zh, zh, d_out, dh_state, gr, gz, gn,
                             out, h0s, dgates, dxa, w_hhs, *before_packs(w_hhs, False, steps, B), tmp)
    else:
        for t, n, tp, n_prev in reversed(steps):
            backward_nz_step(t, n, tp, n_prev, gk, ck, has_zh, zh, d_out, dh_state, gz, gn, out, h0s,
                             dgates, dxa)
            mm(dxa[t, :n, 2 * H:], w_hhs[2 * H:], tmp[:n])  # δu = δa_n W_hn
            backward_r_step(t, n, tp, n_prev, gk, has_d, d, gr, out, h0s, dgates, tmp, dxa)
            tmp[:n] += dxa[t, :n, :2 * H] @ w_hhs[:2 * H]
            add_dropped(n, has_d, d, tmp, dh_state)
    need = ctx.needs_input_grad
    dxa2 = dxa.reshape(T * B, 3 * H)
    dx = mm(dxa2, w_ihs, workspace.empty((T * B, I), dt)).reshape(xs.shape) if need[0] else None
    dw_ih = mm(dxa2.T, xs.reshape(T * B, I), workspace.empty_like(w_ihs)) if need[2] else None
    dw_hh = None
    if need[3]:
        h_prev = previous_dropped(out, h0s, steps, d if has_d else None)  # (T, B, H), zero at padded rows
        dw_hh = workspace.empty_like(w_hhs)  # (3H, H)
        mm(dxa2[:, :2 * H].T, h_prev.reshape(T * B, H), dw_hh[:2 * H])  # δW_hrz = δXA_rz^T (d ⊙ H_prev)
        h_prev *= gr  # U = r ⊙ d ⊙ H_prev
        mm(dxa2[:, 2 * H:].T, h_prev.reshape(T * B, H), dw_hh[2 * H:])  # δW_hn = δXA_n^T U
    db = add_rows_sum(dxa) if ctx.has_bias else None
    return dx, dh_state, dw_ih, dw_hh, db, None if db is None else db.copy(), None, None, None, None


LN_NAMES = ("ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias")
RECORDED = ("r", "z", "n")  # the gates a record returns, in GRUFamilyFunction's output order
N_STATE = 1  # h: the Function's input after x, and its output after out


def inputs_of(spec, x, state, weights) -> tuple:
    """GRUFamilyFunction's 10 tensor inputs: x, h0, w_ih, w_hh, b_ih, b_hh and the four
    layer-norm parameters (None where the spec has none)."""
    b_ih, b_hh = (weights["bias_ih"], weights["bias_hh"]) if spec.bias else (None, None)
    ln = tuple(weights[k] for k in LN_NAMES) if spec.layer_norm else (None,) * 4
    return (x, *state, weights["weight_ih"], weights["weight_hh"], b_ih, b_hh, *ln)


def weight_arrays(w_ih, w_hh, b_ih, b_hh, *ln) -> tuple:
    """The weights as _forward takes them: (w_ih, w_hh, b_ih, b_hh, the layer-norm parameters
    or None)."""
    return arr(w_ih), arr(w_hh), arr(b_ih), arr(b_hh), None if ln[0] is None else tuple(arr(v) for v in ln)


def recorded(saved) -> tuple:
    """The recorded gates r z n (arrays) from _forward's saved ((r, z, n[, hn]), ...)."""
    return tuple(saved[0][:3])


def block_forward(spec, x, states, weights, masks, steps, keep, record):
    """_forward of one row block on arrays (fused_family_rows): x (T, Bb, I), states (h0,) of
    its rows, weights as weight_arrays gives them, masks its rows' (filled). Returns (what
    backward_arrays reads of a context, out, (h_T,), saved)."""
    T, B, _ = x.shape
    (h0,) = states
    mask_arrays = _masks(masks, T, B, h0.shape[1], x.dtype, 1)[0]
    w_ih, w_hh, b_ih, b_hh, ln = weights
    out, h_T, saved = _forward(spec, x, h0, w_ih, w_hh, b_ih, b_hh, ln, mask_arrays, steps, keep=keep,
                               record=record)
    ctx = SimpleNamespace(arrays=(x, h0, w_ih, w_hh, out, *saved) if saved else None, spec=spec, masks=mask_arrays,
                          steps=steps, has_bias=b_ih is not None, units=1, ln_ih_w=None if ln is None else ln[0])
    return ctx, out, (h_T,), saved


def run(spec, x, state, weights, steps, record, masks, units=1):
    """One GRU-family layer-direction; see gatelab.engines for the contract. `units` > 1:
    each step's units split between that many threads (fused_gru_family_units)."""
    T, B, _ = x.shape
    mask_arrays, draws = _masks(masks, T, B, spec.hidden_size, np.dtype(str(x.dtype).removeprefix("torch.")), units)
    inputs = inputs_of(spec, x, state, weights)
    if needs_grad(*inputs):
        out, h_T, *rec = GRUFamilyFunction.apply(*inputs, spec, mask_arrays, steps, record, units, draws)
    else:
        out, h_T, saved = _forward(spec, arr(x), arr(inputs[1]), *weight_arrays(*inputs[2:]), mask_arrays, steps,
                                   keep=False, record=record, units=units, draws=draws)
        out, h_T, *rec = (tensor(a) for a in (out, h_T, *(recorded(saved) if record else ())))
    return out, (h_T,), dict(zip(RECORDED, rec)) if record else None
