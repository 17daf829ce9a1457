"""What the unit-split time loops (fused_lstm_units, fused_gru_units and the families'
fused_lstm_family_units, fused_gru_family_units) share.

Thread j of k owns units [u0, u1) of a layer-direction: the rows gH + u0 .. gH + u1 of
each gate block g of W_ih, W_hh and the biases (G gates: 4 for the LSTM, 3 for the GRU),
the columns of those rows in the per-step products, and its units of every state. The
time loops meet at a spin barrier (_kernels_sync); everything here runs in Python
around them (which rows are mine, releasing the others when a thread fails, the
gradients over all steps, each thread forming its own rows), but for project_chunk, the
input projection of the next few steps that each thread's forward loop forms inside it.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from gatelab.engines import _kernels_sync
from gatelab.engines._kernels import JIT
from gatelab.engines._kernels_blas import gemm, gemm_tn
from gatelab.engines._kernels_gemm import NR, _pack, _pack_panels, pack_buffer, packed_gemm, scratch, step_gemm
from gatelab.engines._kernels_sync import abort
from gatelab.engines.fused_common import numba_loop
from gatelab.engines import workspace

MIN_STEP_MACS = 1 << 16  # B·G·H·H below which the barrier and the thread wake-up cost more
MIN_UNITS = 32  # units per thread below which row blocks (or one thread) do better
CHUNK_ROWS = 64  # rows of x (steps x batch) a thread projects at once inside its time loop
MIN_CHUNK_BATCH = 8  # batches below this project every step before the loop
DX_ROWS = 48  # rows of δA a thread multiplies by the packed W_ih at once (they stay in L2)


def unit_threads(threads, B, H, G, proj=False) -> int:
    """How many threads split each step's units of an LSTM (G = 4) or GRU (G = 3), variants
    included (fused_cpu decides which can split):
    `threads` when there are several, no projection, at least MIN_UNITS units per thread
    and a step of at least MIN_STEP_MACS multiply-adds; else 1 (row blocks or one thread).
    Measured against row blocks, LSTM inference (fused_lstm_units): (100,32,128,256)
    21.9 against 24.2 ms, (256,32,512,512) 233 against 267, (50,16,64,128) 2.3 against 2.6."""
    if threads < 2 or proj or H < MIN_UNITS * threads or B * G * H * H < MIN_STEP_MACS:
        return 1
    return threads if numba_loop() and _kernels_sync.bind() else 1


def units(j, k, H):
    """Thread j of k's units [u0, u1)."""
    return j * H // k, (j + 1) * H // k


@functools.lru_cache(maxsize=64)
def gate_rows(G, H, u0, u1, order=None):
    """The rows of my units in each of G gate blocks of height H, block by block (in
    `order`, a tuple of the G block indices; default 0 .. G-1): (G*U,) (cached, read-only)."""
    rows = np.concatenate([np.arange(g * H + u0, g * H + u1) for g in (order or range(G))])
    rows.flags.writeable = False
    return rows


def kept_order(G, unused):
    """The gate blocks with the `unused` ones (a tuple) last: the order of a thread's own rows
    when the variant never reads some gates, so that its products cover the first blocks only."""
    return tuple(g for g in range(G) if g not in unused) + tuple(unused)


def spans(G, H, unused) -> np.ndarray:
    """The row ranges [a, b) of the G*H rows of W_ih / W_hh / δA's columns in the blocks not
    `unused`, adjacent blocks merged: (S, 2) int64, S <= 2 for the LSTM's four blocks."""
    out = []
    for g in range(G):
        if g in unused:
            continue
        if out and out[-1][1] == g * H:
            out[-1][1] = (g + 1) * H
        else:
            out.append([g * H, (g + 1) * H])
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def my_share(j, size, spans_) -> np.ndarray:
    """Thread j of size's share of the rows in spans_ (S, 2): an even split of their count,
    as row ranges (R, 2) int64."""
    total = int(sum(b - a for a, b in spans_))
    s0, s1 = units(j, size, total)
    out, offset = [], 0
    for a, b in spans_:
        lo, hi = max(s0 - offset, 0), min(s1 - offset, b - a)
        if lo < hi:
            out.append([a + lo, a + hi])
        offset += b - a
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def gaps(total, spans_) -> np.ndarray:
    """The row ranges of [0, total) outside spans_: (Z, 2) int64."""
    out, at = [], 0
    for a, b in spans_:
        if at < a:
            out.append([at, a])
        at = b
    if at < total:
        out.append([at, total])
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def ahead(k, make):
    """make(j, size, later) for every thread j of a team of k, made now, before the team
    starts, on the calling thread; but the copies and packs into what it made, which make
    leaves in `later` (now_or_later), thread j runs itself when it takes its share.

    Made by the team's threads themselves, their Python took turns at the GIL: at
    (50,16,64,128) the time loops started 184 and 200 µs after the team did; made before it,
    ~60 µs of making and 19 and 74 µs after (the second thread's wake-up). The copies and
    packs (numba, without the GIL; the allocations stay here: the workspace pool is not
    thread-safe) then ran on the calling thread for every thread, ~0.1 ms of a training call
    at (50,16,64,128) and ~2 ms at (256,32,512,512); in the threads, each its own, a training
    step (interleaved in one process with the copies made before the team) ran 1.011x
    faster for the LSTM at (50,16,64,128), 1.010x at (100,1,128,256), 1.007x at
    (100,32,128,256), 1.006x at (256,32,512,512); the GRU 1.008x, 1.007x at (100,32,128,256),
    1.005x at (128,64,256,256); with zoneout (and the LSTM's peepholes) 1.008-1.010x.
    Returns mine(j, size): thread j's, its `later` run first (so call it on thread j), or made
    and filled then for a team that came out smaller."""
    later = [[] for _ in range(k)]
    made = [make(j, k, later[j]) for j in range(k)]

    def mine(j, size):
        if size != k:
            return make(j, size, None)
        for fill in later[j]:
            fill()
        return made[j]

    return mine


def now_or_later(later, fill, *args):
    """fill(*args) now when later is None, else appended to later (ahead's list of a thread's
    copies and packs, run in order on that thread)."""
    if later is None:
        fill(*args)
    else:
        later.append(functools.partial(fill, *args))


def my_rows(G, H, j, size, w_ih, w_hh, bias, steps, B, order=None, later=None):
    """Thread j of size's rows of the weights, the arguments its forward_units takes:
    (w_ih_mine (G*U, I), w_hh_mine (G*U, H), w_hh_mine packed for step_gemm, step_gemm's
    scratch, bias_mine (G*U,)); contiguous copies, copied and packed in numba (both threads'
    at H = 256, B = 1: 57–71 µs, 88 with NumPy's fancy indexing), now or `later`
    (now_or_later). order: the gate blocks' order (gate_rows)."""
    rows = gate_rows(G, H, *units(j, size, H), order)  # (G*U,) gate block by gate block
    dt = w_hh.dtype
    # pooled: fresh arrays may page-fault (both threads' rows at H = 512, made 30 times in a
    # row with NumPy's arrays: 5.9 ms a time; pooled 1.6)
    w_ih_mine, w_hh_mine = workspace.empty((len(rows), w_ih.shape[1]), dt), workspace.empty((len(rows), H), dt)
    bias_mine = np.empty(len(rows), dt)
    bp = pack_buffer(w_hh_mine.shape, dt, True, len(steps), B)
    now_or_later(later, _take_rows, rows, w_ih, w_hh, bias, w_ih_mine, w_hh_mine, bias_mine, bp)
    return w_ih_mine, w_hh_mine, bp, scratch(dt), bias_mine


def chunk_steps(S, B) -> int:
    """How many steps' input projection a thread forms at once, inside its time loop, into
    a ring of that many steps (project_chunk): max(2, CHUNK_ROWS // B), or all S steps
    before the loop for batches under MIN_CHUNK_BATCH.

    Formed all at once, a thread's xa (T, B, GU) is written to memory and read back by the
    gate passes a step at a time from L3 or DRAM (12.6 MB a thread for the GRU at
    (128,64,256,256)); a chunk is read while it is still in the core's L2, and the ring
    replaces T·B·GH numbers of workspace. Measured at 2 threads, float32 (the forward's
    team alone, all at once → chunks of max(2, 64 // B) steps): the LSTM's training forward
    at (100,32,128,256) 17.6 → 16.6 ms, (128,64,256,256) 55.1 → 52.4, (50,16,64,128) 1.82 →
    1.76, (256,32,512,512) within ±2 % (its weights do not fit L2 either way); GRU
    inference (128,64,256,256) 39.9 → 38.5. Chunks written into a full-size xa instead of a
    ring gained half as much; at B = 1 chunks cost 6-15 %, hence MIN_CHUNK_BATCH.
    """
    if B < MIN_CHUNK_BATCH:
        return S
    return max(1, min(S, max(2, CHUNK_ROWS // B)))


def packed_inputs(w_ih_mine, C, S, B, later=None):
    """w_ih_mine (GU, I) packed for the chunks' products (step_gemm), now or `later`
    (now_or_later: after w_ih_mine's own copy), or an empty array when all S steps are
    projected at once (C == S: one OpenBLAS GEMM, which packs as it goes)."""
    if C >= S:
        return np.empty((0, 1, NR), w_ih_mine.dtype)
    bp = pack_buffer(w_ih_mine.shape, w_ih_mine.dtype, True, -(-S // C), C * B)  # for ⌈S/C⌉ products
    if bp.shape[0] > 0:
        now_or_later(later, _pack, w_ih_mine, True, bp)
    return bp


@njit(inline="always")
def project_chunk(s, steps, x2, w_ih_mine, bp_ih, xa, tmp):
    """xa's row of step s: at the first step of each chunk of C = xa.shape[0] steps, the
    chunk's input projection xa[:m] = x_chunk W_ih_mine^T (its m consecutive time indices
    lo .. lo + m - 1, in either direction); returns lo (step s reads xa[t - lo]).
    x2 (T*B, I); w_ih_mine (N, I) and bp_ih it packed (packed_inputs); xa (C, B, W): the
    product fills its first N <= W columns (the LSTM family leaves its unused gates' last
    columns out, and zero)."""
    S, C = steps.shape[0], xa.shape[0]
    B, W = xa.shape[1], xa.shape[2]
    s0 = s - s % C
    e = min(s0 + C, S) - 1
    lo, hi = min(steps[s0, 0], steps[e, 0]), max(steps[s0, 0], steps[e, 0])
    if s == s0:
        m = hi - lo + 1
        c = xa[:m].reshape(m * B, W)[:, :w_ih_mine.shape[0]]  # (m*B, N)
        step_gemm(x2[lo * B:(hi + 1) * B], w_ih_mine, bp_ih, c, True, 0.0, tmp)
    return lo


def my_columns(H, j, size, w_hh, steps, B, later=None):
    """Thread j of size's columns of W_hh for δh_{t-1}[:, mine] = δa W_hh[:, mine], the
    arguments its backward_units takes: (w_mine (G*H, U), a contiguous copy streamed at
    every step; it packed for step_gemm; step_gemm's scratch), copied and packed in numba,
    now or `later` (now_or_later)."""
    u0, u1 = units(j, size, H)
    w_mine = workspace.empty((w_hh.shape[0], u1 - u0), w_hh.dtype)  # pooled, as in my_rows
    bp = pack_buffer(w_mine.shape, w_hh.dtype, False, len(steps), B)
    now_or_later(later, _take_columns, w_hh, u0, u1, w_mine, bp)
    return w_mine, bp, scratch(w_hh.dtype)


def span_packs(w_mine, spans_, steps, B, later=None):
    """w_mine's rows in each of (at most two) spans packed on their own for step_gemm: (bp0,
    bp1), bp1 empty when there is one span; now or `later` (after w_mine's own copy)."""
    packs = [pack_buffer((b - a, w_mine.shape[1]), w_mine.dtype, False, len(steps), B) for a, b in spans_]
    for (a, b), bp in zip(spans_, packs):
        if bp.shape[0] > 0:
            now_or_later(later, _pack, w_mine[a:b], False, bp)
    while len(packs) < 2:
        packs.append(np.empty((0, 1, packs[0].shape[2]), w_mine.dtype))
    return tuple(packs)


@njit(**JIT)
def _take_rows(rows, w_ih, w_hh, bias, w_ih_mine, w_hh_mine, bias_mine, bp):
    """w_ih_mine, w_hh_mine, bias_mine = the `rows` of w_ih, w_hh, bias; w_hh_mine packed
    (transposed) into bp unless bp is empty."""
    for r in range(rows.shape[0]):  # (1-D views: a loop over 2-D indices ran 5x slower)
        a, b, c, d = w_ih_mine[r], w_ih[rows[r]], w_hh_mine[r], w_hh[rows[r]]
        for k in range(a.shape[0]):
            a[k] = b[k]
        for k in range(c.shape[0]):
            c[k] = d[k]
        bias_mine[r] = bias[rows[r]]
    if bp.shape[0] > 0:
        _pack(w_hh_mine, True, bp)


@njit(**JIT)
def _take_columns(w_hh, u0, u1, w_mine, bp):
    """w_mine = w_hh[:, u0:u1], packed into bp unless bp is empty."""
    for r in range(w_hh.shape[0]):
        a, b = w_mine[r], w_hh[r, u0:u1]
        for k in range(a.shape[0]):
            a[k] = b[k]
    if bp.shape[0] > 0:
        _pack(w_mine, False, bp)


@njit(inline="always")
def copy_units(src, dst, b0, b1, u0, u1):
    """dst[b0:b1, u0:u1] = src[b0:b1, u0:u1]: my units of the double-buffered state carried
    to the half the step writes (rows not in the step, or the GRU's h_{t-1} it updates in
    place), or of the new state into out[t]."""
    for b in range(b0, b1):
        s_, d_ = src[b, u0:u1], dst[b, u0:u1]  # 1-D row views, so that the copy vectorises
        for u in range(u1 - u0):
            d_[u] = s_[u]


def double_buffer(h_state):
    """(2, B, H): h_state twice, the running state of a forward that meets once per step."""
    hbuf = workspace.empty((2, *h_state.shape), h_state.dtype)
    hbuf[0] = h_state
    hbuf[1] = h_state
    return hbuf


def aborting(counter):
    """Wrap a team member so that its failure (an exception, KeyboardInterrupt included, in
    its Python part) releases the threads waiting for it at the barrier."""

    def wrap(member):
        def run(j, size):
            try:
                member(j, size)
            except BaseException:
                abort(counter)
                raise

        return run

    return wrap


def gradient_buffers(need, x, w_ih, w_hh, biases):
    """The results grads_of_my_rows fills, allocated only where wanted.

    need: (δx, δW_ih, δW_hh, δb) wanted; biases: the bias names, ("db_ih",) for the LSTM
    (one bias gradient) or ("db_ih", "db_hh") for the GRU. dx has x's shape (T, B, I).
    """
    wanted = (("dx", lambda: workspace.empty_like(x)), ("dw_ih", lambda: workspace.empty_like(w_ih)),
              ("dw_hh", lambda: workspace.empty_like(w_hh)))
    out = {name: make() for (name, make), yes in zip(wanted, need) if yes}
    if need[3]:
        out.update((name, workspace.empty(w_ih.shape[0], x.dtype)) for name in biases)
    return out


def dx_panels(need_dx, w_ih, steps, B):
    """W_ih (G*H, I) packed as the B operand of δX = δA W_ih (K = G*H, N = I) for the packed
    kernel, uninitialised (each thread packs its share: pack_my_panels); empty (OpenBLAS
    runs the product) when δX is not wanted and where pack_buffer says so (float64, short
    loops, one row). Measured on one core, δX of one thread's T*B/2 rows: (4096, 2048, 512)
    91.2 ms with OpenBLAS, 1.04x faster in blocks of 48 rows after a 0.5 ms pack;
    (4096, 1024, 256) 1.09x, (1600, 1024, 128) 1.07x, (400, 512, 64) 1.12x. A training step,
    2 threads, interleaved in one process with OpenBLAS's δX: LSTM (256,32,512,512) 1.003x
    faster, (128,64,256,256) 1.011x, (100,32,128,256) 1.003x, (50,16,64,128) 1.002x; GRU
    (128,64,256,256) 1.006x (both cores now share L3 and memory)."""
    if not need_dx:
        return np.empty((0, 1, NR), w_ih.dtype)
    return pack_buffer(w_ih.shape, w_ih.dtype, False, len(steps), B)


def pack_my_panels(j, size, w_ih, bp):
    """Thread j of size packs its share of bp's panels (dx_panels). Called before the
    backward loop, whose last barrier orders every thread's packing before any reads bp."""
    if bp.shape[0] > 0:
        _pack_panels(w_ih, False, bp, *units(j, size, bp.shape[0]))


def grads_of_my_rows(j, size, H, G, d_in, d_rec, x2, h_prev, w_ih, bp_ih, out, unused=(), shared=0):
    """The gradients over all steps, thread j of size's share: rows [j GH/size,
    (j+1) GH/size) of δW_ih, δW_hh and δb (one GEMM each, whichever gates they fall in:
    every column of δA is complete once the backward loops have met) and as many of δx's
    T*B rows. unused: gate blocks whose δA is zero (fused_lstm_family.unused_gates): their
    rows are zero-filled, the rest split evenly, and δx's products leave them out.

    d_in, d_rec (T*B, G*H): δ of the input and of the recurrent products (the same array
    for the LSTM); shared: how many first columns of d_rec equal d_in's (the GRU's r and z,
    2H: their δb_hh is δb_ih's, not summed again); x2 (T*B, I); h_prev:
    fused_common.Previous, the state each step started from (None when δW_hh is not
    wanted); w_ih (G*H, I); bp_ih: W_ih packed for δX (dx_panels, every panel packed by now;
    empty: OpenBLAS); out: gradient_buffers(...). Measured at
    (T*B, H, I) = (3200, 256, 128), 2 threads: 14.3 ms against 15.1 for four GEMMs each,
    one per gate block of the thread's own units (OpenBLAS packs H_prev for each).
    In numba, without the GIL: through NumPy's matmul the two threads handed the GIL to
    each other around every product (at (1,16,64,128) ~100 µs a thread for ~40 µs of GEMMs).
    """
    dt = d_in.dtype
    none2 = np.empty((0, 0), dt)
    none1 = np.empty(0, dt)
    dx = out.get("dx")
    prev = (none2, 0, none2, 0) if h_prev is None else h_prev
    args = (d_in, d_rec, x2, *prev, w_ih, out.get("dw_ih", none2),
            out.get("dw_hh", none2), out.get("db_ih", none1), out.get("db_hh", none1),
            none2 if dx is None else dx.reshape(d_in.shape[0], -1))
    if not unused:
        _grads_of_rows(*units(j, size, G * H), *units(j, size, d_in.shape[0]), *args, bp_ih, scratch(dt), shared)
        return
    kept = spans(G, H, unused)
    _grads_of_spans(my_share(j, size, kept), gaps(G * H, kept) if j == 0 else np.empty((0, 2), np.int64),
                    *units(j, size, d_in.shape[0]), kept, *args)


@njit(**JIT)
def _grads_of_rows(r0, r1, q0, q1, d_in, d_rec, x2, hp, hp_at, h0, h0_at, w_ih, dw_ih, dw_hh, db_ih, db_hh, dx2,
                   bp_ih, tmp, shared=0):
    """grads_of_my_rows' products: rows [r0, r1) of δW_ih = δA_in^T X, δW_hh = δA_rec^T
    H_prev, δb_ih = Σ_rows δA_in, δb_hh = Σ_rows δA_rec (copied from δb_ih below row
    `shared`) and rows [q0, q1) of δX = δA_in W_ih (through bp_ih, W_ih packed, unless it is
    empty; tmp: packed_gemm's scratch), each skipped where its array is empty.
    H_prev's rows: hp from row hp_at, h0 from h0_at (fused_common.Previous)."""
    if dw_ih.shape[0] > 0:
        gemm_tn(d_in[:, r0:r1], x2, dw_ih[r0:r1], 0.0)  # (rows, T*B) x (T*B, I)
    if dw_hh.shape[0] > 0:  # (rows, T*B) x (T*B, H), in H_prev's two parts
        R0, R = h0.shape[0], hp.shape[0]
        if R0 > 0:
            gemm_tn(d_rec[h0_at:h0_at + R0, r0:r1], h0, dw_hh[r0:r1], 0.0)
        if R > 0:
            gemm_tn(d_rec[hp_at:hp_at + R, r0:r1], hp, dw_hh[r0:r1], 1.0 if R0 > 0 else 0.0)
    if db_ih.shape[0] > 0 or db_hh.shape[0] > 0:
        ones = np.ones((1, d_in.shape[0]), d_in.dtype)  # Σ over steps and rows, as GEMV
        if db_ih.shape[0] > 0:
            gemm(ones, d_in[:, r0:r1], db_ih[r0:r1].reshape((1, r1 - r0)), False, 0.0)
        if db_hh.shape[0] > 0:  # the GEMVs stream δA from memory: 1.7 ms of the GRU's step at (128,64,256,256)
            a = min(max(shared, r0), r1) if db_ih.shape[0] > 0 else r0  # rows [r0, a) equal δb_ih's
            db_hh[r0:a] = db_ih[r0:a]
            if a < r1:
                gemm(ones, d_rec[:, a:r1], db_hh[a:r1].reshape((1, r1 - a)), False, 0.0)
    if dx2.shape[0] > 0:  # (rows, G*H) x (G*H, I)
        if bp_ih.shape[0] == 0:
            gemm(d_in[q0:q1], w_ih, dx2[q0:q1], False, 0.0)
        else:  # blocks of DX_ROWS rows, each in L2 while the panels pass
            for q in range(q0, q1, DX_ROWS):
                e = min(q + DX_ROWS, q1)
                packed_gemm(d_in[q:e], bp_ih, dx2[q:e], False, tmp)


@njit(**JIT)
def _grads_of_spans(rows, zero, q0, q1, kept, d_in, d_rec, x2, hp, hp_at, h0, h0_at, w_ih, dw_ih, dw_hh, db_ih,
                    db_hh, dx2):
    """_grads_of_rows for the row ranges `rows` (R, 2); the ranges `zero` (Z, 2) of δW_ih, δW_hh
    and the biases set to zero (rows of unused gates); δX = Σ_spans δA_in[:, span] W_ih[span]
    over the kept spans (S, 2)."""
    no_pack, no_tmp = np.empty((0, 1, NR), dx2.dtype), np.empty((0, 0), dx2.dtype)  # δX is formed below
    for r in range(rows.shape[0]):
        _grads_of_rows(rows[r, 0], rows[r, 1], 0, 0, d_in, d_rec, x2, hp, hp_at, h0, h0_at, w_ih, dw_ih, dw_hh,
                       db_ih, db_hh, dx2, no_pack, no_tmp)
    for z in range(zero.shape[0]):
        a, b = zero[z, 0], zero[z, 1]
        for v in (dw_ih, dw_hh):
            if v.shape[0] > 0:
                v[a:b] = 0.0
        for v in (db_ih, db_hh):
            if v.shape[0] > 0:
                v[a:b] = 0.0
    if dx2.shape[0] > 0:
        for s in range(kept.shape[0]):
            a, b = kept[s, 0], kept[s, 1]
            gemm(d_in[q0:q1, a:b], w_ih[a:b], dx2[q0:q1], False, 0.0 if s == 0 else 1.0)  # (rows, span) x (span, I)
