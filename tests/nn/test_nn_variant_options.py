"""The LSTM-family options as arguments: defaults identical to torch.nn, the new parameters'
state_dict names, shapes and initial values, forget_bias's split between bias_ih and
bias_hh, the recorded constants of removed gates, repr, and a clear error (option, expected,
received) for every invalid value."""

import pytest
import torch

import gatelab.nn as gnn

F64 = torch.float64
DEFAULTS = dict(forget_bias=None, peephole=False, layer_norm=False, coupled_gates=False, remove=set(),
                no_forget_gate=False, no_input_gate=False, no_output_gate=False, no_output_activation=False,
                no_candidate_activation=False, gate_activation="sigmoid", cell_activation="tanh", zoneout=0.0,
                recurrent_dropout=0.0, weight_drop=0.0)
GRU_DEFAULTS = dict(layer_norm=False, gate_activation="sigmoid", cell_activation="tanh", zoneout=0.0,
                    recurrent_dropout=0.0, weight_drop=0.0, reset_after=True)


@pytest.mark.parametrize("cls,defaults", [("LSTM", DEFAULTS), ("GRU", GRU_DEFAULTS),
                                          ("LSTMCell", DEFAULTS), ("GRUCell", GRU_DEFAULTS)])
def test_every_option_at_its_default_is_torch_nn(cls, defaults):
    """Same parameters from the same seed, same state_dict keys, same repr, same output and
    gradients, in training mode (where the stochastic options would act)."""
    kw = {} if cls.endswith("Cell") else dict(num_layers=2, bidirectional=True)
    torch.manual_seed(0)
    ref = getattr(torch.nn, cls)(3, 4, dtype=F64, **kw)
    torch.manual_seed(0)
    ours = getattr(gnn, cls)(3, 4, dtype=F64, **kw, **defaults)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ref.state_dict().values()))
    assert repr(ours) == repr(ref)
    x = torch.randn(5, 2, 3, dtype=F64) if not cls.endswith("Cell") else torch.randn(2, 3, dtype=F64)
    want, got = ref(x), ours(x)
    want = want[0] if isinstance(want, tuple) else want
    got = got[0] if isinstance(got, tuple) else got
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for a, b in zip(torch.autograd.grad(got.sum(), list(ours.parameters())),
                    torch.autograd.grad(want.sum(), list(ref.parameters()))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


LSTM_NEW = {"weight_ph": lambda H, G: (3, H), "ln_ih_weight": lambda H, G: (G * H,),
            "ln_ih_bias": lambda H, G: (G * H,), "ln_hh_weight": lambda H, G: (G * H,),
            "ln_hh_bias": lambda H, G: (G * H,), "ln_c_weight": lambda H, G: (H,), "ln_c_bias": lambda H, G: (H,)}


@pytest.mark.parametrize("cls,options,new", [
    ("LSTM", dict(peephole=True), ["weight_ph"]),
    ("LSTM", dict(layer_norm=True), ["ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias", "ln_c_weight",
                                     "ln_c_bias"]),
    ("LSTM", dict(peephole=True, layer_norm=True, proj_size=2),
     ["weight_ph", "ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias", "ln_c_weight", "ln_c_bias"]),
    ("GRU", dict(layer_norm=True), ["ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias"]),
    ("LSTM", dict(coupled_gates=True, no_output_gate=True, zoneout=0.1, recurrent_dropout=0.1, weight_drop=0.1,
                  forget_bias=1.0, gate_activation="hard_sigmoid", cell_activation="softsign"), []),
    ("GRU", dict(reset_after=False, zoneout=0.1), []),
])
def test_new_parameters_names_shapes_and_initial_values(cls, options, new):
    H, G = 5, 4 if cls == "LSTM" else 3
    kw = dict(num_layers=2, bidirectional=True)
    torch.manual_seed(1)
    module = getattr(gnn, cls)(3, H, **kw, **options)
    torch.manual_seed(1)
    plain = getattr(torch.nn, cls)(3, H, **kw, **({"proj_size": 2} if "proj_size" in options else {}))
    sd, plain_sd = module.state_dict(), plain.state_dict()
    extra = [k for k in sd if k not in plain_sd]
    suffixes = ["_l0", "_l0_reverse", "_l1", "_l1_reverse"]
    assert sorted(extra) == sorted(f"{n}{s}" for n in new for s in suffixes)
    for name in extra:
        base = name.rsplit("_l", 1)[0]  # without _l{k}[_reverse]
        assert tuple(sd[name].shape) == LSTM_NEW[base](H, G), name
        if base.startswith("ln_"):
            assert torch.all(sd[name] == (1.0 if base.endswith("weight") else 0.0)), name
        else:  # peepholes: torch.nn's U(-1/√H, 1/√H)
            assert sd[name].abs().max() <= H ** -0.5 and sd[name].std() > 0
    # torch.nn's own parameters: same names, shapes and (without forget_bias) values for a seed
    for name, value in plain_sd.items():
        assert sd[name].shape == value.shape
        if "forget_bias" not in options:
            assert torch.equal(sd[name], value), name
    # a state_dict round-trips into a module with the same options, strictly
    other = getattr(gnn, cls)(3, H, **kw, **options)
    other.load_state_dict(sd)
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), sd.values()))
    # the plain torch.nn parameters load into the variant non-strictly, and back
    missing, unexpected = other.load_state_dict(plain_sd, strict=False)
    assert sorted(missing) == sorted(extra) and not unexpected
    plain.load_state_dict({k: v for k, v in sd.items() if k in plain_sd})


@pytest.mark.parametrize("cls", ["LSTM", "LSTMCell"])
def test_forget_bias_sets_the_f_rows_of_bias_ih_and_zeroes_those_of_bias_hh(cls):
    H = 6
    torch.manual_seed(2)
    module = getattr(gnn, cls)(3, H, forget_bias=1.5)
    torch.manual_seed(2)
    ref = getattr(torch.nn, cls)(3, H)
    for name, p in module.named_parameters():
        want = ref.state_dict()[name]
        if name.startswith("bias_ih"):
            assert torch.all(p[H: 2 * H] == 1.5)  # rows i|f|g|o: f is H..2H
        if name.startswith("bias_hh"):
            assert torch.all(p[H: 2 * H] == 0)
        if name.startswith("bias"):
            assert torch.equal(p[:H], want[:H]) and torch.equal(p[2 * H:], want[2 * H:])
        else:
            assert torch.equal(p, want)
    module.reset_parameters()  # and again after reset_parameters
    bias = module.bias_ih_l0 if cls == "LSTM" else module.bias_ih
    assert torch.all(bias[H: 2 * H] == 1.5)


def test_removed_gates_are_recorded_as_their_constants():
    torch.manual_seed(3)
    lstm = gnn.LSTM(3, 4, no_forget_gate=True, no_output_gate=True, dtype=F64)
    _, _, gates = lstm(torch.randn(5, 2, 3, dtype=F64), return_gates=True)
    assert torch.all(gates["f"] == 1) and torch.all(gates["o"] == 1)
    assert not torch.all(gates["i"] == 1)
    coupled = gnn.LSTM(3, 4, coupled_gates=True, dtype=F64)
    _, _, gates = coupled(torch.randn(5, 2, 3, dtype=F64), return_gates=True)
    assert torch.equal(gates["i"], 1 - gates["f"])
    linear = gnn.LSTM(3, 4, no_candidate_activation=True, no_input_gate=True, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64) * 10
    _, _, gates = linear(x, return_gates=True)
    assert torch.all(gates["i"] == 1) and gates["g"].abs().max() > 1  # g = a_g, not squashed


def test_repr_shows_the_options():
    assert repr(gnn.LSTM(3, 4, peephole=True, zoneout=(0.1, 0.2), remove={"output_gate", "forget_gate"})) == (
        "LSTM(3, 4, peephole=True, remove={'forget_gate', 'output_gate'}, zoneout=(0.1, 0.2))")
    assert repr(gnn.GRUCell(3, 4, zoneout=0.3, reset_after=False)) == "GRUCell(3, 4, zoneout=0.3, reset_after=False)"


INVALID = {
    "peephole not bool": (lambda: gnn.LSTM(3, 4, peephole=1), TypeError, r"peephole: expected True or False, got 1"),
    "layer_norm str": (lambda: gnn.GRU(3, 4, layer_norm="yes"), TypeError, r"layer_norm: expected True or False"),
    "remove a string": (lambda: gnn.LSTM(3, 4, remove="forget_gate"), TypeError, r"remove: expected a set"),
    "remove unknown": (lambda: gnn.LSTM(3, 4, remove={"reset_gate"}), ValueError, r"got unknown \['reset_gate'\]"),
    "coupled without input": (lambda: gnn.LSTM(3, 4, coupled_gates=True, no_input_gate=True), ValueError,
                              r"remove: expected 'input_gate' to stay with coupled_gates=True"),
    "gate activation": (lambda: gnn.LSTM(3, 4, gate_activation="tanh"), ValueError,
                        r"gate_activation: expected one of \('sigmoid', 'hard_sigmoid'\), got 'tanh'"),
    "cell activation": (lambda: gnn.GRUCell(3, 4, cell_activation="relu"), ValueError,
                        r"cell_activation: expected one of \('tanh', 'softsign'\), got 'relu'"),
    "activation not str": (lambda: gnn.LSTM(3, 4, cell_activation=torch.tanh), TypeError, r"cell_activation"),
    "zoneout above one": (lambda: gnn.LSTM(3, 4, zoneout=1.5), ValueError,
                          r"zoneout: expected a probability in \[0, 1\), got 1.5"),
    "zoneout triple": (lambda: gnn.LSTM(3, 4, zoneout=(0.1, 0.2, 0.3)), ValueError, r"zoneout: expected"),
    "zoneout pair on GRU": (lambda: gnn.GRU(3, 4, zoneout=(0.1, 0.2)), ValueError, r"no cell state"),
    "zoneout str": (lambda: gnn.LSTMCell(3, 4, zoneout="0.1"), TypeError, r"zoneout: expected a probability"),
    "recurrent_dropout one": (lambda: gnn.GRU(3, 4, recurrent_dropout=1.0), ValueError, r"recurrent_dropout"),
    "weight_drop negative": (lambda: gnn.LSTM(3, 4, weight_drop=-0.1), ValueError,
                             r"weight_drop: expected a probability in \[0, 1\), got -0.1"),
    "weight_drop bool": (lambda: gnn.LSTM(3, 4, weight_drop=True), TypeError, r"weight_drop"),
    "forget_bias str": (lambda: gnn.LSTM(3, 4, forget_bias="1"), TypeError, r"forget_bias: expected None or a real"),
    "forget_bias nan": (lambda: gnn.LSTM(3, 4, forget_bias=float("nan")), ValueError,
                        r"forget_bias: expected a finite"),
    "forget_bias without bias": (lambda: gnn.LSTM(3, 4, bias=False, forget_bias=1.0), ValueError,
                                 r"forget_bias: expected bias=True"),
    "forget_bias on GRU": (lambda: gnn.GRU(3, 4, forget_bias=1.0), ValueError,
                           r"forget_bias: applies to the LSTM only, not GRU"),
    "peephole on GRUCell": (lambda: gnn.GRUCell(3, 4, peephole=True), ValueError, r"peephole: applies to the LSTM"),
    "reset_after on LSTM": (lambda: gnn.LSTM(3, 4, reset_after=False), ValueError,
                            r"reset_after: applies to the GRU"),
    "GRU layer norm reset before": (lambda: gnn.GRU(3, 4, layer_norm=True, reset_after=False), ValueError,
                                    r"layer_norm: expected reset_after=True"),
    "option on RNN": (lambda: gnn.RNN(3, 4, zoneout=0.1), ValueError, r"apply to LSTM and GRU, not RNN"),
    "unknown keyword": (lambda: gnn.LSTM(3, 4, zonout=0.1), TypeError, r"unexpected keyword argument 'zonout'"),
}


@pytest.mark.parametrize("case", INVALID)
def test_invalid_options_raise_early_and_clearly(case):
    build, error, message = INVALID[case]
    with pytest.raises(error, match=message):
        build()
