"""Oracles for the reference tests: torch.nn run with the same weights (float64), and
central finite differences that use nothing but the reference forward."""

from __future__ import annotations

import numpy as np


def torch_run(module, x, states, dhs, dstates):
    """Run a one-layer torch module, backpropagate L = Σ out·dhs + Σ state_T·dstate_T.

    Returns (out, final_states, grads) as numpy; grads has the module's parameter names
    without suffix plus x and one entry per initial state (h0, c0).
    """
    import torch

    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s[None], requires_grad=True) for s in states]  # (1, B, *)
    out, final = module(xt, tuple(st) if len(st) == 2 else st[0])
    final = final if isinstance(final, tuple) else (final,)
    loss = (out * torch.tensor(dhs)).sum()
    for s, d in zip(final, dstates):
        loss = loss + (s[0] * torch.tensor(d)).sum()
    loss.backward()
    grads = {name.removesuffix("_l0"): p.grad.numpy() for name, p in module.named_parameters()}
    grads["x"] = xt.grad.numpy()
    for name, s in zip(("h0", "c0"), st):
        grads[name] = s.grad[0].numpy()
    return out.detach().numpy(), [s[0].detach().numpy() for s in final], grads


def loss_of(forward, x, params, states, dhs, dstates, **kw):
    """L = Σ hs·dhs + Σ state_T·dstate_T for a reference forward."""
    hs, final, _ = forward(x, params, *states, **kw)
    final = final if isinstance(final, tuple) else (final,)
    return float((hs * dhs).sum() + sum((s * d).sum() for s, d in zip(final, dstates)))


def finite_differences(forward, x, params, states, dhs, dstates, step=1e-6, **kw):
    """Central differences (L(θ+ε) − L(θ−ε)) / 2ε for every entry of params, x and states."""
    arrays = dict(params, x=x, **{n: s for n, s in zip(("h0", "c0"), states)})
    out = {}
    for name, arr in arrays.items():
        g = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + step
            up = loss_of(forward, x, params, states, dhs, dstates, **kw)
            arr[idx] = old - step
            down = loss_of(forward, x, params, states, dhs, dstates, **kw)
            arr[idx] = old
            g[idx] = (up - down) / (2 * step)
        out[name] = g
    return out
