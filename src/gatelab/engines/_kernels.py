"""Scalar maths the fused gate passes are built from, compiled by numba.

    σ(x) = 1 / (1 + e^{-x})        tanh(x) = 1 - 2 / (e^{2x} + 1)

Each function keeps its argument's precision: float32 in, float32 arithmetic and
float32 out (numba would otherwise promote every Python float literal to float64), so
the float32 gate passes run 8 lanes per AVX2 instruction.

`exp` is written out (Cody-Waite range reduction, a polynomial, and 2^k built from its
bits) instead of calling libm: LLVM can then vectorise the gate loops, which it cannot do
with a call to libm's exp or tanh and no vector maths library. Accuracy: float64 within
2 ulp of libm over the whole range, float32 within 2 ulp (benchmarks/workbench.py checks
both against NumPy).

Nothing compiles at import: numba compiles each kernel on its first call.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

# contract: lets LLVM fuse a * b + c into one FMA (more accurate, not less); no other
# fast-math licence, so NaN and infinity behave as in torch.
# cache=True: compiled kernels are kept in __pycache__ (an LSTM's first call costs ~7 s
# of compilation without it). numba checks only the source file of the cached function,
# not the modules it calls: after editing a _kernels*.py module alone, delete
# src/gatelab/engines/__pycache__/*.nb[ic] (or touch fused_*.py), and stop processes
# that still run the old code, or they may write stale entries back.
JIT = dict(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})


def _bitcast(name, src, dst, dst_ir):
    """An intrinsic that reinterprets a scalar's bits as another type of the same width."""

    def generic(typingctx, v):
        if v != src:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], dst_ir)

        return dst(src), codegen

    generic.__name__ = name
    return intrinsic(generic)


_f64_bits = _bitcast("_f64_bits", types.float64, types.int64, ir.IntType(64))
_bits_f64 = _bitcast("_bits_f64", types.int64, types.float64, ir.DoubleType())
_f32_bits = _bitcast("_f32_bits", types.float32, types.int32, ir.IntType(32))
_bits_f32 = _bitcast("_bits_f32", types.int32, types.float32, ir.FloatType())


def exp(x):
    """e^x (Python fallback; numba uses the overloads below)."""
    return math.exp(x)


def sigmoid(x):
    """σ(x) = 1 / (1 + e^{-x})."""
    return 1.0 / (1.0 + math.exp(-x))


def tanh(x):
    """tanh(x) = 1 - 2 / (e^{2x} + 1)."""
    return math.tanh(x)


def one(x):
    """1 in x's precision."""
    return 1.0


def hard_sigmoid(x):
    """clip(x / 6 + 1/2, 0, 1) (torch's hardsigmoid)."""
    return min(max(x / 6.0 + 0.5, 0.0), 1.0)


def hard_sigmoid_grad(s):
    """hard_sigmoid' from its output s: 1/6 where 0 < s < 1 (-3 < x < 3), else 0."""
    return 1.0 / 6.0 if 0.0 < s < 1.0 else 0.0


def softsign(x):
    """x / (1 + |x|)."""
    return x / (1.0 + abs(x))


def softsign_grad(y):
    """softsign' from its output y: 1 / (1 + |x|)² = (1 - |y|)²."""
    return (1.0 - abs(y)) ** 2


# e^x = 2^k e^r with k = round(x / ln2), r = x - k ln2 (ln2 split in two for exactness),
# |r| <= ln2/2. k is rounded by adding 1.5 * 2^52 (2^23 for float32): the sum's low
# mantissa bits are then k, and 2^k is built from them with integer adds and shifts,
# all of which AVX2 vectorises (a float -> int64 conversion it cannot).
# float64: e^r by its Taylor series to r^13 (truncation < 4e-18 relative).
_LOG2E = np.float64(1.4426950408889634)
_LN2_HI = np.float64(6.93147180369123816490e-01)
_LN2_LO = np.float64(1.90821492927058770002e-10)
_SHIFT = np.float64(6755399441055744.0)  # 1.5 * 2^52
_C64 = tuple(np.float64(1.0 / math.factorial(n)) for n in range(14))
_X64 = np.float64(708.0)
# float32: Taylor to r^7 (truncation < 6e-9 relative, under half a float32 ulp).
_LOG2E32 = np.float32(1.4426950408889634)
_LN2_HI32 = np.float32(0.693145751953125)
_LN2_LO32 = np.float32(1.428606765330187045e-06)
_SHIFT32 = np.float32(12582912.0)  # 1.5 * 2^23
_C32 = tuple(np.float32(1.0 / math.factorial(n)) for n in range(8))
_X32 = np.float32(87.0)


@overload(exp)
def _exp_impl(x):
    if x == types.float64:
        c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13 = _C64
        shift_bits = np.int64(np.array(_SHIFT).view(np.int64)) - np.int64(1023)

        def exp64(x):
            x = min(max(x, -_X64), _X64)
            t = x * _LOG2E + _SHIFT
            k = t - _SHIFT
            r = (x - k * _LN2_HI) - k * _LN2_LO
            p = c13
            p = p * r + c12
            p = p * r + c11
            p = p * r + c10
            p = p * r + c9
            p = p * r + c8
            p = p * r + c7
            p = p * r + c6
            p = p * r + c5
            p = p * r + c4
            p = p * r + c3
            p = p * r + c2
            p = p * r + c1
            p = p * r + c0
            return p * _bits_f64((_f64_bits(t) - shift_bits) << np.int64(52))

        return exp64
    if x == types.float32:
        c0, c1, c2, c3, c4, c5, c6, c7 = _C32
        shift_bits = np.int32(np.array(_SHIFT32).view(np.int32)) - np.int32(127)

        def exp32(x):
            x = min(max(x, -_X32), _X32)
            t = x * _LOG2E32 + _SHIFT32
            k = t - _SHIFT32
            r = (x - k * _LN2_HI32) - k * _LN2_LO32
            p = c7
            p = p * r + c6
            p = p * r + c5
            p = p * r + c4
            p = p * r + c3
            p = p * r + c2
            p = p * r + c1
            p = p * r + c0
            return p * _bits_f32(np.int32((_f32_bits(t) - shift_bits) << np.int32(23)))

        return exp32
    return None


@overload(one)
def _one_impl(x):
    if isinstance(x, types.Float):
        value = np.float32(1) if x == types.float32 else np.float64(1)
        return lambda x: value
    return None


@overload(hard_sigmoid)
def _hard_sigmoid_impl(x):
    if isinstance(x, types.Float):
        f = np.float32 if x == types.float32 else np.float64
        sixth, half, zero, unit = f(1) / f(6), f(0.5), f(0), f(1)  # x * (1/6): no division (within an ulp of x / 6)
        return lambda x: min(max(x * sixth + half, zero), unit)
    return None


@overload(hard_sigmoid_grad)
def _hard_sigmoid_grad_impl(s):
    if isinstance(s, types.Float):
        f = np.float32 if s == types.float32 else np.float64
        sixth, zero, unit = f(1) / f(6), f(0), f(1)
        return lambda s: sixth if (s > zero) & (s < unit) else zero
    return None


@overload(softsign)
def _softsign_impl(x):
    if isinstance(x, types.Float):
        return lambda x: x / (one(x) + abs(x))
    return None


@overload(softsign_grad)
def _softsign_grad_impl(y):
    if isinstance(y, types.Float):

        def impl(y):
            r = one(y) - abs(y)
            return r * r

        return impl
    return None


@overload(sigmoid)
def _sigmoid_impl(x):
    if isinstance(x, types.Float):

        def impl(x):
            return one(x) / (one(x) + exp(-x))

        return impl
    return None


@overload(tanh)
def _tanh_impl(x):
    if isinstance(x, types.Float):

        def impl(x):
            return one(x) - (one(x) + one(x)) / (exp(x + x) + one(x))

        return impl
    return None


@njit(**JIT)
def exp_array(x, out):  # (N,) -> (N,): for the workbench's accuracy check
    for k in range(x.shape[0]):
        out[k] = exp(x[k])


@njit(**JIT)
def sigmoid_array(x, out):  # (N,) -> (N,)
    for k in range(x.shape[0]):
        out[k] = sigmoid(x[k])


@njit(**JIT)
def tanh_array(x, out):  # (N,) -> (N,)
    for k in range(x.shape[0]):
        out[k] = tanh(x[k])
