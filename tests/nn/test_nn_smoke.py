"""Quick equality of gatelab.nn against torch.nn with the same state_dict (the full sweep is
in test_nn_equivalence.py): outputs, final states and gradients, float64."""

import pytest
import torch

import gatelab.nn as gnn

F64 = torch.float64


def _pair(cls, **kw):
    ref = getattr(torch.nn, cls)(dtype=F64, **kw)
    ours = getattr(gnn, cls)(dtype=F64, backend="eager", **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize("cls,extra", [("LSTM", {}), ("LSTM", {"proj_size": 2}), ("GRU", {}),
                                       ("RNN", {"nonlinearity": "relu"})])
def test_two_layer_bidirectional_batch_first_matches_torch(cls, extra):
    torch.manual_seed(0)
    ref, ours = _pair(cls, input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                      batch_first=True, **extra)
    x = torch.randn(2, 5, 3, dtype=F64)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, h_ref = ref(x_ref)
    out_ours, h_ours, gates = ours(x_ours, return_gates=True)
    h_ref = h_ref if isinstance(h_ref, tuple) else (h_ref,)
    h_ours = h_ours if isinstance(h_ours, tuple) else (h_ours,)
    torch.testing.assert_close(out_ours, out_ref, rtol=0, atol=1e-10)
    for a, b in zip(h_ours, h_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    loss_ref = out_ref.square().sum() + sum(h.sum() for h in h_ref)
    loss_ours = out_ours.square().sum() + sum(h.sum() for h in h_ours)
    loss_ref.backward()
    loss_ours.backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=0, atol=1e-10)
    for (name, p_ref), p_ours in zip(ref.named_parameters(), ours.parameters()):
        torch.testing.assert_close(p_ours.grad, p_ref.grad, rtol=0, atol=1e-10, msg=name)
    assert all(v.shape == (4, 2, 5, 4) for v in gates.values())
