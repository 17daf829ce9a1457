"""The fused engine's row blocks on threads (engines/fused_parallel.py).

Every other test runs with torch at one thread, where the engine never splits a batch;
here GATELAB_THREADS forces 2 or 3 blocks and the results are compared with torch.nn
(same weights: outputs, final states, every gradient), with the NumPy reference for the
LSTM-family variants and masks, and with the unsplit fused run for recorded gates.
"""

from __future__ import annotations

import pytest
import torch
from nn_oracle import as_tuple, make_pair
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from variant_cases import build, check_against_reference

from gatelab.engines import fused_family_rows, fused_parallel
from gatelab.engines.fused_parallel import block_sizes, row_blocks

F64 = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported:UserWarning")


@pytest.fixture(params=[2, 3])
def split(request, monkeypatch):
    """Force `param` row blocks (torch itself stays at one thread) and count the splits."""
    monkeypatch.setenv("GATELAB_THREADS", str(request.param))
    calls = []
    real = fused_parallel.run_blocks

    def counting(run_block, bounds, *args, **kwargs):
        calls.append(len(bounds))
        return real(run_block, bounds, *args, **kwargs)

    monkeypatch.setattr(fused_parallel, "run_blocks", counting)
    real_family = fused_family_rows.run

    def counting_family(*args):  # the LSTM and GRU families' own row blocks
        calls.append(len(args[-1]))
        return real_family(*args)

    monkeypatch.setattr(fused_family_rows, "run", counting_family)
    return calls, str(request.param)


@pytest.mark.parametrize(("B", "k", "expected"), [
    (16, 2, [(0, 8), (8, 16)]),
    (13, 3, [(0, 5), (5, 9), (9, 13)]),
    (7, 2, [(0, 7)]),  # two blocks would have fewer than MIN_ROWS rows each
    (8, 2, [(0, 4), (4, 8)]),
    (1, 4, [(0, 1)]),
    (32, 1, [(0, 32)]),
])
def test_row_blocks_cover_the_batch(B, k, expected):
    assert row_blocks(B, k) == expected


def test_block_sizes_of_a_packed_batch():
    sizes = [9, 9, 7, 4, 2]
    assert block_sizes(sizes, 0, 5) == [5, 5, 5, 4, 2]
    assert block_sizes(sizes, 5, 9) == [4, 4, 2, 0, 0]
    assert block_sizes(None, 0, 5) is None


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_thread_count_is_named(monkeypatch, value):
    monkeypatch.setenv("GATELAB_THREADS", value)
    with pytest.raises(ValueError, match=f"GATELAB_THREADS.*{value!r}"):
        fused_parallel.threads()


def _pair(mode, dtype, **kw):
    torch.manual_seed(0)
    ref, ours = make_pair(mode, backend="fused", **kw)
    return ref.to(dtype), ours.to(dtype)


def _run(module, x, lengths, h0):
    inp = x if lengths is None else pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, state = module(inp, h0)
    if lengths is not None:
        out = pad_packed_sequence(out, total_length=x.shape[0])[0]
    return out, as_tuple(state)


def _inputs(module, mode, T, B, dtype, packed, seed):
    """x (T, B, I); lengths (B,) with one full-length row when packed, else None; the
    initial states as a tuple ((h0, c0) for the LSTM)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, module.input_size, generator=g, dtype=dtype)
    lengths = torch.randint(1, T + 1, (B,), generator=g) if packed else None
    if packed:
        lengths[B // 2] = T
    L = module.num_layers * (2 if module.bidirectional else 1)
    H = module.hidden_size
    sizes = [module.proj_size or H, H] if mode == "LSTM" else [H]
    return x, lengths, tuple(torch.randn(L, B, n, generator=g, dtype=dtype) for n in sizes)


def _outputs_and_grads(module, x, lengths, h0, mode):
    """(out, final states..., δx, δh0 [, δc0], δparameters...) of a loss on out and the states."""
    xs = x.clone().requires_grad_()
    hs = tuple(s.clone().requires_grad_() for s in h0)
    out, state = _run(module, xs, lengths, hs if mode == "LSTM" else hs[0])
    loss = (out * torch.linspace(-1, 1, out.numel(), dtype=x.dtype).view_as(out)).sum()
    loss = loss + sum((s * s).sum() for s in state)
    return (out, *state, *torch.autograd.grad(loss, [xs, *hs, *module.parameters()]))


def _gates_at_thread_counts(module, x, counts, monkeypatch, masks=None):
    """For each GATELAB_THREADS in counts: (out, the recorded gates, and the gradients of a
    loss on them and out with respect to x and every parameter)."""
    results = []
    for threads in counts:
        monkeypatch.setenv("GATELAB_THREADS", threads)
        xs = x.clone().requires_grad_()
        out, _, gates = module(xs, return_gates=True, masks=masks)
        loss = sum((g * g).sum() for g in gates.values()) + out.sum()
        results.append((out, *gates.values(), *torch.autograd.grad(loss, [xs, *module.parameters()])))
    return results


CASES = [
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(proj_size=3, bias=False)),
    ("GRU", dict(num_layers=2, bidirectional=True)),
    ("RNN_TANH", dict(bidirectional=True)),
    ("RNN_RELU", dict()),
]


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize(("dtype", "tol"), [(F64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize(("mode", "kw"), CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES)])
def test_split_equals_torch_nn(split, mode, kw, dtype, tol, packed):
    ref, ours = _pair(mode, dtype, input_size=5, hidden_size=6, **kw)
    x, lengths, h0 = _inputs(ours, mode, 7, 13, dtype, packed, seed=1)
    results = [_outputs_and_grads(module, x, lengths, h0, mode) for module in (ref, ours)]
    calls, _ = split
    assert calls and all(n > 1 for n in calls)  # the batch really was split
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_split_gates_equal_the_unsplit_run(split, monkeypatch, mode):
    """Recorded gates (and gradients through them) are the blocks' rows, in order."""
    _, ours = _pair(mode, F64, input_size=4, hidden_size=5, bidirectional=True)
    x = torch.randn(6, 11, 4, dtype=F64)
    calls, n = split
    results = _gates_at_thread_counts(ours, x, ("1", n), monkeypatch)  # unsplit first, then split
    assert calls and all(c > 1 for c in calls)
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_split_inference_equals_unsplit(split, monkeypatch):
    _, ours = _pair("LSTM", torch.float32, input_size=4, hidden_size=8, num_layers=2)
    x = torch.randn(5, 16, 4)
    with torch.inference_mode():
        split_out, split_state = ours(x)
    assert split[0]
    monkeypatch.setenv("GATELAB_THREADS", "1")
    with torch.inference_mode():
        out, state = ours(x)
    torch.testing.assert_close(split_out, out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(split_state, state, rtol=1e-6, atol=1e-6)


VARIANTS = [
    ("LSTM", dict(layer_norm=True, peephole=True, zoneout=(0.2, 0.3), recurrent_dropout=0.25)),
    ("LSTM", dict(coupled_gates=True, gate_activation="hard_sigmoid", proj_size=3, zoneout=0.1)),
    ("GRU", dict(layer_norm=True, zoneout=0.2, recurrent_dropout=0.3)),
    ("GRU", dict(reset_after=False, recurrent_dropout=0.3)),
]


@pytest.mark.parametrize("form", ["padded", "packed"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(("mode", "options"), VARIANTS, ids=[f"{m}-{i}" for i, (m, _) in enumerate(VARIANTS)])
def test_split_variants_equal_the_reference(split, mode, options, training, form):
    """Masks are cut into the blocks' rows; the NumPy reference sees the whole batch."""
    options = dict(options)  # the parameter is shared by every case: popping from it would change the next
    kw = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    if "proj_size" in options:
        kw["proj_size"] = options.pop("proj_size")
    module = build(mode, kw, options, "fused", seed=5)
    check_against_reference(module, T=5, B=9, form=form, seed=6, training=training)
    calls, _ = split
    assert calls and all(n > 1 for n in calls)


FAMILY_ROWS = [("LSTM", dict(layer_norm=True, peephole=True)), ("LSTM", dict(proj_size=3, coupled_gates=True)),
               ("GRU", dict(layer_norm=True, cell_activation="softsign")),
               ("GRU", dict(reset_after=False, gate_activation="hard_sigmoid"))]


@pytest.mark.parametrize(("mode", "options"), FAMILY_ROWS, ids=["layer_norm", "proj", "gru-layer_norm", "gru-before"])
def test_split_family_records_the_same_gates(split, monkeypatch, mode, options):
    """The LSTM and GRU families' row blocks (fused_family_rows): recorded gates, and gradients
    through them, out and the final states, as one thread computes them."""
    options = dict(options)  # shared by every case (see test_split_variants_equal_the_reference)
    kw = dict(input_size=4, hidden_size=6, bidirectional=True)
    if "proj_size" in options:
        kw["proj_size"] = options.pop("proj_size")
    ours = build(mode, kw, options, "fused", seed=3)
    x = torch.randn(5, 9, 4, dtype=F64)
    calls, n = split
    results = _gates_at_thread_counts(ours, x, ("1", n), monkeypatch)
    assert calls and all(c > 1 for c in calls)  # the second run did split its rows
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("record", [False, True], ids=["out", "gates"])
@pytest.mark.parametrize(("mode", "options"), [("LSTM", dict(layer_norm=True)), ("GRU", dict(layer_norm=True)),
                                               ("GRU", dict(reset_after=False))], ids=["lstm", "gru", "gru-before"])
def test_split_family_inference_equals_unsplit(split, monkeypatch, record, mode, options):
    """The families' row blocks without autograd (inference_mode): out, the final states and
    the recorded gates as one thread computes them."""
    ours = build(mode, dict(input_size=4, hidden_size=8, num_layers=2), options, "fused", seed=2)
    x = torch.randn(5, 16, 4, dtype=F64)
    results = []
    for threads in (split[1], "1"):
        monkeypatch.setenv("GATELAB_THREADS", threads)
        with torch.inference_mode():
            out, state, *gates = ours(x, return_gates=record) if record else ours(x)
        results.append((out, *state, *(gates[0].values() if record else ())))
    assert split[0] and all(c > 1 for c in split[0])  # the first run split its rows
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_blocks_run_on_torch_openmp_threads_or_a_pool(monkeypatch):
    """torch's libgomp is found on Linux wheels; without it a thread pool runs the blocks,
    with bit for bit the same results (the same blocks, the same arithmetic)."""
    if fused_parallel._torch_openmp() is None:
        pytest.skip("torch here is not built with GNU OpenMP")
    monkeypatch.setenv("GATELAB_THREADS", "2")
    _, ours = _pair("GRU", F64, input_size=3, hidden_size=4)
    x = torch.randn(4, 10, 3, dtype=F64, requires_grad=True)
    results = []
    for gomp in (fused_parallel._torch_openmp(), None):
        monkeypatch.setitem(fused_parallel._pool, "gomp", gomp)
        out, h = ours(x)
        results.append((out, h, *torch.autograd.grad(out.sum() + h.sum(), [x, *ours.parameters()])))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


@pytest.mark.parametrize("gomp", [True, False], ids=["openmp", "pool"])
def test_an_error_in_a_block_reaches_the_caller(monkeypatch, gomp):
    if not gomp:
        monkeypatch.setitem(fused_parallel._pool, "gomp", None)

    def task(j):
        if j == 1:
            raise RuntimeError("block 1 failed")
        return j

    with pytest.raises(RuntimeError, match="block 1 failed"):
        fused_parallel._on_threads(task, 2)
    assert fused_parallel._on_threads(lambda j: j * j, 3) == [0, 1, 4]


@pytest.fixture(params=[2, 3])
def units_split(request, monkeypatch):
    """Force each step's units onto `param` threads for any step size (fused_lstm_units,
    fused_gru_units, fused_lstm_family_units, fused_gru_family_units), their input
    projections in chunks of max(2, 20 // B) steps for any batch (fused_units.chunk_steps:
    B = 5, 7, 12 chunked, the last chunk short where the chunk does not divide T; B <= 3 all
    steps at once)."""
    from gatelab.engines import (fused_gru_family_units, fused_gru_units, fused_lstm_family_units, fused_lstm_units,
                                 fused_units)

    monkeypatch.setenv("GATELAB_THREADS", str(request.param))
    monkeypatch.setattr(fused_units, "MIN_STEP_MACS", 0)
    monkeypatch.setattr(fused_units, "MIN_UNITS", 1)
    monkeypatch.setattr(fused_units, "CHUNK_ROWS", 20)
    monkeypatch.setattr(fused_units, "MIN_CHUNK_BATCH", 1)
    calls = []
    real = fused_parallel.team

    def counting(fn, n, **kw):
        calls.append(n)
        return real(fn, n, **kw)

    monkeypatch.setattr(fused_lstm_units, "team", counting)
    monkeypatch.setattr(fused_gru_units, "team", counting)
    monkeypatch.setattr(fused_lstm_family_units, "team", counting)
    monkeypatch.setattr(fused_gru_family_units, "team", counting)
    return calls, str(request.param)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize(("dtype", "tol"), [(F64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("B", [1, 3, 7, 12])
@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_units_split_equals_torch_nn(units_split, mode, B, dtype, tol, packed, bidirectional):
    """The plain LSTM's and GRU's units split between threads, for any batch (B = 12 would
    otherwise take row blocks)."""
    ref, ours = _pair(mode, dtype, input_size=5, hidden_size=7, num_layers=2, bidirectional=bidirectional)
    x, lengths, h0 = _inputs(ours, mode, 6, B, dtype, packed, seed=B)
    results = [_outputs_and_grads(module, x, lengths, h0, mode) for module in (ref, ours)]
    calls, n = units_split
    assert calls and all(c == int(n) for c in calls)  # forward and backward ran on threads
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_units_split_records_the_same_gates(units_split, monkeypatch, mode):
    _, ours = _pair(mode, F64, input_size=4, hidden_size=9, bidirectional=True)
    x = torch.randn(5, 2, 4, dtype=F64)
    calls, n = units_split
    results = _gates_at_thread_counts(ours, x, ("1", n), monkeypatch)
    assert calls and all(c == int(n) for c in calls)  # the second run did split its units
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_rows", [8, 12, 20, 100], ids=["2-step", "3-step", "5-step", "all"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize(("dtype", "tol"), [(F64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_units_split_projects_its_inputs_in_chunks(units_split, monkeypatch, mode, dtype, tol, packed, chunk_rows):
    """Each thread forms its input projection a chunk of steps at a time inside the loop
    (fused_units.project_chunk): chunks of 2, 3 and 5 steps over T = 21 (the last one
    short; float32: at least 4 chunks, so that W_ih runs packed), or all 21 at once, both
    directions, rows that end or start inside a chunk (packed), against torch.nn."""
    from gatelab.engines import fused_gru_units, fused_lstm_units, fused_units

    monkeypatch.setattr(fused_units, "CHUNK_ROWS", chunk_rows)  # (units_split sets MIN_CHUNK_BATCH = 1)
    chunks = []
    loops = fused_lstm_units if mode == "LSTM" else fused_gru_units

    def counting(S, B):
        chunks.append(fused_units.chunk_steps(S, B))
        return chunks[-1]

    monkeypatch.setattr(loops, "chunk_steps", counting)
    ref, ours = _pair(mode, dtype, input_size=5, hidden_size=7, num_layers=2, bidirectional=True)
    x, lengths, h0 = _inputs(ours, mode, 21, 4, dtype, packed, seed=chunk_rows)
    results = [_outputs_and_grads(module, x, lengths, h0, mode) for module in (ref, ours)]
    assert chunks and set(chunks) == {min(21, chunk_rows // 4)}
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)


@pytest.mark.parametrize(("mode", "options"), [("LSTM", {}), ("GRU", {}), ("LSTM", dict(peephole=True)),
                                               ("GRU", dict(gate_activation="hard_sigmoid"))])
def test_units_split_multiplies_dx_by_w_ih_packed(units_split, monkeypatch, mode, options):
    """δX = δA W_ih runs on the packed kernel (float32): each thread packs its share of W_ih's
    panels before its backward loop and then reads all of them, in blocks of DX_ROWS = 48 of
    its rows (T*B = 252 here: 126 or 84 rows a thread, so several blocks and a short one).
    Against one thread, which multiplies through OpenBLAS (outputs, gates and every
    gradient, float32's 1e-5), and the plain cells against torch.nn too."""
    from gatelab.engines import (fused_gru_family_units, fused_gru_units, fused_lstm_family_units, fused_lstm_units,
                                 fused_units)

    packs = []

    def recording(*args):
        bp = fused_units.dx_panels(*args)
        packs.append(bp.shape)
        return bp

    for module in (fused_lstm_units, fused_gru_units, fused_lstm_family_units, fused_gru_family_units):
        monkeypatch.setattr(module, "dx_panels", recording)
    torch.manual_seed(6)
    kw = dict(input_size=37, hidden_size=20)
    ours = build(mode, kw, options, "fused", seed=6, dtype=torch.float32)
    x = torch.randn(21, 12, 37)
    calls, n = units_split
    one, split = _gates_at_thread_counts(ours, x, ("1", n), monkeypatch)
    assert calls and all(c == int(n) for c in calls)  # the second run did split its units
    G = 4 if mode == "LSTM" else 3
    assert packs and all(p == (3, G * 20, 16) for p in packs)  # W_ih (G*H, 37) packed: 3 panels, the last cut
    for a, b in zip(one, split):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    if not options:
        ref = getattr(torch.nn, mode)(37, 20)
        ref.load_state_dict(ours.state_dict())
        x, lengths, h0 = _inputs(ours, mode, 21, 12, torch.float32, False, seed=6)
        for a, b in zip(*(_outputs_and_grads(module, x, lengths, h0, mode) for module in (ref, ours))):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_chunk_steps():
    from gatelab.engines.fused_units import chunk_steps

    assert [chunk_steps(100, B) for B in (1, 7, 8, 16, 32, 64, 256)] == [100, 100, 8, 4, 2, 2, 2]
    assert chunk_steps(3, 8) == 3 and chunk_steps(1, 64) == 1


def test_units_split_with_a_smaller_team(monkeypatch):
    """OpenMP may give fewer threads than asked (inside another parallel region): every
    unit is still computed, by the threads there are."""
    from gatelab.engines import fused_lstm_units, fused_units

    monkeypatch.setenv("GATELAB_THREADS", "4")
    monkeypatch.setattr(fused_units, "MIN_STEP_MACS", 0)
    monkeypatch.setattr(fused_units, "MIN_UNITS", 1)
    monkeypatch.setattr(fused_lstm_units, "team", lambda fn, n, **kw: fused_parallel.team(fn, min(n, 2), **kw))
    ref, ours = _pair("LSTM", F64, input_size=3, hidden_size=5)
    x = torch.randn(4, 1, 3, dtype=F64, requires_grad=True)
    out, (h, c) = ours(x)
    want, (h_ref, c_ref) = ref(x)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(out.sum() + c.sum(), [x, *ours.parameters()])
    ref_grads = torch.autograd.grad(want.sum() + c_ref.sum(), [x, *ref.parameters()])
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


UNIT_VARIANTS = [  # every variant but layer_norm (LSTM: and projection; GRU: and reset before) splits its units
    ("LSTM", dict(peephole=True, zoneout=(0.2, 0.3), recurrent_dropout=0.25, weight_drop=0.3)),
    ("LSTM", dict(coupled_gates=True, gate_activation="hard_sigmoid", cell_activation="softsign", zoneout=0.1)),
    ("LSTM", dict(remove={"output_gate", "candidate_activation"}, forget_bias=1.0, recurrent_dropout=0.5)),
    ("LSTM", dict(remove={"forget_gate", "input_gate", "output_activation"}, zoneout=(0.0, 0.4))),
    ("LSTM", dict(peephole=True, remove={"input_gate", "output_activation"})),  # no mask: h = m, written by the pass
    ("LSTM", dict(remove={"forget_gate"}, zoneout=0.2)),  # products over two spans of blocks (i | g o)
    ("GRU", dict(zoneout=0.3, recurrent_dropout=0.25, weight_drop=0.3)),
    ("GRU", dict(gate_activation="hard_sigmoid", cell_activation="softsign", zoneout=0.1)),
]


@pytest.mark.parametrize("form", ["padded", "packed", "unbatched"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    ("mode", "options"), UNIT_VARIANTS, ids=[f"{m}-{i}" for i, (m, _) in enumerate(UNIT_VARIANTS)]
)
def test_units_split_variants_equal_the_reference(units_split, mode, options, training, form):
    """The LSTM and GRU families with their units split, against the NumPy reference
    (float64, 1e-10)."""
    module = build(mode, dict(input_size=3, hidden_size=7, num_layers=2, bidirectional=True), dict(options),
                   "fused", seed=5)
    B = 1 if form == "unbatched" else 5
    check_against_reference(module, T=6, B=B, form=form, seed=7, training=training)
    calls, n = units_split
    assert calls and all(c == int(n) for c in calls)  # forward and backward ran on threads


@pytest.mark.parametrize(("mode", "options"), [
    ("LSTM", dict(peephole=True, zoneout=(0.1, 0.2), recurrent_dropout=0.2)),
    ("LSTM", dict(coupled_gates=True, peephole=True)),
    ("GRU", dict(zoneout=0.2, recurrent_dropout=0.2)),
])
def test_units_split_variant_records_the_same_gates(units_split, monkeypatch, mode, options):
    torch.manual_seed(3)
    ours = build(mode, dict(input_size=4, hidden_size=9, bidirectional=True), options, "fused", seed=3)
    x = torch.randn(5, 3, 4, dtype=F64)
    calls, n = units_split
    results = _gates_at_thread_counts(ours, x, ("1", n), monkeypatch, masks=ours.draw_masks(5, 3))
    assert calls and all(c == int(n) for c in calls)  # the second run did split its units
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("options", [dict(remove={"forget_gate"}), dict(remove={"output_gate", "forget_gate"}),
                                     dict(coupled_gates=True, peephole=True), dict(remove={"input_gate"})],
                         ids=["f", "f+o", "coupled", "i"])
def test_units_split_leaves_unused_gates_out_of_the_products(units_split, monkeypatch, options):
    """A gate the variant never reads (removed, or i with coupled gates) is left out of every
    product of the units split. float32, so that the step products run packed (T >= 4,
    B >= 2), and the input projections too (units_split's chunks of 4 steps, at least 4 of
    them): against the float64 results of the same weights, the split is as close as one
    thread, which forms all four blocks (float32 rounding alone: ~1e-5 on these sums); its
    rows' gradients are exactly zero. (float64 against the reference: UNIT_VARIANTS.)"""
    torch.manual_seed(4)
    kw = dict(input_size=6, hidden_size=40)
    ours = build("LSTM", kw, options, "fused", seed=4, dtype=torch.float32)
    twin = build("LSTM", kw, options, "fused", seed=4)
    twin.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    x = torch.randn(17, 5, 6)
    calls, n = units_split
    want = _gates_at_thread_counts(twin, x.double(), ("1",), monkeypatch)[0]
    one, split = _gates_at_thread_counts(ours, x, ("1", n), monkeypatch)
    assert calls and all(c == int(n) for c in calls)  # the second run did split its units
    for w, a, b in zip(want, one, split):
        err_one, err_split = ((v.double() - w).abs().max().item() for v in (a, b))
        assert err_split <= 2 * err_one + 1e-6, (err_split, err_one)
    names = [name for name, _ in ours.named_parameters()]
    grads = dict(zip(names, split[-len(names):]))  # after out, the gates and δx
    H = kw["hidden_size"]
    unused = [g for g, part in enumerate(("input_gate", "forget_gate", None, "output_gate"))
              if part in options.get("remove", ()) or (g == 0 and options.get("coupled_gates"))]
    for g in unused:
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            assert torch.count_nonzero(grads[name][g * H:(g + 1) * H]) == 0, (name, g)


@pytest.fixture
def filled(monkeypatch):
    """Every units split's forward call (LSTM and GRU families): its draws and, after it, its
    zoneout arrays by name (None where absent)."""
    from gatelab.engines import fused_gru_family_units, fused_lstm_family_units

    seen = []

    def spy_on(module, where):
        real = module.forward

        def spy(*args):
            real(*args)
            masks = args[where]
            arrays = {"zoneout_h": masks[3].copy() if masks[2] else None}
            if len(masks) == 5:  # the LSTM's (has_d, d, has_zh, zh, zc)
                arrays["zoneout_c"] = masks[4].copy()
            seen.append((args[-1].copy(), arrays))

        monkeypatch.setattr(module, "forward", spy)

    spy_on(fused_lstm_family_units, 9)
    spy_on(fused_gru_family_units, 10)
    return seen


CASES_FILLED = [("LSTM", (0.3, 0.0), 0.0), ("LSTM", (0.0, 0.4), 0.0), ("LSTM", (0.2, 0.5), 0.0),
                ("LSTM", (0.2, 0.5), 0.3), ("GRU", 0.3, 0.0), ("GRU", 0.3, 0.2)]


@pytest.mark.parametrize("form", ["padded", "packed", "packed-unsorted"])
@pytest.mark.parametrize(("mode", "zoneout", "dropout"), CASES_FILLED,
                         ids=["h", "c", "h+c", "h+c+dropout", "gru", "gru+dropout"])
def test_units_split_fills_zoneout_masks_as_drawn(units_split, filled, mode, zoneout, dropout, form):
    """In training, a forward without masks= leaves zoneout's masks to the LSTM's and GRU's
    units splits (engines.masks.Deferred: each thread fills its units of each step in its time
    loop). The filled arrays equal draw_masks' under the same seed element for element, and
    so do the outputs and every gradient (with recurrent dropout too, whose δh scaling comes
    before zoneout's share); a reordered (unsorted packed) batch gets them filled first."""
    from torch.nn.utils.rnn import pack_padded_sequence

    module = build(mode, dict(input_size=3, hidden_size=7, num_layers=2, bidirectional=True),
                   dict(zoneout=zoneout, recurrent_dropout=dropout), "fused", seed=5)
    x = torch.randn(6, 5, 3, dtype=F64)
    lengths = [6, 5, 5, 3, 1] if form == "packed" else [3, 6, 1, 5, 5]
    inputs = x if form == "padded" else pack_padded_sequence(x, lengths, enforce_sorted=form == "packed")

    def run(**kw):
        torch.manual_seed(11)
        out, _ = module(inputs, **kw)
        out = out if form == "padded" else out.data
        return out, torch.autograd.grad(out.sum(), list(module.parameters()))

    out_a, grads_a = run()
    deferred, filled[:] = list(filled), []
    torch.manual_seed(11)
    masks = module.draw_masks(6, 5)
    out_b, grads_b = run(masks=masks)
    assert torch.equal(out_a, out_b) and all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
    assert len(deferred) == len(filled) == 4  # every layer-direction split its units
    probabilities = dict(zip(("zoneout_h", "zoneout_c"), zoneout if mode == "LSTM" else (zoneout,)))
    want = [int(p > 0 and form != "packed-unsorted") for p in probabilities.values()]
    order = torch.arange(5) if form != "packed-unsorted" else inputs.sorted_indices  # the engine's rows
    for k, (draws, arrays) in enumerate(deferred):
        assert draws[1:, 0].tolist() == want  # row 0: recurrent_dropout, never left to the engine
        assert not filled[k][0][:, 0].any()  # given masks: nothing left to fill
        for name, p in probabilities.items():
            if p > 0:
                assert torch.equal(torch.from_numpy(arrays[name]), masks[k][name].index_select(1, order))
