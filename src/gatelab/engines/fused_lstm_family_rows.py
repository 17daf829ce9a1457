"""The LSTM family on row blocks, one thread each, as one autograd Function.

For the variants whose steps cannot split their units between threads (layer_norm, whose
sums run over all units; a projection): the batch's rows split into blocks
(fused_parallel.row_blocks), each block runs fused_lstm_family's forward (`_forward`) and
backward (`backward_arrays`) on its own rows' arrays on its own thread, and NumPy joins the
blocks' outputs and adds their weight gradients. Rows are independent in the recurrence,
so each block computes exactly what the whole batch computes for its rows.

Before, each block ran its own LSTMFamilyFunction inside fused_parallel.SplitFunction
(leaves, a nested graph per block, torch.autograd.grad on each thread): with layer_norm at
(T,B,I,H) = (50,16,64,128) the module's forward took 2.93 ms, the blocks' `_forward` calls
alone 1.90.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from gatelab.engines.fused_common import arr, needs_grad, schedule, tensor
from gatelab.engines.fused_lstm_family import (RECORDED, _forward, _masks, backward_arrays, inputs_of, recorded,
                                              weight_arrays)
from gatelab.engines.fused_parallel import _block_masks, _on_threads, block_sizes


def _blocks_forward(spec, xs, h0s, c0s, weights, masks, batch_sizes, reverse, record, bounds, keep):
    """Each block's fused_lstm_family._forward on its own thread (weights: weight_arrays');
    returns, per block, a namespace with what backward_arrays reads of a context, out, h_T,
    c_T and the saved arrays."""
    T, B, _ = xs.shape
    H, P = c0s.shape[1], h0s.shape[1]
    w_ih, w_hh, bias, w_hr, w_ph, ln = weights

    def block(j):
        b0, b1 = bounds[j]
        steps = schedule(T, b1 - b0, block_sizes(batch_sizes, b0, b1), reverse)
        mask_arrays = _masks(_block_masks(masks, b0, b1, B), T, b1 - b0, H, P, xs.dtype, 1)[0]
        xb, h0b, c0b = (np.ascontiguousarray(a) for a in (xs[:, b0:b1], h0s[b0:b1], c0s[b0:b1]))
        out, h_T, c_T, saved = _forward(spec, xb, h0b, c0b, w_ih, w_hh, bias, w_hr, w_ph, ln, mask_arrays, steps,
                                        keep=keep, record=record)
        ns = SimpleNamespace(arrays=(xb, h0b, c0b, w_ih, w_hh, w_hr, w_ph, out, saved), spec=spec,
                             masks=mask_arrays, steps=steps, has_bias=bias is not None, units=1,
                             ln_ih_w=None if ln is None else ln[0])
        return ns, out, h_T, c_T, saved

    return _on_threads(block, len(bounds))


def _joined(parts, record):
    """out (T, B, H_out), h_T, c_T and, with record, the gates f i g o c, joined over the blocks."""
    outs = (np.concatenate([p[1] for p in parts], axis=1), np.concatenate([p[2] for p in parts]),
            np.concatenate([p[3] for p in parts]))
    if record:
        outs += tuple(np.concatenate(gate, axis=1) for gate in zip(*(recorded(p[4]) for p in parts)))
    return tuple(tensor(a) for a in outs)


class LSTMFamilyRowsFunction(torch.autograd.Function):
    """One LSTM-family layer-direction on row blocks; inputs and outputs as
    fused_lstm_family.LSTMFamilyFunction's."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_ph, ln_ih_w, ln_ih_b, ln_hh_w, ln_hh_b,
                ln_c_w, ln_c_b, spec, masks, batch_sizes, reverse, record, bounds):
        weights = weight_arrays(w_ih, w_hh, b_ih, b_hh, w_hr, w_ph, ln_ih_w, ln_ih_b, ln_hh_w, ln_hh_b, ln_c_w,
                                ln_c_b)
        parts = _blocks_forward(spec, arr(x), arr(h0), arr(c0), weights, masks, batch_sizes, reverse, record,
                                bounds, keep=True)
        ctx.blocks, ctx.bounds = [p[0] for p in parts], bounds
        ctx.set_materialize_grads(False)
        return _joined(parts, record)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT, d_cT, *d_gates):
        need = ctx.needs_input_grad

        def block(j):
            b0, b1 = ctx.bounds[j]
            ns = ctx.blocks[j]
            ns.needs_input_grad = need

            def rows(g, axis):
                return None if g is None else g.narrow(axis, b0, b1 - b0)

            return backward_arrays(ns, rows(d_out, 1), rows(d_hT, 0), rows(d_cT, 0),
                                   tuple(rows(g, 1) for g in d_gates))

        parts = _on_threads(block, len(ctx.bounds))
        ctx.blocks = None  # free the blocks' saved arrays
        grads = []
        for k, column in enumerate(zip(*parts)):
            if column[0] is None:
                grads.append(None)
            elif k <= 2:  # δx (T, B, I) on axis 1; δh0, δc0 (B, ·) on axis 0
                grads.append(np.concatenate(column, axis=1 if k == 0 else 0))
            else:  # a weight's: the blocks' contributions added
                grads.append(np.sum(column, axis=0))
        return tuple(None if g is None else tensor(np.ascontiguousarray(g)) for g in grads) + (None,) * 6


def run(spec, x, state, weights, batch_sizes, reverse, record, masks, bounds):
    """One LSTM-family layer-direction on the row blocks `bounds` (each on a thread); see
    gatelab.engines for the contract (masks already filled: engines.masks.materialize)."""
    inputs = inputs_of(spec, x, state, weights)
    if needs_grad(*inputs):
        out, h_T, c_T, *rec = LSTMFamilyRowsFunction.apply(*inputs, spec, masks, batch_sizes, reverse, record,
                                                            tuple(bounds))
    else:
        x, h0, c0 = (arr(t) for t in inputs[:3])
        parts = _blocks_forward(spec, x, h0, c0, weight_arrays(*inputs[3:]), masks, batch_sizes, reverse, record,
                                bounds, keep=False)
        out, h_T, c_T, *rec = _joined(parts, record)
    return out, (h_T, c_T), dict(zip(RECORDED, rec)) if record else None
