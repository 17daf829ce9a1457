"""The fused LSTM's time loops with each step's units split between threads (small batches).

A batch of one row cannot be split into row blocks (fused_parallel), and one thread
leaves the second core idle while it streams the whole W_hh (1 MiB at H = 256, float32)
through its cache at every step. Here thread j of k owns units [u0, u1): per step it
multiplies h_{t-1} (all H units) by its columns of W_hh^T (the rows i f g o of its units,
about 1/k of the matrix, which stays in its own L2 cache) and runs the gate pass of its
units; the threads then meet at a barrier (`_kernels_sync`), after which everyone's h_t is
complete and the next step can start.

    forward:  (a chunk's first step: my units' xa for its C steps, fused_units.project_chunk)
              hw_mine = h_{t-1} W_mine^T     (W_mine: my units' rows i f g o of W_hh, 4U x H)
              gate pass for my units (fused_lstm.forward_step with u0, u1)
              h_t of my units -> the other half of a double buffer; barrier
    backward: BPTT pass for my units (fused_lstm.backward_step with u0, u1) -> δa[t] of my
              units; barrier; δh_{t-1}[:, my units] = δa[t] (all 4H) W_hh[:, my units]

One barrier per step in each direction; the state h is double-buffered in the forward
pass because a thread still reading h_{t-1} for its product must not see h_t being
written. Results equal the one-thread loops to rounding (float64: within a few 1e-16):
each unit's gate maths is unchanged, but OpenBLAS multiplies the thread's weight rows as a
different (transposed, narrower) GEMM.

Used by fused_lstm for the plain LSTM without projection, in place of row blocks, when each
thread gets enough units and a step is large enough (fused_units.unit_threads):
each thread then keeps the whole batch in its GEMMs (row blocks halve their M, and OpenBLAS
is slower at M = 16 than at 32) and reads only its share of the weights. Measured in
`gatelab bench` (2 threads, float32), units against row blocks: LSTM inference at
(100,32,128,256) 21.9 ms against 24.2, (256,32,512,512) 246 against 267, (50,16,64,128)
2.3 against 2.6; training within a few percent either way.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from gatelab.engines._kernels import JIT
from gatelab.engines._kernels_gemm import step_gemm
from gatelab.engines._kernels_sync import arrive_and_wait, new_counter
from gatelab.engines.fused_parallel import team
from gatelab.engines.fused_lstm import backward_step, forward_step
from gatelab.engines.fused_units import (aborting, ahead, chunk_steps, copy_units, double_buffer, gradient_buffers,
                                         dx_panels, grads_of_my_rows, my_columns, my_rows, pack_my_panels,
                                         packed_inputs, project_chunk)
from gatelab.engines import workspace



@njit(**JIT)
def forward_units(j, k, steps, full, x2, w_ih_mine, w_hh_mine, bp_hh, tmp, bias_mine, bp_ih, hbuf, c_state,
                  hw_mine, xa_mine, gi, gf, gg, go, c_seq, out, counter):
    """Thread j of k runs its input projection and the whole forward time loop for units
    [u0, u1) = units(j, k, H), U = u1 - u0.

    x2 (T*B, I) the input; w_ih_mine (4U, I) and w_hh_mine (4U, H): the rows i f g o of my
    units of W_ih and W_hh, as contiguous copies; bp_hh, tmp: w_hh_mine packed for
    _kernels_gemm.step_gemm and its scratch; bias_mine (4U,); bp_ih: w_ih_mine packed
    (fused_units.packed_inputs); xa_mine (C, B, 4U): the input projection of C steps at a
    time (fused_units.chunk_steps, project_chunk), hw_mine (B, 4U): this thread's own
    products; hbuf (2, B, H): the running h, double-buffered (both start as h0; after S
    steps the state is hbuf[S % 2]); counter: _kernels_sync.new_counter(), shared; the rest
    as in fused_lstm.forward_loop (no projection: out is m).
    """
    B, H = c_state.shape
    u0, u1 = j * H // k, (j + 1) * H // k
    for s in range(steps.shape[0]):
        t, n = steps[s, 0], steps[s, 1]
        lo = project_chunk(s, steps, x2, w_ih_mine, bp_ih, xa_mine, tmp)  # (C*B, I) x (4U, I)^T, a chunk's first step
        src, dst = hbuf[s % 2], hbuf[(s + 1) % 2]
        step_gemm(src[:n], w_hh_mine, bp_hh, hw_mine[:n], True, 0.0, tmp)  # (n, H) x (4U, H)^T
        forward_step(t, n, t if full else -1, t - lo, xa_mine, hw_mine, bias_mine, c_state, gi, gf, gg, go, c_seq,
                     out, dst, u0, u1)
        copy_units(src, dst, n, B, u0, u1)  # rows not in this step keep their state
        if not arrive_and_wait(counter, s, k):
            return  # another thread failed: the caller raises its error


@njit(**JIT)
def backward_units(j, k, steps, d_out, dh_state, dc_state, gi, gf, gg, go, c_seq, c0, dgates, da, w_mine,
                   bp, tmp, counter):
    """Thread j of k runs the whole backward time loop for units [u0, u1); w_mine (4H, U):
    W_hh's columns of my units (a contiguous copy), bp and tmp: it packed for step_gemm and
    its scratch; counter: new_counter(), shared; the rest as in fused_lstm.backward_loop
    without projection."""
    H = dc_state.shape[1]
    u0, u1 = j * H // k, (j + 1) * H // k
    S = steps.shape[0]
    for s in range(S - 1, -1, -1):
        t, n, tp, n_prev = steps[s, 0], steps[s, 1], steps[s, 2], steps[s, 3]
        backward_step(t, n, tp, n_prev, d_out, dh_state, dc_state, gi, gf, gg, go, c_seq, c0, dgates, da,
                      u0, u1)
        if not arrive_and_wait(counter, S - 1 - s, k):  # δa[t] complete for every unit
            return  # another thread failed: the caller raises its error
        step_gemm(da[t, :n], w_mine, bp, dh_state[:n, u0:u1], False, 0.0, tmp)  # (n, 4H) x (4H, U)
    arrive_and_wait(counter, S, k)  # δa complete: the GEMMs over all steps may read any column


def forward(k, steps, full, x, w_ih, w_hh, bias, h_state, c_state, gates, c_seq, out):
    """forward_units on a team of up to k threads (each projecting its own units' inputs);
    h_state and c_state are updated in place."""
    T, B, I = x.shape
    H = c_state.shape[1]
    dt = x.dtype
    hbuf = double_buffer(h_state)  # (2, B, H)
    counter = new_counter()

    C = chunk_steps(len(steps), B)

    def make(j, size, later):
        rows = my_rows(4, H, j, size, w_ih, w_hh, bias, steps, B, later=later)  # rows i f g o of my units
        G_U = rows[0].shape[0]  # 4U
        # w_ih_mine packed, hw_mine (B, 4U), xa_mine (C, B, 4U)
        bp_ih = packed_inputs(rows[0], C, len(steps), B, later)
        return rows, bp_ih, np.empty((B, G_U), dt), workspace.empty((C, B, G_U), dt)

    mine = ahead(k, make)

    @aborting(counter)
    def member(j, size):
        rows, bp_ih, hw_mine, xa_mine = mine(j, size)
        forward_units(j, size, steps, full, x.reshape(T * B, I), *rows, bp_ih, hbuf, c_state, hw_mine, xa_mine,
                      *gates, c_seq, out, counter)

    team(member, k, torch_modes=False)  # numba and NumPy only
    h_state[:] = hbuf[steps.shape[0] % 2]


def backward(k, steps, d_out, dh_state, dc_state, gates, c_seq, c0, dgates, da, x, h_prev, w_ih, w_hh,
             need):
    """backward_units, then the gradients over all steps, on a team of up to k threads.

    x (T, B, I); h_prev: the state each step started from, a fused_common.Previous
    (previous_rows; None when δW_hh is not needed); need: (δx, δW_ih, δW_hh, δb) wanted.
    Each thread forms its share of the rows of δW_ih, δW_hh and δb (a contiguous range of
    the 4H, once every column of δA is complete) and of δx's T*B rows
    (fused_units.grads_of_my_rows). dh_state and dc_state are updated in place. Returns
    (δx, δW_ih, δW_hh, δb), None where not needed.
    """
    T, B, I = x.shape
    H = dc_state.shape[1]
    counter = new_counter()
    out = gradient_buffers(need, x, w_ih, w_hh, ("db_ih",))
    da2 = da.reshape(T * B, 4 * H)  # (T*B, 4H)

    bp_dx = dx_panels(need[0], w_ih, steps, B)  # W_ih packed for δX, each thread its share of the panels
    mine = ahead(k, lambda j, size, later: my_columns(H, j, size, w_hh, steps, B, later))

    @aborting(counter)
    def member(j, size):
        pack_my_panels(j, size, w_ih, bp_dx)
        backward_units(j, size, steps, d_out, dh_state, dc_state, *gates, c_seq, c0, dgates, da, *mine(j, size),
                       counter)
        grads_of_my_rows(j, size, H, 4, da2, da2, x.reshape(T * B, I), h_prev, w_ih, bp_dx, out)

    team(member, k, torch_modes=False)  # numba and NumPy only
    return out.get("dx"), out.get("dw_ih"), out.get("dw_hh"), out.get("db_ih")
