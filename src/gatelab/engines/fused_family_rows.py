"""The LSTM and GRU families on row blocks, one thread each, as one autograd Function.

For the variants whose steps cannot split their units between threads (the LSTM's
layer_norm, whose sums run over all units, and its projection; the GRU's layer_norm and
reset_before) and for any batch the units split does not take: the batch's rows split into
blocks (fused_parallel.row_blocks), each block runs its family's forward (`block_forward`)
and backward (`backward_arrays`) on its own rows' arrays on its own thread, and NumPy joins
the blocks' outputs and adds their weight gradients. Rows are independent in the
recurrence, so each block computes exactly what the whole batch computes for its rows.

A family is its engine module (fused_lstm_family, fused_gru_family), which provides
    N_STATE, RECORDED       the states (LSTM h, c; GRU h) and the recorded gates' names
    inputs_of(spec, x, state, weights)     its Function's tensor inputs: x, the states, the weights
    weight_arrays(*weights)                those weights as its block_forward takes them
    block_forward(spec, x, states, weights, masks, steps, keep, record)
                            -> (context for backward_arrays, out, final states, saved)
    backward_arrays(ctx, d_out, d_states, d_gates)   the inputs' gradients as arrays
    recorded(saved)         the recorded gates' arrays

Before, each block ran its own family Function inside fused_parallel.SplitFunction
(leaves, a nested graph per block, torch.autograd.grad on each thread): with the LSTM's
layer_norm at (T,B,I,H) = (50,16,64,128) the module's forward took 2.93 ms, the blocks'
forward calls alone 1.90.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from gatelab.engines.fused_common import arr, needs_grad, schedule, tensor
from gatelab.engines.fused_parallel import _block_masks, _on_threads, block_sizes

_ARGS = 7  # FamilyRowsFunction's arguments before its tensor inputs


def _blocks_forward(family, spec, inputs, masks, batch_sizes, reverse, record, bounds, keep):
    """Each block's family.block_forward on its own thread, for the family Function's tensor
    inputs (x, the states, the weights): per block (context, out, states, saved)."""
    n = family.N_STATE
    x, states, weights = arr(inputs[0]), tuple(arr(s) for s in inputs[1:1 + n]), family.weight_arrays(*inputs[1 + n:])
    T, B, _ = x.shape

    def block(j):
        b0, b1 = bounds[j]
        steps = schedule(T, b1 - b0, block_sizes(batch_sizes, b0, b1), reverse)
        xb = np.ascontiguousarray(x[:, b0:b1])
        states_b = tuple(np.ascontiguousarray(s[b0:b1]) for s in states)
        return family.block_forward(spec, xb, states_b, weights, _block_masks(masks, b0, b1, B), steps, keep,
                                    record)

    return _on_threads(block, len(bounds))


def _joined(family, parts, record) -> tuple:
    """out (T, B, H_out), the final states and, with record, the gates, joined over the blocks."""
    outs = (np.concatenate([p[1] for p in parts], axis=1),
            *(np.concatenate(column) for column in zip(*(p[2] for p in parts))))
    if record:
        outs += tuple(np.concatenate(gate, axis=1) for gate in zip(*(family.recorded(p[3]) for p in parts)))
    return tuple(tensor(a) for a in outs)


class FamilyRowsFunction(torch.autograd.Function):
    """One family layer-direction on row blocks; tensor inputs and outputs as the family's
    own Function's (fused_lstm_family.LSTMFamilyFunction, fused_gru_family.GRUFamilyFunction)."""

    @staticmethod
    def forward(ctx, family, spec, masks, batch_sizes, reverse, record, bounds, *inputs):
        parts = _blocks_forward(family, spec, inputs, masks, batch_sizes, reverse, record, bounds, keep=True)
        ctx.family, ctx.blocks, ctx.bounds = family, [p[0] for p in parts], bounds
        ctx.set_materialize_grads(False)
        return _joined(family, parts, record)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, *d_rest):
        n = ctx.family.N_STATE
        d_states, d_gates = d_rest[:n], d_rest[n:]
        need = ctx.needs_input_grad[_ARGS:]

        def block(j):
            b0, b1 = ctx.bounds[j]
            block_ctx = ctx.blocks[j]
            block_ctx.needs_input_grad = need

            def rows(g, axis):
                return None if g is None else g.narrow(axis, b0, b1 - b0)

            return ctx.family.backward_arrays(block_ctx, rows(d_out, 1), tuple(rows(g, 0) for g in d_states),
                                              tuple(rows(g, 1) for g in d_gates))

        parts = _on_threads(block, len(ctx.bounds))
        ctx.blocks = None  # free the blocks' saved arrays
        grads = []
        for k, column in enumerate(zip(*parts)):
            if column[0] is None:
                grads.append(None)
            elif k <= n:  # δx (T, B, I) on axis 1; the initial states' (B, ·) on axis 0
                grads.append(np.concatenate(column, axis=1 if k == 0 else 0))
            else:  # a weight's: the blocks' contributions added
                grads.append(np.sum(column, axis=0))
        return (None,) * _ARGS + tuple(None if g is None else tensor(np.ascontiguousarray(g)) for g in grads)


def run(family, spec, x, state, weights, batch_sizes, reverse, record, masks, bounds):
    """One layer-direction of `family` (fused_lstm_family or fused_gru_family) on the row
    blocks `bounds`, each on a thread; see gatelab.engines for the contract (masks already
    filled: engines.masks.materialize)."""
    inputs = family.inputs_of(spec, x, state, weights)
    n = family.N_STATE
    if needs_grad(*inputs):
        out, *rest = FamilyRowsFunction.apply(family, spec, masks, batch_sizes, reverse, record, tuple(bounds),
                                              *inputs)
    else:
        parts = _blocks_forward(family, spec, inputs, masks, batch_sizes, reverse, record, bounds, keep=False)
        out, *rest = _joined(family, parts, record)
    return out, tuple(rest[:n]), dict(zip(family.RECORDED, rest[n:])) if record else None
