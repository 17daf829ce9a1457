"""The experiment models: parameter formula, forget bias, seeded construction."""

import pytest
import torch

import gatelab.nn
from gatelab.experiments.models import CELLS, build, parameter_count, recurrent, set_forget_bias

TORCH = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}
GATELAB = {"rnn": gatelab.nn.RNN, "gru": gatelab.nn.GRU, "lstm": gatelab.nn.LSTM}


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    "I, H, layers, bias", [(1, 1, 1, True), (7, 13, 1, True), (64, 256, 2, True), (5, 9, 3, False)]
)
def test_parameter_formula_matches_torch_and_gatelab(cell, I, H, layers, bias):
    expected = parameter_count(cell, I, H, layers, bias)
    assert _count(TORCH[cell](I, H, num_layers=layers, bias=bias)) == expected
    assert _count(GATELAB[cell](I, H, num_layers=layers, bias=bias)) == expected


def test_parameter_formula_by_hand():
    # LSTM 4·(H·I + H·H + 2H), GRU 3·(...), RNN 1·(...) at I = 10, H = 20: H·I + H·H + 2H = 640
    assert [parameter_count(c, 10, 20) for c in ("rnn", "gru", "lstm")] == [640, 1920, 2560]


def test_recurrent_is_gatelab_nn():
    for cell in CELLS:
        assert isinstance(recurrent(cell, 3, 5), GATELAB[cell])
    with pytest.raises(ValueError, match="cell must be"):
        recurrent("transformer", 3, 5)


def test_forget_bias_sets_only_the_forget_rows():
    H = 6
    lstm = recurrent("lstm", 3, H)
    before = {k: v.detach().clone() for k, v in lstm.named_parameters()}
    set_forget_bias(lstm, 1.0)
    total = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach()  # (4H,) rows i|f|g|o
    torch.testing.assert_close(total[H : 2 * H], torch.ones(H))
    for name, p in lstm.named_parameters():
        keep = torch.ones(p.shape[0], dtype=torch.bool)
        if name.startswith("bias"):
            keep[H : 2 * H] = False
        assert torch.equal(p.detach()[keep], before[name][keep])


def test_forget_bias_opens_the_forget_gate():
    # with zero weights the forget gate is σ(forget bias); gate record of gatelab.nn shows it
    model = build("lstm", 2, 4, 1, seed=0, forget_bias=1.0)
    with torch.no_grad():
        model.rnn.weight_ih_l0.zero_()
        model.rnn.weight_hh_l0.zero_()
    gates = model.rnn(torch.randn(5, 3, 2), return_gates=True)[-1]
    torch.testing.assert_close(gates["f"], torch.full((1, 5, 3, 4), torch.sigmoid(torch.tensor(1.0)).item()))


def test_build_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = build("gru", 2, 8, 1, seed=3), build("gru", 2, 8, 1, seed=3), build("gru", 2, 8, 1, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    with pytest.raises(ValueError, match="lstm only"):
        build("gru", 2, 8, 1, seed=0, forget_bias=1.0)


def test_sequence_model_shapes():
    model = build("lstm", 3, 8, 5, seed=0)
    x = torch.randn(7, 4, 3)
    assert model(x).shape == (7, 4, 5)
    assert model(x, last_only=True).shape == (4, 5)
