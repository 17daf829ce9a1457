"""The GRU family's time loops with each step's units split between threads.

As fused_gru_units for the plain GRU, for the family variants whose step is per unit once
the product is formed: the activations by name, zoneout_h (a Deferred mask, engines.masks,
filled here, each thread its units of each step) and recurrent_dropout, with torch.nn's
"reset after" form. Not split: layer_norm (a sum over all units per step) and
reset_after=False (its second product reads r ⊙ h over all units, so it would need a second
meeting per step); those run on row blocks. With recurrent_dropout each thread forms
d ⊙ h_{t-1} over all units itself before its GEMM.

    forward:  [hd = d ⊙ h_{t-1}]; hw_mine = hd W_mine^T; h_{t-1} of my units copied to the
              other half of a double buffer, the gate pass (fused_gru_family.forward_step
              with u0, u1) turns it into h_t there; barrier
    backward: BPTT pass for my units -> δxa, δhw of my units; barrier;
              δh_{t-1}[:, mine] += (δhw[t] W_hh[:, mine]) ⊙ d

Results equal the row-mode loops (fused_gru_family) to rounding.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from gatelab.engines import workspace
from gatelab.engines._kernels import JIT
from gatelab.engines._kernels_gemm import step_gemm
from gatelab.engines._kernels_rng import fill_steps
from gatelab.engines._kernels_sync import arrive_and_wait, new_counter
from gatelab.engines.fused_gru_family import backward_step, forward_step
from gatelab.engines.fused_lstm_family import recurrent_product
from gatelab.engines.fused_parallel import team
from gatelab.engines.fused_units import (aborting, ahead, chunk_steps, copy_units, double_buffer, gradient_buffers,
                                         dx_panels, grads_of_my_rows, my_columns, my_rows, pack_my_panels,
                                         packed_inputs, project_chunk, units)


@njit(**JIT)
def forward_units(j, k, steps, full, x2, w_ih_mine, w_hh_mine, bp_hh, tmp, bias_mine, b_hn_mine, bp_ih, gk, ck,
                  has_d, d, hd_mine, has_zh, zh, hbuf, hw_mine, xa_mine, gr, gz, gn, hn_seq, out, draws, counter):
    """Thread j of k: its input projection and the whole forward time loop for units
    [u0, u1). w_ih_mine (3U, I), w_hh_mine (3U, H), bias_mine (3U,): my rows r z n;
    b_hn_mine (U,); bp_hh, tmp: w_hh_mine packed for _kernels_gemm.step_gemm and its scratch;
    bp_ih: w_ih_mine packed (fused_units.packed_inputs); xa_mine (C, B, 3U) the input
    projection of C steps at a time (fused_units.chunk_steps, project_chunk), hw_mine
    (B, 3U), hd_mine (B, H): my own buffers;
    hbuf (2, B, H) the running h, double-buffered as in fused_gru_units; draws (2, 3): row 1
    (1, seed, below) when zoneout's mask is to be filled here (each step's my units, just
    before the step reads them; engines.masks.as_arrays); counter: shared new_counter(); the
    rest as in fused_gru_family.forward_loop."""
    B, H = hbuf.shape[1], hbuf.shape[2]
    u0, u1 = j * H // k, (j + 1) * H // k
    for s in range(steps.shape[0]):
        t, n = steps[s, 0], steps[s, 1]
        lo = project_chunk(s, steps, x2, w_ih_mine, bp_ih, xa_mine, tmp)  # (C*B, I) x (3U, I)^T, a chunk's first step
        src, dst = hbuf[s % 2], hbuf[(s + 1) % 2]
        if draws[1, 0]:
            fill_steps(draws[1, 1], draws[1, 2], zh, t, u0, u1)
        recurrent_product(n, has_d, d, src, hd_mine, w_hh_mine, bp_hh, hw_mine, tmp)  # (n, H) x (3U, H)^T
        copy_units(src, dst, 0, B, u0, u1)  # h_{t-1} of my units (rows not in this step keep it)
        forward_step(t, n, t if full else 0, t - lo, xa_mine, hw_mine, bias_mine, b_hn_mine, gk, ck, has_zh, zh, dst,
                     gr, gz, gn, hn_seq, out, u0, u1)
        if not arrive_and_wait(counter, s, k):  # h_t complete
            return  # another thread failed: the caller raises its error


@njit(**JIT)
def backward_units(j, k, steps, gk, ck, has_d, d, has_zh, zh, d_out, dh_state, gr, gz, gn, hn_seq, out, h0,
                   dgates, dxa, dhw, w_mine, bp, tmp, tmp_mine, counter):
    """Thread j of k: the whole backward time loop for units [u0, u1); w_mine (3H, U): the
    columns of W_hh (as used) of my units, a contiguous copy; tmp_mine (B, U) scratch;
    counter: shared new_counter(); the rest as in fused_gru_family.backward_loop."""
    H = dh_state.shape[1]
    u0, u1 = j * H // k, (j + 1) * H // k
    S = steps.shape[0]
    for s in range(S - 1, -1, -1):
        t, n, tp, n_prev = steps[s, 0], steps[s, 1], steps[s, 2], steps[s, 3]
        backward_step(t, n, tp, n_prev, gk, ck, has_zh, zh, d_out, dh_state, gr, gz, gn, hn_seq, out, h0,
                      dgates, dxa, dhw, u0, u1)
        if not arrive_and_wait(counter, S - 1 - s, k):  # δhw[t] complete for every unit
            return  # another thread failed: the caller raises its error
        if has_d:
            step_gemm(dhw[t, :n], w_mine, bp, tmp_mine[:n], False, 0.0, tmp)  # (n, 3H) x (3H, U)
            for b in range(n):
                for u in range(u0, u1):
                    dh_state[b, u] += tmp_mine[b, u - u0] * d[b, u]
        else:
            step_gemm(dhw[t, :n], w_mine, bp, dh_state[:n, u0:u1], False, 1.0, tmp)  # += (n, 3H) x (3H, U)
    arrive_and_wait(counter, S, k)  # δxa, δhw complete: the GEMMs over all steps may read any column


def forward(k, steps, full, x, w_ih, w_hh, bias, b_hn, gk, ck, masks, h_state, saved, out, draws):
    """forward_units on a team of up to k threads; h_state is updated in place. bias (3H,)
    b_ih + [b_hr, b_hz, 0]; b_hn (H,); masks (has_d, d, has_zh, zh) and draws (the mask to
    fill here) as fused_gru_family._masks gives them; saved (r, z, n, hn)."""
    T, B, I = x.shape
    H = h_state.shape[1]
    dt = x.dtype
    has_d, d, has_zh, zh = masks
    hbuf = double_buffer(h_state)  # (2, B, H)
    counter = new_counter()

    C = chunk_steps(len(steps), B)

    def make(j, size, later):
        u0, u1 = units(j, size, H)
        rows = my_rows(3, H, j, size, w_ih, w_hh, bias, steps, B, later=later)  # rows r z n of my units
        # b_hn of my units, w_ih_mine packed, hd_mine (B, H), hw_mine (B, 3U), xa_mine (C, B, 3U)
        return (rows, b_hn[u0:u1].copy(), packed_inputs(rows[0], C, len(steps), B, later), np.empty((B, H), dt),
                np.empty((B, 3 * (u1 - u0)), dt), workspace.empty((C, B, 3 * (u1 - u0)), dt))

    mine = ahead(k, make)

    @aborting(counter)
    def member(j, size):
        rows, b_hn_mine, bp_ih, hd_mine, hw_mine, xa_mine = mine(j, size)
        forward_units(j, size, steps, full, x.reshape(T * B, I), *rows, b_hn_mine, bp_ih, gk, ck, has_d, d,
                      hd_mine, has_zh, zh, hbuf, hw_mine, xa_mine, *saved, out, draws, counter)

    team(member, k, torch_modes=False)  # numba and NumPy only
    h_state[:] = hbuf[steps.shape[0] % 2]


def backward(k, steps, gk, ck, masks, d_out, dh_state, saved, out, h0, dgates, dxa, dhw, x, h_prev, w_ih, w_hh,
             need):
    """backward_units, then the gradients over all steps (fused_units.grads_of_my_rows), on a
    team of up to k threads. h_prev: d ⊙ h_{t-1} as fused_common.previous_rows gives it,
    or None when δW_hh is not needed; need: (δx, δW_ih, δW_hh, δb). dh_state is updated in
    place. Returns (δx, δW_ih, δW_hh, δb_ih, δb_hh), None where not needed."""
    T, B, I = x.shape
    H = dh_state.shape[1]
    has_d, d, has_zh, zh = masks
    counter = new_counter()
    results = gradient_buffers(need, x, w_ih, w_hh, ("db_ih", "db_hh"))

    def make(j, size, later):
        u0, u1 = units(j, size, H)
        return (*my_columns(H, j, size, w_hh, steps, B, later), np.empty((B, u1 - u0), dh_state.dtype))  # tmp_mine

    bp_dx = dx_panels(need[0], w_ih, steps, B)  # W_ih packed for δX, each thread its share of the panels
    mine = ahead(k, make)

    @aborting(counter)
    def member(j, size):
        pack_my_panels(j, size, w_ih, bp_dx)
        backward_units(j, size, steps, gk, ck, has_d, d, has_zh, zh, d_out, dh_state, *saved, out, h0, dgates, dxa,
                       dhw, *mine(j, size), counter)
        grads_of_my_rows(j, size, H, 3, dxa.reshape(T * B, 3 * H), dhw.reshape(T * B, 3 * H),
                         x.reshape(T * B, I), h_prev, w_ih, bp_dx, results, shared=2 * H)  # δa_r, δa_z in both

    team(member, k, torch_modes=False)  # numba and NumPy only
    return (results.get("dx"), results.get("dw_ih"), results.get("dw_hh"), results.get("db_ih"),
            results.get("db_hh"))
