"""The GRU options of issue 7 in the reference: equal to gatelab.reference.gru for the plain
options (both reset forms), equal to a torch autograd transcription of the gatelab.engines
equations (float64, ≤ 1e-10), and backward equal to central finite differences (step 1e-6)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _refhelp import finite_differences

from gatelab.reference import gru_backward, gru_forward, gru_init_params, to_torch_layout
from gatelab.reference.gru_family import (gru_family_backward, gru_family_forward, gru_family_gates,
                                          gru_family_init_params)

T, B, I, H = 3, 2, 2, 3


def _params(rng, layer_norm=False, bias=True):
    p = gru_family_init_params(I, H, seed=int(rng.integers(1000)), bias=bias, layer_norm=layer_norm)
    for k in p:
        if k.startswith("ln_"):
            p[k] = (1.0 if k.endswith("_w") else 0.0) + 0.3 * rng.standard_normal(p[k].shape)
    return p


def _data(rng):
    return (rng.standard_normal((T, B, I)), rng.standard_normal((B, H)), rng.standard_normal((T, B, H)),
            rng.standard_normal((B, H)))


def _masks(rng, zoneout, dropout):
    m = {}
    if zoneout:
        m["zoneout_h"] = (rng.random((T, B, H)) < 0.3).astype(np.float64)
    if dropout:
        m["recurrent_dropout"] = (rng.random((B, H)) < 0.75) / 0.75
    return m


def torch_gru_family(x, w, h0, opts, masks):
    sig = {"sigmoid": torch.sigmoid,
           "hard_sigmoid": lambda a: torch.clamp(a / 6 + 0.5, 0, 1)}[opts.get("gate_activation", "sigmoid")]
    phi = {"tanh": torch.tanh, "softsign": F.softsign}[opts.get("cell_activation", "tanh")]
    b_ih = w.get("bias_ih", torch.zeros(3 * H, dtype=torch.float64))
    b_hh = w.get("bias_hh", torch.zeros(3 * H, dtype=torch.float64))
    h, outs = h0, []
    for t in range(x.shape[0]):
        hd = h * masks["recurrent_dropout"] if "recurrent_dropout" in masks else h
        ax, ah = x[t] @ w["weight_ih"].T, hd @ w["weight_hh"].T
        if opts.get("layer_norm"):
            ax = F.layer_norm(ax, (3 * H,), w["ln_ih_weight"], w["ln_ih_bias"], eps=1e-5)
            ah = F.layer_norm(ah, (3 * H,), w["ln_hh_weight"], w["ln_hh_bias"], eps=1e-5)
        ax, ah = ax + b_ih, ah + b_hh
        r = sig(ax[:, :H] + ah[:, :H])
        z = sig(ax[:, H:2 * H] + ah[:, H:2 * H])
        if opts.get("reset_after", True):
            n = phi(ax[:, 2 * H:] + r * ah[:, 2 * H:])
        else:
            n = phi(ax[:, 2 * H:] + (r * hd) @ w["weight_hh"][2 * H:].T + b_hh[2 * H:])
        h_new = (1 - z) * n + z * h
        h = masks["zoneout_h"][t] * h + (1 - masks["zoneout_h"][t]) * h_new if "zoneout_h" in masks else h_new
        outs.append(h)
    return torch.stack(outs), h


CASES = {  # name -> (options, zoneout, dropout, bias)
    "plain": ({}, False, False, True),
    "layer_norm": ({"layer_norm": True}, False, False, True),
    "reset_before": ({"reset_after": False}, False, False, True),
    "activations": ({"gate_activation": "hard_sigmoid", "cell_activation": "softsign"}, False, False, True),
    "zoneout_dropout": ({}, True, True, True),
    "reset_before_regularised": ({"reset_after": False}, True, True, True),
    "everything": ({"layer_norm": True, "cell_activation": "softsign"}, True, True, True),
    "layer_norm_nobias": ({"layer_norm": True}, False, True, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gru_family_matches_torch_transcription_and_finite_differences(case):
    opts, zoneout, dropout, bias = CASES[case]
    rng = np.random.default_rng(sum(map(ord, case)))
    params = _params(rng, opts.get("layer_norm", False), bias)
    x, h0, dhs, dh_T = _data(rng)
    masks = _masks(rng, zoneout, dropout)
    hs, h_T, cache = gru_family_forward(x, params, h0, **opts, masks=masks)
    grads = gru_family_backward(dhs, cache, dh_T)
    assert set(grads) == set(params) | {"x", "h0"}

    w = {k: torch.tensor(v, requires_grad=True) for k, v in to_torch_layout(params, "GRU").items()}
    ins = {k: torch.tensor(v, requires_grad=True) for k, v in (("x", x), ("h0", h0))}
    out, th_T = torch_gru_family(ins["x"], w, ins["h0"], opts, {k: torch.tensor(v) for k, v in masks.items()})
    ((out * torch.tensor(dhs)).sum() + (th_T * torch.tensor(dh_T)).sum()).backward()
    np.testing.assert_allclose(hs, out.detach().numpy(), rtol=0, atol=1e-10)
    as_torch = to_torch_layout(grads, "GRU", gradients=True)
    for name, tensor in {**w, **ins}.items():
        got = as_torch[name] if name in as_torch else grads[name]
        np.testing.assert_allclose(got, tensor.grad.numpy(), rtol=0, atol=1e-10, err_msg=name)

    numeric = finite_differences(gru_family_forward, x, params, [h0], dhs, [dh_T], **opts, masks=masks)
    for name, g in numeric.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-7, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("reset_after", [True, False])
def test_plain_options_equal_the_plain_gru_reference(reset_after):
    rng = np.random.default_rng(5)
    params = gru_init_params(I, H, seed=2)
    x, h0, dhs, dh_T = _data(rng)
    hs, h_T, cache = gru_forward(x, params, h0, reset_after=reset_after)
    fhs, fh_T, fcache = gru_family_forward(x, params, h0, reset_after=reset_after)
    np.testing.assert_allclose(fhs, hs, rtol=0, atol=1e-12)
    g, fg = gru_backward(dhs, cache, dh_T), gru_family_backward(dhs, fcache, dh_T)
    assert set(g) == set(fg)
    for k in g:
        np.testing.assert_allclose(fg[k], g[k], rtol=0, atol=1e-12, err_msg=k)
    np.testing.assert_allclose(gru_family_gates(fcache)["z"], cache["z"], rtol=0, atol=1e-12)


def test_bad_gru_family_arguments():
    x = np.zeros((T, B, I))
    with pytest.raises(ValueError, match="layer_norm: expected reset_after=True with layer_norm=True"):
        gru_family_forward(x, _params(np.random.default_rng(0), True), layer_norm=True, reset_after=False)
    with pytest.raises(ValueError, match="params: missing key 'ln_x_w'"):
        gru_family_forward(x, _params(np.random.default_rng(0)), layer_norm=True)
    with pytest.raises(ValueError, match=r"masks\['recurrent_dropout'\]: expected shape \(2, 3\), got \(3, 2, 3\)"):
        gru_family_forward(x, _params(np.random.default_rng(0)), masks={"recurrent_dropout": np.ones((T, B, H))})
    with pytest.raises(ValueError, match=r"masks: expected keys from \('zoneout_h', 'recurrent_dropout'\)"):
        gru_family_forward(x, _params(np.random.default_rng(0)), masks={"zoneout_c": np.ones((T, B, H))})
