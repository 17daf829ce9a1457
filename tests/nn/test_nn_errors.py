"""Invalid constructor arguments and inputs raise the same exception type as torch.nn (found by
calling both), with a message that names what was expected and what was received."""

import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import gatelab.nn as gnn


def _outcome(fn):
    """The exception type `fn()` raises (None when it does not), warnings as errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            fn()
        except Exception as err:  # the type is the result under test
            return type(err)
    return None


def _same_as_torch(build):
    """build(namespace) under torch.nn and gatelab.nn raises the same exception type (not None)."""
    want = _outcome(lambda: build(torch.nn))
    got = _outcome(lambda: build(gnn))
    assert want is not None, "torch.nn accepted this; the test case is wrong"
    assert got is want, f"torch.nn raises {want.__name__}, gatelab.nn raises {getattr(got, '__name__', None)}"


CONSTRUCTORS = {
    "input_size zero": lambda nn: nn.LSTM(0, 4),
    "input_size float": lambda nn: nn.GRU(3.0, 4),
    "hidden_size zero": lambda nn: nn.RNN(3, 0),
    "hidden_size str": lambda nn: nn.LSTM(3, "4"),
    "num_layers zero": lambda nn: nn.GRU(3, 4, num_layers=0),
    "num_layers float": lambda nn: nn.LSTM(3, 4, num_layers=2.5),
    "bias int": lambda nn: nn.LSTM(3, 4, bias=1),
    "batch_first None": lambda nn: nn.RNN(3, 4, batch_first=None),
    "dropout negative": lambda nn: nn.LSTM(3, 4, num_layers=2, dropout=-0.1),
    "dropout above one": lambda nn: nn.GRU(3, 4, num_layers=2, dropout=1.5),
    "dropout bool": lambda nn: nn.LSTM(3, 4, num_layers=2, dropout=True),
    "dropout str": lambda nn: nn.LSTM(3, 4, num_layers=2, dropout="0.5"),
    "dropout with one layer": lambda nn: nn.LSTM(3, 4, dropout=0.5),  # a UserWarning
    "proj_size negative": lambda nn: nn.LSTM(3, 4, proj_size=-1),
    "proj_size equal hidden": lambda nn: nn.LSTM(3, 4, proj_size=4),
    "proj_size on GRU": lambda nn: nn.GRU(3, 4, proj_size=2),
    "proj_size on RNN": lambda nn: nn.RNN(3, 4, proj_size=2),
    "nonlinearity keyword": lambda nn: nn.RNN(3, 4, nonlinearity="sigmoid"),
    "nonlinearity positional": lambda nn: nn.RNN(3, 4, 1, "gelu"),
}


@pytest.mark.parametrize("case", CONSTRUCTORS)
def test_constructor_errors_match_torch(case):
    _same_as_torch(CONSTRUCTORS[case])


def test_messages_name_the_argument_and_the_value():
    message = r"proj_size has to be smaller than hidden_size, got proj_size=4 and hidden_size=4"
    with pytest.raises(ValueError, match=message):
        gnn.LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match=r"dropout should be a number in range \[0, 1\].*got 1.5"):
        gnn.GRU(3, 4, num_layers=2, dropout=1.5)
    with pytest.raises(ValueError, match=r"backend must be one of .*'auto'.*got 'gpu'"):
        gnn.LSTM(3, 4, backend="gpu")
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'gpu'"):
        gnn.GRUCell(3, 4, backend="gpu")
    with pytest.raises(TypeError):  # backend is keyword-only
        gnn.LSTM(3, 4, 1, True, False, 0.0, False, 0, None, None, "eager")


def _state(nn_cls, shape, cell_shape=None):
    if nn_cls == "LSTM":
        return (torch.zeros(shape), torch.zeros(cell_shape or shape))
    return torch.zeros(shape)


def _packed(I, dtype=torch.float32):
    return pack_sequence([torch.randn(3, I, dtype=dtype), torch.randn(2, I, dtype=dtype)])


INPUTS = {
    "1-D input": lambda m, c: m(torch.randn(3)),
    "4-D input": lambda m, c: m(torch.randn(2, 2, 2, 3)),
    "wrong input size": lambda m, c: m(torch.randn(5, 2, 7)),
    "wrong dtype": lambda m, c: m(torch.randn(5, 2, 3, dtype=torch.float64)),
    "empty sequence": lambda m, c: m(torch.randn(0, 2, 3)),
    "2-D state for batched input": lambda m, c: m(torch.randn(5, 2, 3), _state(c, (2, 4))),
    "3-D state for unbatched input": lambda m, c: m(torch.randn(5, 3), _state(c, (1, 1, 4))),
    "state with wrong batch": lambda m, c: m(torch.randn(5, 2, 3), _state(c, (1, 3, 4))),
    "state with wrong layers": lambda m, c: m(torch.randn(5, 2, 3), _state(c, (2, 2, 4))),
    "state with wrong size": lambda m, c: m(torch.randn(5, 2, 3), _state(c, (1, 2, 5))),
    "unbatched state with wrong size": lambda m, c: m(torch.randn(5, 3), _state(c, (1, 6))),
    "packed with wrong input size": lambda m, c: m(_packed(5)),
    "packed with wrong dtype": lambda m, c: m(_packed(3, torch.float64)),
    "packed with wrong state batch": lambda m, c: m(_packed(3), _state(c, (1, 3, 4))),
}


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("case", INPUTS)
def test_forward_errors_match_torch(cls, case):
    _same_as_torch(lambda nn: INPUTS[case](getattr(nn, cls)(3, 4), cls))


def test_lstm_cell_state_size_error_matches_torch():
    _same_as_torch(lambda nn: nn.LSTM(3, 4)(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 5))))
    _same_as_torch(
        lambda nn: nn.LSTM(3, 4, proj_size=2)(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    )


def test_forward_messages_say_what_was_expected_and_received():
    lstm = gnn.LSTM(3, 4, num_layers=2)
    with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(2, 2, 4\), got \[1, 2, 4\]"):
        lstm(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(RuntimeError, match=r"input_size. Expected 3, got 7"):
        lstm(torch.randn(5, 2, 7))
    with pytest.raises(ValueError, match=r"LSTM: Expected input to be 2D or 3D, got 4D"):
        lstm(torch.randn(1, 5, 2, 3))


CELL_INPUTS = {
    "3-D input": lambda m, c: m(torch.randn(1, 2, 3)),
    "3-D state": lambda m, c: m(torch.randn(2, 3), _state(c, (1, 2, 4))),
    "wrong input size": lambda m, c: m(torch.randn(2, 5)),
    "wrong batch": lambda m, c: m(torch.randn(2, 3), _state(c, (3, 4))),
    "wrong hidden size": lambda m, c: m(torch.randn(2, 3), _state(c, (2, 5))),
    "wrong dtype": lambda m, c: m(torch.randn(2, 3, dtype=torch.float64)),
    "unbatched input, batched state": lambda m, c: m(torch.randn(3), _state(c, (2, 4))),
    "batched input, unbatched state": lambda m, c: m(torch.randn(2, 3), _state(c, (4,))),
}


@pytest.mark.parametrize("cls", ["LSTMCell", "GRUCell", "RNNCell"])
@pytest.mark.parametrize("case", CELL_INPUTS)
def test_cell_errors_match_torch(cls, case):
    kind = "LSTM" if cls == "LSTMCell" else cls
    _same_as_torch(lambda nn: CELL_INPUTS[case](getattr(nn, cls)(3, 4), kind))


def test_rnn_cell_unknown_nonlinearity_fails_in_forward_like_torch():
    _same_as_torch(lambda nn: nn.RNNCell(3, 4, nonlinearity="gelu")(torch.randn(2, 3)))
    gnn.RNNCell(3, 4, nonlinearity="gelu")  # the constructor accepts it, as torch's does


def test_named_backend_that_cannot_run_raises_with_the_reason(monkeypatch):
    from gatelab import engines

    monkeypatch.setattr(engines, "ENGINES", {"fused": "gatelab.engines.eager", "eager": "gatelab.engines.eager"})
    lstm = gnn.LSTM(3, 4, backend="eager")
    monkeypatch.setattr("gatelab.engines.eager.unsupported", lambda spec, x, record: "testing")
    with pytest.raises(ValueError, match="backend='eager' cannot run this request: testing"):
        lstm(torch.randn(2, 1, 3))
