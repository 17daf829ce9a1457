"""Corners of the drop-in contract the property sweep does not draw: an empty batch, a list as
(h_0, c_0), non-contiguous input, parametrized weights, copies, and the packed output's use."""

import copy

import pytest
import torch
from nn_oracle import as_tuple, backend_params, make_pair
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import gatelab.nn as gnn

F64 = torch.float64


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_empty_batch_matches_torch(backend, mode):
    ref, ours = make_pair(mode, backend, input_size=3, hidden_size=4, num_layers=2, bidirectional=True, dtype=F64)
    x = torch.randn(5, 0, 3, dtype=F64)
    out_ref, st_ref = ref(x)
    out, st, gates = ours(x, return_gates=True)
    assert out.shape == out_ref.shape
    assert [s.shape for s in as_tuple(st)] == [s.shape for s in as_tuple(st_ref)]
    assert all(v.shape == (4, 5, 0, 4) for v in gates.values())


@pytest.mark.parametrize("backend", backend_params())
def test_state_as_a_list_and_non_contiguous_input(backend):
    ref, ours = make_pair("LSTM", backend, input_size=3, hidden_size=4, batch_first=True, dtype=F64)
    x = torch.randn(6, 2, 3, dtype=F64).transpose(0, 1)  # (B, T, I), not contiguous
    state = [torch.randn(1, 2, 4, dtype=F64), torch.randn(1, 2, 4, dtype=F64)]
    out_ref, (h_ref, c_ref) = ref(x, tuple(state))
    out, (h, c) = ours(x, state)
    for a, b in ((out, out_ref), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", backend_params())
def test_packed_output_unpacks_like_torchs(backend):
    ref, ours = make_pair("GRU", backend, input_size=2, hidden_size=3, bidirectional=True, dtype=F64)
    packed = pack_sequence([torch.randn(n, 2, dtype=F64) for n in (2, 5, 3)], enforce_sorted=False)
    padded_ref, lengths_ref = pad_packed_sequence(ref(packed)[0], batch_first=True)
    padded, lengths = pad_packed_sequence(ours(packed)[0], batch_first=True)
    assert torch.equal(lengths, lengths_ref)
    torch.testing.assert_close(padded, padded_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", backend_params())
def test_parametrized_weight_is_used_and_trained(backend):
    """A parametrization (weight norm, spectral norm, weight drop) acts through the module."""

    class Half(torch.nn.Module):
        def forward(self, w):
            return 0.5 * w

    ref, ours = make_pair("LSTM", backend, input_size=3, hidden_size=4, dtype=F64)
    with torch.no_grad():
        ref.weight_hh_l0.mul_(0.5)
    parametrize.register_parametrization(ours, "weight_hh_l0", Half())
    x = torch.randn(5, 2, 3, dtype=F64)
    out = ours(x)[0]
    torch.testing.assert_close(out, ref(x)[0], rtol=0, atol=1e-10)
    out.sum().backward()
    assert ours.parametrizations.weight_hh_l0.original.grad.abs().sum() > 0


def test_deepcopy_and_save_load_keep_the_module_working(tmp_path):
    lstm = gnn.LSTM(3, 4, num_layers=2, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64)
    torch.testing.assert_close(copy.deepcopy(lstm)(x)[0], lstm(x)[0], rtol=0, atol=0)
    torch.save(lstm.state_dict(), tmp_path / "w.pt")
    other = gnn.LSTM(3, 4, num_layers=2, dtype=F64)
    other.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    torch.testing.assert_close(other(x)[0], lstm(x)[0], rtol=0, atol=0)
