"""The fused CPU engine: LSTM, GRU and RNN layer-directions with hand-written BPTT.

Each cell is a `torch.autograd.Function` (fused_lstm, fused_gru, fused_rnn) that computes
the input projection of all steps as one GEMM, runs each step as one recurrent GEMM plus
one numba pass over the gate maths, and in backward forms the weight gradients as one
GEMM over all steps. Results equal torch.nn and the eager engine (float64 to 1e-10,
float32 to 1e-5) in outputs, states and every gradient, including packed sequences,
the reverse direction, `proj_size`, `bias=False` and recorded gates (which are
differentiable: a loss on them backpropagates).

bfloat16 activations (issue 8) run in float32: x, the state and the weights are cast
to float32 (differentiable casts, so gradients reach bfloat16 or float32 master weights
in their own dtype), the recurrence accumulates in float32, and out, the final state and
the record come back as bfloat16.

The LSTM family (issue 7): every LSTM variant (peephole, layer_norm, coupled_gates, the
ablations, hard_sigmoid / softsign) and the masks zoneout_h, zoneout_c and
recurrent_dropout run in fused_lstm_family, whose kernels take the variant as run-time
flags (one compiled specialisation per dtype); the GRU's activations, layer_norm, masks
and "reset before" (reset_after=False: two recurrent GEMMs per step, the second on
r ⊙ h_{t-1}) run in fused_gru_family. A plain cell without masks keeps the plain kernels
(fused_lstm, fused_gru), so its speed is unchanged. forget_bias and weight_drop need nothing here
(they are the weights the module passes).

What it does not run (unsupported() says so, `backend="auto"` then takes eager):
tensors not on the CPU; dtypes other than float32, float64 and bfloat16; anything under
CPU autocast (whose bf16 matrix products the eager engine follows); the GRU's layer_norm
with reset_after=False (which no engine runs); the plain RNN's variants (it has none).

Threads: a batch of at least 2 x fused_parallel.MIN_ROWS rows is split into row blocks,
one per thread of torch's pool (torch.set_num_threads, or GATELAB_THREADS), run at once
on torch's own OpenMP threads; each block calls OpenBLAS single-threaded and runs its own
gate passes. The plain LSTM and GRU split each step's units between the threads instead
where each thread gets enough of them (fused_units.unit_threads; fused_lstm_units,
fused_gru_units), at any batch size; the LSTM and GRU families' row blocks run as one Function
that splits the rows itself (fused_family_rows) rather than one nested Function per block
(fused_parallel.run_blocks, which the plain cells use). Otherwise one thread. OpenBLAS's own threads are not
used (GATELAB_BLAS_THREADS=N forces them): they busy-wait after each call and slowed the
torch ops around the engine several-fold (fused_parallel, _kernels_blas.sync_threads).
"""

from __future__ import annotations

import torch

from gatelab.engines import GATE_ROWS, _kernels_blas, _kernels_sync, fused_lstm_family, fused_parallel, fused_units
from gatelab.engines.fused_common import numba_loop, schedule
from gatelab.engines.masks import materialize

NAME = "fused"
MASKS = ("zoneout_h", "zoneout_c", "recurrent_dropout")  # LSTM; GRU zoneout_h, recurrent_dropout
FILLS_MASKS = True  # takes masks.Deferred: the units splits fill them in their loops, else filled here
DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def unsupported(spec, x, record) -> str | None:
    """None when this engine runs the request, else the reason in a few words."""
    if not isinstance(x, torch.Tensor) or x.device.type != "cpu":
        return "fused engine runs on the CPU only"
    if x.dtype not in DTYPES:
        return f"fused engine runs float32, float64 and bfloat16, not {x.dtype}"
    if torch.is_autocast_enabled("cpu"):  # it would compute in float32 whatever autocast says
        return "CPU autocast is on (the fused engine does not follow autocast)"
    if spec.mode not in ("LSTM", "GRU", "RNN_TANH", "RNN_RELU"):
        return f"unknown mode {spec.mode}"
    if spec.mode == "LSTM":
        if spec.gate_activation not in fused_lstm_family.GATE_KINDS:
            return f"unknown gate_activation {spec.gate_activation!r}"
        if spec.cell_activation not in fused_lstm_family.CELL_KINDS:
            return f"unknown cell_activation {spec.cell_activation!r}"
        if spec.coupled_gates and "input_gate" in spec.remove:
            return "coupled_gates with the input gate removed"
        if not spec.reset_after:
            return "reset_after is a GRU option"
        return None
    if spec.mode == "GRU":
        if not spec.reset_after and spec.layer_norm:  # eager and the reference refuse it too
            return "GRU layer_norm needs reset_after=True"
        if spec.peephole or spec.coupled_gates or spec.remove:
            return "peephole, coupled_gates and remove are LSTM options"
        if spec.gate_activation not in fused_lstm_family.GATE_KINDS:
            return f"unknown gate_activation {spec.gate_activation!r}"
        if spec.cell_activation not in fused_lstm_family.CELL_KINDS:
            return f"unknown cell_activation {spec.cell_activation!r}"
        return None
    if not spec.is_plain:
        return "the plain RNN has no LSTM-family variants"
    return None


def run(spec, x, state, weights, batch_sizes=None, reverse=False, record=False,
        training=False, masks=None):
    """Run one layer-direction; the contract is in gatelab.engines."""
    masks = masks or None
    if masks is not None and spec.mode.startswith("RNN"):
        raise ValueError("fused engine: the plain RNN takes no masks")
    if x.dtype == torch.bfloat16:  # bf16 activations, float32 arithmetic
        masks = materialize(masks)
        out, state_T, gates = run(spec, x.float(), tuple(s.float() for s in state),
                                  {k: w.float() for k, w in weights.items()}, batch_sizes,
                                  reverse, record, training,
                                  None if masks is None else {k: m.float() for k, m in masks.items()})
        bf16 = torch.bfloat16
        return (out.to(bf16), tuple(s.to(bf16) for s in state_T),
                None if gates is None else {k: g.to(bf16) for k, g in gates.items()})
    for name, w in [*weights.items(), *(("state", s) for s in state), *(masks or {}).items()]:
        if w.dtype != x.dtype:
            raise RuntimeError(f"fused engine: input is {x.dtype} but {name} is {w.dtype}")
    # the batch splits into row blocks on torch's threads unless OpenBLAS was given threads;
    # the LSTM and the GRU (every variant but layer_norm and the GRU's reset_after=False)
    # split each step's units between the threads instead where it pays
    threads = fused_parallel.threads() if _kernels_blas.sync_threads() == 1 else 1
    T, B, I = x.shape  # (T, B, I)
    if threads > 1 and (T * B * GATE_ROWS[spec.mode] * spec.hidden_size * (I + spec.out_size)
                        < fused_parallel.MIN_CALL_MACS or _kernels_sync.contended()):
        threads = 1  # too little work for a team, or another process holds a core
    units = 1  # threads splitting each step's units (1: none)
    if not spec.layer_norm and (spec.mode == "LSTM" or (spec.mode == "GRU" and spec.reset_after)):
        units = fused_units.unit_threads(threads, B, spec.hidden_size, GATE_ROWS[spec.mode],
                                         spec.proj_size > 0)
    if units == 1:
        masks = materialize(masks)  # only the units splits (LSTM, GRU) fill masks themselves
    blocks = fused_parallel.row_blocks(B, threads)
    if units > 1 or len(blocks) == 1:  # the units split, or one thread
        return _run_rows(spec, x, state, weights, batch_sizes, reverse, record, masks, units)
    numba_loop()  # bind OpenBLAS once, before the threads
    if spec.mode in ("LSTM", "GRU") and (masks is not None or not spec.is_plain):  # a family: one Function
        from gatelab.engines import fused_family_rows, fused_gru_family

        family = fused_lstm_family if spec.mode == "LSTM" else fused_gru_family
        return fused_family_rows.run(family, spec, x, state, weights, batch_sizes, reverse, record, masks, blocks)

    def run_block(xb, state_b, weights_b, sizes_b, masks_b):
        return _run_rows(spec, xb, state_b, weights_b, sizes_b, reverse, record, masks_b)

    return fused_parallel.run_blocks(run_block, blocks, x, tuple(state), weights, batch_sizes,
                                     masks, spec.gates if record else ())


def _run_rows(spec, x, state, weights, batch_sizes, reverse, record, masks, units=1):
    """One layer-direction on the calling thread (the plain LSTM or GRU with its units split
    between `units` threads when > 1): the cell's own engine module."""
    T, B, _ = x.shape  # (T, B, I)
    steps = schedule(T, B, batch_sizes, reverse)
    if spec.mode == "LSTM" and (masks is not None or not spec.is_plain):
        return fused_lstm_family.run(spec, x, state, weights, steps, record, masks, units)
    if spec.mode == "GRU" and (masks is not None or not spec.is_plain):
        from gatelab.engines import fused_gru_family

        return fused_gru_family.run(spec, x, state, weights, steps, record, masks, units)
    if spec.mode == "LSTM":
        from gatelab.engines import fused_lstm

        return fused_lstm.run(spec, x, state, weights, steps, record, units)
    if spec.mode == "GRU":
        from gatelab.engines import fused_gru

        return fused_gru.run(spec, x, state, weights, steps, record, units)
    from gatelab.engines import fused_rnn

    return fused_rnn.run(spec, x, state, weights, steps, record)
