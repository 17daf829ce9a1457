"""The LSTM family's time loops with each step's units split between threads.

The same split as fused_lstm_units, for every family variant whose step needs no sum over
all units, i.e. all but layer_norm, and without a projection: thread j of k owns units
[u0, u1), a contiguous copy of their rows i f g o of W_ih and W_hh (W_hh as the variant
uses it: with weight_drop the dropped matrix), its input projection and gate pass, for the
whole batch. A gate the variant never reads (a removed one, or i with coupled gates) goes
last in those rows and out of every product: the projections and the step's GEMM form the
first blocks only, the δh GEMM and the gradients over all steps read δA's other columns
(fused_units.kept_order, spans; a quarter of the products for one gate). Everything else
in a step is per unit: peepholes (diagonal weights), coupled and removed gates, the
activations, zoneout of c and h (a mask value per unit; masks the module left to the
engine, masks.Deferred, are filled here, each thread its units of each step). The one
exception is recurrent_dropout, whose product reads d ⊙ h_{t-1} over all units: each
thread forms that row itself before its GEMM. The threads meet at a barrier once per step
in each direction (`_kernels_sync`).

    forward:  [hd = d ⊙ h_{t-1}]; hw_mine = hd W_mine^T; gate pass of my units
              (fused_lstm_family.forward_step with u0, u1); h of my units into the other
              half of the double buffer (zoneout of h, or m written there by the pass) and
              out[t]; barrier
    backward: δh split by zoneout (z_h δh left in δh_{t-1}), or summed in the pass (my units);
              BPTT pass of my units -> δa[t] (my columns);
              barrier; δh_{t-1}[:, mine] = (δa[t] W_hh[:, mine]) ⊙ d + z_h δh

Results equal the row-mode loops (fused_lstm_family) to rounding, as fused_lstm_units
does the plain loops'. Chosen by fused_cpu under the same rule as the plain LSTM
(fused_units.unit_threads); a batch of one runs on two cores this way.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from gatelab.engines import workspace
from gatelab.engines._kernels import JIT
from gatelab.engines._kernels_gemm import NR, step_gemm
from gatelab.engines._kernels_rng import fill_steps
from gatelab.engines._kernels_sync import arrive_and_wait, new_counter
from gatelab.engines.fused_lstm_family import (POS, backward_head, backward_step, backward_tail, forward_step,
                                              recurrent_product, unused_gates, zone_h)
from gatelab.engines.fused_parallel import team
from gatelab.engines.fused_units import (aborting, ahead, chunk_steps, copy_units, double_buffer, gradient_buffers,
                                         dx_panels, grads_of_my_rows, kept_order, my_columns, my_rows, pack_my_panels,
                                         now_or_later, packed_inputs, project_chunk, span_packs, spans)


@njit(**JIT)
def forward_units(j, k, steps, full, K, x2, w_ih_mine, w_hh_mine, bp_hh, tmp, bias_mine, bp_ih, ph, flags, has_d,
                  d, hd_mine, has_zh, zh, zc, hbuf, c_state, hw_mine, xa_mine, gi, gf, gg, go, cn_seq, c_seq,
                  m_state, out, lnc, stats, draws, counter):
    """Thread j of k: its input projection and the whole forward time loop for units
    [u0, u1). w_ih_mine (4U, I), w_hh_mine (4U, H), bias_mine (4U,): my rows i f g o (bp_hh,
    tmp: w_hh_mine packed for _kernels_gemm.step_gemm and its scratch; bp_ih: w_ih_mine
    packed, fused_units.packed_inputs); xa_mine (C, B, 4U) the input projection of C steps at
    a time (fused_units.chunk_steps, project_chunk), hw_mine (B, 4U), hd_mine (B, H): my own
    buffers; hbuf (2, B, H) the running h, double-buffered (after S steps the state is
    hbuf[S % 2]); counter: shared new_counter(); K: the gate blocks the products form, the
    first K of my rows (the rest, of gates the variant never reads, are zero in xa_mine,
    hw_mine and bias_mine); draws (3, 3):
    rows recurrent_dropout, zoneout_h, zoneout_c, (1, seed, below) when that mask is to be
    filled here (each step's my units, just before the step reads them;
    engines.masks.as_arrays); the rest as in fused_lstm_family.forward_loop (no projection)."""
    B, H = c_state.shape
    u0, u1 = j * H // k, (j + 1) * H // k
    KU = K * (u1 - u0)  # the columns formed
    if K < 4:
        xa_mine[:, :, KU:] = 0.0
    for s in range(steps.shape[0]):
        t, n = steps[s, 0], steps[s, 1]
        # (C*B, I) x (KU, I)^T at a chunk's first step, over the first KU rows' panels
        lo = project_chunk(s, steps, x2, w_ih_mine[:KU], bp_ih[:(KU + NR - 1) // NR], xa_mine, tmp)
        src, dst = hbuf[s % 2], hbuf[(s + 1) % 2]
        if draws[1, 0]:  # zoneout_h, zoneout_c left to the threads (engines.masks.as_arrays)
            fill_steps(draws[1, 1], draws[1, 2], zh, t, u0, u1)
        if draws[2, 0]:
            fill_steps(draws[2, 1], draws[2, 2], zc, t, u0, u1)
        if K == 4:
            recurrent_product(n, has_d, d, src, hd_mine, w_hh_mine, bp_hh, hw_mine, tmp)  # (n, H) x (4U, H)^T
        else:  # the first KU rows' panels of the packed w_hh_mine
            recurrent_product(n, has_d, d, src, hd_mine, w_hh_mine[:KU], bp_hh[:(KU + NR - 1) // NR],
                              hw_mine[:, :KU], tmp)
        # without zoneout of h, h = m: the gate pass writes it into the new state itself (a
        # separate pass copying m there took ~16 µs a step in the team at (100,32,128,256))
        forward_step(t, n, t if full else -1, t - lo, xa_mine, hw_mine, bias_mine, ph, flags, zc, c_state, gi, gf, gg,
                     go, cn_seq, c_seq, m_state if has_zh else dst, lnc, stats, u0, u1)
        if has_zh:
            zone_h(t, n, has_zh, zh, m_state, src, dst, out, u0, u1)
        else:
            copy_units(dst, out[t], 0, n, u0, u1)
        copy_units(src, dst, n, B, u0, u1)  # rows not in this step keep their state
        if not arrive_and_wait(counter, s, k):
            return  # another thread failed: the caller raises its error


@njit(**JIT)
def backward_units(j, k, steps, d_out, dh_state, dc_state, gi, gf, gg, go, cn_seq, c_seq, c0, zc, ph, flags,
                   has_d, d, has_zh, zh, dgates, da, w_mine, bp, tmp, kept, bp0, bp1, dht, dzone, zeros_h, lnc, stats,
                   dlnc, dchat, counter):
    """Thread j of k: the whole backward time loop for units [u0, u1); w_mine (4H, U): the
    columns of W_hh (as used) of my units, a contiguous copy; kept (S, 2): the spans of δA's
    columns the products read (all 4H, or the gates the variant reads), bp0 bp1 their rows of
    w_mine packed (fused_units.span_packs; unused when kept is all); counter: shared
    new_counter(); the rest as in fused_lstm_family.backward_loop without projection."""
    every = kept.shape[0] == 1 and kept[0, 1] - kept[0, 0] == w_mine.shape[0]
    H = dc_state.shape[1]
    u0, u1 = j * H // k, (j + 1) * H // k
    S = steps.shape[0]
    # zoneout's share z_h δh of δh_{t-1} waits in dh_state itself, and the δh GEMM adds to it
    # (β = 1: the same sum as backward_tail's, without its pass); with recurrent dropout the
    # product is scaled first, so backward_tail adds it after
    into_dh = has_zh and not has_d
    beta = 1.0 if into_dh else 0.0  # of the δh product's first (or only) span
    for s in range(S - 1, -1, -1):
        t, n, tp, n_prev = steps[s, 0], steps[s, 1], steps[s, 2], steps[s, 3]
        if has_zh:  # δh split by zoneout; else the pass sums δout_t and δh itself (as in forward)
            backward_head(t, n, has_zh, zh, d_out, dh_state, dht, dh_state if into_dh else dzone, u0, u1)
            backward_step(t, n, tp, n_prev, dht, zeros_h, dc_state, gi, gf, gg, go, cn_seq, c_seq, c0, zc, ph,
                          flags, dgates, da, lnc, stats, dlnc, dchat, u0, u1)
        else:
            backward_step(t, n, tp, n_prev, d_out[t], dh_state, dc_state, gi, gf, gg, go, cn_seq, c_seq, c0, zc,
                          ph, flags, dgates, da, lnc, stats, dlnc, dchat, u0, u1)
        if not arrive_and_wait(counter, S - 1 - s, k):  # δa[t] complete for every unit
            return  # another thread failed: the caller raises its error
        if every:
            step_gemm(da[t, :n], w_mine, bp, dh_state[:n, u0:u1], False, beta, tmp)  # (n, 4H) x (4H, U)
        else:
            for q in range(kept.shape[0]):  # (n, span) x (span, U), summed
                a, b = kept[q, 0], kept[q, 1]
                step_gemm(da[t, :n, a:b], w_mine[a:b], bp0 if q == 0 else bp1, dh_state[:n, u0:u1], False,
                          beta if q == 0 else 1.0, tmp)
        if not into_dh:
            backward_tail(n, has_d, d, has_zh, dh_state, dzone, u0, u1)
    arrive_and_wait(counter, S, k)  # δa complete: the GEMMs over all steps may read any column


def forward(k, steps, full, x, w_ih, w_hh, bias, ph, flags, masks, h_state, c_state, gates, cn_seq, c_seq,
            m_state, out, lnc, stats, draws):
    """forward_units on a team of up to k threads; h_state and c_state are updated in place.
    masks: (has_d, d, has_zh, zh, zc) and draws (the masks to fill here) as
    fused_lstm_family._masks gives them."""
    T, B, I = x.shape
    H = c_state.shape[1]
    dt = x.dtype
    has_d, d, has_zh, zh, zc = masks
    hbuf = double_buffer(h_state)  # (2, B, H)
    counter = new_counter()
    unused = unused_gates(flags)  # gates never read: their rows go last and out of the products
    order = kept_order(4, unused) if unused else None
    K = 4 - len(unused)
    if unused:
        flags = flags.copy()
        flags[POS:POS + 4] = [order.index(g) for g in range(4)]

    C = chunk_steps(len(steps), B)

    def make(j, size, later):
        rows = my_rows(4, H, j, size, w_ih, w_hh, bias, steps, B, order, later)  # rows i f g o of my units (in order)
        G_U = rows[0].shape[0]  # 4U
        hw_mine = np.empty((B, G_U), dt)
        if unused:
            KU = K * G_U // 4
            now_or_later(later, rows[4][KU:].fill, 0.0)  # bias_mine, after its copy
            hw_mine[:, KU:] = 0.0
        # w_ih_mine packed, hd_mine (B, H), hw_mine (B, 4U), xa_mine (C, B, 4U)
        bp_ih = packed_inputs(rows[0], C, len(steps), B, later)
        return rows, bp_ih, np.empty((B, H), dt), hw_mine, workspace.empty((C, B, G_U), dt)

    mine = ahead(k, make)

    @aborting(counter)
    def member(j, size):
        rows, bp_ih, hd_mine, hw_mine, xa_mine = mine(j, size)
        forward_units(j, size, steps, full, K, x.reshape(T * B, I), *rows, bp_ih, ph, flags, has_d, d, hd_mine,
                      has_zh, zh, zc, hbuf, c_state, hw_mine, xa_mine, *gates, cn_seq, c_seq, m_state, out, lnc,
                      stats, draws, counter)

    team(member, k, torch_modes=False)  # numba and NumPy only
    h_state[:] = hbuf[steps.shape[0] % 2]


def backward(k, steps, d_out, dh_state, dc_state, gates, cn_seq, c_seq, c0, ph, flags, masks, dgates, da, x,
             h_prev, w_ih, w_hh, need, work):
    """backward_units, then the gradients over all steps (each thread its own rows, as
    fused_lstm_units.backward), on a team of up to k threads. h_prev: d ⊙ h_{t-1} as
    fused_common.previous_rows gives it (None when δW_hh is not needed); need: (δx, δW_ih,
    δW_hh, δb); work: (dht, dzone, zeros_h, lnc, stats, dlnc, dchat) of fused_lstm_family's
    backward. Returns (δx, δW_ih, δW_hh, δb)."""
    T, B, I = x.shape
    H = dc_state.shape[1]
    has_d, d, has_zh, zh, zc = masks
    dht, dzone, zeros_h, lnc, stats, dlnc, dchat = work
    counter = new_counter()
    out = gradient_buffers(need, x, w_ih, w_hh, ("db_ih",))
    da2 = da.reshape(T * B, 4 * H)  # (T*B, 4H)

    unused = unused_gates(flags)  # their δa is zero: the products leave their columns out
    kept = spans(4, H, unused)

    def make(j, size, later):
        w_mine, bp, tmp = my_columns(H, j, size, w_hh, steps, B, later)
        return (w_mine, bp, tmp, kept, *(span_packs(w_mine, kept, steps, B, later) if unused else (bp, bp)))

    bp_dx = dx_panels(need[0] and not unused, w_ih, steps, B)  # W_ih packed for δX (OpenBLAS for spans)
    mine = ahead(k, make)

    @aborting(counter)
    def member(j, size):
        pack_my_panels(j, size, w_ih, bp_dx)
        backward_units(j, size, steps, d_out, dh_state, dc_state, *gates, cn_seq, c_seq, c0, zc, ph, flags,
                       has_d, d, has_zh, zh, dgates, da, *mine(j, size), dht, dzone, zeros_h, lnc, stats, dlnc,
                       dchat, counter)
        grads_of_my_rows(j, size, H, 4, da2, da2, x.reshape(T * B, I), h_prev, w_ih, bp_dx, out, unused)

    team(member, k, torch_modes=False)  # numba and NumPy only
    return out.get("dx"), out.get("dw_ih"), out.get("dw_hh"), out.get("db_ih")
