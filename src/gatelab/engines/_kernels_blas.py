"""GEMM callable from numba code: NumPy's own OpenBLAS, bound at run time.

The fused engines run the whole time loop (per step one GEMM and one gate pass) inside
one numba function, so a step costs no Python. numba has no BLAS of its own without
SciPy, but NumPy's wheels ship OpenBLAS with a CBLAS interface; `bind()` finds that
library in the process, registers its `cblas_sgemm`/`cblas_dgemm` addresses with LLVM
under fixed names, and numba code calls them as external functions (so compiled code can
be cached: it refers to the names, not to addresses).

    gemm(a, b, c, trans_b, beta):   c = a @ op(b) + beta * c
        a (M, K), c (M, N) row-major with unit column stride; b (K, N), or (N, K) with
        trans_b (then op(b) = b^T: how a weight matrix (G*H, K) is used).
        M = 1 (a batch of one, or the last rows of a packed batch) calls GEMV instead.
    gemm_tn(a, b, c, beta):         c = a^T @ b + beta * c   (δW = δA^T X over all steps)

Where NumPy is not linked to an OpenBLAS with CBLAS symbols (another build), `bind()`
returns False and the engines take their Python-loop path (NumPy matmul per step).
"""

from __future__ import annotations

import ctypes
import os

from llvmlite import binding as llvm
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

_SYMBOLS = {"gatelab_sgemm": ("scipy_cblas_sgemm64_", "cblas_sgemm64_"),
            "gatelab_dgemm": ("scipy_cblas_dgemm64_", "cblas_dgemm64_"),
            "gatelab_sgemv": ("scipy_cblas_sgemv64_", "cblas_sgemv64_"),
            "gatelab_dgemv": ("scipy_cblas_dgemv64_", "cblas_dgemv64_")}
_ILP64 = ("64_",)  # symbol suffixes of the 64-bit-integer interface
_state = {"bound": None}

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _signature(real):
    i32, i64, ptr = types.int32, types.int64, types.voidptr
    return types.void(i32, i32, i32, i64, i64, i64, real, ptr, i64, ptr, i64, real, ptr, i64)


def _signature_gemv(real):
    i32, i64, ptr = types.int32, types.int64, types.voidptr
    return types.void(i32, i32, i64, i64, real, ptr, i64, ptr, i64, real, ptr, i64)


_sgemm = types.ExternalFunction("gatelab_sgemm", _signature(types.float32))
_dgemm = types.ExternalFunction("gatelab_dgemm", _signature(types.float64))
_sgemv = types.ExternalFunction("gatelab_sgemv", _signature_gemv(types.float32))
_dgemv = types.ExternalFunction("gatelab_dgemv", _signature_gemv(types.float64))


def _find_openblas():
    """The path of the OpenBLAS library NumPy loaded, or None."""
    import numpy  # noqa: F401  (loads its BLAS)

    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({ln.split()[-1] for ln in maps if "openblas" in ln.lower() and "/" in ln})
    except OSError:
        return None
    return paths[0] if paths else None


def thread_functions():
    """NumPy's OpenBLAS thread count as ctypes functions `(get, set)`, or None (found once)."""
    if "threads_api" not in _state:
        api = None
        path = _find_openblas()
        if path is not None:
            lib = ctypes.CDLL(path)
            for name in ("scipy_openblas", "openblas"):
                for suffix in ("64_", ""):
                    get = getattr(lib, f"{name}_get_num_threads{suffix}", None)
                    put = getattr(lib, f"{name}_set_num_threads{suffix}", None)
                    if api is None and get is not None and put is not None:
                        api = (get, put)
        _state["threads_api"] = api
    return _state["threads_api"]


def count_from_env(name: str, minimum: int = 1) -> int | None:
    """The integer >= minimum in environment variable `name`, None when unset; ValueError
    naming the variable and the value otherwise (GATELAB_THREADS, GATELAB_BLAS_THREADS,
    GATELAB_WORKSPACE_MB)."""
    wanted = os.environ.get(name)
    if wanted is None:
        return None
    if not wanted.isdigit() or int(wanted) < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name}: expected {kind}, got {wanted!r}")
    return int(wanted)


def sync_threads() -> int:
    """Run OpenBLAS on one thread (or GATELAB_BLAS_THREADS), at every engine call; returns
    the count (the one the user set with OPENBLAS_NUM_THREADS, if so).

    The engine's parallelism is its own: row blocks of the batch on torch's OpenMP threads
    (fused_parallel), each calling OpenBLAS single-threaded. OpenBLAS's own threads would
    compete with torch's: they busy-wait for up to ~0.1 s after each call, and on this
    2-core machine that made torch.nn's LSTM, run right after gatelab's, up to 7x slower
    (19 ms against 139 ms at (T,B,I,H) = (100,32,128,256) in `gatelab bench`), besides
    slowing every other torch op of the user's program. GATELAB_BLAS_THREADS=N gives the
    per-step GEMMs N threads anyway (the batch is then not split). OPENBLAS_NUM_THREADS set
    by the user is left alone.
    """
    api = thread_functions()
    wanted = count_from_env("GATELAB_BLAS_THREADS")
    if api is None:
        return 1
    if wanted is None and "OPENBLAS_NUM_THREADS" in os.environ:
        return api[0]()
    n = 1 if wanted is None else wanted
    get, put = api
    if get() != n:
        put(n)
    return n


def bind() -> bool:
    """Register NumPy's CBLAS GEMMs for numba code (once); False when there are none."""
    if _state["bound"] is not None:
        return _state["bound"]
    ok = False
    path = _find_openblas()
    if path is not None:
        lib = ctypes.CDLL(path)
        found = {}
        for name, candidates in _SYMBOLS.items():
            for sym in candidates:
                if hasattr(lib, sym) and sym.endswith(_ILP64):
                    found[name] = ctypes.cast(getattr(lib, sym), ctypes.c_void_p).value
                    break
        if len(found) == len(_SYMBOLS):
            for name, address in found.items():
                llvm.add_symbol(name, address)
            ok = True
    _state["bound"] = ok
    return ok


@intrinsic
def _data(typingctx, arr):
    """The address of arr's first element, as void*."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, value=args[0])
        return builder.bitcast(ary.data, cgutils.voidptr_t)

    return types.voidptr(arr), codegen


@njit(inline="always")
def _ld(x):
    """Row stride in elements (NumPy may give a size-1 axis any stride; BLAS wants >= cols)."""
    return x.strides[0] // x.itemsize if x.shape[0] > 1 else max(x.shape[1], 1)


@njit(inline="always")
def _inc(x):
    """Element stride along a row."""
    return x.strides[1] // x.itemsize if x.shape[1] > 1 else 1


def gemm(a, b, c, trans_b, beta):
    """c = a @ op(b) + beta * c (numba only; see the module docstring)."""
    raise NotImplementedError("gemm runs inside numba code")


@overload(gemm)
def _gemm_impl(a, b, c, trans_b, beta):
    if not all(isinstance(v, types.Array) for v in (a, b, c)):
        return None
    if a.dtype == types.float32:
        fn, fv = _sgemm, _sgemv
    elif a.dtype == types.float64:
        fn, fv = _dgemm, _dgemv
    else:
        return None

    def impl(a, b, c, trans_b, beta):
        M, K = a.shape
        N = c.shape[1]
        if c.shape[0] != M or (b.shape[1] if trans_b else b.shape[0]) != K or (
                b.shape[0] if trans_b else b.shape[1]) != N:
            raise ValueError("gemm: c (M, N) = a (M, K) @ op(b) (K, N) with shapes that do not match")
        if M == 0:
            return
        if M == 1:  # one row: GEMV, several times faster than OpenBLAS's GEMM with M = 1
            # c^T = op(b)^T a^T: b (N, K) with trans_b is used as is, b (K, N) transposed
            fv(_ROW_MAJOR, _NO_TRANS if trans_b else _TRANS, b.shape[0], b.shape[1], 1.0,
               _data(b), _ld(b), _data(a), _inc(a), beta, _data(c), _inc(c))
            return
        fn(_ROW_MAJOR, _NO_TRANS, _TRANS if trans_b else _NO_TRANS, M, N, K,
           1.0,  # alpha
           _data(a), _ld(a), _data(b), _ld(b), beta, _data(c), _ld(c))

    return impl


def gemm_tn(a, b, c, beta):
    """c = a^T @ b + beta * c (numba only): a (K, M), b (K, N), c (M, N), each row-major
    with unit column stride (a may be a column slice, as δA[:, rows] for δW = δA^T X)."""
    raise NotImplementedError("gemm_tn runs inside numba code")


@overload(gemm_tn)
def _gemm_tn_impl(a, b, c, beta):
    if not all(isinstance(v, types.Array) for v in (a, b, c)):
        return None
    if a.dtype == types.float32:
        fn = _sgemm
    elif a.dtype == types.float64:
        fn = _dgemm
    else:
        return None

    def impl(a, b, c, beta):
        K, M = a.shape
        N = c.shape[1]
        if b.shape[0] != K or c.shape[0] != M or b.shape[1] != N:
            raise ValueError("gemm_tn: c (M, N) = a (K, M)^T @ b (K, N) with shapes that do not match")
        if M == 0 or N == 0:
            return
        fn(_ROW_MAJOR, _TRANS, _NO_TRANS, M, N, K, 1.0,
           _data(a), max(a.strides[0] // a.itemsize, M), _data(b), _ld(b), beta, _data(c), _ld(c))

    return impl


@njit(nogil=True, cache=True)
def gemm_check(a, b, c, trans_b, beta):  # for the tests and the workbench
    gemm(a, b, c, trans_b, beta)


@njit(nogil=True, cache=True)
def gemm_tn_check(a, b, c, beta):  # for the tests
    gemm_tn(a, b, c, beta)

