"""The fused engine runs OpenBLAS single-threaded (its parallelism is row blocks on torch's
threads), unless GATELAB_BLAS_THREADS says otherwise; OPENBLAS_NUM_THREADS is the user's."""

import pytest
import torch

from gatelab import nn as gnn
from gatelab.engines import _kernels_blas, fused_parallel

pytestmark = pytest.mark.skipif(not _kernels_blas.bind(), reason="NumPy has no OpenBLAS with CBLAS here")


@pytest.fixture
def threads(monkeypatch):
    """OpenBLAS's get() and torch's count, both restored afterwards; splits are counted."""
    get, put = _kernels_blas.thread_functions()
    before = (torch.get_num_threads(), get())
    for name in ("OPENBLAS_NUM_THREADS", "GATELAB_BLAS_THREADS", "GATELAB_THREADS"):
        monkeypatch.delenv(name, raising=False)
    yield get
    torch.set_num_threads(before[0])
    put(before[1])


def _run_lstm(monkeypatch, B=2, H=3):
    """Run a fused LSTM; returns the number of row blocks it used."""
    calls = []
    real = fused_parallel.run_blocks
    monkeypatch.setattr(fused_parallel, "run_blocks",
                        lambda fn, bounds, *a: calls.append(len(bounds)) or real(fn, bounds, *a))
    gnn.LSTM(4, H, backend="fused")(torch.randn(3, B, 4))
    return calls[0] if calls else 1


@pytest.mark.parametrize("n", [1, 2])
def test_openblas_runs_one_thread_and_torch_threads_split_the_batch(threads, monkeypatch, n):
    torch.set_num_threads(n)
    blocks = _run_lstm(monkeypatch, B=64, H=32)
    assert threads() == 1
    assert blocks == n


def test_a_small_batch_is_not_split(threads, monkeypatch):
    torch.set_num_threads(2)
    assert _run_lstm(monkeypatch, B=7) == 1  # two blocks would have fewer than MIN_ROWS rows


def test_gatelab_threads_overrides_torch(threads, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("GATELAB_THREADS", "3")
    assert _run_lstm(monkeypatch, B=12) == 3


def test_blas_threads_from_the_environment(threads, monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setenv("GATELAB_BLAS_THREADS", "2")
    assert _run_lstm(monkeypatch, B=64) == 1  # OpenBLAS's threads instead of row blocks
    assert threads() == 2


def test_user_openblas_setting_is_left_alone(threads, monkeypatch):
    _kernels_blas.thread_functions()[1](2)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    torch.set_num_threads(2)
    assert _run_lstm(monkeypatch, B=64) == 1
    assert threads() == 2


def test_bad_environment_value_is_named(threads, monkeypatch):
    monkeypatch.setenv("GATELAB_BLAS_THREADS", "two")
    with pytest.raises(ValueError, match="GATELAB_BLAS_THREADS.*'two'"):
        _run_lstm(monkeypatch)
