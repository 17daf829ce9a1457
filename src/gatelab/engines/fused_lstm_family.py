"""The fused LSTM family (issue 7): the variants and the stochastic masks, hand-written BPTT.

The plain LSTM keeps its own kernels (fused_lstm); every other LSTM request runs here
with kernels whose variant switches are run-time flags (one compiled specialisation per
dtype, whatever the variant). The gate passes come in two sets: with σ and tanh and
without layer norm (every variant but those three options; no δ of recorded gates in
backward) `_forward_lean` and `_backward_lean`, the plain cell's loops with the ablations
as selects and peepholes and zoneout of c compiled in apart, each in a function of its
own; the general passes (forward_step, backward_step) the rest. Definitions:
gatelab.engines, "The LSTM family". σ the gate activation, φ the cell activation, per
step t:

    a   = xa_t + (d ⊙ h_{t-1}) W_hh^T + b_ih + b_hh     d: recurrent_dropout mask, else 1
    a_f += p_f ⊙ c_{t-1},  a_i += p_i ⊙ c_{t-1}         peephole
    f = σ(a_f) | 1      i = σ(a_i) | 1 - f (coupled) | 1      g = φ(a_g) | a_g
    c̃ = f ⊙ c_{t-1} + i ⊙ g       a_o += p_o ⊙ c̃ (peephole)       o = σ(a_o) | 1
    y = φ(c̃) | c̃       m = o ⊙ y       h̃ = m | m W_hr^T
    c_t = z_c ⊙ c_{t-1} + (1 - z_c) ⊙ c̃     h_t = z_h ⊙ h_{t-1} + (1 - z_h) ⊙ h̃   (zoneout)

    Saved for backward: i f g o c̃ (T, B, H), the carried c (T, B, H) when zoneout_c, and
    h (the output); with layer_norm also v̂ of both products (T, B, 4H) and the row
    statistics.

Backward, per step from the last (δ = ∂loss/∂·):

    δh = δout_t + δh_t;   δh̃ = (1 - z_h) δh,   δh_{t-1} ∋ z_h δh;   δm = δh̃ | δh̃ W_hr
    δc = δc_t (+ δ of the recorded c);  δc̃ = (1 - z_c) δc,  δc_{t-1} ∋ z_c δc
    δo = δm ⊙ y     δc̃ += δm ⊙ o ⊙ φ'(c̃)     δa_o = δo σ'     δc̃ += δa_o ⊙ p_o
    δf = δc̃ ⊙ c_{t-1}   δi = δc̃ ⊙ g   δg = δc̃ ⊙ i   δc_{t-1} ∋ δc̃ ⊙ f
    coupled: δf -= δi, δa_i = 0;   removed gates: δa = 0;   δc_{t-1} ∋ δa_f p_f + δa_i p_i
    δh_{t-1} ∋ (δa W_hh) ⊙ d

    then over all steps: δW_ih = δA^T X, δW_hh = δA^T (d ⊙ H_prev), δb = Σ δA,
    δX = δA W_ih, δW_hr = δH̃^T M, δp_f = Σ δa_f ⊙ c_{t-1}, δp_i = Σ δa_i ⊙ c_{t-1},
    δp_o = Σ δa_o ⊙ c̃.

The derivatives of the activations are taken from their outputs (σ' = s(1 - s);
hard_sigmoid' = 1/6 where 0 < s < 1; tanh' = 1 - y²; softsign' = (1 - |y|)²).
layer_norm: xa = LN(X W_ih^T; ln_ih) for all steps before the loop; per step hw =
LN(hw; ln_hh) after the GEMM and y = φ(LN(c̃; ln_c)) in the gate pass (row statistics
saved); backward takes the cell's LN inside the BPTT pass, the recurrent product's per step
(its δ feeds the δh GEMM and δW_hh) and the input's for all steps after the loop;
δln_*_bias = Σ δa (ih, hh), δln_*_weight = Σ δa ⊙ v̂.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from numba import njit
from torch.autograd.function import once_differentiable

from gatelab.engines._kernels import (JIT, exp, hard_sigmoid, hard_sigmoid_grad, one, sigmoid,
                                      softsign_grad, tanh)
from gatelab.engines._kernels_blas import gemm
from gatelab.engines._kernels_gemm import packed_weights, scratch, step_gemm
from gatelab.engines.fused_lstm import gate_views_at
from gatelab.engines.fused_common import (
    add_rows_sum, arr, mm, needs_grad, numba_loop, previous, previous_rows, steps_array, tensor, times_previous)
from gatelab.engines import workspace
from gatelab.engines.masks import as_arrays

# flags: int64 array of the variant switches, in this order, then at POS the positions of
# gate blocks i f g o in xa, hw and bias (0 1 2 3; a units-split thread puts removed gates last)
GATE_KIND, CELL_KIND, PEEPHOLE, COUPLED, NO_F, NO_I, NO_G, NO_O, NO_Y, HAS_ZC, LN, HAS_DG, POS = range(13)
LN_EPS = 1e-5  # layer norm's ε (torch.nn.LayerNorm's default, as the reference)
GATE_KINDS = {"sigmoid": 0, "hard_sigmoid": 1}
CELL_KINDS = {"tanh": 0, "softsign": 1}


def flags_of(spec, has_zc: bool, has_dg: bool = False) -> np.ndarray:
    """The spec's variant switches as the kernels' int64 flag array; has_dg (backward only):
    δ of recorded gates to add (without, backward_step does not read its zeros)."""
    r = spec.remove
    return np.array([GATE_KINDS[spec.gate_activation], CELL_KINDS[spec.cell_activation],
                     spec.peephole, spec.coupled_gates, "forget_gate" in r, "input_gate" in r,
                     "candidate_activation" in r, "output_gate" in r, "output_activation" in r,
                     has_zc, spec.layer_norm, has_dg, 0, 1, 2, 3], dtype=np.int64)


def unused_gates(flags) -> tuple:
    """The gate blocks (0 i, 1 f, 2 g, 3 o) whose rows of W_ih, W_hh and the biases the
    variant (flags_of) never reads: a removed gate's, and the input gate's with coupled gates
    (i = 1 - f). Their products need not be formed; their gradients are zero."""
    return tuple(g for g, unused in enumerate((flags[NO_I] or flags[COUPLED], flags[NO_F], False, flags[NO_O]))
                 if unused)


# The activations are chosen by a run-time kind, but both candidates are computed and one is
# selected (no branch): the gate loops then stay branch-free and vectorise like the plain pass.
@njit(inline="always")
def _gate(a, kind):
    s, hs = sigmoid(a), hard_sigmoid(a)
    return hs if kind else s


@njit(inline="always")
def _gate_grad(s, kind):
    ds, dh = s * (one(s) - s), hard_sigmoid_grad(s)
    return dh if kind else ds


@njit(inline="always")
def _cell(a, kind):
    """tanh(a) = 1 - 2 / (e^{2a} + 1) or softsign(a) = a / (1 + |a|), sharing one division
    (the costliest instruction of the pass): tanh's value bit for bit as _kernels.tanh."""
    u = one(a)
    q = (a if kind else u + u) / ((u + abs(a)) if kind else (exp(a + a) + u))
    return q if kind else u - q


@njit(inline="always")
def _cell_grad(y, kind):
    dt, ds = one(y) - y * y, softsign_grad(y)
    return ds if kind else dt


# The passes below take the activation kinds as arguments: called with the constants 0, 0
# (σ and tanh, by far the most common) LLVM folds the selects of _gate and _cell and drops
# hard_sigmoid and softsign, which the run-time kinds compute alongside (at (100,32,128,256)
# the ablations' training took 5 % over the plain cell's with them).
@njit(inline="always")
def _fig_pass(U, h_f, h_i, h_g, f_, i_, g_, gk, ck, coupled, no_f, no_i, no_g):
    """f i g from their pre-activations, branch-free (selects only), so that it vectorises."""
    for j in range(U):
        a_f, a_i, a_g = h_f[j], h_i[j], h_g[j]
        fv, iv, gv = _gate(a_f, gk), _gate(a_i, gk), _cell(a_g, ck)
        f = one(a_f) if no_f else fv
        f_[j] = f
        i_[j] = one(a_f) - f if coupled else (one(a_f) if no_i else iv)
        g_[j] = a_g if no_g else gv


@njit(inline="always")
def _cell_pass(U, c_, h_o, p_o, z_, f_, i_, g_, m_, o_, cn_, cs_, gk, ck, no_o, no_y, ln):
    """c̃, o (peephole p_o, zero without), m = o ⊙ y (o alone with layer_norm: y comes after),
    the carried c (z_: the zoneout_c mask, zero without)."""
    for j in range(U):
        cp = c_[j]
        cn = f_[j] * cp + i_[j] * g_[j]
        ov, yv = _gate(h_o[j] + p_o[j] * cn, gk), _cell(cn, ck)
        o = one(cp) if no_o else ov
        y = cn if no_y else yv
        m_[j] = o if ln else o * y  # with layer_norm y comes below
        c = z_[j] * cp + (one(cp) - z_[j]) * cn  # z = 0 without zoneout_c: c = c̃ exactly
        c_[j] = c
        o_[j] = o
        cn_[j] = cn
        cs_[j] = c  # scratch without zoneout_c


@njit(inline="always")
def _lean_rows(t, n, tk, tx, xa, hw, bias, ph, flags, zc, c_state, gi, gf, gg, go, cn_seq, c_seq, m_state, u0,
               u1, coupled, no_f, no_i, no_g, no_o, no_y, has_zc, peep):
    """_forward_lean's rows; has_zc and peep come as constants."""
    H = c_state.shape[1]
    U = u1 - u0
    G = hw.shape[1] // 4
    k0 = u0 if G == H else 0
    tz = t if has_zc else 0
    p_f, p_i, p_o = ph[0, u0:u1], ph[1, u0:u1], ph[2, u0:u1]  # (U,)
    for b in range(n):
        x_i, x_f, x_g, x_o, h_i, h_f, h_g, h_o, b_i, b_f, b_g, b_o = gate_views_at(
            tx, b, xa, hw, bias, k0, k0 + U, G, flags[POS], flags[POS + 1], flags[POS + 2], flags[POS + 3])
        c_, m_ = c_state[b, u0:u1], m_state[b, u0:u1]  # (U,)
        i_, f_, g_, o_ = gi[tk, b, u0:u1], gf[tk, b, u0:u1], gg[tk, b, u0:u1], go[tk, b, u0:u1]
        cn_, z_, cs_ = cn_seq[tk, b, u0:u1], zc[tz, b, u0:u1], c_seq[tk if has_zc else 0, b, u0:u1]  # (U,)
        # every activation computed, then selected: a call inside a branch keeps LLVM from
        # vectorising the loop (written `one if no_f else sigmoid(a_f)`, no_output_activation's
        # step took ~9 µs more at (100,32,128,256))
        for j in range(U):
            a_f, a_i = x_f[j] + h_f[j] + b_f[j], x_i[j] + h_i[j] + b_i[j]
            a_g, a_o = x_g[j] + h_g[j] + b_g[j], x_o[j] + h_o[j] + b_o[j]
            if peep:  # f and i read c_{t-1}; o reads c̃, below: its pre-activation waits in o_
                a_f += p_f[j] * c_[j]
                a_i += p_i[j] * c_[j]
            sf, si, tg, so = sigmoid(a_f), sigmoid(a_i), tanh(a_g), sigmoid(a_o)
            f = one(a_f) if no_f else sf
            f_[j] = f
            i_[j] = one(a_f) - f if coupled else (one(a_i) if no_i else si)
            g_[j] = a_g if no_g else tg
            o_[j] = a_o if peep else (one(a_o) if no_o else so)
        for j in range(U):
            cp = c_[j]
            cn = f_[j] * cp + i_[j] * g_[j]
            tc = tanh(cn)
            o = o_[j]
            if peep:
                so = sigmoid(o + p_o[j] * cn)
                o = one(cn) if no_o else so
                o_[j] = o
            m_[j] = o * (cn if no_y else tc)
            cn_[j] = cn
            if has_zc:  # c = z c_{t-1} + (1 - z) c̃, kept in c_seq for backward
                c = z_[j] * cp + (one(cp) - z_[j]) * cn
                c_[j] = c
                cs_[j] = c
            else:
                c_[j] = cn


@njit(**JIT)
def _forward_lean(t, n, tk, tx, xa, hw, bias, ph, flags, zc, c_state, gi, gf, gg, go, cn_seq, c_seq, m_state, u0,
                  u1, coupled, no_f, no_i, no_g, no_o, no_y, has_zc, peep):
    """forward_step for σ and tanh without layer norm (the ablations by selects): in the plain
    cell's two loops (fused_lstm.forward_step), the gates from their pre-activations (with
    peepholes ph (3, H), f and i reading c_{t-1}), then c̃, o with its peephole, m and
    (zoneout of c: zc (Tz, B, H) its mask at t) the carried c into c_seq. A function of its
    own: inlined into forward_step with the other passes, its loops ran slower. has_zc and
    peep are constants in each of the loops' copies (a branch on them would stay in the loop)."""
    if peep and has_zc:
        _lean_rows(t, n, tk, tx, xa, hw, bias, ph, flags, zc, c_state, gi, gf, gg, go, cn_seq, c_seq, m_state,
                   u0, u1, coupled, no_f, no_i, no_g, no_o, no_y, True, True)
    elif peep:
        _lean_rows(t, n, tk, tx, xa, hw, bias, ph, flags, zc, c_state, gi, gf, gg, go, cn_seq, c_seq, m_state,
                   u0, u1, coupled, no_f, no_i, no_g, no_o, no_y, False, True)
    elif has_zc:
        _lean_rows(t, n, tk, tx, xa, hw, bias, ph, flags, zc, c_state, gi, gf, gg, go, cn_seq, c_seq, m_state,
                   u0, u1, coupled, no_f, no_i, no_g, no_o, no_y, True, False)
    else:
        _lean_rows(t, n, tk, tx, xa, hw, bias, ph, flags, zc, c_state, gi, gf, gg, go, cn_seq, c_seq, m_state,
                   u0, u1, coupled, no_f, no_i, no_g, no_o, no_y, False, False)


@njit(**JIT)
def forward_step(t, n, ta, tx, xa, hw, bias, ph, flags, zc, c_state, gi, gf, gg, go, cn_seq, c_seq,
                 m_state, lnc, stats, u0, u1):
    """One step's gate pass for rows [:n]: c_state (B, H) c_{t-1} in, c_t out; m_state
    (B, H) receives m = o ⊙ y. Gates, c̃ (and with zoneout_c the carried c) are written at
    ta (not at all when ta < 0). xa (Tx, B, 4H), this step's at row tx (t, or t's place in
    a units-split thread's chunk: fused_units.project_chunk); hw (B, 4H) h_{t-1} W_hh^T,
    overwritten with a; bias (4H,); ph (3, H) p_f|p_i|p_o (zeros without peephole); flags: flags_of(...);
    zc (Tz, B, H) zoneout_c mask (read at t when flags[HAS_ZC]). layer_norm (flags[LN]):
    lnc (2, H) rows ln_c weight|bias; stats (3, Ta, B) receives μ and 1/√(σ² + ε) of c̃
    (rows 0, 1) at ta; y = φ(LN(c̃)).
    Units [u0, u1) only (all: 0, H; layer_norm needs all): xa, hw and bias then hold gate
    blocks i f g o of width G = H (unit u at column gH + u) or, in one thread's own buffers,
    G = u1 - u0 (unit u at column gG + u - u0), as in fused_lstm.forward_step."""
    H = c_state.shape[1]
    U = u1 - u0
    G = hw.shape[1] // 4  # gate block width of xa, hw and bias
    k0 = u0 if G == H else 0  # my units' first column in each block
    k1 = k0 + U
    ln = flags[LN] != 0
    gk, ck = flags[GATE_KIND], flags[CELL_KIND]
    coupled = flags[COUPLED] != 0
    no_f, no_i, no_g, no_o, no_y = (flags[NO_F] != 0, flags[NO_I] != 0, flags[NO_G] != 0,
                                    flags[NO_O] != 0, flags[NO_Y] != 0)
    has_zc, peep = flags[HAS_ZC] != 0, flags[PEEPHOLE] != 0
    std = gk == 0 and ck == 0
    tk = ta if ta >= 0 else 0
    if std and not ln:  # the plain cell's passes, with the ablations' selects
        _forward_lean(t, n, tk, tx, xa, hw, bias, ph, flags, zc, c_state, gi, gf, gg, go, cn_seq, c_seq, m_state, u0,
                      u1, coupled, no_f, no_i, no_g, no_o, no_y, has_zc, peep)
        return
    # layer norm, or other activations, from here. With layer norm and σ, tanh: the plain
    # cell's activations and gates computed as such, without the selects (6.5 against 7.5 µs
    # a step for 16 rows x 64 units, one thread)
    plain_maths = std and not (coupled or no_f or no_i or no_g or no_o or no_y)
    tz = t if has_zc else 0
    tc = tk if has_zc else 0
    p_f, p_i, p_o = ph[0, u0:u1], ph[1, u0:u1], ph[2, u0:u1]  # (U,)
    for b in range(n):
        x_i, x_f, x_g, x_o, h_i, h_f, h_g, h_o, b_i, b_f, b_g, b_o = gate_views_at(
            tx, b, xa, hw, bias, k0, k1, G, flags[POS], flags[POS + 1], flags[POS + 2], flags[POS + 3])
        c_, m_, z_ = c_state[b, u0:u1], m_state[b, u0:u1], zc[tz, b, u0:u1]  # (U,)
        i_, f_, g_, o_ = gi[tk, b, u0:u1], gf[tk, b, u0:u1], gg[tk, b, u0:u1], go[tk, b, u0:u1]
        cn_, cs_ = cn_seq[tk, b, u0:u1], c_seq[tc, b, u0:u1]  # (U,)
        # two passes, each with few arrays (with all of them in one loop LLVM's alias checks
        # give up and the pass runs scalar, 5x slower): the pre-activations into hw first
        if peep:
            for j in range(U):
                cp = c_[j]
                h_f[j] = x_f[j] + h_f[j] + b_f[j] + p_f[j] * cp
                h_i[j] = x_i[j] + h_i[j] + b_i[j] + p_i[j] * cp
        else:
            for j in range(U):
                h_f[j] = x_f[j] + h_f[j] + b_f[j]
                h_i[j] = x_i[j] + h_i[j] + b_i[j]
        for j in range(U):
            h_g[j] = x_g[j] + h_g[j] + b_g[j]
            h_o[j] = x_o[j] + h_o[j] + b_o[j]
        # f i g first, then the rest (one loop with every array ran slower); without keep
        # i_ f_ g_ o_ are scratch rows (ta < 0: index 0 of (1, B, H))
        if plain_maths:  # σ and tanh, every gate
            for j in range(U):
                f_[j] = sigmoid(h_f[j])
                i_[j] = sigmoid(h_i[j])
                g_[j] = tanh(h_g[j])
        elif std:  # σ and tanh with an ablation: each pass compiled for them alone
            _fig_pass(U, h_f, h_i, h_g, f_, i_, g_, 0, 0, coupled, no_f, no_i, no_g)
        else:
            _fig_pass(U, h_f, h_i, h_g, f_, i_, g_, gk, ck, coupled, no_f, no_i, no_g)
        _cell_pass(U, c_, h_o, p_o, z_, f_, i_, g_, m_, o_, cn_, cs_, gk, ck, no_o, no_y, ln)
        if ln:  # y = φ(LN(c̃)) over the row's H units; m = o ⊙ y
            mu = _sum(cn_) / H
            rs = 1.0 / np.sqrt(_sum_sq(cn_, mu) / H + LN_EPS)
            stats[0, tk, b] = mu
            stats[1, tk, b] = rs
            mu_c, rs_c = stats[0, tk, b], stats[1, tk, b]  # in x's dtype, as backward reads them
            w_, bb_ = lnc[0], lnc[1]
            for j in range(H):
                yv = (cn_[j] - mu_c) * rs_c * w_[j] + bb_[j]
                m_[j] *= yv if no_y else _cell(yv, ck)


# Row reductions, in float64. Compiled with licence to reassociate the sum (and nothing
# else) so that LLVM vectorises it; a left-to-right sum would run scalar, and these passes
# then took half of layer norm's cost. Results change only in the order of additions.
REDUCE = dict(JIT, fastmath={"contract", "reassoc"})


@njit(**REDUCE)
def _sum(v):
    """Σ_j v_j in float64."""
    s = 0.0
    for j in range(v.shape[0]):
        s += v[j]
    return s


@njit(**REDUCE)
def _sum_sq(v, mu):
    """Σ_j (v_j - mu)² in float64."""
    s = 0.0
    for j in range(v.shape[0]):
        d = v[j] - mu
        s += d * d
    return s


@njit(**REDUCE)
def _dot(a, b, w):
    """(Σ_j a_j w_j, Σ_j a_j w_j b_j) in float64."""
    p = 0.0
    q = 0.0
    for j in range(a.shape[0]):
        e = a[j] * w[j]
        p += e
        q += e * b[j]
    return p, q


@njit(**REDUCE)
def _sum_centered(a, v, mu, rs):
    """Σ_j a_j (v_j - mu) rs in float64 (a ⊙ v̂ summed, v̂ recomputed from v)."""
    s = 0.0
    for j in range(a.shape[0]):
        s += a[j] * ((v[j] - mu) * rs)
    return s


@njit(**JIT)
def ln_rows(n, v, w, bias, vhat, rstd):
    """v[:n] (B, N) <- LN(v) = w ⊙ v̂ + bias over each row; v̂ into vhat (B, N) and
    1/√(σ² + ε) into rstd (B,)."""
    N = v.shape[1]
    for b in range(n):
        v_, vh_ = v[b], vhat[b]
        mu = _sum(v_) / N
        rs = 1.0 / np.sqrt(_sum_sq(v_, mu) / N + LN_EPS)
        rstd[b] = rs
        for j in range(N):
            vh = (v_[j] - mu) * rs
            vh_[j] = vh
            v_[j] = vh * w[j] + bias[j]


@njit(**JIT)
def ln_back_rows(n, dy, vhat, rstd, w, dv):
    """dv[:n] = ∂L/∂v for dy[:n] = ∂L/∂LN(v) (B, N): rstd (dv̂ - mean(dv̂) - v̂ mean(dv̂ v̂)),
    dv̂ = dy ⊙ w."""
    N = dy.shape[1]
    for b in range(n):
        dy_, vh_, dv_ = dy[b], vhat[b], dv[b]
        s1, s2 = _dot(dy_, vh_, w)
        s1 /= N
        s2 /= N
        rs = rstd[b]
        for j in range(N):
            dv_[j] = rs * (dy_[j] * w[j] - s1 - vh_[j] * s2)


@njit(**JIT)
def outputs(cn_seq, go, flags, lnc, stats, m):
    """m = o ⊙ y(c̃) for every saved step (for δW_hr); all (T, B, H)."""
    T, B, H = m.shape
    ck, no_y, ln = flags[CELL_KIND], flags[NO_Y] != 0, flags[LN] != 0
    for t in range(T):
        for b in range(B):
            cn_, o_, m_ = cn_seq[t, b], go[t, b], m[t, b]
            mu, rs = stats[0, t, b], stats[1, t, b]
            for j in range(H):
                v = (cn_[j] - mu) * rs * lnc[0, j] + lnc[1, j] if ln else cn_[j]
                m_[j] = o_[j] * (v if no_y else _cell(v, ck))


@njit(**JIT)
def zone_h(t, n, has_zh, zh, h_new, h_prev, h_state, out, u0, u1):
    """h_t = z_h ⊙ h_{t-1} + (1 - z_h) ⊙ h̃ (or h̃) into h_state and out[t], rows [:n],
    units [u0, u1); h_prev (B, H_out) holds h_{t-1} (h_state itself, or the other half of
    the units split's double buffer)."""
    U = u1 - u0
    for b in range(n):
        hn_, hp_, hs_, o_ = h_new[b, u0:u1], h_prev[b, u0:u1], h_state[b, u0:u1], out[t, b, u0:u1]
        if has_zh:
            z_ = zh[t, b, u0:u1]
            for j in range(U):
                h = z_[j] * hp_[j] + (one(hn_[j]) - z_[j]) * hn_[j]
                hs_[j] = h
                o_[j] = h
        else:
            for j in range(U):
                hs_[j] = hn_[j]
                o_[j] = hn_[j]


@njit(**JIT)
def dropped(n, h_state, d, hd):
    """hd = d ⊙ h_state for rows [:n]."""
    P = h_state.shape[1]
    for b in range(n):
        for j in range(P):
            hd[b, j] = d[b, j] * h_state[b, j]


@njit(inline="always")
def recurrent_product(n, has_d, d, h, hd, w, bp, hw, tmp):
    """hw[:n] = (d ⊙ h)[:n] W^T, or h[:n] W^T without recurrent dropout (step_gemm with w
    packed in bp, tmp its scratch); hd (B, H_out) scratch for d ⊙ h."""
    if has_d:
        dropped(n, h, d, hd)  # every unit: the product reads them all
        step_gemm(hd[:n], w, bp, hw[:n], True, 0.0, tmp)
    else:
        step_gemm(h[:n], w, bp, hw[:n], True, 0.0, tmp)


# backward_step's two loops (one with every array ran slower): δc̃ and δa_o first, δc̃ kept
# in δa_i and the zoneout share of δc_{t-1} in dc_; then the gates f i g and δc_{t-1}. Kinds
# as arguments, as _fig_pass.
@njit(inline="always")
def _back_cell_pass(U, o_, cn_, dc_, dgc, z_, dm_, dh_, dgo, lnc, dchat, p_o, da_o, da_i, mu, rs, m1, m2,
                    gk, ck, no_o, no_y, has_dg, ln):
    """δc̃ (into da_i), δa_o, and the zoneout share of δc_{t-1} (into dc_). With layer_norm
    (all units: j is the unit) dchat holds δĉ and m1, m2 its two means."""
    for j in range(U):
        o, cn = o_[j], cn_[j]
        zero = one(cn) - one(cn)
        dc = dc_[j] + (dgc[j] if has_dg else zero)  # ∂L/∂c_t
        dcp = dc * z_[j]  # z = 0 without zoneout_c: δc̃ = δc exactly, no branch
        dcn = dc * (one(cn) - z_[j])
        dmj = dm_[j] + dh_[j]
        if ln:
            chat = (cn - mu) * rs
            v = chat * lnc[0, j] + lnc[1, j]
            y = v if no_y else _cell(v, ck)
            dcn += rs * (dchat[j] - m1 - chat * m2)
        else:
            y = cn if no_y else _cell(cn, ck)
            dy = dmj * o
            dcn += dy if no_y else dy * _cell_grad(y, ck)
        do = dmj * y + (dgo[j] if has_dg else zero)
        dao = zero if no_o else do * _gate_grad(o, gk)
        dcn += dao * p_o[j]  # p = 0 without peepholes: no branch
        da_o[j] = dao
        da_i[j] = dcn
        dc_[j] = dcp


@njit(inline="always")
def _back_gates_pass(U, i_, f_, g_, cp_, da_i, da_f, da_g, dc_, dgf, dgi, dgg, p_f, p_i,
                     gk, ck, coupled, no_f, no_i, no_g, has_dg):
    """δa_i δa_f δa_g from δc̃ (read from da_i), and δc_{t-1} (added to dc_)."""
    for j in range(U):
        i, f, g, cp, dcn = i_[j], f_[j], g_[j], cp_[j], da_i[j]
        zero = one(cp) - one(cp)
        df = dcn * cp + (dgf[j] if has_dg else zero)
        di = dcn * g + (dgi[j] if has_dg else zero)
        dg = dcn * i + (dgg[j] if has_dg else zero)
        dcp = dc_[j] + dcn * f
        df = df - di if coupled else df
        dai = zero if (coupled or no_i) else di * _gate_grad(i, gk)
        daf = zero if no_f else df * _gate_grad(f, gk)
        dag = dg if no_g else dg * _cell_grad(g, ck)
        dcp += daf * p_f[j] + dai * p_i[j]  # p = 0 without peepholes
        dc_[j] = dcp
        da_i[j] = dai
        da_f[j] = daf
        da_g[j] = dag


@njit(inline="always")
def _back_views(t, b, tp, n_prev, gi, gf, gg, go, cn_seq, c_seq, c0, dm, dh, dc_state, zc, tz, da, u0, u1):
    """Row b's views (U,) of what a BPTT pass reads and writes at step t, units [u0, u1):
    i f g o c̃, c_{t-1} (c_seq[tp] for rows < n_prev, else c0), δm δh δc, zoneout's z (at tz),
    δa_i δa_f δa_g δa_o (da keeps its full layout)."""
    H = dc_state.shape[1]
    return (gi[t, b, u0:u1], gf[t, b, u0:u1], gg[t, b, u0:u1], go[t, b, u0:u1], cn_seq[t, b, u0:u1],
            c_seq[tp, b, u0:u1] if b < n_prev else c0[b, u0:u1],
            dm[b, u0:u1], dh[b, u0:u1], dc_state[b, u0:u1], zc[tz, b, u0:u1],
            da[t, b, u0:u1], da[t, b, H + u0:H + u1], da[t, b, 2 * H + u0:2 * H + u1],
            da[t, b, 3 * H + u0:3 * H + u1])


@njit(inline="always")
def _back_lean_pass(U, i_, f_, g_, o_, cn_, cp_, dm_, dh_, dc_, z_, p_f, p_i, p_o, da_i, da_f, da_g, da_o, coupled,
                    no_f, no_i, no_g, no_o, no_y, has_zc, peep):
    """The two passes above in one loop, as the plain cell's (fused_lstm.backward_step), for
    σ and tanh without layer norm or recorded gates: nothing but the saved gates, c̃,
    c_{t-1} (zoneout's mask z_, the peepholes p_) is read, and every δa is written once."""
    for j in range(U):
        i, f, g, o, cn = i_[j], f_[j], g_[j], o_[j], cn_[j]
        zero = one(cn) - one(cn)
        dmj = dm_[j] + dh_[j]
        tc = tanh(cn)
        y = cn if no_y else tc
        dct = dc_[j]  # ∂L/∂c_t
        dao = zero if no_o else dmj * y * o * (one(o) - o)
        # δc̃: (1 - z) of δc_t, m's share (and o's, through its peephole); z δc_t goes
        # straight to c_{t-1}
        dc = (dct * (one(cn) - z_[j]) if has_zc else dct) + dmj * o * (one(cn) if no_y else one(cn) - tc * tc)
        if peep:
            dc += dao * p_o[j]
        di = dc * g
        df = dc * cp_[j] - (di if coupled else zero)
        dg = dc * i
        dai = zero if (coupled or no_i) else di * i * (one(i) - i)
        daf = zero if no_f else df * f * (one(f) - f)
        dcp = (dct * z_[j] if has_zc else zero) + dc * f
        if peep:
            dcp += daf * p_f[j] + dai * p_i[j]
        dc_[j] = dcp
        da_i[j] = dai
        da_f[j] = daf
        da_g[j] = dg if no_g else dg * (one(g) - g * g)
        da_o[j] = dao


@njit(**JIT)
def _backward_lean(t, n, tp, n_prev, dm, dh, dc_state, gi, gf, gg, go, cn_seq, c_seq, c0, zc, ph, da, u0, u1,
                   coupled, no_f, no_i, no_g, no_o, no_y, has_zc, peep):
    """backward_step by _back_lean_pass (a function of its own: inlined into backward_step with
    the other passes, the same loop ran 25 % slower). zc (Tz, B, H): zoneout's mask of c;
    ph (3, H) the peepholes. has_zc and peep are constants in each copy of the pass."""
    U = u1 - u0
    tz = t if has_zc else 0
    p_f, p_i, p_o = ph[0, u0:u1], ph[1, u0:u1], ph[2, u0:u1]  # (U,)
    for b in range(n):
        i_, f_, g_, o_, cn_, cp_, dm_, dh_, dc_, z_, da_i, da_f, da_g, da_o = _back_views(
            t, b, tp, n_prev, gi, gf, gg, go, cn_seq, c_seq, c0, dm, dh, dc_state, zc, tz, da, u0, u1)
        if peep and has_zc:
            _back_lean_pass(U, i_, f_, g_, o_, cn_, cp_, dm_, dh_, dc_, z_, p_f, p_i, p_o, da_i, da_f, da_g, da_o,
                            coupled, no_f, no_i, no_g, no_o, no_y, True, True)
        elif peep:
            _back_lean_pass(U, i_, f_, g_, o_, cn_, cp_, dm_, dh_, dc_, z_, p_f, p_i, p_o, da_i, da_f, da_g, da_o,
                            coupled, no_f, no_i, no_g, no_o, no_y, False, True)
        elif has_zc:
            _back_lean_pass(U, i_, f_, g_, o_, cn_, cp_, dm_, dh_, dc_, z_, p_f, p_i, p_o, da_i, da_f, da_g, da_o,
                            coupled, no_f, no_i, no_g, no_o, no_y, True, False)
        else:
            _back_lean_pass(U, i_, f_, g_, o_, cn_, cp_, dm_, dh_, dc_, z_, p_f, p_i, p_o, da_i, da_f, da_g, da_o,
                            coupled, no_f, no_i, no_g, no_o, no_y, False, False)


@njit(**JIT)
def backward_step(t, n, tp, n_prev, dm, dh, dc_state, gi, gf, gg, go, cn_seq, c_seq, c0, zc, ph,
                  flags, dgates, da, lnc, stats, dlnc, dchat, u0, u1):
    """One step of BPTT for rows [:n]: δm = dm + dh, both (B, H) (δout_t and the carried δh,
    summed here; or δm alone and zeros); dc_state (B, H) δc_t in, δc_{t-1} out
    (the peephole and cell paths; zoneout's share included); gi gf gg go cn_seq (T, B, H)
    saved; c_seq (T, B, H) the carried cells (c_{t-1} of rows < n_prev is c_seq[tp], the
    rest start from c0 (B, H)); ph (3, H) as in forward_step; dgates (5, Tg, B, H) δ of the recorded f i g o c (read
    when flags[HAS_DG]; any (5, 1, B, H) when none); da (T, B, 4H) out. layer_norm: lnc
    (2, H) and stats (3, T, B) as saved by forward_step; dlnc (2, H) accumulates δ of ln_c
    weight|bias; dchat (H + 2,) scratch.
    Units [u0, u1) only (all: 0, H; layer_norm needs all); da keeps its full layout."""
    H = dc_state.shape[1]
    U = u1 - u0
    ln = flags[LN] != 0
    gk, ck = flags[GATE_KIND], flags[CELL_KIND]
    coupled = flags[COUPLED] != 0
    no_f, no_i, no_g, no_o, no_y = (flags[NO_F] != 0, flags[NO_I] != 0, flags[NO_G] != 0,
                                    flags[NO_O] != 0, flags[NO_Y] != 0)
    has_zc, has_dg = flags[HAS_ZC] != 0, flags[HAS_DG] != 0
    std = gk == 0 and ck == 0
    if std and not (ln or has_dg):
        _backward_lean(t, n, tp, n_prev, dm, dh, dc_state, gi, gf, gg, go, cn_seq, c_seq, c0, zc, ph, da, u0, u1,
                       coupled, no_f, no_i, no_g, no_o, no_y, has_zc, flags[PEEPHOLE] != 0)
        return
    tz = t if has_zc else 0
    tg = t if dgates.shape[1] > 1 else 0
    p_f, p_i, p_o = ph[0, u0:u1], ph[1, u0:u1], ph[2, u0:u1]  # (U,)
    for b in range(n):
        i_, f_, g_, o_, cn_, cp_, dm_, dh_, dc_, z_, da_i, da_f, da_g, da_o = _back_views(
            t, b, tp, n_prev, gi, gf, gg, go, cn_seq, c_seq, c0, dm, dh, dc_state, zc, tz, da, u0, u1)
        dgf, dgi, dgg = dgates[0, tg, b, u0:u1], dgates[1, tg, b, u0:u1], dgates[2, tg, b, u0:u1]
        dgo, dgc = dgates[3, tg, b, u0:u1], dgates[4, tg, b, u0:u1]
        mu, rs = stats[0, t, b], stats[1, t, b]  # (zeros without layer_norm)
        if ln:  # δ through y = φ(LN(c̃)): dchat = δĉ, and the row means LN's backward needs
            dch_ = dchat[:H]
            for j in range(H):  # no sum in this loop, so that it vectorises
                chat = (cn_[j] - mu) * rs
                v = chat * lnc[0, j] + lnc[1, j]
                y = v if no_y else _cell(v, ck)
                dy = (dm_[j] + dh_[j]) * o_[j]
                dv = dy if no_y else dy * _cell_grad(y, ck)
                dlnc[0, j] += dv * chat
                dlnc[1, j] += dv
                dch_[j] = dv * lnc[0, j]
            dchat[H] = _sum(dch_) / H  # stored and read back: the means in x's dtype
            dchat[H + 1] = _sum_centered(dch_, cn_, mu, rs) / H
        m1, m2 = dchat[H], dchat[H + 1]
        _back_cell_pass(U, o_, cn_, dc_, dgc, z_, dm_, dh_, dgo, lnc, dchat, p_o, da_o, da_i, mu, rs, m1, m2,
                        gk, ck, no_o, no_y, has_dg, ln)
        _back_gates_pass(U, i_, f_, g_, cp_, da_i, da_f, da_g, dc_, dgf, dgi, dgg, p_f, p_i,
                         gk, ck, coupled, no_f, no_i, no_g, has_dg)


@njit(**JIT)
def forward_loop(steps, full, proj, xa, w_hh, bp_hh, tmp, bias, w_hr, ph, flags, has_d, d, has_zh, zh, zc,
                 h_state, c_state, hd, hw, gi, gf, gg, go, cn_seq, c_seq, m_state, h_new, out,
                 lnh, lnc, hhat, stats):
    """The forward time loop: hd = d ⊙ h_{t-1}; hw = hd W_hh^T (GEMM); the gate pass;
    h̃ = m (or m W_hr^T, GEMM); zoneout of h. Shapes as in forward_step; hd, h_new (B, H_out)
    scratch (h_new is m_state itself without a projection). layer_norm: hw <- LN(hw; lnh)
    (lnh (2, 4H) weight|bias), v̂ into hhat (Ta, B, 4H) and 1/√(σ² + ε) into stats[2]."""
    ln = flags[LN] != 0
    for s in range(steps.shape[0]):
        t, n = steps[s, 0], steps[s, 1]
        tk = t if full else 0
        recurrent_product(n, has_d, d, h_state, hd, w_hh, bp_hh, hw, tmp)  # (n, H_out) x (4H, H_out)^T
        if ln:
            ln_rows(n, hw, lnh[0], lnh[1], hhat[tk], stats[2, tk])
        forward_step(t, n, t if full else -1, t, xa, hw, bias, ph, flags, zc, c_state, gi, gf, gg,
                     go, cn_seq, c_seq, m_state, lnc, stats, 0, c_state.shape[1])
        if proj:
            gemm(m_state[:n], w_hr, h_new[:n], True, 0.0)  # (n, H) x (H, H_out)
            zone_h(t, n, has_zh, zh, h_new, h_state, h_state, out, 0, h_state.shape[1])
        else:
            zone_h(t, n, has_zh, zh, m_state, h_state, h_state, out, 0, h_state.shape[1])


@njit(**JIT)
def backward_head(t, n, has_zh, zh, d_out, dh_state, dht, dzone, u0, u1):
    """δh = δout_t + δh_t split by zoneout: dht (B, H_out) = (1 - z_h) δh (to h̃),
    dzone = z_h δh (straight to h_{t-1}); rows [:n], units [u0, u1)."""
    U = u1 - u0
    for b in range(n):
        do_, dh_, t_, z_ = d_out[t, b, u0:u1], dh_state[b, u0:u1], dht[b, u0:u1], dzone[b, u0:u1]
        if has_zh:
            m_ = zh[t, b, u0:u1]
            for j in range(U):
                dh = do_[j] + dh_[j]
                z_[j] = dh * m_[j]
                t_[j] = dh * (one(dh) - m_[j])
        else:
            for j in range(U):
                t_[j] = do_[j] + dh_[j]


@njit(**JIT)
def backward_tail(n, has_d, d, has_zh, dh_state, dzone, u0, u1):
    """δh_{t-1} = (δa W_hh) ⊙ d + z_h δh, in place on dh_state rows [:n], units [u0, u1)."""
    if not (has_d or has_zh):
        return
    for b in range(n):
        for j in range(u0, u1):
            v = dh_state[b, j]
            if has_d:
                v = v * d[b, j]
            if has_zh:
                v = v + dzone[b, j]
            dh_state[b, j] = v


@njit(**JIT)
def backward_loop(steps, proj, d_out, dh_state, dc_state, gi, gf, gg, go, cn_seq, c_seq, c0, ph,
                  flags, has_d, d, has_zh, zh, zc, dgates, da, w_hh, bp, tmp, w_hr, dht, dzone, dh_seq,
                  dm, zeros_h, lnh, lnc, hhat, stats, dlnc, dchat, dhw):
    """The backward time loop, last step first. With a projection δh̃ is kept in dh_seq
    (T, B, H_out) for δW_hr and dm (B, H) = δh̃ W_hr; without, the pass takes δout_t and the
    carried δh itself (with zoneout of h: dht, their share to h̃). zeros_h (B, H) zeros.
    layer_norm: δ of the recurrent product, dhw (T, B, 4H), through LN's backward."""
    ln = flags[LN] != 0
    H = dc_state.shape[1]
    for s in range(steps.shape[0] - 1, -1, -1):
        t, n, tp, n_prev = steps[s, 0], steps[s, 1], steps[s, 2], steps[s, 3]
        if proj or has_zh:
            backward_head(t, n, has_zh, zh, d_out, dh_state, dht, dzone, 0, dh_state.shape[1])
        if proj:
            dh_seq[t, :n] = dht[:n]
            gemm(dht[:n], w_hr, dm[:n], False, 0.0)  # (n, H_out) x (H_out, H)
            backward_step(t, n, tp, n_prev, dm, zeros_h, dc_state, gi, gf, gg, go, cn_seq, c_seq, c0, zc,
                          ph, flags, dgates, da, lnc, stats, dlnc, dchat, 0, H)
        elif has_zh:
            backward_step(t, n, tp, n_prev, dht, zeros_h, dc_state, gi, gf, gg, go, cn_seq, c_seq, c0, zc,
                          ph, flags, dgates, da, lnc, stats, dlnc, dchat, 0, H)
        else:
            backward_step(t, n, tp, n_prev, d_out[t], dh_state, dc_state, gi, gf, gg, go, cn_seq, c_seq, c0,
                          zc, ph, flags, dgates, da, lnc, stats, dlnc, dchat, 0, H)
        if ln:
            ln_back_rows(n, da[t], hhat[t], stats[2, t], lnh[0], dhw[t])
            step_gemm(dhw[t, :n], w_hh, bp, dh_state[:n], False, 0.0, tmp)  # (n, 4H) x (4H, H_out)
        else:
            step_gemm(da[t, :n], w_hh, bp, dh_state[:n], False, 0.0, tmp)
        backward_tail(n, has_d, d, has_zh, dh_state, dzone, 0, dh_state.shape[1])


def _masks(masks, T, B, H, P, dt, units):
    """(has_d, d (B, P), has_zh, zh (T|1, B, P), has_zc, zc (T|1, B, H)) as arrays; absent
    masks are zero placeholders the kernels do not read. And draws (3, 3), rows d zh zc, as
    engines.masks.as_arrays gives them: a Deferred mask is filled by the units split
    (units > 1) in its time loop, else here."""
    (d, zh, zc), draws = as_arrays(masks, ("recurrent_dropout", "zoneout_h", "zoneout_c"), dt, units > 1)
    return (d is not None, workspace.zeros((B, P), dt) if d is None else d,
            zh is not None, workspace.zeros((1, B, P), dt) if zh is None else zh,
            zc is not None, workspace.zeros((1, B, H), dt) if zc is None else zc), draws


def _ln_all(v, w, b):
    """LN over the last axis of v (T, B, N), in place, for all steps at once: (LN(v), v̂, 1/σ)."""
    T, B, N = v.shape
    vhat = workspace.empty_like(v)
    rs = workspace.empty((T, B), v.dtype)
    ln_rows(T * B, v.reshape(T * B, N), w, b, vhat.reshape(T * B, N), rs.reshape(T * B))
    return v, vhat, rs


def _ln_all_backward(dy, vhat, rs, w):
    """∂L/∂v for dy = ∂L/∂LN(v), all steps at once (see ln_back_rows)."""
    T, B, N = dy.shape
    dv = workspace.empty_like(dy)
    ln_back_rows(T * B, dy.reshape(T * B, N), vhat.reshape(T * B, N), rs.reshape(T * B), w,
                 dv.reshape(T * B, N))
    return dv


def _forward(spec, x, h0, c0, w_ih, w_hh, bias, w_hr, ph, ln, masks, steps, keep, record, units=1, draws=None):
    """The forward pass on arrays. Returns out (T, B, H_out), h_T, c_T and the saved
    (gates i f g o, c̃, carried c, layer-norm saves) when `keep` or `record`, else None.
    ln: None or (ih_w, ih_b, hh_w, hh_b, c_w, c_b) arrays. `units` > 1: each step's units
    split between that many threads (fused_lstm_family_units; no layer_norm, no projection),
    which also fill the zoneout masks `draws` marks (see _masks)."""
    T, B, _ = x.shape  # (T, B, I)
    H, P = c0.shape[1], h0.shape[1]
    dt = x.dtype
    has_d, d, has_zh, zh, has_zc, zc = masks
    flags = flags_of(spec, has_zc)
    packed = any(s.n < B for s in steps)
    xa = None  # with the units split, each thread projects its own units' inputs
    if units == 1:
        xa = mm(x.reshape(T * B, x.shape[2]), w_ih.T, workspace.empty((T * B, 4 * H), dt)).reshape(T, B, 4 * H)
    full = keep or record
    Ta = T if full else 1
    alloc = workspace.zeros if packed else workspace.empty
    xhat = rs_x = None
    if ln is not None:  # LN of the input products, all steps at once
        xa, xhat, rs_x = _ln_all(xa, ln[0], ln[1])
        lnh, lnc = np.stack([ln[2], ln[3]]), np.stack([ln[4], ln[5]])  # (2, 4H), (2, H)
        hhat = alloc((Ta, B, 4 * H), dt)  # v̂ of the recurrent products
    else:
        lnh, lnc = workspace.zeros((2, 4 * H), dt), workspace.zeros((2, H), dt)
        hhat = workspace.zeros((1, 1, 1), dt)
    stats = workspace.zeros((3, Ta, B), dt)  # μ, 1/σ of c̃; 1/σ of the recurrent product
    bias = workspace.zeros(4 * H, dt) if bias is None else bias  # (4H,)
    ph = workspace.zeros((3, H), dt) if ph is None else ph  # (3, H)
    gates = tuple(alloc((Ta, B, H), dt) for _ in range(4))  # i f g o
    cn_seq = alloc((Ta, B, H), dt)  # c̃
    c_seq = alloc((Ta, B, H), dt) if has_zc else workspace.zeros((1, B, H), dt)  # carried c
    out = alloc((T, B, P), dt)
    h_state, c_state = workspace.copy(h0), workspace.copy(c0)
    hd = workspace.empty((B, P), dt)
    hw = workspace.empty((B, 4 * H), dt)
    m_state = workspace.empty((B, H), dt)
    h_new = workspace.empty((B, P), dt)
    proj = w_hr is not None
    if units > 1:
        from gatelab.engines import fused_lstm_family_units

        fused_lstm_family_units.forward(units, steps_array(steps), full, x, w_ih, w_hh, bias, ph, flags,
                                        (has_d, d, has_zh, zh, zc), h_state, c_state, gates, cn_seq, c_seq,
                                        m_state, out, lnc, stats,
                                        np.zeros((3, 3), np.int64) if draws is None else draws)
    elif numba_loop():
        bp = packed_weights(w_hh, True, len(steps), B)
        forward_loop(steps_array(steps), full, proj, xa, w_hh, bp, scratch(dt), bias, w_hh if w_hr is None else w_hr,
                     ph, flags, has_d, d, has_zh, zh, zc, h_state, c_state, hd, hw, *gates, cn_seq,
                     c_seq, m_state, h_new, out, lnh, lnc, hhat, stats)
    else:
        for t, n, _, _ in steps:
            if has_d:
                dropped(n, h_state, d, hd)
                mm(hd[:n], w_hh.T, hw[:n])
            else:
                mm(h_state[:n], w_hh.T, hw[:n])
            tk = t if full else 0
            if ln is not None:
                ln_rows(n, hw, lnh[0], lnh[1], hhat[tk], stats[2, tk])
            forward_step(t, n, t if full else -1, t, xa, hw, bias, ph, flags, zc, c_state, *gates,
                         cn_seq, c_seq, m_state, lnc, stats, 0, H)
            if proj:
                mm(m_state[:n], w_hr.T, h_new[:n])
                zone_h(t, n, has_zh, zh, h_new, h_state, h_state, out, 0, P)
            else:
                zone_h(t, n, has_zh, zh, m_state, h_state, h_state, out, 0, P)
    if not full:
        return out, h_state, c_state, None
    return out, h_state, c_state, (gates, cn_seq, c_seq if has_zc else cn_seq,
                                   (xhat, rs_x, lnh, lnc, hhat, stats))


def _weight_grads(ctx, da, dhw, xs, w_ihs, w_hhs, out, h0s, has_d, d, need):
    """(δx, δW_ih, δW_hh, δb) over all steps, as GEMMs on the calling thread; δb is also the δ
    of the layer-norm biases (ctx.spec.layer_norm: δA is then taken back through the input's LN)."""
    T, B, _ = xs.shape
    H = da.shape[2] // 4
    dt = xs.dtype
    ln = ctx.spec.layer_norm
    lnsaved = ctx.arrays[-1][-1]
    dxa = _ln_all_backward(da, lnsaved[0], lnsaved[1], ctx.ln_ih_w) if ln else da
    dxa2 = dxa.reshape(T * B, 4 * H)
    dhw2 = (dhw if ln else da).reshape(T * B, 4 * H)
    dx = mm(dxa2, w_ihs, workspace.empty((T * B, xs.shape[2]), dt)).reshape(xs.shape) if need[0] else None
    dw_ih = mm(dxa2.T, xs.reshape(T * B, xs.shape[2]), workspace.empty_like(w_ihs)) if need[3] else None
    dw_hh = None
    if need[4]:
        h_prev = previous_rows(out, h0s, ctx.steps, d if has_d else None)  # d ⊙ H_prev (T*B, H_out)
        dw_hh = times_previous(dhw2, h_prev, workspace.empty_like(w_hhs))
    db = add_rows_sum(da) if (ctx.has_bias or ln) else None  # (4H,)
    return dx, dw_ih, dw_hh, db


class LSTMFamilyFunction(torch.autograd.Function):
    """One LSTM-family layer-direction; inputs x, h0, c0, weights (weight_ph and the layer
    norm parameters may be None); outputs out, h_T, c_T and, with record, the gates f i g o c."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_ph, ln_ih_w, ln_ih_b, ln_hh_w, ln_hh_b,
                ln_c_w, ln_c_b, spec, masks, steps, record, units, draws):
        xs, h0s, c0s = arr(x), arr(h0), arr(c0)
        w_ihs, w_hhs, bias, w_hrs, phs, ln = weight_arrays(w_ih, w_hh, b_ih, b_hh, w_hr, w_ph, ln_ih_w, ln_ih_b,
                                                           ln_hh_w, ln_hh_b, ln_c_w, ln_c_b)
        out, h_T, c_T, saved = _forward(spec, xs, h0s, c0s, w_ihs, w_hhs, bias, w_hrs, phs, ln, masks,
                                        steps, keep=True, record=record, units=units, draws=draws)
        ctx.set_materialize_grads(False)
        ctx.arrays = (xs, h0s, c0s, w_ihs, w_hhs, w_hrs, phs, out, saved)
        ctx.spec, ctx.masks, ctx.steps, ctx.has_bias, ctx.units = spec, masks, steps, b_ih is not None, units
        ctx.ln_ih_w = None if ln is None else ln[0]
        return tuple(tensor(a) for a in (out, h_T, c_T, *(recorded(saved) if record else ())))

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT, d_cT, *d_gates):
        grads = backward_arrays(ctx, d_out, (d_hT, d_cT), d_gates)
        return tuple(None if g is None else tensor(np.ascontiguousarray(g)) for g in grads) + (None,) * 6


def backward_arrays(ctx, d_out, d_states, d_gates) -> tuple:
    """LSTMFamilyFunction's backward: the gradients (arrays, None where not needed) of its 15
    tensor inputs, for the gradients of its outputs (tensors or None; d_states: δh_T, δc_T).
    ctx: the Function's context, or any object with the attributes its forward sets (arrays,
    spec, masks, steps, has_bias, units, ln_ih_w) and needs_input_grad (block_forward's, one
    per row block of fused_family_rows)."""
    d_hT, d_cT = d_states
    xs, h0s, c0s, w_ihs, w_hhs, w_hrs, phs, out, (gates, cn_seq, c_seq, lnsaved) = ctx.arrays
    xhat, rs_x, lnh, lnc, hhat, stats = lnsaved
    steps, spec = ctx.steps, ctx.spec
    has_d, d, has_zh, zh, has_zc, zc = ctx.masks
    recorded = bool(d_gates) and any(g is not None for g in d_gates)
    flags = flags_of(spec, has_zc, recorded)
    ln = spec.layer_norm
    T, B, _ = xs.shape
    H, P = c0s.shape[1], h0s.shape[1]
    dt = xs.dtype
    d_out = workspace.zeros((T, B, P), dt) if d_out is None else arr(d_out)
    dh_state = workspace.zeros((B, P), dt) if d_hT is None else workspace.copy(arr(d_hT))
    dc_state = workspace.zeros((B, H), dt) if d_cT is None else workspace.copy(arr(d_cT))
    dgates = workspace.empty((5, 1, B, H), dt)  # none recorded: not read (flags[HAS_DG] off)
    if recorded:
        dgates = np.stack([workspace.zeros((T, B, H), dt) if g is None else arr(g) for g in d_gates])
    packed = any(s.n < B for s in steps)
    alloc = workspace.zeros if packed else workspace.empty
    da = alloc((T, B, 4 * H), dt)
    dhw = alloc((T, B, 4 * H), dt) if ln else workspace.zeros((1, 1, 1), dt)  # δ of h W_hh^T
    dlnc = workspace.zeros((2, H), np.float64)  # δ ln_c weight|bias, accumulated over steps
    dchat = workspace.zeros(H + 2, dt)  # δĉ of one row, then its two means
    proj = w_hrs is not None
    ph = workspace.zeros((3, H), dt) if phs is None else phs
    dht = workspace.zeros((B, P), dt)
    dzone = workspace.zeros((B, P), dt)
    dh_seq = workspace.zeros((T, B, P) if proj else (1, 1, 1), dt)
    dm = workspace.empty((B, H), dt)
    zeros_h = workspace.zeros((B, H), dt)  # the carried δh where dm (or dht) holds it all
    need = ctx.needs_input_grad
    if ctx.units > 1:  # the threads also share the GEMMs after
        from gatelab.engines import fused_lstm_family_units

        h_prev = previous_rows(out, h0s, steps, d if has_d else None) if need[4] else None  # d ⊙ H_prev
        dx, dw_ih, dw_hh, db = fused_lstm_family_units.backward(
            ctx.units, steps_array(steps), d_out, dh_state, dc_state, gates, cn_seq, c_seq, c0s, ph, flags,
            (has_d, d, has_zh, zh, zc), dgates, da, xs, h_prev, w_ihs, w_hhs,
            (need[0], need[3], need[4], ctx.has_bias), (dht, dzone, zeros_h, lnc, stats, dlnc, dchat))
    elif numba_loop():
        backward_loop(steps_array(steps), proj, d_out, dh_state, dc_state, *gates, cn_seq, c_seq,
                      c0s, ph, flags, has_d, d, has_zh, zh, zc, dgates, da, w_hhs,
                      packed_weights(w_hhs, False, len(steps), B), scratch(dt), w_hrs if proj else w_hhs,
                      dht, dzone, dh_seq, dm, zeros_h, lnh, lnc, hhat, stats, dlnc, dchat, dhw)
    else:
        for t, n, tp, n_prev in reversed(steps):
            backward_head(t, n, has_zh, zh, d_out, dh_state, dht, dzone, 0, P)
            if proj:
                dh_seq[t, :n] = dht[:n]
                mm(dht[:n], w_hrs, dm[:n])
            backward_step(t, n, tp, n_prev, dm if proj else dht, zeros_h, dc_state, *gates, cn_seq, c_seq,
                          c0s, zc, ph, flags, dgates, da, lnc, stats, dlnc, dchat, 0, H)
            if ln:
                ln_back_rows(n, da[t], hhat[t], stats[2, t], lnh[0], dhw[t])
            mm((dhw if ln else da)[t, :n], w_hhs, dh_state[:n])
            backward_tail(n, has_d, d, has_zh, dh_state, dzone, 0, P)
    if ctx.units == 1:
        dx, dw_ih, dw_hh, db = _weight_grads(ctx, da, dhw, xs, w_ihs, w_hhs, out, h0s, has_d, d, need)
    dw_hr = None
    if proj and need[7]:
        m = workspace.empty((T, B, H), dt)
        outputs(cn_seq, gates[3], flags, lnc, stats, m)  # zero at padded positions
        dw_hr = mm(dh_seq.reshape(T * B, P).T, m.reshape(T * B, H), workspace.empty_like(w_hrs))
    dph = None
    if phs is not None and need[8]:
        c_prev = previous(c_seq, c0s, steps)  # (T, B, H)
        dph = np.stack([np.einsum("tbh,tbh->h", da[:, :, H:2 * H], c_prev),
                        np.einsum("tbh,tbh->h", da[:, :, :H], c_prev),
                        np.einsum("tbh,tbh->h", da[:, :, 3 * H:], cn_seq)])  # (3, H) f|i|o
    dln = (None,) * 6
    if ln:
        da2 = da.reshape(T * B, 4 * H)
        dln = (np.einsum("nk,nk->k", da2, xhat.reshape(T * B, 4 * H)), db.copy(),
               np.einsum("nk,nk->k", da2, hhat.reshape(T * B, 4 * H)), db.copy(),
               dlnc[0].astype(dt), dlnc[1].astype(dt))
    db_ih = db if ctx.has_bias else None
    return (dx, dh_state, dc_state, dw_ih, dw_hh, db_ih, None if db_ih is None else db_ih.copy(),
            dw_hr, dph, *dln)


LN_NAMES = ("ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias", "ln_c_weight", "ln_c_bias")
RECORDED = ("f", "i", "g", "o", "c")  # the gates a record returns, in LSTMFamilyFunction's output order


def inputs_of(spec, x, state, weights) -> tuple:
    """LSTMFamilyFunction's 15 tensor inputs: x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_ph and
    the six layer-norm parameters (None where the spec has none)."""
    b_ih, b_hh = (weights["bias_ih"], weights["bias_hh"]) if spec.bias else (None, None)
    w_hr = weights["weight_hr"] if spec.proj_size > 0 else None
    w_ph = weights["weight_ph"] if spec.peephole else None
    ln = tuple(weights[k] for k in LN_NAMES) if spec.layer_norm else (None,) * 6
    return (x, *state, weights["weight_ih"], weights["weight_hh"], b_ih, b_hh, w_hr, w_ph, *ln)


def weight_arrays(w_ih, w_hh, b_ih, b_hh, w_hr, w_ph, *ln) -> tuple:
    """The weights as _forward takes them: (w_ih, w_hh, bias = b_ih + b_hh or None, w_hr,
    w_ph, the layer-norm parameters or None)."""
    bias = None if b_ih is None else arr(b_ih) + arr(b_hh)
    return arr(w_ih), arr(w_hh), bias, arr(w_hr), arr(w_ph), None if ln[0] is None else tuple(arr(v) for v in ln)


def recorded(saved) -> tuple:
    """The recorded gates f i g o c (arrays) from _forward's saved ((i, f, g, o), c̃, c, ...)."""
    (gi, gf, gg, go), _, c_seq, _ = saved
    return gf, gi, gg, go, c_seq


N_STATE = 2  # h, c: the Function's inputs after x, and its outputs after out


def block_forward(spec, x, states, weights, masks, steps, keep, record):
    """_forward of one row block on arrays (fused_family_rows): x (T, Bb, I), states (h0, c0)
    of its rows, weights as weight_arrays gives them, masks its rows' (filled). Returns (what
    backward_arrays reads of a context, out, (h_T, c_T), saved)."""
    T, B, _ = x.shape
    h0, c0 = states
    mask_arrays = _masks(masks, T, B, c0.shape[1], h0.shape[1], x.dtype, 1)[0]
    out, h_T, c_T, saved = _forward(spec, x, h0, c0, *weights, mask_arrays, steps, keep=keep, record=record)
    w_ih, w_hh, bias, w_hr, w_ph, ln = weights
    ctx = SimpleNamespace(arrays=(x, h0, c0, w_ih, w_hh, w_hr, w_ph, out, saved), spec=spec, masks=mask_arrays,
                          steps=steps, has_bias=bias is not None, units=1, ln_ih_w=None if ln is None else ln[0])
    return ctx, out, (h_T, c_T), saved


def run(spec, x, state, weights, steps, record, masks, units=1):
    """One LSTM-family layer-direction; see gatelab.engines for the contract. `units` > 1:
    each step's units split between that many threads (fused_lstm_family_units)."""
    T, B, _ = x.shape
    mask_arrays, draws = _masks(masks, T, B, spec.hidden_size, spec.out_size,
                                np.dtype(str(x.dtype).removeprefix("torch.")), units)
    inputs = inputs_of(spec, x, state, weights)
    if needs_grad(*inputs):
        out, h_T, c_T, *rec = LSTMFamilyFunction.apply(*inputs, spec, mask_arrays, steps, record, units, draws)
    else:
        x, h0, c0 = (arr(t) for t in inputs[:3])
        out, h_T, c_T, saved = _forward(spec, x, h0, c0, *weight_arrays(*inputs[3:]), mask_arrays, steps,
                                        keep=False, record=record, units=units, draws=draws)
        out, h_T, c_T, *rec = (tensor(a) for a in (out, h_T, c_T, *(recorded(saved) if record else ())))
    return out, (h_T, c_T), dict(zip(RECORDED, rec)) if record else None
