"""Bad input: a ValueError that names the argument, the expected and the received value."""

import subprocess
import sys

import numpy as np
import pytest

from gatelab.reference import (gru_forward, gru_init_params, init_params, lstm_backward, lstm_forward,
                               rnn_forward, rnn_init_params)


@pytest.fixture
def lstm():
    return init_params(3, 5, seed=0), np.zeros((4, 2, 3))


def test_import_does_not_import_torch():
    code = "import sys, gatelab.reference; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("x,match", [
    (np.zeros((4, 3)), r"x: expected shape \(T, B, I\) \(3 dimensions\), got \(4, 3\)"),
    (np.zeros((4, 2, 3), dtype=np.int64), "x: expected dtype float32 or float64, got int64"),
    (np.zeros((0, 2, 3)), r"x: expected shape \(T, B, I\) with every size >= 1, got \(0, 2, 3\)"),
    ([[[0.0]]], "x: expected a numpy array"),
])
def test_bad_x(lstm, x, match):
    with pytest.raises(ValueError, match=match):
        lstm_forward(x, lstm[0])


def test_bad_states_and_params(lstm):
    params, x = lstm
    with pytest.raises(ValueError, match=r"h0: expected shape \(2, 5\), got \(2, 4\)"):
        lstm_forward(x, params, h0=np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"c0: expected shape \(2, 5\), got \(5,\)"):
        lstm_forward(x, params, c0=np.zeros(5))
    with pytest.raises(ValueError, match=r"c0: expected dtype float64 \(the dtype of x\), got float32"):
        lstm_forward(x, params, c0=np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"params\['W_g'\]: expected shape \(5, 8\), got \(5, 7\)"):
        lstm_forward(x, dict(params, W_g=np.zeros((5, 7))))
    with pytest.raises(ValueError, match=r"params\['W_f'\]: expected dtype float64"):
        lstm_forward(x, init_params(3, 5, seed=0, dtype=np.float32))
    with pytest.raises(ValueError, match="params: missing key 'W_o'"):
        lstm_forward(x, {k: v for k, v in params.items() if k != "W_o"})
    with pytest.raises(ValueError, match=r"params: unexpected keys \['W_x'\]"):
        lstm_forward(x, dict(params, W_x=params["W_f"]))
    with pytest.raises(ValueError, match="params: expected all of b_f, b_i, b_g, b_o or none"):
        lstm_forward(x, {k: v for k, v in params.items() if k != "b_o"})
    with pytest.raises(ValueError, match=r"params\['W_f'\]: expected shape \(5, 6\), got \(5, 8\)"):
        lstm_forward(np.zeros((4, 2, 1)), params)  # input size mismatch


def test_bad_backward_arguments(lstm):
    params, x = lstm
    _, _, cache = lstm_forward(x, params)
    with pytest.raises(ValueError, match=r"dhs: expected shape \(4, 2, 5\), got \(4, 5\)"):
        lstm_backward(np.zeros((4, 5)), cache)
    with pytest.raises(ValueError, match=r"dc_T: expected shape \(2, 5\), got \(2, 3\)"):
        lstm_backward(np.zeros((4, 2, 5)), cache, dc_T=np.zeros((2, 3)))


def test_bad_gru_rnn_arguments():
    x = np.zeros((2, 1, 3))
    with pytest.raises(ValueError, match="reset_after: expected True or False, got 'yes'"):
        gru_forward(x, gru_init_params(3, 2), reset_after="yes")
    with pytest.raises(ValueError, match=r"params\['W_n'\]: expected shape \(2, 5\), got \(2, 4\)"):
        gru_forward(x, dict(gru_init_params(3, 2), W_n=np.zeros((2, 4))))
    with pytest.raises(ValueError, match="nonlinearity: expected one of \\('tanh', 'relu'\\), got 'sigmoid'"):
        rnn_forward(x, rnn_init_params(3, 2), nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"h0: expected shape \(1, 2\), got \(2,\)"):
        rnn_forward(x, rnn_init_params(3, 2), np.zeros(2))


@pytest.mark.parametrize("args,match", [((0, 3), "input_size: expected a positive int, got 0"),
                                        ((3, 2.0), "hidden_size: expected a positive int, got 2.0")])
def test_bad_init_sizes(args, match):
    with pytest.raises(ValueError, match=match):
        init_params(*args)
    with pytest.raises(ValueError, match="proj_size: expected an int in \\[0, hidden_size=3\\), got 3"):
        init_params(2, 3, proj_size=3)
