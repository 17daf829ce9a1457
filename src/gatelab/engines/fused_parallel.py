"""Batch rows in parallel: one layer-direction split into row blocks, one thread each.

The rows of a batch never meet in a recurrent layer (each has its own h and c), so the
fused engine can run a block of rows [b0, b1) as a batch of its own: its input
projection, its time loop (per step a GEMM and a gate pass) and its backward, with
nothing shared but the weights. With k threads, k blocks run at once, on torch's own
OpenMP threads (`_on_threads`), and each calls OpenBLAS single-threaded; nothing waits on
another thread inside the time loop.

Why not let OpenBLAS split each step's GEMM instead: its threads busy-wait after every
call and take the cores from torch's threads (and torch's idle OpenMP threads spin after
every torch op, taking them from OpenBLAS's); on 2 cores that made torch.nn's LSTM next
to gatelab's up to 7x slower and gatelab's own up to 2x. Blocks of rows on torch's threads
parallelise everything, GEMMs and gate passes alike, and leave no thread spinning
(benchmarks/README.md, "Threads"). Measured in `gatelab bench` (2 threads, alternating
with torch.nn): LSTM inference at (50,16,64,128) 2.6 ms against 4.6 ms on a separate
thread pool and 3.2 ms on one thread.

Autograd: `SplitFunction` is one node for the whole layer-direction. Its forward builds,
on each thread, the block's own small graph (the block's engine Function applied to
detached inputs); its backward runs `torch.autograd.grad` of each block on its thread,
then joins the gradients: x and the states by concatenating the blocks' rows, weights by
summing the blocks' contributions. Outputs, states and gates are the blocks' rows
concatenated, so results equal the unsplit run up to the order of the weight-gradient sums.
The LSTM and GRU families (layer_norm, projections, reset_before, masks) split their rows
inside one Function instead (fused_family_rows: the same blocks on the same threads, without
a graph per block).

    threads()              torch.get_num_threads(), or GATELAB_THREADS
    row_blocks(B, k)       [(b0, b1), ...]: at most k blocks of at least MIN_ROWS rows
    run_blocks(...)        the split run (inference: blocks on threads, then concatenated)

Results at a different thread count are equal to rounding, not bitwise: the weight
gradients are sums over the blocks (the same holds for torch.nn across thread counts).
"""

from __future__ import annotations

import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from gatelab.engines._kernels_blas import count_from_env

MIN_ROWS = 4  # rows per block below which a block's GEMMs are too thin to pay for a thread
MIN_CALL_MACS = 1 << 22  # a layer-direction's forward multiply-adds (T·B·G·H·(I + H)) below which
# one thread is faster: a team costs ~60-100 µs (copies of each thread's weights, wake-ups). LSTM
# inference, 1 thread against 2: (1,16,64,128) 295 against 362 µs, (1,1,128,512) 344 against
# 594; even at (5,16,64,128) 501 / 493 and (10,1,128,256) 499 / 517 (7.9M and 3.9M).
_pool = {"size": 0, "executor": None, "lock": threading.Lock(), "kept": set()}


def threads() -> int:
    """Threads for the fused engine's row blocks: GATELAB_THREADS, else torch's intra-op count."""
    wanted = count_from_env("GATELAB_THREADS")
    return torch.get_num_threads() if wanted is None else wanted


def row_blocks(B: int, k: int) -> list[tuple[int, int]]:
    """At most k contiguous row ranges [b0, b1) covering [0, B), each >= MIN_ROWS rows,
    sizes differing by at most one (the first ones larger)."""
    n = max(1, min(k, B // MIN_ROWS))
    size, extra = divmod(B, n)
    bounds, b0 = [], 0
    for j in range(n):
        b1 = b0 + size + (1 if j < extra else 0)
        bounds.append((b0, b1))
        b0 = b1
    return bounds


def block_sizes(batch_sizes, b0: int, b1: int):
    """A block's own batch_sizes: rows [b0, b1) of a packed batch (rows sorted by length)."""
    if batch_sizes is None:
        return None
    return [min(max(int(s) - b0, 0), b1 - b0) for s in batch_sizes]


def _torch_openmp():
    """torch's own libgomp as (GOMP_parallel, omp_get_thread_num, omp_get_num_threads,
    callback type) through ctypes, or None (a torch built without GNU OpenMP)."""
    if "gomp" not in _pool:
        found = None
        try:
            with open("/proc/self/maps") as maps:
                paths = sorted({ln.split()[-1] for ln in maps if "libgomp" in ln and "/" in ln})
        except OSError:
            paths = []
        paths.sort(key=lambda p: "torch" not in p)  # torch's copy first: its pool is the one in use
        if paths:
            lib = ctypes.CDLL(paths[0])  # GOMP_parallel releases the GIL: the team's threads need it
            keep = ctypes.PyDLL(paths[0])  # the thread queries keep it: through CDLL, each handed
            # the GIL to the other thread and waited to get it back (~5 µs a hand-over)
            if all(hasattr(lib, f) for f in ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")):
                callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
                lib.GOMP_parallel.argtypes = [callback, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
                lib.GOMP_parallel.restype = None
                keep.omp_get_thread_num.restype = ctypes.c_int
                keep.omp_get_num_threads.restype = ctypes.c_int
                found = (lib.GOMP_parallel, keep.omp_get_thread_num, keep.omp_get_num_threads, callback)
        _pool["gomp"] = found
    return _pool["gomp"]


def _keep_thread_state():
    """Give the calling OpenMP worker a Python thread state for good (once per thread).

    A ctypes callback on a thread Python does not know makes a thread state on entry and
    deletes it on exit; holding one more reference (PyGILState_Ensure, never released) keeps
    it, and every later callback on that thread finds it. Measured, a team of two doing
    nothing: 27.5 µs, the worker inside its function 11.9 µs after the start; kept (and the
    thread queries through PyDLL), 13.7 and 3.8 µs. CPython deletes the kept states when the
    interpreter finishes or forks."""
    me = threading.get_ident()
    if me not in _pool["kept"]:
        ctypes.pythonapi.PyGILState_Ensure()
        _pool["kept"].add(me)


def _executor(workers: int) -> ThreadPoolExecutor:
    with _pool["lock"]:
        if _pool["size"] != workers:
            if _pool["executor"] is not None:
                _pool["executor"].shutdown(wait=False)
            _pool["executor"] = ThreadPoolExecutor(workers, thread_name_prefix="gatelab-rows")
            _pool["size"] = workers
        return _pool["executor"]


def team(fn, n: int, torch_modes: bool = True) -> None:
    """Run fn(j, k) once on each of k threads, j = 0..k-1, all at once, under the caller's
    grad and inference modes (thread-local in torch; torch_modes=False skips setting them,
    ~10 µs a thread, for an fn that runs no torch op); k <= n is the team actually given
    (fewer when OpenMP cannot give n, e.g. inside another parallel region), so fn must
    cover its work for any k. An exception in fn is raised here.

    The threads are torch's own OpenMP pool where torch uses GNU OpenMP (Linux wheels):
    one parallel region (GOMP_parallel, through ctypes) whose threads each run fn. A separate
    pool would compete with torch's: after every torch op, libgomp's idle workers spin for
    milliseconds (GOMP_SPINCOUNT), holding the cores a separate thread needs. Measured, two
    5 ms tasks right after a torch op: 10.7 ms on a thread pool, 5.4 ms on torch's OpenMP
    threads. The Python in fn runs under the GIL; the engine's numba loops and GEMMs
    release it. Elsewhere a ThreadPoolExecutor runs j = 1..n-1 (k = n).
    """
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    errors = []

    def task(j, k):
        try:
            if torch_modes:
                with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                    fn(j, k)
            else:
                fn(j, k)
        except BaseException as err:  # noqa: BLE001 (re-raised on the calling thread)
            errors.append(err)

    gomp = _torch_openmp()
    if gomp is not None:
        parallel, thread_num, num_threads, callback = gomp
        caller = threading.get_ident()

        def member(_):
            if threading.get_ident() != caller:
                _keep_thread_state()
            task(thread_num(), num_threads())

        parallel(callback(member), None, n, 0)
    else:
        futures = [_executor(n - 1).submit(task, j, n) for j in range(1, n)]
        task(0, n)
        for f in futures:
            f.result()
    if errors:
        raise errors[0]


def _on_threads(fn, n: int) -> list:
    """[fn(0), ..., fn(n-1)], spread over a team of up to n threads (see team)."""
    results = [None] * n

    def member(j, k):
        for i in range(j, n, k):  # every i, whatever the team size
            results[i] = fn(i)

    team(member, n)
    return results


def _cat(parts, axis):
    """torch.cat done by NumPy: torch's own ops run on its OpenMP pool, whose worker then
    spins for milliseconds, taking the core the next row block needs (measured: two 5 ms
    blocks took 10 ms right after a torch op, 5.4 ms otherwise)."""
    return torch.from_numpy(np.concatenate([p.detach().numpy() for p in parts], axis=axis))


def _sum(parts):
    """The blocks' weight gradients added, by NumPy (see _cat)."""
    total = parts[0].detach().numpy().copy()
    for p in parts[1:]:
        total += p.detach().numpy()
    return torch.from_numpy(total)


def _block_masks(masks, b0, b1, B):
    """Each mask's rows [b0, b1) (zoneout (T, B, ·), recurrent_dropout (B, ·)); a mask
    without a batch axis of size B (a constant in eval) is passed as it is."""
    if masks is None:
        return None
    out = {}
    for name, m in masks.items():
        axis = 1 if m.dim() == 3 else 0
        out[name] = m.narrow(axis, b0, b1 - b0) if m.shape[axis] == B else m
    return out


def _block_inputs(bounds, x, state, batch_sizes, masks):
    """Block [b0, b1)'s rows: x (T, b, I), the states (b, ·), its batch_sizes and masks."""
    b0, b1 = bounds
    return (x.narrow(1, b0, b1 - b0), tuple(s.narrow(0, b0, b1 - b0) for s in state),
            block_sizes(batch_sizes, b0, b1), _block_masks(masks, b0, b1, x.shape[1]))


class SplitFunction(torch.autograd.Function):
    """One layer-direction as row blocks on threads; inputs x, the state tensors, the weights
    (in `names` order); outputs out, the final states and the recorded gates (`gate_names`)."""

    @staticmethod
    def forward(ctx, run_block, bounds, batch_sizes, masks, names, gate_names, n_state, x, *rest):
        state, weights = rest[:n_state], rest[n_state:]
        needs = ctx.needs_input_grad[7:]  # x, the states, the weights

        def block(j):
            xb, state_b, sizes_b, masks_b = _block_inputs(bounds[j], x, state, batch_sizes, masks)
            with torch.enable_grad():
                leaves = [t.detach().requires_grad_(r) for t, r in zip((xb, *state_b, *weights), needs)]
                out, st, gates = run_block(leaves[0], tuple(leaves[1:1 + n_state]),
                                           dict(zip(names, leaves[1 + n_state:])), sizes_b, masks_b)
            return leaves, (out, *st, *(gates[k] for k in gate_names))

        ctx.blocks = _on_threads(block, len(bounds))
        ctx.bounds, ctx.n_state = bounds, n_state
        ctx.set_materialize_grads(False)
        outs = [o for _, o in ctx.blocks]
        # out and the gates (T, B, ·) join on rows = axis 1, the states (B, ·) on axis 0
        return tuple(_cat(parts, 0 if 1 <= k <= n_state else 1)
                     for k, parts in enumerate(zip(*outs)))

    @staticmethod
    def backward(ctx, *grads):
        needs = ctx.needs_input_grad[7:]
        n_state = ctx.n_state

        def block(j):
            leaves, outputs = ctx.blocks[j]
            b0, b1 = ctx.bounds[j]
            pairs = [(o, g.narrow(0 if 1 <= k <= n_state else 1, b0, b1 - b0))
                     for k, (o, g) in enumerate(zip(outputs, grads))
                     if g is not None and o.requires_grad]
            wanted = [leaf for leaf, r in zip(leaves, needs) if r]
            found = [None] * len(wanted)
            if pairs and wanted:
                with torch.enable_grad():
                    found = torch.autograd.grad([o for o, _ in pairs], wanted,
                                                [g for _, g in pairs], allow_unused=True)
            # a block that does not reach an input contributes zeros of its own shape
            return [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(wanted, found)]

        parts = _on_threads(block, len(ctx.bounds))
        ctx.blocks = None  # free the blocks' graphs
        result, col = [], 0
        for i, r in enumerate(needs):
            if not r:
                result.append(None)
                continue
            column = [p[col] for p in parts]
            col += 1
            if i == 0:  # x (T, B, I): the blocks' rows
                result.append(_cat(column, 1))
            elif i <= n_state:  # a state (B, ·)
                result.append(_cat(column, 0))
            else:  # a weight: the blocks' contributions summed
                result.append(_sum(column))
        return (None,) * 7 + tuple(result)


def run_blocks(run_block, bounds, x, state, weights, batch_sizes, masks, gate_names):
    """Run `run_block(x, state, weights, batch_sizes, masks) -> (out, state_T, gates)` on
    each row block, on threads, and join the results; differentiable when autograd is on.
    `gate_names`: the gates run_block records, () when it records none."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, *state, *weights.values())):
        outs = SplitFunction.apply(run_block, bounds, batch_sizes, masks, tuple(weights),
                                   tuple(gate_names), len(state), x, *state, *weights.values())
        n = len(state)
        gates = dict(zip(gate_names, outs[1 + n:])) if gate_names else None
        return outs[0], tuple(outs[1:1 + n]), gates

    def block(j):
        xb, state_b, sizes_b, masks_b = _block_inputs(bounds[j], x, state, batch_sizes, masks)
        return run_block(xb, state_b, weights, sizes_b, masks_b)

    parts = _on_threads(block, len(bounds))
    out = _cat([p[0] for p in parts], 1)  # (T, B, H_out)
    state_T = tuple(_cat(s, 0) for s in zip(*(p[1] for p in parts)))  # each (B, ·)
    gates = None
    if gate_names:
        gates = {k: _cat([p[2][k] for p in parts], 1) for k in gate_names}
    return out, state_T, gates
