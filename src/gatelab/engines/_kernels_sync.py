"""A barrier for numba code on several threads: the units of one step split between them.

With a batch too small to split into row blocks (B = 1 above all), the fused LSTM splits
each step's units instead: thread j of k computes the gates of units [u0, u1) from the
whole h_{t-1}, so before step t+1 every thread must see every thread's h_t. That is one
barrier per step, a few microseconds apart, far too often for a thread pool or an OpenMP
region (~20 us each through ctypes): the threads stay inside one numba function for the
whole loop and meet at a counter in shared memory.

    arrive_and_wait(counter, generation, k)
        counter: int64 array (>= 1 element, shared by the k threads, zero at the start);
        generation: how many barriers this thread has passed before (0, 1, 2, ...).
        Adds 1 to counter[0] atomically, then waits until all k threads have arrived
        at this barrier (counter[0] >= k * (generation + 1)).

The wait spins on an acquire load (so LLVM re-reads memory and the h_t written before
the barrier is visible after it; the add is sequentially consistent), and yields the
core to the OS every SPINS_PER_YIELD spins so a descheduled partner gets to run on a
busy machine.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from llvmlite import binding as llvm
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

SPINS_PER_YIELD = 2000
_state = {"bound": None}
_yield = types.ExternalFunction("gatelab_sched_yield", types.int32())


def bind() -> bool:
    """Register libc's sched_yield for numba code (once); False when it cannot be found."""
    if _state["bound"] is None:
        ok = False
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name)
            llvm.add_symbol("gatelab_sched_yield", ctypes.cast(libc.sched_yield, ctypes.c_void_p).value)
            ok = True
        except (OSError, AttributeError, TypeError):
            ok = False
        _state["bound"] = ok
    return _state["bound"]


def _pointer(context, builder, array_type, array):
    ary = context.make_array(array_type)(context, builder, value=array)
    return cgutils.get_item_pointer(context, builder, array_type, ary, [context.get_constant(types.intp, 0)])


@intrinsic
def _fetch_add(typingctx, counter, value):
    """Atomically counter[0] += value (sequentially consistent); returns the old value."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and counter.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        ptr = _pointer(context, builder, signature.args[0], args[0])
        return builder.atomic_rmw("add", ptr, args[1], "seq_cst")

    return types.int64(counter, types.int64), codegen


@intrinsic
def _load_acquire(typingctx, counter):
    """counter[0], read from memory with acquire ordering (never hoisted out of a loop)."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and counter.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        ptr = _pointer(context, builder, signature.args[0], args[0])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(counter), codegen


@njit(nogil=True, cache=True, inline="always")
def arrive_and_wait(counter, generation, k):
    """See the module docstring."""
    if k <= 1:
        return
    _fetch_add(counter, 1)
    target = k * (generation + 1)
    spins = 0
    while _load_acquire(counter) < target:
        spins += 1
        if spins == SPINS_PER_YIELD:
            _yield()
            spins = 0


@njit(nogil=True, cache=True)
def barrier_check(counter, rounds, k, marks, j):  # for the tests: k threads, `rounds` barriers
    """Thread j writes marks[j, r] = r + 1 before barrier r and checks every other thread's
    mark of round r after it; returns the number of marks found missing (0 when correct)."""
    missing = 0
    for r in range(rounds):
        marks[j, r] = r + 1
        arrive_and_wait(counter, r, k)
        for other in range(k):
            if marks[other, r] != r + 1:
                missing += 1
    return missing



