"""The spin barrier of the unit-split LSTM (_kernels_sync): no thread passes barrier r
before every thread has reached it, over many rounds, on real threads."""

import numpy as np
import pytest

from gatelab.engines import _kernels_sync, fused_parallel

pytestmark = pytest.mark.skipif(not _kernels_sync.bind(), reason="libc's sched_yield not found")


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("gomp", [True, False], ids=["openmp", "pool"])
def test_no_thread_passes_a_barrier_early(monkeypatch, k, gomp):
    if not gomp:
        monkeypatch.setitem(fused_parallel._pool, "gomp", None)
    rounds = 2000
    counter = np.zeros(16, np.int64)
    marks = np.zeros((k, rounds), np.int64)
    missing, sizes = [], []

    def member(j, size):
        sizes.append(size)
        missing.append(_kernels_sync.barrier_check(counter, rounds, size, marks, j))

    fused_parallel.team(member, k)
    size = sizes[0]
    assert sizes == [size] * size
    assert missing == [0] * size
    assert counter[0] == size * rounds
    assert (marks[:size] == np.arange(1, rounds + 1)).all()


def test_one_thread_does_not_wait():
    counter = np.zeros(16, np.int64)
    assert _kernels_sync.barrier_check(counter, 5, 1, np.zeros((1, 5), np.int64), 0) == 0
    assert counter[0] == 0


def test_aborted_team_stops_waiting():
    counter = _kernels_sync.new_counter()
    _kernels_sync.abort(counter)
    assert _kernels_sync.barrier_check(counter, 3, 2, np.zeros((2, 3), np.int64), 0) == -1


_FAILING_THREAD = """
import torch
from gatelab import nn as gnn
from gatelab.engines import fused_lstm_units as units, fused_units
from gatelab.engines import fused_parallel
fused_units.MIN_STEP_MACS, fused_units.MIN_UNITS, fused_parallel.MIN_CALL_MACS = 0, 1, 0
real = units.{name}

def failing(j, *args):
    if j == 0:
        raise KeyboardInterrupt  # as if Ctrl-C arrived in thread 0's Python part
    return real(j, *args)

units.{name} = failing
model = gnn.LSTM(3, 8)
x = torch.randn(5, 2, 3, requires_grad=True)
try:
    out, _ = model(x) if "{name}" == "forward_units" else (None, None)
    if "{name}" == "backward_units":
        units.{name} = real
        out, _ = model(x)
        units.{name} = failing
        out.sum().backward()
except KeyboardInterrupt:
    print("raised")
"""


@pytest.mark.parametrize("name", ["forward_units", "backward_units"])
def test_a_failing_thread_does_not_hang_the_others(name):
    """Thread 0 fails before its time loop while thread 1 waits at the first barrier: the
    call must raise, not wait forever (run in a subprocess, under a timeout)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, GATELAB_THREADS="2")
    done = subprocess.run([sys.executable, "-c", _FAILING_THREAD.format(name=name)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert "raised" in done.stdout, done.stderr[-2000:]


@pytest.mark.skipif(fused_parallel._torch_openmp() is None, reason="torch without GNU OpenMP")
def test_openmp_workers_keep_their_python_thread_state():
    """A worker of torch's OpenMP pool keeps one Python thread state from team to team
    (its threading.local survives), teams started from another Python thread run too, and
    the interpreter still exits cleanly (in a subprocess) with the kept states."""
    import subprocess
    import sys
    import threading

    local = threading.local()
    seen = []

    def member(j, size):
        seen.append((j, size, getattr(local, "mark", None)))
        local.mark = j

    fused_parallel.team(member, 2)
    k = len(seen)
    seen.clear()
    fused_parallel.team(member, 2)
    assert sorted(j for j, _, _ in seen) == list(range(k))
    assert all(mark == j for j, _, mark in seen)  # each thread found what it left
    seen.clear()
    other = threading.Thread(target=fused_parallel.team, args=(member, 2))
    other.start()
    other.join()
    assert sorted(j for j, _, _ in seen) == list(range(len(seen))) and seen
    script = ("from gatelab.engines import fused_parallel as p\n"
              "for _ in range(50): p.team(lambda j, k: None, 2)\nprint('ok')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.fixture
def fresh_contention(monkeypatch):
    """contended()'s state as in a new process, restored after the test; its clock by hand."""
    import collections

    monkeypatch.setattr(_kernels_sync, "_state", {**_kernels_sync._state, "quiet_until": 0.0,
                                                  "back_off": _kernels_sync.BACK_OFF_S, "events": 0})
    monkeypatch.setattr(_kernels_sync, "_recent", collections.deque(maxlen=8))
    monkeypatch.setattr(_kernels_sync, "_history", collections.deque(maxlen=_kernels_sync.HISTORY))
    clock = {"now": 1000.0}
    monkeypatch.setattr(_kernels_sync, "_clock", lambda: clock["now"])
    return clock


def _team_record(arrivals, yields, long_waits):
    counter = _kernels_sync.new_counter()
    counter[0], counter[_kernels_sync.YIELDS], counter[_kernels_sync.LONG_WAITS] = arrivals, yields, long_waits
    return counter


def test_a_waiting_thread_counts_its_yields(fresh_contention):
    """Thread 1 arrives 30 ms late at the first barrier, which is not counted (it waits for
    the later thread's start), then 30 ms late at the second: thread 0 yields while it
    waits, a time slice's worth and more. Two such teams: contended() keeps the engine to
    one thread for BACK_OFF_S."""
    import time

    marks = np.zeros((2, 1), np.int64)
    for first in ((), (1,)):  # compiled now, not while the other thread waits
        _kernels_sync.barrier_check(np.zeros(16, np.int64), 1, 1, marks, 0, *first)
    for _ in range(2):
        assert not _kernels_sync.contended()
        counter = _kernels_sync.new_counter()
        sizes, yields_after_first = [], []

        def member(j, size):
            sizes.append(size)
            if j == 1:
                time.sleep(0.03)
            _kernels_sync.barrier_check(counter, 1, size, marks, j)
            if j == 1:
                yields_after_first.append(int(counter[_kernels_sync.YIELDS]))
                time.sleep(0.03)
            _kernels_sync.barrier_check(counter, 1, size, marks, j, first=1)

        fused_parallel.team(member, 2)
        if sizes[0] < 2:
            pytest.skip("OpenMP gave a team of one")
        assert yields_after_first == [0]
        assert counter[_kernels_sync.LONG_WAITS] == 1  # ~3 µs a yield: thousands in 30 ms
        assert counter[_kernels_sync.YIELDS] >= _kernels_sync.LONG_WAIT_YIELDS
    assert _kernels_sync.contended()
    assert _kernels_sync.contention_events() == 1
    fresh_contention["now"] += _kernels_sync.BACK_OFF_S + 0.01
    assert not _kernels_sync.contended()


def test_contended_backs_off_longer_while_it_lasts(fresh_contention):
    clock = fresh_contention
    busy = dict(arrivals=20, yields=20 * _kernels_sync.YIELDS_PER_ARRIVAL, long_waits=1)
    assert not _kernels_sync.contended()  # nothing ran yet
    _team_record(arrivals=20, yields=50, long_waits=0)  # an ordinary team: a few yields
    _team_record(arrivals=20, yields=19 * _kernels_sync.YIELDS_PER_ARRIVAL, long_waits=1)  # one slow wait
    _team_record(arrivals=20, yields=10_000, long_waits=0)  # a slower core: waits, none a time slice
    assert not _kernels_sync.contended()
    _team_record(**busy)
    assert not _kernels_sync.contended()  # one contended team of the last four
    _team_record(**busy)
    assert _kernels_sync.contended()  # two
    clock["now"] += 0.99 * _kernels_sync.BACK_OFF_S
    assert _kernels_sync.contended()
    clock["now"] += 0.02 * _kernels_sync.BACK_OFF_S
    assert not _kernels_sync.contended()
    _team_record(**busy)
    _team_record(**busy)  # still contended at the probe: twice as long
    assert _kernels_sync.contended()
    clock["now"] += 1.5 * _kernels_sync.BACK_OFF_S
    assert _kernels_sync.contended()
    clock["now"] += 0.6 * _kernels_sync.BACK_OFF_S
    assert not _kernels_sync.contended()
    _team_record(arrivals=20, yields=0, long_waits=0)  # the probe ran freely: back to the shortest back-off
    assert not _kernels_sync.contended()
    _team_record(**busy)
    _team_record(**busy)
    assert _kernels_sync.contended()
    clock["now"] += 1.01 * _kernels_sync.BACK_OFF_S
    assert not _kernels_sync.contended()
    assert _kernels_sync.contention_events() == 3


def test_a_contended_machine_runs_the_engine_on_one_thread(monkeypatch):
    """While contended() holds, fused_cpu gives no team a second thread (neither a units split
    nor row blocks), and the results are those of the split run."""
    import torch

    from gatelab import nn as gnn
    from gatelab.engines import fused_units

    monkeypatch.setenv("GATELAB_THREADS", "2")
    monkeypatch.setattr(fused_units, "MIN_STEP_MACS", 0)
    monkeypatch.setattr(fused_units, "MIN_UNITS", 1)
    model = gnn.LSTM(3, 8, dtype=torch.float64)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    teams = []
    real_team = fused_parallel.team
    monkeypatch.setattr(fused_parallel, "team", lambda fn, n, **kw: (teams.append(n), real_team(fn, n, **kw))[1])
    from gatelab.engines import fused_lstm_units

    monkeypatch.setattr(fused_lstm_units, "team", fused_parallel.team)
    split, _ = model(x)
    assert teams == [2]
    teams.clear()
    monkeypatch.setattr(_kernels_sync, "contended", lambda: True)
    alone, _ = model(x)
    assert teams == []
    torch.testing.assert_close(alone, split, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_a_call_with_little_work_runs_on_one_thread(monkeypatch, real_call_threshold, mode):
    """Below MIN_CALL_MACS (T·B·G·H·(I + H)) a team costs more than it saves: no team runs,
    whether units or row blocks; above it the same module splits. Results agree."""
    import torch

    from gatelab import nn as gnn
    from gatelab.engines import fused_lstm_units, fused_gru_units

    monkeypatch.setenv("GATELAB_THREADS", "2")
    teams = []
    real_team = fused_parallel.team
    counting = lambda fn, n, **kw: (teams.append(n), real_team(fn, n, **kw))[1]  # noqa: E731
    for module in (fused_parallel, fused_lstm_units, fused_gru_units):
        monkeypatch.setattr(module, "team", counting)
    model = getattr(gnn, mode)(32, 128)
    G = 4 if mode == "LSTM" else 3
    per_step = 4 * G * 128 * (32 + 128)  # B = 4: one row block, so the units split
    short = torch.randn(max(1, real_call_threshold // per_step - 1), 4, 32)
    assert short.shape[0] * per_step < real_call_threshold
    model(short)
    assert teams == []
    long = torch.randn(real_call_threshold // per_step + 2, 4, 32)
    split, _ = model(long)
    assert teams and all(n == 2 for n in teams)
    monkeypatch.setattr(fused_parallel, "MIN_CALL_MACS", 10 * long.shape[0] * per_step)
    alone, _ = model(long)
    torch.testing.assert_close(alone, split, rtol=1e-5, atol=1e-5)
