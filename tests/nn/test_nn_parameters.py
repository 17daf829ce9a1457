"""Parameters: torch.nn's names, shapes, order, dtype and initialisation, so state_dicts move
both ways and the same seed gives the same weights; repr and the compatibility helpers."""

import pytest
import torch

import gatelab.nn as gnn

OPTIONS = [
    ("LSTM", {}),
    ("LSTM", {"num_layers": 3, "bidirectional": True, "proj_size": 2}),
    ("LSTM", {"num_layers": 2, "bias": False, "batch_first": True, "dropout": 0.25}),
    ("GRU", {"num_layers": 2, "bidirectional": True}),
    ("GRU", {"bias": False}),
    ("RNN", {"nonlinearity": "relu", "num_layers": 2, "bidirectional": True, "bias": False}),
    ("RNN", {}),
]
CELLS = [("LSTMCell", {}), ("GRUCell", {"bias": False}), ("RNNCell", {"nonlinearity": "relu"})]


def _build(ns, cls, kw, seed=0):
    torch.manual_seed(seed)
    return getattr(ns, cls)(3, 5, **kw)


@pytest.mark.parametrize("cls,kw", OPTIONS + CELLS)
def test_same_seed_gives_the_same_parameters_as_torch(cls, kw):
    ref, ours = _build(torch.nn, cls, kw), _build(gnn, cls, kw)
    ref_sd, ours_sd = ref.state_dict(), ours.state_dict()
    assert list(ours_sd) == list(ref_sd)
    for name in ref_sd:
        assert ours_sd[name].dtype == ref_sd[name].dtype, name
        assert torch.equal(ours_sd[name], ref_sd[name]), name
    bound = 1 / 5**0.5  # U(-sqrt(k), sqrt(k)), k = 1/hidden_size
    assert all(p.abs().max() <= bound for p in ours.parameters())


@pytest.mark.parametrize("cls,kw", OPTIONS + CELLS)
def test_state_dict_round_trips_both_ways(cls, kw):
    ref, ours = _build(torch.nn, cls, kw, seed=1), _build(gnn, cls, kw, seed=2)
    ours.load_state_dict(ref.state_dict())  # torch.nn -> gatelab.nn, strict
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ref.state_dict().values()))
    other = _build(gnn, cls, kw, seed=3)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    ref.load_state_dict(other.state_dict())  # gatelab.nn -> torch.nn, strict
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), other.state_dict().values()))


@pytest.mark.parametrize("cls,kw", OPTIONS + CELLS)
def test_repr_matches_torch(cls, kw):
    assert repr(_build(gnn, cls, kw)) == repr(_build(torch.nn, cls, kw))


def test_repr_shows_a_chosen_backend():
    assert repr(gnn.GRU(3, 5, backend="eager")) == "GRU(3, 5, backend='eager')"


@pytest.mark.parametrize("cls,kw", OPTIONS)
def test_all_weights_and_flatten_parameters(cls, kw):
    ref, ours = _build(torch.nn, cls, kw), _build(gnn, cls, kw)
    ours.flatten_parameters()  # a no-op kept for drop-in compatibility
    shapes = [[tuple(w.shape) for w in ws] for ws in ref.all_weights]
    assert [[tuple(w.shape) for w in ws] for ws in ours.all_weights] == shapes
    assert [tuple(w.shape) for w in ours._flat_weights] == [tuple(w.shape) for w in ref._flat_weights]
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size", "mode"):
        assert getattr(ours, attr) == getattr(ref, attr), attr


def test_dtype_and_to_move_the_parameters():
    lstm = gnn.LSTM(3, 5, num_layers=2, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in lstm.parameters())
    lstm = lstm.float()
    assert all(p.dtype == torch.float32 for p in lstm.parameters())
    out, _ = lstm(torch.randn(4, 2, 3))
    assert out.dtype == torch.float32
    assert gnn.GRUCell(3, 5, dtype=torch.float64).weight_ih.dtype == torch.float64


def test_parameter_replaced_after_construction_is_used():
    """Code that assigns a new Parameter (weight tying, weight-drop wrappers) must take effect."""
    torch.manual_seed(0)
    ref, ours = torch.nn.LSTM(3, 5), gnn.LSTM(3, 5)
    new = torch.nn.Parameter(torch.randn(20, 5))
    ref.weight_hh_l0, ours.weight_hh_l0 = new, new
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], rtol=0, atol=1e-6)
