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
fused_units.MIN_STEP_MACS, fused_units.MIN_UNITS = 0, 1
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
