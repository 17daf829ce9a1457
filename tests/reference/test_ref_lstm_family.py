"""The LSTM family in the reference (issue 7): equal to the plain reference for the plain
options, equal to an independent torch autograd transcription of the gatelab.engines
equations (float64, ≤ 1e-10, outputs and every gradient), and backward equal to central
finite differences (float64, step 1e-6) without torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _refhelp import finite_differences

from gatelab.reference import from_torch_layout, init_params, lstm_backward, lstm_forward, to_torch_layout
from gatelab.reference.lstm_family import (ABLATIONS, family_init_params, lstm_family_backward,
                                           lstm_family_forward, lstm_family_gates, options_from_spec)

T, B, I, H = 3, 2, 2, 3


def _params(rng, P=0, peephole=False, layer_norm=False, bias=True):
    p = family_init_params(I, H, seed=int(rng.integers(1000)), proj_size=P, bias=bias, peephole=peephole,
                           layer_norm=layer_norm)
    for k in p:
        if k.startswith("ln_"):  # non-trivial gains and biases
            p[k] = (1.0 if k.endswith("_w") else 0.0) + 0.3 * rng.standard_normal(p[k].shape)
    return p


def _data(rng, P=0):
    P = P or H
    return (rng.standard_normal((T, B, I)), rng.standard_normal((B, P)), rng.standard_normal((B, H)),
            rng.standard_normal((T, B, P)), rng.standard_normal((B, P)), rng.standard_normal((B, H)))


def _masks(rng, P, zoneout=False, dropout=False):
    m = {}
    if zoneout:
        m["zoneout_h"] = (rng.random((T, B, P)) < 0.3).astype(np.float64)
        m["zoneout_c"] = (rng.random((T, B, H)) < 0.3).astype(np.float64)
    if dropout:
        m["recurrent_dropout"] = (rng.random((B, P)) < 0.75) / 0.75
    return m


def torch_family(x, w, h0, c0, opts, masks):
    """The engines docstring's equations in torch, on torch-layout weights (rows i|f|g|o)."""
    # hard_sigmoid written out: F.hardsigmoid's backward multiplies by a float32 1/6 even in
    # float64 (0.1666666716…), a 3e-8 relative error that the reference does not share.
    hard_sigmoid = lambda a: torch.clamp(a / 6 + 0.5, 0, 1)  # noqa: E731
    sig = {"sigmoid": torch.sigmoid, "hard_sigmoid": hard_sigmoid}[opts.get("gate_activation", "sigmoid")]
    phi = {"tanh": torch.tanh, "softsign": F.softsign}[opts.get("cell_activation", "tanh")]
    remove = opts.get("remove", frozenset())
    h, c, outs = h0, c0, []
    G = w["weight_ih"].shape[0]
    for t in range(x.shape[0]):
        hd = h * masks["recurrent_dropout"] if "recurrent_dropout" in masks else h
        ax, ah = x[t] @ w["weight_ih"].T, hd @ w["weight_hh"].T
        if opts.get("layer_norm"):
            ax = F.layer_norm(ax, (G,), w["ln_ih_weight"], w["ln_ih_bias"], eps=1e-5)
            ah = F.layer_norm(ah, (G,), w["ln_hh_weight"], w["ln_hh_bias"], eps=1e-5)
        a = ax + ah + (w["bias_ih"] + w["bias_hh"] if "bias_ih" in w else 0)
        a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
        if opts.get("peephole"):
            a_f = a_f + w["weight_ph"][0] * c
            a_i = a_i + w["weight_ph"][1] * c
        f = torch.ones_like(a_f) if "forget_gate" in remove else sig(a_f)
        i = 1 - f if opts.get("coupled_gates") else torch.ones_like(a_i) if "input_gate" in remove else sig(a_i)
        g = a_g if "candidate_activation" in remove else phi(a_g)
        c_new = f * c + i * g
        if opts.get("peephole"):
            a_o = a_o + w["weight_ph"][2] * c_new
        o = torch.ones_like(a_o) if "output_gate" in remove else sig(a_o)
        cn = F.layer_norm(c_new, (c.shape[1],), w["ln_c_weight"], w["ln_c_bias"], eps=1e-5) \
            if opts.get("layer_norm") else c_new
        h_new = o * (cn if "output_activation" in remove else phi(cn))
        if "weight_hr" in w:
            h_new = h_new @ w["weight_hr"].T
        c = masks["zoneout_c"][t] * c + (1 - masks["zoneout_c"][t]) * c_new if "zoneout_c" in masks else c_new
        h = masks["zoneout_h"][t] * h + (1 - masks["zoneout_h"][t]) * h_new if "zoneout_h" in masks else h_new
        outs.append(h)
    return torch.stack(outs), h, c


CASES = {  # name -> (options, proj, zoneout, dropout)
    "plain": ({}, 0, False, False),
    "peephole": ({"peephole": True}, 0, False, False),
    "layer_norm": ({"layer_norm": True}, 0, False, False),
    "coupled": ({"coupled_gates": True}, 0, False, False),
    **{f"no_{a}": ({"remove": frozenset({a})}, 0, False, False) for a in ABLATIONS},
    "hard_sigmoid_softsign": ({"gate_activation": "hard_sigmoid", "cell_activation": "softsign"}, 0, False, False),
    "zoneout": ({}, 0, True, False),
    "recurrent_dropout": ({}, 0, False, True),
    "everything_proj": ({"peephole": True, "layer_norm": True, "coupled_gates": True,
                         "remove": frozenset({"output_activation"}), "cell_activation": "softsign"}, 2, True, True),
    "ln_peephole_no_forget_proj": ({"peephole": True, "layer_norm": True,
                                    "remove": frozenset({"forget_gate", "candidate_activation"})}, 1, True, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_family_matches_torch_transcription_of_the_engine_equations(case):
    opts, P, zoneout, dropout = CASES[case]
    rng = np.random.default_rng(sum(map(ord, case)))
    params = _params(rng, P, opts.get("peephole", False), opts.get("layer_norm", False))
    x, h0, c0, dhs, dh_T, dc_T = _data(rng, P)
    masks = _masks(rng, P or H, zoneout, dropout)
    hs, (h_T, c_T), cache = lstm_family_forward(x, params, h0, c0, **opts, masks=masks)
    grads = lstm_family_backward(dhs, cache, dh_T, dc_T)
    assert set(grads) == set(params) | {"x", "h0", "c0"}

    w = {k: torch.tensor(v, requires_grad=True) for k, v in to_torch_layout(params, "LSTM").items()}
    ins = {k: torch.tensor(v, requires_grad=True) for k, v in (("x", x), ("h0", h0), ("c0", c0))}
    out, th_T, tc_T = torch_family(ins["x"], w, ins["h0"], ins["c0"], opts,
                                   {k: torch.tensor(v) for k, v in masks.items()})
    loss = (out * torch.tensor(dhs)).sum() + (th_T * torch.tensor(dh_T)).sum() + (tc_T * torch.tensor(dc_T)).sum()
    loss.backward()
    np.testing.assert_allclose(hs, out.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(c_T, tc_T.detach().numpy(), rtol=0, atol=1e-10)
    as_torch = to_torch_layout(grads, "LSTM", gradients=True)
    for name, tensor in {**w, **ins}.items():
        got = as_torch[name] if name in as_torch else grads[name]
        np.testing.assert_allclose(got, tensor.grad.numpy(), rtol=0, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("case", ["peephole", "layer_norm", "coupled", "no_forget_gate", "no_output_activation",
                                  "hard_sigmoid_softsign", "zoneout", "recurrent_dropout", "everything_proj",
                                  "ln_peephole_no_forget_proj"])
def test_family_backward_matches_finite_differences(case):
    """No torch: central differences, step 1e-6, every entry of every parameter, x, h0, c0."""
    opts, P, zoneout, dropout = CASES[case]
    rng = np.random.default_rng(sum(map(ord, case)) + 1)
    params = _params(rng, P, opts.get("peephole", False), opts.get("layer_norm", False))
    x, h0, c0, dhs, dh_T, dc_T = _data(rng, P)
    masks = _masks(rng, P or H, zoneout, dropout)
    _, _, cache = lstm_family_forward(x, params, h0, c0, **opts, masks=masks)
    grads = lstm_family_backward(dhs, cache, dh_T, dc_T)
    numeric = finite_differences(lstm_family_forward, x, params, [h0, c0], dhs, [dh_T, dc_T], **opts, masks=masks)
    for name, g in numeric.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-7, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("P,bias", [(0, True), (2, True), (0, False)])
def test_plain_options_equal_the_plain_reference(P, bias):
    rng = np.random.default_rng(P + bias)
    params = init_params(I, H, seed=3, proj_size=P, bias=bias)
    x, h0, c0, dhs, dh_T, dc_T = _data(rng, P)
    hs, (h_T, c_T), cache = lstm_forward(x, params, h0, c0)
    fhs, (fh_T, fc_T), fcache = lstm_family_forward(x, params, h0, c0)
    np.testing.assert_allclose(fhs, hs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fc_T, c_T, rtol=0, atol=1e-12)
    g, fg = lstm_backward(dhs, cache, dh_T, dc_T), lstm_family_backward(dhs, fcache, dh_T, dc_T)
    assert set(g) == set(fg)
    for k in g:
        np.testing.assert_allclose(fg[k], g[k], rtol=0, atol=1e-12, err_msg=k)
    # eval-mode zoneout with p = 0 and an all-ones dropout mask are the plain cell too
    masks = {"zoneout_h": np.zeros((T, B, P or H)), "zoneout_c": np.zeros((T, B, H)),
             "recurrent_dropout": np.ones((B, P or H))}
    np.testing.assert_allclose(lstm_family_forward(x, params, h0, c0, masks=masks)[0], hs, rtol=0, atol=1e-12)


def test_recorded_gates_show_the_variant():
    rng = np.random.default_rng(0)
    params = _params(rng)
    x, h0, c0, *_ = _data(rng)
    _, _, cache = lstm_family_forward(x, params, h0, c0, coupled_gates=True,
                                      remove=frozenset({"forget_gate", "output_gate"}))
    gates = lstm_family_gates(cache)
    assert np.all(gates["f"] == 1) and np.all(gates["o"] == 1) and np.all(gates["i"] == 0)
    _, _, cache = lstm_family_forward(x, params, h0, c0, coupled_gates=True)
    gates = lstm_family_gates(cache)
    np.testing.assert_allclose(gates["i"], 1 - gates["f"], atol=1e-15)
    # zoneout: the record's c is the carried cell; a unit with mask 1 keeps c_{t-1}
    masks = {"zoneout_c": np.ones((T, B, H))}
    _, (_, c_T), cache = lstm_family_forward(x, params, h0, c0, masks=masks)
    np.testing.assert_array_equal(c_T, c0)
    np.testing.assert_array_equal(lstm_family_gates(cache)["c"][-1], c0)


def test_unused_rows_get_zero_gradient():
    rng = np.random.default_rng(2)
    params = _params(rng, peephole=True)
    x, h0, c0, dhs, dh_T, dc_T = _data(rng)
    _, _, cache = lstm_family_forward(x, params, h0, c0, peephole=True, coupled_gates=True,
                                      remove=frozenset({"output_gate"}))
    grads = lstm_family_backward(dhs, cache, dh_T, dc_T)
    for k in ("W_i", "b_i", "p_i", "W_o", "b_o", "p_o"):
        assert np.all(grads[k] == 0), k
    assert np.any(grads["W_f"] != 0)


def test_family_params_convert_to_engine_names_and_back():
    params = _params(np.random.default_rng(4), P=2, peephole=True, layer_norm=True)
    w = to_torch_layout(params, "LSTM")
    assert {k: v.shape for k, v in w.items()} == {
        "weight_ih": (4 * H, I), "weight_hh": (4 * H, 2), "bias_ih": (4 * H,), "bias_hh": (4 * H,),
        "weight_hr": (2, H), "weight_ph": (3, H), "ln_ih_weight": (4 * H,), "ln_ih_bias": (4 * H,),
        "ln_hh_weight": (4 * H,), "ln_hh_bias": (4 * H,), "ln_c_weight": (H,), "ln_c_bias": (H,)}
    np.testing.assert_array_equal(w["weight_ph"][1], params["p_i"])
    np.testing.assert_array_equal(w["ln_ih_weight"][:H], params["ln_x_w"][H:2 * H])  # torch row i = ref block i
    back = from_torch_layout(w, "LSTM")
    assert sorted(back) == sorted(params)
    for k in params:
        np.testing.assert_array_equal(back[k], params[k], err_msg=k)


def test_bad_family_arguments():
    rng = np.random.default_rng(0)
    params = _params(rng)
    x = np.zeros((T, B, I))
    with pytest.raises(ValueError, match="remove: 'input_gate' cannot be removed with coupled_gates=True"):
        lstm_family_forward(x, params, coupled_gates=True, remove={"input_gate"})
    with pytest.raises(ValueError, match=r"remove: expected a subset of .*got unknown \['forget'\]"):
        lstm_family_forward(x, params, remove={"forget"})
    message = "gate_activation: expected one of \\('sigmoid', 'hard_sigmoid'\\), got 'relu'"
    with pytest.raises(ValueError, match=message):
        lstm_family_forward(x, params, gate_activation="relu")
    with pytest.raises(ValueError, match="cell_activation: expected one of"):
        lstm_family_forward(x, params, cell_activation="sigmoid")
    with pytest.raises(ValueError, match="params: missing key 'p_f'"):
        lstm_family_forward(x, params, peephole=True)
    with pytest.raises(ValueError, match=r"params: unexpected keys \['p_f', 'p_i', 'p_o'\]"):
        lstm_family_forward(x, _params(rng, peephole=True))
    with pytest.raises(ValueError, match=r"masks\['zoneout_c'\]: expected shape \(3, 2, 3\), got \(2, 3\)"):
        lstm_family_forward(x, params, masks={"zoneout_c": np.zeros((B, H))})
    with pytest.raises(ValueError, match=r"masks: expected keys from .*got unknown \['dropout'\]"):
        lstm_family_forward(x, params, masks={"dropout": np.zeros((B, H))})
    with pytest.raises(ValueError, match="peephole: expected True or False, got 1"):
        lstm_family_forward(x, params, peephole=1)


def test_family_float32_follows_float64():
    """float32 in, float32 out, within 1e-5 of the float64 run of the same numbers."""
    opts, P, zoneout, dropout = CASES["everything_proj"]
    rng = np.random.default_rng(8)
    params = _params(rng, P, True, True)
    x, h0, c0, dhs, dh_T, dc_T = _data(rng, P)
    masks = _masks(rng, P, zoneout, dropout)
    f32 = lambda d: {k: v.astype(np.float32) for k, v in d.items()}  # noqa: E731
    hs, _, cache = lstm_family_forward(x, params, h0, c0, **opts, masks=masks)
    hs32, _, cache32 = lstm_family_forward(x.astype(np.float32), f32(params), h0.astype(np.float32),
                                           c0.astype(np.float32), **opts, masks=f32(masks))
    assert hs32.dtype == np.float32
    np.testing.assert_allclose(hs32, hs, rtol=0, atol=1e-5)
    grads = lstm_family_backward(dhs, cache, dh_T, dc_T)
    grads32 = lstm_family_backward(dhs.astype(np.float32), cache32, dh_T.astype(np.float32),
                                   dc_T.astype(np.float32))
    for k in grads:
        assert grads32[k].dtype == np.float32, k
        np.testing.assert_allclose(grads32[k], grads[k], rtol=0, atol=1e-5, err_msg=k)


def test_options_from_spec_runs_a_cell_spec():
    from gatelab.engines import CellSpec

    spec = CellSpec("LSTM", I, H, peephole=True, coupled_gates=True, remove=frozenset({"output_gate"}),
                    gate_activation="hard_sigmoid")
    rng = np.random.default_rng(1)
    params = _params(rng, peephole=True)
    x, h0, c0, *_ = _data(rng)
    opts = {"peephole": True, "coupled_gates": True, "remove": frozenset({"output_gate"}),
            "gate_activation": "hard_sigmoid"}
    np.testing.assert_array_equal(lstm_family_forward(x, params, h0, c0, **options_from_spec(spec))[0],
                                  lstm_family_forward(x, params, h0, c0, **opts)[0])
    gru = CellSpec("GRU", I, H, layer_norm=True, reset_after=True, cell_activation="softsign")
    assert options_from_spec(gru) == {"layer_norm": True, "gate_activation": "sigmoid",
                                      "cell_activation": "softsign", "reset_after": True}
    assert options_from_spec(CellSpec("RNN_TANH", I, H)) == {}
