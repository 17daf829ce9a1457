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

    torch.set_num_threads(1)

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
