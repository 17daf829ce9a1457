"""The fused engine gives OpenBLAS torch's thread count, or GATELAB_BLAS_THREADS."""

import pytest
import torch

from gatelab import nn as gnn
from gatelab.bench import _openblas
from gatelab.engines import _kernels_blas

pytestmark = pytest.mark.skipif(not _kernels_blas.bind(), reason="NumPy has no OpenBLAS with CBLAS here")


@pytest.fixture
def threads(monkeypatch):
    """OpenBLAS's (get, set) and torch's count, both restored afterwards."""
    get, put = _openblas()
    before = (torch.get_num_threads(), get())
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("GATELAB_BLAS_THREADS", raising=False)
    yield get
    torch.set_num_threads(before[0])
    put(before[1])
    _kernels_blas._state.pop("threads", None)


def _run_lstm():
    gnn.LSTM(4, 3, backend="fused")(torch.randn(3, 2, 4))


@pytest.mark.parametrize("n", [1, 2])
def test_follows_torch_threads(threads, n):
    torch.set_num_threads(n)
    _run_lstm()
    assert threads() == n


def test_environment_overrides(threads, monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setenv("GATELAB_BLAS_THREADS", "1")
    _run_lstm()
    assert threads() == 1


def test_bad_environment_value_is_named(threads, monkeypatch):
    monkeypatch.setenv("GATELAB_BLAS_THREADS", "two")
    with pytest.raises(ValueError, match="GATELAB_BLAS_THREADS.*'two'"):
        _run_lstm()
