"""Shared test set-up: float64 by default where a test asks for it, one torch thread per
pytest-xdist worker (two workers on two cores), and hypothesis profiles sized for CI."""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Before NumPy loads: the fused engine's GEMMs run on NumPy's OpenBLAS, whose pool
    # torch.set_num_threads does not limit; two workers on two cores want one thread each.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest
from hypothesis import HealthCheck, settings

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    from gatelab.engines import _kernels_blas

    torch.set_num_threads(1)
    # A pytest plugin may have loaded NumPy before this file (seen on a machine with many
    # plugins installed): its OpenBLAS then read no OPENBLAS_NUM_THREADS, and the engine, which
    # follows OpenBLAS's count when the variable is set, would split no batch. Set it here too.
    _blas_threads = _kernels_blas.thread_functions()
    if _blas_threads is not None:
        _blas_threads[1](1)

settings.register_profile(
    "default", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def engine_threads_as_asked(request, monkeypatch):
    """The tests' shapes are tiny, and the fused engine keeps a call with too little work
    to one thread (fused_parallel.MIN_CALL_MACS): here every call with GATELAB_THREADS > 1
    gets its threads, as the tests of row blocks and units splits need, but in the tests of
    that threshold (fixture real_call_threshold). It also drops to one thread for a while
    when its threads wait long at their barriers (another process on a core:
    _kernels_sync.contended); two pytest workers on two cores are exactly that, so no team
    counts as contended, but in the tests of contended() (fixture fresh_contention)."""
    from gatelab.engines import _kernels_sync, fused_parallel

    if "real_call_threshold" not in request.fixturenames:
        monkeypatch.setattr(fused_parallel, "MIN_CALL_MACS", 0)
    if "fresh_contention" not in request.fixturenames:
        monkeypatch.setattr(_kernels_sync, "YIELDS_PER_ARRIVAL", float("inf"))


@pytest.fixture
def real_call_threshold():
    """fused_parallel.MIN_CALL_MACS as shipped (see engine_threads_as_asked)."""
    from gatelab.engines import fused_parallel

    return fused_parallel.MIN_CALL_MACS
