"""The per-step product with the weights packed once per call: an AVX2 GEMM micro-kernel.

A time loop multiplies the same weight matrix by a new h_{t-1} at every step. OpenBLAS
re-packs that matrix on every call, and for the few rows of a step that is a fifth of the
product's time: at (M, K, N) = (32, 256, 512) a call costs ≈ 25 µs + 2.74 µs a row
(measured for M = 8 … 256), 112 µs in all. Here the weights are packed once per layer
call, in panels of 16 columns, and each step runs a register-tiled kernel over them (so do
the units split's chunks of the input projection and δX = δA W_ih, fused_units):
C[6 rows, 16 columns] in twelve 8-lane accumulators, per k one 16-float load of the panel,
six broadcasts of A and twelve fused multiply-adds (the BLIS/OpenBLAS "6x16" shape for
AVX2). The kernel is LLVM IR written through numba (vector types and llvm.fma), so it
needs no compiler; LLVM emits vfmadd231ps. Measured (float32, one core): (32,256,512)
92 µs against OpenBLAS's 114, (32,1024,128) 90 against 121, (16,128,256) 10.8 against 16.9.
The last M mod 6 rows, when 1-3, run as one tile over 3, 3 or 2 panels (6, 12, 12
accumulators): a 2-row tile over one panel has 4 FMA chains, too few to hide the FMA's
latency, and cost 10.4 µs at (32,256,512) where 6 rows cost 16; over three panels the
tail costs 6.1 (87.6 µs in all against 91.6).

    packed_weights(w, trans_b, steps, rows) -> bp (P, K, 16) float32: B = w^T (trans_b,
                           w (N, K)) or w (K, N), 16 columns a panel, zeros past N; an empty
                           (0, 1, 16) array (then OpenBLAS runs) for float64, when
                           GATELAB_PACKED_GEMM=0, or for loops too short or batches of one
                           (pack_buffer and _pack: the same in two halves)
    step_gemm(a, w, bp, c, trans_b, beta, tmp)   c = a @ op(w) + beta c, beta 0 or 1;
                           through bp when it is not empty; tmp (6, 16) scratch, one per thread

float32 only (float64 keeps OpenBLAS: its kernel is the accuracy reference of the tests).
The result equals OpenBLAS's to rounding (each element is the same dot product, summed in
order k = 0 … K-1 with FMAs).
"""

from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from gatelab.engines import workspace
from gatelab.engines._kernels import JIT
from gatelab.engines._kernels_blas import gemm

MR, NR = 6, 16  # the kernel's tile: rows of A, columns of B (two 8-lane vectors)


@intrinsic
def _address(typingctx, arr):
    """The address of arr's first element, as int64."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, value=args[0])
        return builder.ptrtoint(ary.data, ir.IntType(64))

    return types.int64(arr), codegen


def _tile_kernel(rows: int, panels: int = 1):
    """An intrinsic tile(pa, lda, pb, K, pc, ldc, accumulate) on float32 addresses:
    C[rows, 16 panels] = (or, accumulate != 0, +=) A[rows, :K] (row stride lda) times
    `panels` consecutive panels from pb (each K x 16, contiguous); C row stride ldc.
    2 rows x panels x 2 accumulators: a tile of few rows spans several panels so that
    enough independent FMA chains hide the FMA latency."""

    @intrinsic
    def tile(typingctx, pa, lda, pb, K, pc, ldc, accumulate):
        if not all(isinstance(v, types.Integer) for v in (pa, lda, pb, K, pc, ldc, accumulate)):
            return None
        sig = types.void(*(types.int64,) * 7)

        def codegen(context, builder, signature, args):
            pa, lda, pb, K, pc, ldc, accumulate = (context.cast(builder, v, t, types.int64)
                                                   for v, t in zip(args, signature.args))
            f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
            v8 = ir.VectorType(f32, 8)
            fptr, vptr = f32.as_pointer(), v8.as_pointer()
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8, v8]),
                                                 "llvm.fma.v8f32")
            a0, b0, c0 = (builder.inttoptr(p, fptr) for p in (pa, pb, pc))
            a_rows = [builder.gep(a0, [builder.mul(ir.Constant(i64, r), lda)]) for r in range(rows)]
            b_panels = [builder.gep(b0, [builder.mul(ir.Constant(i64, q * NR), K)]) for q in range(panels)]
            vectors = 2 * panels  # 8-lane vectors of a row of the tile
            zero = ir.Constant(v8, [0.0] * 8)
            undef = ir.Constant(v8, ir.Undefined)
            splat = ir.Constant(ir.VectorType(i32, 8), [0] * 8)
            entry = builder.block
            loop = builder.append_basic_block("tile.k")
            done = builder.append_basic_block("tile.done")
            builder.cbranch(builder.icmp_signed(">", K, ir.Constant(i64, 0)), loop, done)
            builder.position_at_end(loop)  # for k in range(K): acc[r] += A[r, k] * panels[k]
            k = builder.phi(i64)
            acc = [builder.phi(v8) for _ in range(vectors * rows)]
            k.add_incoming(ir.Constant(i64, 0), entry)
            for a in acc:
                a.add_incoming(zero, entry)
            def b_vector(h):  # the h-th 8-lane vector of the panels' row k
                bk = builder.gep(b_panels[h // 2], [builder.mul(k, ir.Constant(i64, NR))])
                return builder.load(builder.bitcast(builder.gep(bk, [ir.Constant(i64, 8 * (h % 2))]), vptr), align=4)

            def a_splat(r):  # A[r, k] in all 8 lanes
                a_rk = builder.load(builder.gep(a_rows[r], [k]), align=4)
                return builder.shuffle_vector(builder.insert_element(undef, a_rk, ir.Constant(i32, 0)), undef, splat)

            new = [None] * (vectors * rows)
            if rows > vectors:  # load the panel's row once, broadcast each A[r, k] in turn
                b_k = [b_vector(h) for h in range(vectors)]
                for r in range(rows):
                    a_v = a_splat(r)
                    for h in range(vectors):
                        new[vectors * r + h] = builder.call(fma, [a_v, b_k[h], acc[vectors * r + h]])
            else:  # few rows, wide: broadcast the rows once, load the panels' vectors in turn
                a_k = [a_splat(r) for r in range(rows)]
                for h in range(vectors):
                    b_v = b_vector(h)
                    for r in range(rows):
                        new[vectors * r + h] = builder.call(fma, [a_k[r], b_v, acc[vectors * r + h]])
            k_next = builder.add(k, ir.Constant(i64, 1))
            last = builder.block
            k.add_incoming(k_next, last)
            for a, v in zip(acc, new):
                a.add_incoming(v, last)
            builder.cbranch(builder.icmp_signed("<", k_next, K), loop, done)
            builder.position_at_end(done)  # C = acc (or C + acc)
            out = []
            for v in new:
                phi = builder.phi(v8)
                phi.add_incoming(zero, entry)
                phi.add_incoming(v, last)
                out.append(phi)
            add = builder.icmp_signed("!=", accumulate, ir.Constant(i64, 0))
            for r in range(rows):
                c_row = builder.gep(c0, [builder.mul(ir.Constant(i64, r), ldc)])
                for h in range(vectors):
                    p = builder.bitcast(builder.gep(c_row, [ir.Constant(i64, 8 * h)]), vptr)
                    v = out[vectors * r + h]
                    builder.store(builder.select(add, builder.fadd(builder.load(p, align=4), v), v), p, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile1, _tile2, _tile3, _tile4, _tile5, _tile6 = (_tile_kernel(r) for r in range(1, MR + 1))
_tile1x3, _tile2x3, _tile3x2 = _tile_kernel(1, 3), _tile_kernel(2, 3), _tile_kernel(3, 2)
# few-row tiles over several panels: 6, 12 and 12 accumulators (a 1-, 2- or 3-row tile over
# one panel has 2, 4 or 6 chains, fewer than the FMA latency x throughput of about 10)


@njit(inline="always")
def _tile(rows, accumulate, pa, lda, pb, K, pc, ldc, wide=False):
    """The tile kernel for `rows` rows over one panel, or (wide) the tail tile of 1, 2 or 3
    rows over 3, 3 or 2 panels."""
    acc = 1 if accumulate else 0
    if wide:
        if rows == 3:
            _tile3x2(pa, lda, pb, K, pc, ldc, acc)
        elif rows == 2:
            _tile2x3(pa, lda, pb, K, pc, ldc, acc)
        else:
            _tile1x3(pa, lda, pb, K, pc, ldc, acc)
    elif rows == 6:
        _tile6(pa, lda, pb, K, pc, ldc, acc)
    elif rows == 5:
        _tile5(pa, lda, pb, K, pc, ldc, acc)
    elif rows == 4:
        _tile4(pa, lda, pb, K, pc, ldc, acc)
    elif rows == 3:
        _tile3(pa, lda, pb, K, pc, ldc, acc)
    elif rows == 2:
        _tile2(pa, lda, pb, K, pc, ldc, acc)
    else:
        _tile1(pa, lda, pb, K, pc, ldc, acc)


@njit(**JIT)
def packed_gemm(a, bp, c, accumulate, tmp):
    """c (M, N) = (or +=) a (M, K) @ B, B packed in bp (P, K, 16); float32, rows of a and c
    with unit column stride; tmp (6, 16) float32 scratch for the last, partial panel."""
    M, K = a.shape
    N = c.shape[1]
    if c.shape[0] != M or bp.shape[1] != K or N > bp.shape[0] * NR:
        raise ValueError("packed_gemm: c (M, N) = a (M, K) @ B (K, N) with shapes that do not match")
    if M == 0:
        return
    lda, ldc = a.strides[0] // 4, c.strides[0] // 4
    pa, pb, pc, pt = _address(a), _address(bp), _address(c), _address(tmp)
    P = bp.shape[0]
    full = N // NR  # panels without padding
    tail = M % MR  # rows left after the 6-row tiles
    split_tail = 0 < tail <= 3  # then they run over `wide` panels at once (_tile's wide)
    wide = 3 if tail <= 2 else 2
    m_main = M - tail if split_tail else M
    for p in range(P):  # panels outer: a panel (K x 16) stays in cache for all rows
        n0 = p * NR
        p_panel = pb + p * K * NR * 4
        i = 0
        stop = M if n0 + NR > N else m_main
        while i < stop:
            rows = min(MR, M - i)
            if n0 + NR <= N:
                _tile(rows, accumulate, pa + i * lda * 4, lda, p_panel, K, pc + (i * ldc + n0) * 4, ldc)
            else:  # the last panel is zero-padded past N: compute it aside, keep what is real
                _tile(rows, False, pa + i * lda * 4, lda, p_panel, K, pt, NR)
                for r in range(rows):
                    for j in range(N - n0):
                        c[i + r, n0 + j] = c[i + r, n0 + j] + tmp[r, j] if accumulate else tmp[r, j]
            i += rows
        if split_tail and p < full and (p + 1) % wide == 0:  # the tail rows of the `wide` panels just done
            q = p + 1 - wide
            _tile(tail, accumulate, pa + m_main * lda * 4, lda, pb + q * K * NR * 4, K,
                  pc + (m_main * ldc + q * NR) * 4, ldc, True)
    if split_tail:  # full panels left over (fewer than `wide`): one at a time
        for q in range(full - full % wide, full):
            _tile(tail, accumulate, pa + m_main * lda * 4, lda, pb + q * K * NR * 4, K,
                  pc + (m_main * ldc + q * NR) * 4, ldc)


@njit(**JIT)
def _pack(w, trans_b, bp):
    """bp[p, k, j] = B[k, 16p + j], B = w^T (trans_b) or w; zero past N. Each loop reads w
    along its rows (57 µs for 512 x 256, one core)."""
    _pack_panels(w, trans_b, bp, 0, bp.shape[0])


@njit(**JIT)
def _pack_panels(w, trans_b, bp, p0, p1):
    """_pack for panels [p0, p1) only (threads packing one bp, each its share)."""
    N = w.shape[0] if trans_b else w.shape[1]
    K = w.shape[1] if trans_b else w.shape[0]
    bp[p0:p1] = 0.0
    for p in range(p0, p1):
        if trans_b:
            for j in range(min(NR, N - p * NR)):
                w_n = w[p * NR + j]
                for k in range(K):
                    bp[p, k, j] = w_n[k]
        else:
            for k in range(K):
                w_k = w[k]
                for j in range(min(NR, N - p * NR)):
                    bp[p, k, j] = w_k[p * NR + j]


def enabled() -> bool:
    """False when GATELAB_PACKED_GEMM=0 (OpenBLAS runs every product)."""
    return os.environ.get("GATELAB_PACKED_GEMM", "1") != "0"


MIN_STEPS = 4  # packing costs ~2-3 steps' savings (57 µs for 512 x 256 against ~22 a step)
MIN_ROWS = 2  # a batch of one: OpenBLAS's GEMV is as fast, and one row has too few FMA chains


def packed_weights(w: np.ndarray, trans_b: bool, steps: int, rows: int) -> np.ndarray:
    """w packed for step_gemm (see the module docstring), for a loop of `steps` products of
    up to `rows` rows; empty (OpenBLAS runs) for float64, when off, for fewer than
    MIN_STEPS steps (packing would not pay) or fewer than MIN_ROWS rows."""
    bp = pack_buffer(w.shape, w.dtype, trans_b, steps, rows)
    if bp.shape[0] > 0:
        _pack(w, trans_b, bp)
    return bp


def pack_buffer(shape, dtype, trans_b: bool, steps: int, rows: int) -> np.ndarray:
    """The (uninitialised) array packed_weights would pack a w of `shape` into, or its empty
    (0, 1, 16) array when OpenBLAS runs the products (for numba code that packs itself)."""
    if dtype != np.float32 or not enabled() or steps < MIN_STEPS or rows < MIN_ROWS:
        return np.empty((0, 1, NR), dtype)
    N, K = (shape[0], shape[1]) if trans_b else (shape[1], shape[0])
    return workspace.empty(((N + NR - 1) // NR, K, NR), np.float32)


def scratch(dtype) -> np.ndarray:
    """step_gemm's (6, 16) scratch, one per thread."""
    return np.empty((MR, NR), dtype)


@njit(inline="always")
def step_gemm(a, w, bp, c, trans_b, beta, tmp):
    """c = a @ op(w) + beta c (beta 0 or 1): packed when bp is not empty, else OpenBLAS."""
    if bp.shape[0] > 0:
        packed_gemm(a, bp, c, beta != 0.0, tmp)
    else:
        gemm(a, w, c, trans_b, beta)
