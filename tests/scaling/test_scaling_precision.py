"""`--precision` (issue 8): the dtype of the master weights and the autocast context."""

import pytest
import torch

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


def test_bf16_on_the_cpu_runs_the_engine_that_honours_autocast():
    cpu = torch.device("cpu")
    assert precision.engine_backend("auto", "bf16", cpu) == "eager"
    assert precision.engine_backend("eager", "bf16", cpu) == "eager"
    assert precision.engine_backend("auto", "float32", cpu) == "auto"
    assert precision.engine_backend("auto", "bf16", torch.device("cuda", 0)) == "auto"
    with pytest.raises(ValueError, match="fused"):
        precision.engine_backend("fused", "bf16", cpu)


def test_the_chosen_engine_computes_in_bf16_under_autocast():
    from gatelab import nn as gnn

    torch.manual_seed(0)
    lstm = gnn.LSTM(16, 32, num_layers=2, backend=precision.engine_backend("auto", "bf16", torch.device("cpu")))
    x = torch.randn(20, 4, 16)
    ref, _ = lstm(x)
    with precision.autocast("bf16", torch.device("cpu")):
        out, _ = lstm(x)
    diff = (out.float() - ref).abs().max().item()
    assert 1e-4 < diff < 5e-2  # bfloat16 rounding (8 bits of mantissa), not float32 and not garbage
