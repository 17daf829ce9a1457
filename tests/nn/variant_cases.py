"""Helpers of the variant tests: build a gatelab.nn module with LSTM-family options and random
(non-trivial) parameters, run it on padded / packed / unbatched / batch_first input with
initial states, and compare outputs, final states, recorded gates and every gradient with
the NumPy reference run by variant_oracle (float64, ≤ 1e-10).

The bound is |got - want| <= 1e-10 + 1e-10 |want| (float32: 1e-5 both): layer
norm with moved gains, peepholes and weight drop give gradients of 10^2 to 10^3, whose
rounding in float64 (a few 1e-13 relative, depending on the order of sums) exceeds 1e-10
absolute; hypothesis found one (δweight_hh 267.86562330200 against 267.86562330212,
relative 4e-13)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from variant_oracle import stack

import gatelab.nn as gnn
from gatelab import engines
from gatelab.engines import select

F64 = torch.float64
TOL = 1e-10


def build(mode, kw, options, backend, seed, dtype=F64):
    """gatelab.nn `mode` module with `options`, every parameter moved off its initial value
    (so layer-norm gains, biases and peepholes are all non-trivial)."""
    torch.manual_seed(seed)
    module = getattr(gnn, mode)(backend=backend, dtype=dtype, **kw, **options)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=F64).to(dtype))
    return module


def can_run(backend, module, x, record, masks) -> str | None:
    """None when `backend` runs every layer of `module` with these masks, else the reason."""
    if backend == "auto":
        return None
    engine = importlib.import_module(engines.ENGINES[backend])
    layers = getattr(module, "num_layers", 1)
    specs = [module._cell_spec(k) for k in range(layers)] if hasattr(module, "_cell_spec") else [module._spec()]
    for spec in specs:
        reason = engine.unsupported(spec, x, record)
        if reason is not None:
            return reason
    engine_masks = {k for m in masks for k in m if k != "weight_hh"}
    try:
        select(backend, specs[0], x, record, dict.fromkeys(engine_masks))
    except ValueError as err:
        return str(err)
    return None


def check_against_reference(module, *, T, B, form, seed, training, with_masks=True):
    """See _check; float32 modules are compared with the float64 reference at 1e-5."""
    dtype = module.weight_ih_l0.dtype
    return _check(module, T=T, B=B, form=form, seed=seed, training=training, with_masks=with_masks,
                  dtype=dtype, tol=TOL if dtype == F64 else 1e-5)


def _check(module, *, T, B, form, seed, training, with_masks, dtype, tol):
    """Run `module` and the reference on the same input, states and masks; assert equality.

    Arguments:
        module: gatelab.nn LSTM or GRU, float64, no dropout between layers.
        T, B: steps and batch (B = 1 when form is "unbatched").
        form: "padded" | "packed" | "unbatched".
        training: the module's mode. In training the masks come from module.draw_masks
            (passed explicitly, so the reference gets the same ones); in evaluation none are
            passed and the reference gets zoneout's documented constant mask p.
    """
    module.train(training)
    rng = np.random.default_rng(seed)
    mode, D, L = module.mode, 2 if module.bidirectional else 1, module.num_layers
    H = module.hidden_size
    H_out = module.proj_size or H
    I = module.input_size
    lengths = [T] * B
    if form == "packed":
        lengths = [int(n) for n in rng.integers(1, T + 1, size=B)]
        lengths[int(rng.integers(B))] = T  # the longest sets T
    x_np = rng.standard_normal((T, B, I))
    for b, n in enumerate(lengths):
        x_np[n:, b] = 0.0
    h0_np = tuple(rng.standard_normal((L * D, B, n)) for n in ([H_out, H] if mode == "LSTM" else [H_out]))
    d_out = rng.standard_normal((T, B, D * H_out))
    for b, n in enumerate(lengths):
        d_out[n:, b] = 0.0
    d_final = tuple(rng.standard_normal(s.shape) for s in h0_np)

    if training:
        torch.manual_seed(seed)
        masks = module.draw_masks(T, B, dtype=dtype) if with_masks else None
    else:
        masks = None
    masks_np = ([{k: v.numpy().astype(np.float64) for k, v in m.items()} for m in masks] if masks
                else [{} for _ in range(L * D)])
    if not training:  # the documented expectation: zoneout mask = p, nothing else
        p_h, p_c = module.options.zoneout
        for m in masks_np:
            if p_h > 0:
                m["zoneout_h"] = np.full((T, B, H_out), p_h)
            if p_c > 0:
                m["zoneout_c"] = np.full((T, B, H), p_c)

    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    x_np, h0_np = x_np.astype(np_dtype), tuple(s.astype(np_dtype) for s in h0_np)  # as the module sees them
    x = torch.from_numpy(x_np.copy())
    if module.batch_first:
        x = x.transpose(0, 1)
    x = x.clone().requires_grad_()
    h0 = tuple(torch.from_numpy(s.copy()).requires_grad_() for s in h0_np)
    if form == "unbatched":
        inp = x[:, 0] if not module.batch_first else x[0]
        hx = tuple(s[:, 0] for s in h0)
    elif form == "packed":
        inp = pack_padded_sequence(x, lengths, batch_first=module.batch_first, enforce_sorted=False)
        hx = h0
    else:
        inp, hx = x, h0
    hx_arg = hx if mode == "LSTM" else hx[0]
    out, state, gates = module(inp, hx_arg, return_gates=True, masks=masks)
    if mode == "GRU":
        state = (state,)
    if form == "packed":
        out, _ = pad_packed_sequence(out, batch_first=module.batch_first, total_length=T)
    if form == "unbatched":
        out = out.unsqueeze(0 if module.batch_first else 1)
        state = tuple(s.unsqueeze(1) for s in state)
        gates = {k: v.unsqueeze(2) for k, v in gates.items()}
    elif module.batch_first:
        gates = {k: v.transpose(1, 2) for k, v in gates.items()}
    if module.batch_first:
        out = out.transpose(0, 1)  # (T, B, D*H_out)
    loss = (out * torch.from_numpy(d_out).to(dtype)).sum() + sum((s * torch.from_numpy(r).to(dtype)).sum()
                                                                 for s, r in zip(state, d_final))
    params = dict(module.named_parameters())
    got = torch.autograd.grad(loss, [x, *h0, *params.values()], allow_unused=True)

    x_np, h0_np = x_np.astype(np.float64), tuple(s.astype(np.float64) for s in h0_np)  # reference in float64
    want_out, want_final, want_gates, want_grads = stack(module, x_np, lengths, h0_np, masks_np, d_out, d_final)
    np.testing.assert_allclose(out.detach().numpy(), want_out, rtol=tol, atol=tol, err_msg="output")
    for s, w in zip(state, want_final):
        np.testing.assert_allclose(s.detach().numpy(), w, rtol=tol, atol=tol, err_msg="final state")
    for name, w in want_gates.items():
        np.testing.assert_allclose(gates[name].detach().numpy(), w, rtol=tol, atol=tol, err_msg=f"gate {name}")
    dx = got[0].numpy()
    if module.batch_first:
        dx = dx.transpose(1, 0, 2)
    np.testing.assert_allclose(dx, want_grads["x"], rtol=tol, atol=tol, err_msg="grad x")
    for g, w, name in zip(got[1: 1 + len(h0)], want_grads["h0"], ("h0", "c0")):
        np.testing.assert_allclose(g.numpy(), w, rtol=tol, atol=tol, err_msg=f"grad {name}")
    for (name, p), g in zip(params.items(), got[1 + len(h0):]):
        want = want_grads[name]
        g = torch.zeros_like(p) if g is None else g
        np.testing.assert_allclose(g.numpy(), want, rtol=tol, atol=tol, err_msg=f"grad {name}")
    return masks


def skip_unless_runnable(backend, module, T, B, training):
    """pytest.skip with the engine's own reason when `backend` declines the request."""
    x = torch.zeros(T, B, module.input_size, dtype=F64)
    module.train(training)
    masks = module.draw_masks(T, B) if training and module.options.stochastic else []
    if not training:
        masks = [{"zoneout_h": None}] if any(module.options.zoneout) else []
    reason = can_run(backend, module, x, True, masks)
    if reason is not None:
        pytest.skip(f"backend {backend!r} declines: {reason}")
