"""The fused GRU's time loops with each step's units split between threads.

As fused_lstm_units for the LSTM (the reasons and the measurements are there): thread j
of k owns units [u0, u1), a contiguous copy of its rows r z n of W_ih and W_hh, its input
projection and gate pass, and the whole batch.

    forward:  (a chunk's first step: my units' xa for its C steps, fused_units.project_chunk)
              hw_mine = h_{t-1} W_mine^T; h_{t-1} of my units copied to the other half of
              a double buffer, the gate pass turns it into h_t there; barrier
    backward: BPTT pass for my units (fused_gru.backward_step with u0, u1) -> δxa, δhw of
              my units; barrier; δh_{t-1}[:, my units] += δhw[t] (all 3H) W_hh[:, my units]

The GRU's gate pass reads h_{t-1} of its units and writes h_t in place (as the one-thread
loop does); copying my units' h_{t-1} (B x U numbers) into the buffer the others do not
read this step lets the threads meet once per step instead of twice (before the pass,
after everyone's product had read h_{t-1}, and after it). Results equal the one-thread
loops to rounding, as for the LSTM.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from gatelab.engines._kernels import JIT
from gatelab.engines._kernels_gemm import step_gemm
from gatelab.engines._kernels_sync import arrive_and_wait, new_counter
from gatelab.engines.fused_gru import backward_step, forward_step
from gatelab.engines.fused_parallel import team
from gatelab.engines.fused_units import (aborting, ahead, chunk_steps, copy_units, double_buffer, gradient_buffers,
                                         dx_panels, grads_of_my_rows, my_columns, my_rows, pack_my_panels,
                                         packed_inputs, project_chunk, units)
from gatelab.engines import workspace


@njit(**JIT)
def forward_units(j, k, steps, full, x2, w_ih_mine, w_hh_mine, bp_hh, tmp, bias_mine, b_hn_mine, bp_ih, hbuf,
                  hw_mine, xa_mine, gr, gz, gn, hn_seq, out, counter):
    """Thread j of k runs its input projection and the whole forward time loop for units
    [u0, u1) = units(j, k, H), U = u1 - u0.

    x2 (T*B, I); w_ih_mine (3U, I), w_hh_mine (3U, H): my rows r z n, contiguous copies;
    bp_hh, tmp: w_hh_mine packed for _kernels_gemm.step_gemm and its scratch;
    bias_mine (3U,), b_hn_mine (U,); bp_ih: w_ih_mine packed (fused_units.packed_inputs);
    xa_mine (C, B, 3U) the input projection of C steps at a time (fused_units.chunk_steps,
    project_chunk) and hw_mine (B, 3U) my products;
    hbuf (2, B, H) the running h, double-buffered (fused_units.double_buffer; after S steps
    the state is hbuf[S % 2]); counter: _kernels_sync.new_counter(), shared; the rest as
    in fused_gru.forward_loop.
    """
    B, H = hbuf.shape[1], hbuf.shape[2]
    u0, u1 = j * H // k, (j + 1) * H // k
    for s in range(steps.shape[0]):
        t, n = steps[s, 0], steps[s, 1]
        lo = project_chunk(s, steps, x2, w_ih_mine, bp_ih, xa_mine, tmp)  # (C*B, I) x (3U, I)^T, a chunk's first step
        src, dst = hbuf[s % 2], hbuf[(s + 1) % 2]
        step_gemm(src[:n], w_hh_mine, bp_hh, hw_mine[:n], True, 0.0, tmp)  # (n, H) x (3U, H)^T
        copy_units(src, dst, 0, B, u0, u1)  # h_{t-1} of my units (rows not in this step keep it)
        forward_step(t, n, t if full else 0, t - lo, xa_mine, hw_mine, bias_mine, b_hn_mine, dst, gr, gz, gn,
                     hn_seq, out, u0, u1)
        if not arrive_and_wait(counter, s, k):  # h_t complete
            return  # another thread failed: the caller raises its error


@njit(**JIT)
def backward_units(j, k, steps, d_out, dh_state, gr, gz, gn, hn_seq, out, h0, dgates, dxa, dhw, w_mine,
                   bp, tmp, counter):
    """Thread j of k runs the whole backward time loop for units [u0, u1); w_mine (3H, U):
    W_hh's columns of my units (a contiguous copy); counter: new_counter(), shared; the
    rest as in fused_gru.backward_loop."""
    H = dh_state.shape[1]
    u0, u1 = j * H // k, (j + 1) * H // k
    S = steps.shape[0]
    for s in range(S - 1, -1, -1):
        t, n, tp, n_prev = steps[s, 0], steps[s, 1], steps[s, 2], steps[s, 3]
        backward_step(t, n, tp, n_prev, d_out, dh_state, gr, gz, gn, hn_seq, out, h0, dgates, dxa, dhw,
                      u0, u1)
        if not arrive_and_wait(counter, S - 1 - s, k):  # δhw[t] complete for every unit
            return  # another thread failed: the caller raises its error
        step_gemm(dhw[t, :n], w_mine, bp, dh_state[:n, u0:u1], False, 1.0, tmp)  # += (n, 3H) x (3H, U)
    arrive_and_wait(counter, S, k)  # δxa, δhw complete: the GEMMs over all steps may read any column


def forward(k, steps, full, x, w_ih, w_hh, bias, b_hn, h_state, saved, out):
    """forward_units on a team of up to k threads; h_state is updated in place.
    bias (3H,) b_ih + [b_hr, b_hz, 0]; b_hn (H,); saved: (r, z, n, hn) arrays."""
    T, B, I = x.shape
    H = h_state.shape[1]
    dt = x.dtype
    hbuf = double_buffer(h_state)  # (2, B, H)
    counter = new_counter()

    C = chunk_steps(len(steps), B)

    def make(j, size, later):
        u0, u1 = units(j, size, H)
        rows = my_rows(3, H, j, size, w_ih, w_hh, bias, steps, B, later=later)  # rows r z n of my units
        # b_hn of my units, w_ih_mine packed, hw_mine (B, 3U), xa_mine (C, B, 3U)
        return (rows, b_hn[u0:u1].copy(), packed_inputs(rows[0], C, len(steps), B, later),
                np.empty((B, 3 * (u1 - u0)), dt), workspace.empty((C, B, 3 * (u1 - u0)), dt))

    mine = ahead(k, make)

    @aborting(counter)
    def member(j, size):
        rows, b_hn_mine, bp_ih, hw_mine, xa_mine = mine(j, size)
        forward_units(j, size, steps, full, x.reshape(T * B, I), *rows, b_hn_mine, bp_ih, hbuf, hw_mine, xa_mine,
                      *saved, out, counter)

    team(member, k, torch_modes=False)  # numba and NumPy only
    h_state[:] = hbuf[steps.shape[0] % 2]


def backward(k, steps, d_out, dh_state, saved, out, h0, dgates, dxa, dhw, x, h_prev, w_ih, w_hh, need):
    """backward_units, then the gradients over all steps (fused_units.grads_of_my_rows), on a
    team of up to k threads. need: (δx, δW_ih, δW_hh, δb) wanted; h_prev: a
    fused_common.Previous (previous_rows) or None.
    dh_state is updated in place. Returns (δx, δW_ih, δW_hh, δb_ih, δb_hh), None where not
    needed."""
    T, B, I = x.shape
    H = dh_state.shape[1]
    counter = new_counter()
    results = gradient_buffers(need, x, w_ih, w_hh, ("db_ih", "db_hh"))

    bp_dx = dx_panels(need[0], w_ih, steps, B)  # W_ih packed for δX, each thread its share of the panels
    mine = ahead(k, lambda j, size, later: my_columns(H, j, size, w_hh, steps, B, later))

    @aborting(counter)
    def member(j, size):
        pack_my_panels(j, size, w_ih, bp_dx)
        backward_units(j, size, steps, d_out, dh_state, *saved, out, h0, dgates, dxa, dhw, *mine(j, size), counter)
        grads_of_my_rows(j, size, H, 3, dxa.reshape(T * B, 3 * H), dhw.reshape(T * B, 3 * H),
                         x.reshape(T * B, I), h_prev, w_ih, bp_dx, results, shared=2 * H)  # δa_r, δa_z in both

    team(member, k, torch_modes=False)  # numba and NumPy only
    return tuple(results.get(name) for name in ("dx", "dw_ih", "dw_hh", "db_ih", "db_hh"))
