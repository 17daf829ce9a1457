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
