"""`--precision` (issue 8): the dtype of the master weights and the autocast context."""

import pytest
import torch

from gatelab.engines import CellSpec, select
from gatelab.lm import precision


def test_master_weights_are_float32_except_under_float64():
    assert precision.param_dtype("float32") == torch.float32
    assert precision.param_dtype("bf16") == torch.float32
    assert precision.param_dtype("float64") == torch.float64
    with pytest.raises(ValueError, match="--precision"):
        precision.param_dtype("fp8")


def test_bf16_autocasts_matrix_products_and_keeps_the_weights():
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with precision.autocast("bf16", torch.device("cpu")):
        y = lin(x)
    assert y.dtype == torch.bfloat16 and lin.weight.dtype == torch.float32
    with precision.autocast("float32", torch.device("cpu")):
        assert lin(x).dtype == torch.float32


def test_under_bf16_auto_runs_an_engine_that_honours_autocast():
    """The fused CPU engine computes float32/float64 only; under autocast `auto` must pass
    it over (its unsupported() says so) and run the eager engine."""
    spec = CellSpec("LSTM", 4, 5)
    with precision.autocast("bf16", torch.device("cpu")):
        engine = select("auto", spec, torch.zeros(3, 2, 4), False)
    assert engine.NAME == "eager"
