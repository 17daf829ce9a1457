"""Workbench for the fused CPU engine (in the spirit of llm.c's dev/): a NumPy reference
of one LSTM step's gate pass, numbered kernel versions checked against it, and timings
of each version, of the per-step GEMM done several ways (the shipped one packs W_hh once
and runs gatelab's own kernel, _kernels_gemm), and of the time loop driven from Python or
from numba.

    .venv/bin/python benchmarks/workbench.py [--B 32 --H 256 --T 100] [--repeats 51]

Kernel versions (one LSTM gate pass over B x H units, float32):
    1  op by op with torch in-place ops (what an unfused engine does)
    2  numba, libm exp/tanh, 3-D indexing (the first fused version)
    3  numba, gatelab's vectorisable exp, 3-D indexing, only c and m written
    4  numba, gatelab's exp, 1-D row views (shipped: fused_lstm.forward_step), which also
       writes the gates for backward; and its inference form, which does not
(the 1-D row views matter most in the backward pass: with 3-D indexing LLVM did not
vectorise it, 116 µs against 19 µs at B=32, H=256.)
Timings use this thread's CPU time (time.thread_time), single-threaded (torch and
OpenBLAS set to one thread), so other processes on a busy machine do not distort them.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
from numba import njit

from gatelab.engines import _kernels_blas, _kernels_gemm, fused_common, fused_lstm
from gatelab.engines._kernels import JIT, sigmoid, tanh


def reference(a):  # a (B, 4H) float64 pre-activations -> i f g o
    H = a.shape[1] // 4
    s = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    return s(a[:, :H]), s(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), s(a[:, 3 * H:])


def reference_step(xa, hw, c):
    i, f, g, o = reference(xa.astype(np.float64) + hw)
    c_new = f * c + i * g
    return c_new, o * np.tanh(c_new)


def v1_torch(xa, hw, c, out_c, out_m):  # op by op, in place where torch allows it
    a = torch.from_numpy(xa) + torch.from_numpy(hw)  # (B, 4H)
    H = c.shape[1]
    torch.sigmoid_(a[:, :2 * H])
    torch.sigmoid_(a[:, 3 * H:])
    torch.tanh_(a[:, 2 * H:3 * H])
    i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
    cc = torch.from_numpy(out_c)
    torch.addcmul(i * g, f, torch.from_numpy(c), out=cc)
    torch.mul(o, torch.tanh(cc), out=torch.from_numpy(out_m))


@njit(nogil=True, error_model="numpy")
def v2_libm(xa, hw, c, out_c, out_m):
    B, H = c.shape
    for b in range(B):
        for j in range(H):
            i = 1.0 / (1.0 + math.exp(-(xa[b, j] + hw[b, j])))
            f = 1.0 / (1.0 + math.exp(-(xa[b, H + j] + hw[b, H + j])))
            g = math.tanh(xa[b, 2 * H + j] + hw[b, 2 * H + j])
            o = 1.0 / (1.0 + math.exp(-(xa[b, 3 * H + j] + hw[b, 3 * H + j])))
            cc = f * c[b, j] + i * g
            out_c[b, j] = cc
            out_m[b, j] = o * math.tanh(cc)


@njit(**JIT)
def v3_own_exp_3d(xa, hw, c, out_c, out_m):
    B, H = c.shape
    for b in range(B):
        for j in range(H):
            i = sigmoid(xa[b, j] + hw[b, j])
            f = sigmoid(xa[b, H + j] + hw[b, H + j])
            g = tanh(xa[b, 2 * H + j] + hw[b, 2 * H + j])
            o = sigmoid(xa[b, 3 * H + j] + hw[b, 3 * H + j])
            cc = f * c[b, j] + i * g
            out_c[b, j] = cc
            out_m[b, j] = o * tanh(cc)


def v4_shipped(xa, hw, c, out_c, out_m, scratch, ta=0):
    out_c[:] = c
    bias = scratch["bias"]
    fused_lstm.forward_step(0, c.shape[0], ta, 0, xa[None], hw, bias, out_c, *scratch["gates"],
                            scratch["c_seq"], scratch["m_seq"], out_m, 0, c.shape[1])  # m_seq must not alias


def median_time(f, repeats):
    f()
    f()
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        f()
        times.append(time.thread_time() - t0)
    return statistics.median(times)


def kernels(B, H, repeats):
    r = np.random.default_rng(0)
    xa = r.standard_normal((B, 4 * H), dtype=np.float32)
    hw = r.standard_normal((B, 4 * H), dtype=np.float32)
    c = r.standard_normal((B, H), dtype=np.float32)
    c_ref, m_ref = reference_step(xa, hw, c)
    scratch = {"bias": np.zeros(4 * H, np.float32), "c_seq": np.empty((1, B, H), np.float32),
               "m_seq": np.empty((1, B, H), np.float32),
               "gates": [np.empty((1, B, H), np.float32) for _ in range(4)]}
    versions = {"1 torch op by op": lambda oc, om: v1_torch(xa, hw, c, oc, om),
                "2 numba libm, 3-D": lambda oc, om: v2_libm(xa, hw, c, oc, om),
                "3 numba own exp, 3-D": lambda oc, om: v3_own_exp_3d(xa, hw, c, oc, om),
                "4 numba own exp, rows (shipped, training: gates kept)":
                    lambda oc, om: v4_shipped(xa, hw, c, oc, om, scratch),
                "4 the same, inference (no gate stores)":
                    lambda oc, om: v4_shipped(xa, hw, c, oc, om, scratch, ta=-1)}
    print(f"\nLSTM gate pass, B={B} H={H} float32 (error vs float64 NumPy reference)")
    print("| version | max abs error c, m | µs per step | ns per unit |\n|---|---|---|---|")
    for name, f in versions.items():
        oc, om = np.empty_like(c), np.empty_like(c)
        f(oc, om)
        err = max(np.abs(oc - c_ref).max(), np.abs(om - m_ref).max())
        assert err < 1e-5, f"{name}: error {err}"
        t = median_time(lambda: f(oc, om), repeats)
        print(f"| {name} | {err:.1e} | {t * 1e6:.1f} | {t / (B * H) * 1e9:.2f} |")


def gemms(B, H, repeats):
    r = np.random.default_rng(1)
    h = r.standard_normal((B, H), dtype=np.float32)
    w = r.standard_normal((4 * H, H), dtype=np.float32)  # W_hh (4H, H)
    wt = np.ascontiguousarray(w.T)  # (H, 4H)
    out = np.empty((B, 4 * H), np.float32)
    th, tw, tout = torch.from_numpy(h), torch.from_numpy(w), torch.from_numpy(out)
    bound = _kernels_blas.bind()
    ways = {"NumPy matmul h @ W^T (view)": lambda: np.matmul(h, w.T, out=out),
            "NumPy matmul h @ Wt (copy)": lambda: np.matmul(h, wt, out=out),
            "torch.mm h @ W^T (MKL)": lambda: torch.mm(th, tw.t(), out=tout),
            "torch.addmm(out, h, W^T, out=out)": lambda: torch.addmm(tout, th, tw.t(), out=tout)}
    if bound:
        ways["numba -> cblas, NT"] = lambda: _kernels_blas.gemm_check(h, w, out, True, 0.0)
        ways["numba -> cblas, NN"] = lambda: _kernels_blas.gemm_check(h, wt, out, False, 0.0)
        bp = _kernels_gemm.packed_weights(w, True, 1 << 20, B)  # packed once, as a time loop does
        if bp.shape[0] > 0:
            tmp = _kernels_gemm.scratch(np.float32)
            ways["numba, W packed once, AVX2 6x16 kernel (shipped)"] = lambda: _kernels_gemm.step_gemm(
                h, w, bp, out, True, 0.0, tmp)
    flops = 2 * B * H * 4 * H
    print(f"\nPer-step GEMM h (B={B}, H={H}) x W_hh^T (H, 4H), float32, one thread")
    print("| way | µs | GFLOP/s |\n|---|---|---|")
    for name, f in ways.items():
        t = median_time(f, repeats)
        print(f"| {name} | {t * 1e6:.1f} | {flops / t / 1e9:.0f} |")


def loops(T, B, H, repeats):
    r = np.random.default_rng(2)
    x = r.standard_normal((T, B, H), dtype=np.float32)
    h0 = np.zeros((B, H), np.float32)
    w_ih = (r.standard_normal((4 * H, H)) * H ** -0.5).astype(np.float32)
    w_hh = (r.standard_normal((4 * H, H)) * H ** -0.5).astype(np.float32)
    steps = fused_common.schedule(T, B, None, False)
    print(f"\nLSTM forward (inference), T={T} B={B} I=H={H}, float32: who drives the time loop")
    print("| loop | ms (input projection included) | µs per step |\n|---|---|---|")
    saved = fused_common.LOOP
    try:
        for loop in ("python", "numba"):
            fused_common.LOOP = loop
            t = median_time(lambda: fused_lstm._forward(x, h0, h0, w_ih, w_hh, None, None, steps,
                                                        keep=False, record=False), repeats)
            print(f"| {loop} | {t * 1e3:.2f} | {t / T * 1e6:.1f} |")
    finally:
        fused_common.LOOP = saved


def exp_accuracy():
    from gatelab.engines import _kernels

    print("\nexp/sigmoid/tanh accuracy against NumPy float64")
    print("| dtype | exp max rel err (ulp) | sigmoid max abs err | tanh max abs err |\n|---|---|---|---|")
    for dt in (np.float32, np.float64):
        x = np.linspace(-80, 80, 400001).astype(dt)
        out = np.empty_like(x)
        ref = np.exp(x.astype(np.float64))
        _kernels.exp_array(x, out)
        ulp = (np.abs(out - ref) / ref).max() / np.finfo(dt).eps
        _kernels.sigmoid_array(x, out)
        es = np.abs(out - 1 / (1 + np.exp(-x.astype(np.float64)))).max()
        _kernels.tanh_array(x, out)
        et = np.abs(out - np.tanh(x.astype(np.float64))).max()
        print(f"| {dt.__name__} | {ulp:.2f} | {es:.1e} | {et:.1e} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--B", type=int, default=32)
    p.add_argument("--H", type=int, default=256)
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--repeats", type=int, default=51)
    args = p.parse_args()
    torch.set_num_threads(1)
    blas = _kernels_blas._find_openblas()
    if blas:  # one OpenBLAS thread, like torch
        import ctypes

        lib = ctypes.CDLL(blas)
        getattr(lib, "scipy_openblas_set_num_threads64_", lambda n: None)(1)
    exp_accuracy()
    kernels(args.B, args.H, args.repeats)
    gemms(args.B, args.H, args.repeats)
    loops(args.T, args.B, args.H, max(5, args.repeats // 5))


if __name__ == "__main__":
    main()
