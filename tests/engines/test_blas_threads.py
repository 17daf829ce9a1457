"""The fused engine gives OpenBLAS torch's thread count, or GATELAB_BLAS_THREADS."""

import pytest
import torch

from gatelab import nn as gnn
from gatelab.engines import _kernels_blas

pytestmark = pytest.mark.skipif(not _kernels_blas.bind(), reason="NumPy has no OpenBLAS with CBLAS here")


@pytest.fixture
def threads(monkeypatch):
    """OpenBLAS's (get, set) and torch's count, both restored afterwards."""
    get, put = _kernels_blas.thread_functions()
    before = (torch.get_num_threads(), get())
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("GATELAB_BLAS_THREADS", raising=False)
    yield get
    torch.set_num_threads(before[0])
    put(before[1])


def _run_lstm(B=2, H=3):
    gnn.LSTM(4, H, backend="fused")(torch.randn(3, B, 4))


@pytest.mark.parametrize("n", [1, 2])
def test_follows_torch_threads(threads, n):
    torch.set_num_threads(n)
    _run_lstm(B=64, H=256)  # 64·4·256·256 multiply-adds per step: above SMALL_STEP
    assert threads() == n


def test_small_steps_run_on_one_thread(threads):
    torch.set_num_threads(2)
    _run_lstm(B=2, H=3)
    assert threads() == 1


@pytest.mark.parametrize(("torch_threads", "env", "B", "H"), [(2, "1", 64, 256), (1, "2", 2, 3)])
def test_environment_overrides(threads, monkeypatch, torch_threads, env, B, H):
    torch.set_num_threads(torch_threads)
    monkeypatch.setenv("GATELAB_BLAS_THREADS", env)
    _run_lstm(B=B, H=H)
    assert threads() == int(env)


def test_bad_environment_value_is_named(threads, monkeypatch):
    monkeypatch.setenv("GATELAB_BLAS_THREADS", "two")
    with pytest.raises(ValueError, match="GATELAB_BLAS_THREADS.*'two'"):
        _run_lstm()
