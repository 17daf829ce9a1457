"""The fused engines' large arrays, kept between calls so that a training step does not page-fault.

A training step of one layer allocates tens of MB of arrays (the input projection, the
saved gates, δA, the outputs) and frees them when the step is over. glibc gives freed
memory above its trim threshold back to the OS and maps fresh pages on the next step:
measured at (T,B,I,H) = (100,32,128,256), a loop of `zero_grad(set_to_none=True)`,
forward and backward took ~9,900 page faults per step, 74 ms a step instead of 57
(torch.nn takes ~9,100 faults in the same loop, 66 ms; with MALLOC_TRIM_THRESHOLD_ and
MALLOC_MMAP_THRESHOLD_ raised, 53 ms).

Every array starts on a 64-byte cache line (LINE). An array of at least MIN_BYTES (64 KiB)
is a view of a buffer the pool keeps. A buffer is free again as soon as no view of it is
alive: every NumPy view and every tensor made by `torch.from_numpy` holds a reference to
it, so the pool sees from the buffer's reference count alone whether anything, the
engine's own saved arrays or the caller's outputs, still uses it. Nothing is handed back
by hand, and nothing still in use is reused.

    empty(shape, dtype)   an uninitialised array (a free pooled buffer of the same size, or a new one)
    zeros(shape, dtype)   empty_like(a), zeros_like(a), copy(a)
    clear()               drop the free buffers
    held_bytes()          bytes the pool holds (free or in use)

The pool holds at most GATELAB_WORKSPACE_MB MiB (default 1024; 0 turns it off); past
that, the oldest free buffers are dropped, and when none is free arrays come from NumPy
as usual.
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np
from numba import njit

from gatelab.engines._kernels import JIT
from gatelab.engines._kernels_blas import count_from_env

LINE = 64  # every array starts on a cache line: the units split's threads write the two halves of
# each row of the states, gates and δ; with NumPy's 16-byte alignment the line across the
# boundary was written by both at every step (the gate pass at (50,16,64,128), 2 threads: 7.4 µs
# a step, 6.4 aligned)
MIN_BYTES = 1 << 16  # smaller arrays come from malloc's heap. (At 1 MiB, a (50,16,64,128) LSTM training
# step right after a PyTorch loop freed its graph took 310 faults and 1.2 ms more: glibc had trimmed the heap.)
DEFAULT_MB = 1024
_buffers: dict[int, list[np.ndarray]] = {}  # nbytes -> buffers (1-D uint8), oldest first
_starts: dict[int, int] = {}  # id(buffer) -> offset of its first cache line (set when it is made)
_lock = threading.Lock()
_FREE = None  # the reference count of a buffer only the pool holds (measured at first use)


def _limit() -> int:
    """The pool's size limit in bytes (GATELAB_WORKSPACE_MB)."""
    mb = count_from_env("GATELAB_WORKSPACE_MB", minimum=0)
    return (DEFAULT_MB if mb is None else mb) << 20


def _free_count() -> int:
    """sys.getrefcount of a pooled buffer that nothing outside the pool references, read
    the way _take reads it (the interpreter's own references differ between versions)."""
    global _FREE
    if _FREE is None:
        probe = [np.empty(1, np.uint8)]
        for buf in probe:
            _FREE = sys.getrefcount(buf)
    return _FREE


def _take(nbytes: int) -> np.ndarray | None:
    """A free buffer of nbytes, or a new pooled one, or None (pool full or off)."""
    free = _free_count()
    with _lock:
        same = _buffers.setdefault(nbytes, [])
        for buf in same:
            if sys.getrefcount(buf) == free:
                return buf
        limit = _limit()
        if nbytes > limit:
            return None
        held = held_bytes()
        if held + nbytes > limit:  # drop free buffers, oldest sizes first, until it fits
            for size in list(_buffers):
                kept = []
                for buf in _buffers[size]:
                    if held + nbytes > limit and sys.getrefcount(buf) == free:
                        held -= size
                        _starts.pop(id(buf), None)
                    else:
                        kept.append(buf)
                _buffers[size] = kept
            if held + nbytes > limit:
                return None
        buf = np.empty(nbytes, np.uint8)
        _buffers[nbytes].append(buf)
        _starts[id(buf)] = -_address(buf) % LINE
        return buf


def empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array starting on a cache line (see the module docstring)."""
    dtype = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    nbytes = math.prod(shape) * dtype.itemsize  # (np.prod costs ~5 µs a call; this runs ~20 times a call)
    buf = _take(nbytes + LINE) if nbytes >= MIN_BYTES else None
    if buf is None:
        buf = np.empty(nbytes + LINE, np.uint8)
        start = -_address(buf) % LINE  # (pooled buffers keep theirs)
    else:
        start = _starts[id(buf)]
    return np.ndarray(shape, dtype, buf, start)  # a view of buf: it holds a reference to it


@njit(**JIT)
def _address(a):
    """a's address (1.1 µs from Python, numba's dispatch; NumPy's a.ctypes.data costs 1.4)."""
    return a.ctypes.data


def copy(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of a, starting on a cache line."""
    out = empty(a.shape, a.dtype)
    out[...] = a
    return out


def zeros(shape, dtype) -> np.ndarray:
    """A zero-filled C-contiguous array (see the module docstring)."""
    out = empty(shape, dtype)
    out.fill(0)
    return out


def empty_like(a: np.ndarray) -> np.ndarray:
    """empty(a.shape, a.dtype)."""
    return empty(a.shape, a.dtype)


def zeros_like(a: np.ndarray) -> np.ndarray:
    """zeros(a.shape, a.dtype)."""
    return zeros(a.shape, a.dtype)


def held_bytes() -> int:
    """Bytes of every buffer the pool holds, free or in use."""
    return sum(size * len(bufs) for size, bufs in _buffers.items())


def clear() -> None:
    """Drop the buffers nothing uses (those in use stay with their users)."""
    with _lock:
        _buffers.clear()
        _starts.clear()
