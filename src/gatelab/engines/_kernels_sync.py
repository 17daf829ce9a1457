"""A barrier for numba code on several threads: the units of one step split between them.

With a batch too small to split into row blocks (B = 1 above all), the fused LSTM splits
each step's units instead: thread j of k computes the gates of units [u0, u1) from the
whole h_{t-1}, so before step t+1 every thread must see every thread's h_t. That is one
barrier per step, a few microseconds apart, far too often for a thread pool or an OpenMP
region (~20 us each through ctypes): the threads stay inside one numba function for the
whole loop and meet at a counter in shared memory.

    arrive_and_wait(counter, generation, k) -> bool
        counter: new_counter(), shared by the k threads;
        generation: how many barriers this thread has passed before (0, 1, 2, ...).
        Adds 1 to counter[0] atomically, then waits until all k threads have arrived
        at this barrier (counter[0] >= k * (generation + 1)); False, at once, when another
        thread called abort(counter) (it failed and will never arrive).

The wait spins on an acquire load (so LLVM re-reads memory and the h_t written before
the barrier is visible after it; the add is sequentially consistent), and yields the
core to the OS every SPINS_PER_YIELD spins so a descheduled partner gets to run on a
busy machine.

    contended() -> bool, contention_events() -> int
        True for a while (BACK_OFF_S, doubling up to MAX_BACK_OFF_S while it lasts) after
        a team whose threads waited at its barriers far longer than the threads' usual
        imbalance: another process holds a core, and a partner that shares it runs only in
        the scheduler's time slices. fused_cpu then runs on one thread. Measured with one
        core taken by a busy loop, 2 threads against 1: LSTM inference (10,16,64,128) 3.4
        against 0.73 ms; training (50,16,64,128) 12.0 against ~5, (100,1,128,256) 44 against
        ~5 (idle machine: 0.60, 4.2, 3.5 ms on 2 threads). A team counts its threads'
        yields after its first barrier (which waits for the later thread's start and input
        projection: tens of ms at (256,32,512,512), idle), and its waits of a time slice
        (LONG_WAIT_YIELDS, ~3 ms); a team is contended with YIELDS_PER_ARRIVAL yields a
        barrier arrival and one such wait, and the engine turns to one thread when
        CONTENDED_TEAMS of the last HISTORY teams were. Idle, at most 5.8 yields an arrival
        in 340 teams over the benchmark's shapes (medians 0.04-0.84; ~20 in the host's slow
        phases, when one core runs slower, a case one thread would not help) and a long
        wait in 1 of 200; with the busy loop, 28 to 100 % of the teams at each shape had 20
        yields an arrival or more (medians 0.5-157), and 14-95 % a long wait.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import logging
import time

import numpy as np
from llvmlite import binding as llvm
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from gatelab.engines import _kernels_blas

SPINS_PER_YIELD = 2000
LONG_WAIT_YIELDS = 1000  # ~2.5-3 ms: a partner descheduled for a time slice, not a slower step
YIELDS_PER_ARRIVAL = 20  # a contended team: this many yields a barrier arrival, and a long wait
CONTENDED_TEAMS = 2  # of the last HISTORY teams, to turn to one thread
HISTORY = 4
BACK_OFF_S, MAX_BACK_OFF_S = 1.0, 16.0
_state = {"bound": None, "quiet_until": 0.0, "back_off": BACK_OFF_S, "events": 0}
_recent = collections.deque(maxlen=8)  # the latest teams' counters, for contended()
_history = collections.deque(maxlen=HISTORY)  # whether each of the last teams judged was contended
log = logging.getLogger("gatelab.engines")
_clock = time.monotonic
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


def _pointer(context, builder, array_type, array, index=None):
    ary = context.make_array(array_type)(context, builder, value=array)
    index = context.get_constant(types.intp, 0) if index is None else index
    return cgutils.get_item_pointer(context, builder, array_type, ary, [index])


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
def _load_acquire(typingctx, counter, index):
    """counter[index], read from memory with acquire ordering (never hoisted out of a loop)."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and counter.ndim == 1
            and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = _pointer(context, builder, signature.args[0], args[0], index)
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(counter, index), codegen


@intrinsic
def _fetch_add_at(typingctx, counter, index, value):
    """Atomically counter[index] += value."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and counter.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = _pointer(context, builder, signature.args[0], args[0], index)
        return builder.atomic_rmw("add", ptr, args[2], "monotonic")

    return types.int64(counter, index, types.int64), codegen


ABORT = 8  # counter[ABORT] != 0: a thread of the team failed; the others stop waiting
YIELDS = 9  # counter[YIELDS]: how many times the team's threads yielded while waiting
LONG_WAITS = 10  # counter[LONG_WAITS]: waits of LONG_WAIT_YIELDS yields or more


def new_counter():
    """A zeroed counter for one team: [0] arrivals, [ABORT] the abort flag (one cache line).
    Every team's time loop starts from one, so the barrier's symbols are bound here too:
    compiled code calling an unbound symbol would jump to address 0."""
    if not (bind() and _kernels_blas.bind()):
        raise RuntimeError("fused engine: the units split needs libc's sched_yield and OpenBLAS's CBLAS")
    counter = np.zeros(16, np.int64)
    _recent.append(counter)
    return counter


def contended() -> bool:
    """See the module docstring: judges the teams that ran since the last call, then says
    whether the engine should keep to one thread for now."""
    now = _clock()
    while _recent:
        counter = _recent.popleft()
        arrivals, yields, long_waits = int(counter[0]), int(counter[YIELDS]), int(counter[LONG_WAITS])
        if arrivals == 0:
            continue
        _history.append(long_waits > 0 and yields >= YIELDS_PER_ARRIVAL * arrivals)
        if sum(_history) >= CONTENDED_TEAMS:
            _history.clear()
            back_off = _state["back_off"] if now < _state["quiet_until"] + MAX_BACK_OFF_S else BACK_OFF_S
            _state["quiet_until"] = now + back_off
            _state["back_off"] = min(2 * back_off, MAX_BACK_OFF_S)
            _state["events"] += 1
            log.debug("units split: threads waited %d times for %d arrivals, %d times for a time slice "
                      "(another process on a core?); one thread for %.0f s", yields, arrivals, long_waits,
                      back_off)
        elif not _history[-1] and now >= _state["quiet_until"]:
            _state["back_off"] = BACK_OFF_S  # a team ran without waiting: start again from 1 s
    return now < _state["quiet_until"]


def contention_events() -> int:
    """How many times contended() has turned to one thread in this process (gatelab bench
    reports it: a run during which it happened timed one thread for a while)."""
    contended()  # judge the teams that ran last
    return _state["events"]


def abort(counter) -> None:
    """Tell the team's waiting threads to give up (called by a thread that failed before or
    between barriers, e.g. on KeyboardInterrupt in its Python part: without it the others
    would wait for it forever)."""
    counter[ABORT] = 1


@njit(nogil=True, cache=True, inline="always")
def arrive_and_wait(counter, generation, k):
    """See the module docstring. Returns False when the team was aborted (the caller stops)."""
    if k <= 1:
        return True
    _fetch_add(counter, 1)
    target = k * (generation + 1)
    spins = 0
    yields = 0
    while _load_acquire(counter, 0) < target:
        spins += 1
        if spins == SPINS_PER_YIELD:
            if _load_acquire(counter, ABORT) != 0:
                return False
            _yield()
            yields += 1
            spins = 0
    if yields > 0 and generation > 0:  # (the first barrier waits for the later thread's start
        _fetch_add_at(counter, YIELDS, yields)  # and its input projection: not a sign of contention)
        if yields >= LONG_WAIT_YIELDS:
            _fetch_add_at(counter, LONG_WAITS, 1)
    return True


@njit(nogil=True, cache=True)
def barrier_check(counter, rounds, k, marks, j, first=0):  # for the tests: k threads, `rounds` barriers
    """Thread j writes marks[j, r] = r + 1 before barrier r and checks every other thread's
    mark of round r after it; returns the number of marks found missing (0 when correct),
    or -1 when the team was aborted. first: the generation of round 0 (barriers the team
    passed before)."""
    missing = 0
    for r in range(rounds):
        marks[j, r] = r + 1
        if not arrive_and_wait(counter, first + r, k):
            return -1
        for other in range(k):
            if marks[other, r] != r + 1:
                missing += 1
    return missing



