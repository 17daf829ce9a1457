"""`gatelab bench`: time gatelab.nn against torch.nn on this machine.

For each cell (LSTM, GRU), shape (T, B, I, H) and kind, one process runs the contenders
round-robin after warm-up, each twice in a row (torch, torch, gatelab, gatelab, gatelab
with return_gates=True, the same again, torch, torch, ...), and reports the median of the
repeats of the second call: the speed-up is torch's over gatelab's and the return_gates
overhead gatelab+gates' over gatelab's, each call timed right after one of its own, as in
a training loop. (The first call of each pair follows the other contender's, whose freed
memory and caches it inherits — torch.nn's training call faults in and frees hundreds of
MB; on the 2-core machine of benchmarks/README.md, busy, the first took 0.87–1.20× the
second, a median of 1.02× for gatelab's and 1.01× for torch.nn's. Those first calls are
timed too; their speed-up is `speedup_alternating` in the JSON, "alt." in the table.)

    inference   forward under torch.inference_mode()
    training    forward + backward of a fixed random projection of the output, with x,
                h0 and every weight requiring grad (the general case of a stacked layer)

FLOPs count the GEMMs only: forward 2·T·B·G·H·(I + H) with G = 4 (LSTM) or 3 (GRU);
training three times that (forward, δx/δh, δW). "of peak" divides by the large-GEMM
GFLOP/s measured in the same run (the better of NumPy/OpenBLAS and torch on 2048³
float32). Threads: torch's intra-op pool and NumPy's OpenBLAS pool, both reported;
`--threads N` sets both.

`--variants` times the LSTM family (issue 7) instead: for each variant, training (forward +
backward) of gatelab.nn.LSTM with that option against the plain fused LSTM at the same
shape, and against the same variant written as a plain PyTorch loop over the steps
(`lstm_loop`: LSTMCell-style per-step F.linear and autograd, the baseline users have when
they write their own cell); then the GRU variants ("gru plain", "gru reset_before", ...)
likewise: gatelab.nn.GRU with the option against the plain fused GRU and against
`gru_loop` (GRUCell-style). Stochastic variants run in training mode and draw their masks
on every call (in all three contenders that have them). The row says which engine ran the
variant (fused, or eager where the fused engine declines it). Each timed call follows an
untimed one of its own (`_round_robin`'s settle): otherwise the plain cell, run right after
the loop, paid for the loop's freed graph and cold caches (up to 1.2 ms at (50,16,64,128)).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

from gatelab.errors import UsageError

SHAPES = [(100, 32, 128, 256), (128, 64, 256, 256), (256, 32, 512, 512), (100, 1, 128, 256),
          (50, 16, 64, 128)]
QUICK_SHAPES = [(20, 4, 16, 32)]
KINDS = ("inference", "training")
CELLS = ("LSTM", "GRU")
GATE_ROWS = {"LSTM": 4, "GRU": 3}
VARIANT_SHAPES = [(100, 32, 128, 256), (50, 16, 64, 128)]
# name -> gatelab.nn.LSTM options; targets (issue 7): ≤ 1.2× the plain fused LSTM
# (layer_norm ≤ 1.5×) and ≥ 2× faster than the loop
VARIANTS = {
    "plain": {},
    "forget_bias": dict(forget_bias=1.0),
    "peephole": dict(peephole=True),
    "coupled_gates": dict(coupled_gates=True),
    "no_forget_gate": dict(no_forget_gate=True),
    "no_input_gate": dict(no_input_gate=True),
    "no_output_gate": dict(no_output_gate=True),
    "no_output_activation": dict(no_output_activation=True),
    "no_candidate_activation": dict(no_candidate_activation=True),
    "hard_sigmoid": dict(gate_activation="hard_sigmoid"),
    "softsign": dict(cell_activation="softsign"),
    "zoneout": dict(zoneout=0.1),
    "recurrent_dropout": dict(recurrent_dropout=0.25),
    "weight_drop": dict(weight_drop=0.5),
    "layer_norm": dict(layer_norm=True),
}
# name -> gatelab.nn.GRU options (the GRU's own options, the LSTM's probabilities); the same
# targets against the plain fused GRU and the GRU loop. Rows after the LSTM's.
GRU_VARIANTS = {
    "gru plain": {},
    "gru reset_before": dict(reset_after=False),
    "gru hard_sigmoid": dict(gate_activation="hard_sigmoid"),
    "gru softsign": dict(cell_activation="softsign"),
    "gru zoneout": dict(zoneout=0.1),
    "gru recurrent_dropout": dict(recurrent_dropout=0.25),
    "gru weight_drop": dict(weight_drop=0.5),
    "gru layer_norm": dict(layer_norm=True),
}
ALL_VARIANTS = {**{k: ("LSTM", v) for k, v in VARIANTS.items()},
                **{k: ("GRU", v) for k, v in GRU_VARIANTS.items()}}  # name -> (cell, options)
TARGET_VS_PLAIN = {"layer_norm": 1.5, "gru layer_norm": 1.5}  # others 1.2
TARGET_VS_LOOP = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cells", default="LSTM,GRU", help="comma-separated: LSTM,GRU")
    parser.add_argument("--shapes", default=None,
                        help="semicolon-separated T,B,I,H shapes (default: the five of issue 4)")
    parser.add_argument("--kinds", default="inference,training",
                        help="comma-separated: inference,training")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per contender (>= 1)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    parser.add_argument("--no-gates", action="store_true", help="skip the return_gates=True runs")
    parser.add_argument("--backend", default="auto", help="gatelab backend (auto|fused|eager)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--threads", type=int, default=None,
                        help="set torch's thread count, which the fused engine follows, and "
                        "OpenBLAS's for the large-GEMM probe (default: leave both)")
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                        help="wall: elapsed time (default); cpu: this thread's CPU time, which "
                             "ignores time lost to other processes on a busy machine (use only "
                             "with --threads 1: other threads' work is not counted)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: one small shape, 3 repeats, 1 warm-up")
    parser.add_argument("--json", default=None, metavar="PATH", help="write every number here")
    parser.add_argument("--variants", nargs="?", const="all", default=None, metavar="NAMES",
                        help="time the LSTM, then the GRU variants (training) against the plain "
                             "fused LSTM / GRU and a PyTorch loop of the variant; optionally a "
                             "comma-separated subset (quote the names with spaces) of: "
                             + ",".join(ALL_VARIANTS))


def _parse_shapes(text):
    try:
        shapes = [tuple(int(v) for v in s.split(",")) for s in text.split(";") if s.strip()]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 4 or min(s) < 1 for s in shapes):
        raise UsageError(f"--shapes wants T,B,I,H;T,B,I,H... of positive ints, got {text!r}")
    return shapes


def machine_info(torch, numpy) -> dict:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    from gatelab.engines import fused_parallel

    import numba

    blas = os.environ.get("GATELAB_BLAS_THREADS", "1")
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "numpy": numpy.__version__, "numba": numba.__version__,
            "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
            "engine_threads": fused_parallel.threads() if blas == "1" else 1,  # row blocks / units
            "openblas_threads_per_engine_thread": int(blas) if blas.isdigit() else blas,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def gemm_peak(torch, numpy, n=2048, repeats=5, clock=time.perf_counter) -> dict:
    """Large-GEMM GFLOP/s (float32, n³) of NumPy/OpenBLAS and of torch, median of repeats."""
    a = numpy.random.default_rng(0).standard_normal((n, n), dtype=numpy.float32)
    out = numpy.empty_like(a)
    ta, tout = torch.from_numpy(a), torch.from_numpy(out)
    runs = {"numpy": lambda: numpy.matmul(a, a, out=out), "torch": lambda: torch.mm(ta, ta, out=tout)}
    times = _round_robin(runs, warmup=1, repeats=repeats, clock=clock)
    return {k: 2 * n ** 3 / statistics.median(v) / 1e9 for k, v in times.items()}


def _round_robin(runs: dict, warmup: int, repeats: int, clock=time.perf_counter, settle=False,
                 firsts: dict | None = None) -> dict:
    """name -> the times of `repeats` calls of each run, interleaved (a, b, c, a, b, ...).
    settle: each timed call right after one of its own (a, a, b, b, ...), so that what the
    run before it leaves behind does not count against it (after the PyTorch loop, a plain
    fused step at (50,16,64,128) took 1.2 ms longer: the freed autograd graph, cold caches).
    firsts (with settle): a dict that receives name -> the times of those first calls, each
    right after the run before it."""
    for f in runs.values():
        for _ in range(warmup):
            f()
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for k, f in runs.items():
            if settle:
                t0 = clock()
                f()
                if firsts is not None:
                    firsts.setdefault(k, []).append(clock() - t0)
            t0 = clock()
            f()
            times[k].append(clock() - t0)
    return times


def _contenders(torch, gnn, cell, shape, kind, backend, dtype, gates):
    """name -> a function running one forward (inference) or forward + backward."""
    T, B, I, H = shape
    gen = torch.Generator().manual_seed(0)
    ref = getattr(torch.nn, cell)(I, H, dtype=dtype)
    ours = getattr(gnn, cell)(I, H, dtype=dtype, backend=backend)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I, generator=gen, dtype=dtype)
    h0 = torch.zeros(1, B, H, dtype=dtype)
    state = (h0, h0.clone()) if cell == "LSTM" else h0
    grad = torch.randn(T, B, H, generator=gen, dtype=dtype)

    def inference(module, **kw):
        def f():
            with torch.inference_mode():
                module(x, state, **kw)
        return f

    def training(module, **kw):
        xg = x.clone().requires_grad_()
        sg = tuple(s.clone().requires_grad_() for s in state) if cell == "LSTM" else state.clone().requires_grad_()

        def f():
            module.zero_grad(set_to_none=True)
            xg.grad = None
            out = module(xg, sg, **kw)[0]
            out.backward(grad)
        return f

    make = inference if kind == "inference" else training
    runs = {"torch": make(ref), "gatelab": make(ours)}
    if gates:
        runs["gatelab+gates"] = make(ours, return_gates=True)
    return runs


def run(args) -> int:
    import numpy
    import torch

    import gatelab.nn as gnn

    cells = [c.strip().upper() for c in args.cells.split(",") if c.strip()]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not cells or any(c not in CELLS for c in cells):
        raise UsageError(f"--cells takes {','.join(CELLS)}, got {args.cells!r}")
    if not kinds or any(k not in KINDS for k in kinds):
        raise UsageError(f"--kinds takes {','.join(KINDS)}, got {args.kinds!r}")
    variants = None
    if args.variants is not None:
        variants = list(ALL_VARIANTS) if args.variants == "all" else [
            " ".join(v.split()) for v in args.variants.split(",") if v.strip()]
        if not variants or any(v not in ALL_VARIANTS for v in variants):
            raise UsageError(f"--variants takes all or a subset of {','.join(ALL_VARIANTS)}, "
                             f"got {args.variants!r}")
    default_shapes = VARIANT_SHAPES if variants else SHAPES
    shapes = QUICK_SHAPES if args.quick and args.shapes is None else (
        _parse_shapes(args.shapes) if args.shapes else default_shapes)
    repeats, warmup = (3, 1) if args.quick else (args.repeats, args.warmup)
    if repeats < 1 or warmup < 0:
        raise UsageError("--repeats must be >= 1 and --warmup >= 0")
    dtype = getattr(torch, args.dtype)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be >= 1")
    threads = torch.get_num_threads() if args.threads is None else args.threads
    if args.clock == "cpu" and threads != 1:
        raise UsageError("--clock cpu counts this thread only: use it with --threads 1")
    from gatelab.engines import _kernels_blas

    blas = _kernels_blas.thread_functions()
    before = (torch.get_num_threads(), blas[0]() if blas else None)
    if args.threads is not None:  # after every check: a refused run changes nothing
        torch.set_num_threads(args.threads)
        if blas:
            blas[1](args.threads)
    try:
        if variants:
            return _run_variants(args, torch, numpy, gnn, clock, repeats, warmup, shapes, variants, dtype)
        return _run(args, torch, numpy, gnn, clock, repeats, warmup, shapes, cells, kinds, dtype)
    finally:  # leave the process's thread pools as they were
        torch.set_num_threads(before[0])
        if blas and before[1]:
            blas[1](before[1])


def _fallbacks() -> int:
    from gatelab.engines import _kernels_sync

    return _kernels_sync.contention_events()


def _note_fallbacks(before: int) -> int:
    """How many times the engine fell back to one thread during the run (its threads waited
    at their barriers: a busy host); says so when it did."""
    n = _fallbacks() - before
    if n:
        print(f"note: the fused engine ran on one thread for a while {n} time(s) during this run: its "
              "threads waited at their barriers (a busy host); times taken then are "
              "not those of an idle machine")
    return n


def _run(args, torch, numpy, gnn, clock, repeats, warmup, shapes, cells, kinds, dtype) -> int:
    fallbacks_before = _fallbacks()
    info = machine_info(torch, numpy)
    peak = gemm_peak(torch, numpy, n=512 if args.quick else 2048, repeats=3 if args.quick else 5,
                     clock=clock)
    best = max(peak.values())
    print(f"gatelab bench: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
          f"({info['torch_threads']} threads), engine threads {info['engine_threads']} "
          f"(OpenBLAS {info['openblas_threads_per_engine_thread']} each), "
          f"numba {info['numba']}; backend={args.backend}, {args.dtype}, {args.clock} clock, "
          f"median of {repeats} after {warmup} warm-up, each timed call after one of its own")
    print("alt.: the speed-up of the calls that each follow the other library's")
    print("large GEMM (float32): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()))
    head = (f"{'cell':5} {'T,B,I,H':>16} {'kind':9} {'torch ms':>9} {'gatelab ms':>10} "
            f"{'speed-up':>8} {'alt.':>5} {'tokens/s':>10} {'GFLOP/s':>8} {'of peak':>7} "
            f"{'gates ms':>9} {'gates +':>7}")
    print(head)
    results = []
    for cell in cells:
        for shape in shapes:
            T, B, I, H = shape
            fwd_flops = 2 * T * B * GATE_ROWS[cell] * H * (I + H)
            for kind in kinds:
                runs = _contenders(torch, gnn, cell, shape, kind, args.backend, dtype,
                                   gates=not args.no_gates)
                firsts = {}
                times = _round_robin(runs, warmup, repeats, clock, settle=True, firsts=firsts)
                med = {k: statistics.median(v) for k, v in times.items()}
                med_first = {k: statistics.median(v) for k, v in firsts.items()}
                flops = fwd_flops * (3 if kind == "training" else 1)
                row = {"cell": cell, "shape": list(shape), "kind": kind, "flops": flops,
                       "times_s": times, "median_s": med,
                       "times_first_s": firsts, "median_first_s": med_first,
                       "speedup": med["torch"] / med["gatelab"],
                       "speedup_alternating": med_first["torch"] / med_first["gatelab"],
                       "tokens_per_s": T * B / med["gatelab"],
                       "gflops": flops / med["gatelab"] / 1e9,
                       "torch_gflops": flops / med["torch"] / 1e9,
                       "fraction_of_peak": flops / med["gatelab"] / 1e9 / best}
                gates = ""
                if "gatelab+gates" in med:  # each after one of its own
                    row["gates_overhead"] = med["gatelab+gates"] / med["gatelab"] - 1
                    gates = f"{med['gatelab+gates'] * 1e3:9.2f} {row['gates_overhead']:+7.0%}"
                results.append(row)
                print(f"{cell:5} {','.join(map(str, shape)):>16} {kind:9} "
                      f"{med['torch'] * 1e3:9.2f} {med['gatelab'] * 1e3:10.2f} "
                      f"{row['speedup']:8.2f} {row['speedup_alternating']:5.2f} "
                      f"{row['tokens_per_s']:10.0f} {row['gflops']:8.1f} "
                      f"{row['fraction_of_peak']:7.0%} {gates}", flush=True)
    fallbacks = _note_fallbacks(fallbacks_before)
    if args.json:
        report = {"machine": info, "gemm_peak_gflops": peak, "backend": args.backend,
                  "clock": args.clock,
                  "dtype": args.dtype, "repeats": repeats, "warmup": warmup,
                  "settled": True,  # each timed call after one of its own
                  "one_thread_fallbacks": fallbacks, "results": results}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    return 0


def lstm_loop(module, x, state, masks=None):
    """The variant of `module` (a one-layer, one-direction gatelab.nn.LSTM) as users write
    it today: a Python loop over the steps, LSTMCell-style (both products per step with
    F.linear), torch ops and autograd; its own parameters. Equations: gatelab.engines,
    "The LSTM family". `masks`: None or module.draw_masks(T, B) (a list of one dict).

    x (T, B, I); state (h0 (B, H), c0 (B, H)). Returns (out (T, B, H), (h_T, c_T)).
    """
    import torch
    import torch.nn.functional as F

    o, H = module.options, module.hidden_size
    p = {k.removesuffix("_l0"): v for k, v in module.named_parameters()}
    m = masks[0] if masks else {}
    w_hh = p["weight_hh"] if "weight_hh" not in m else p["weight_hh"] * m["weight_hh"]  # DropConnect
    d, zh, zc = m.get("recurrent_dropout"), m.get("zoneout_h"), m.get("zoneout_c")
    sigma, phi = _loop_activations(o)
    b_ih, b_hh = p.get("bias_ih"), p.get("bias_hh")
    rm = o.remove
    h, c = state
    outs = []
    for t in range(x.shape[0]):
        h_in = h if d is None else d * h
        if o.layer_norm:
            a = (F.layer_norm(F.linear(x[t], p["weight_ih"]), (4 * H,), p["ln_ih_weight"], p["ln_ih_bias"])
                 + F.layer_norm(F.linear(h_in, w_hh), (4 * H,), p["ln_hh_weight"], p["ln_hh_bias"]))
            a = a if b_ih is None else a + b_ih + b_hh
        else:
            a = F.linear(x[t], p["weight_ih"], b_ih) + F.linear(h_in, w_hh, b_hh)  # (B, 4H)
        a_i, a_f, a_g, a_o = a.chunk(4, 1)
        if o.peephole:
            a_f = a_f + p["weight_ph"][0] * c
            a_i = a_i + p["weight_ph"][1] * c
        f = torch.ones_like(c) if "forget_gate" in rm else sigma(a_f)
        i = 1 - f if o.coupled_gates else torch.ones_like(c) if "input_gate" in rm else sigma(a_i)
        g = a_g if "candidate_activation" in rm else phi(a_g)
        c_new = f * c + i * g
        if o.peephole:
            a_o = a_o + p["weight_ph"][2] * c_new
        og = torch.ones_like(c) if "output_gate" in rm else sigma(a_o)
        c_out = F.layer_norm(c_new, (H,), p["ln_c_weight"], p["ln_c_bias"]) if o.layer_norm else c_new
        h_new = og * (c_out if "output_activation" in rm else phi(c_out))
        c = c_new if zc is None else zc[t] * c + (1 - zc[t]) * c_new
        h = h_new if zh is None else zh[t] * h + (1 - zh[t]) * h_new
        outs.append(h)
    return torch.stack(outs), (h, c)


def _loop_activations(options):
    """(σ, φ) of the loops, as torch ops: sigmoid | hard_sigmoid, tanh | softsign."""
    import torch
    import torch.nn.functional as F

    sigma = torch.sigmoid if options.gate_activation == "sigmoid" else (lambda a: torch.clamp(a / 6 + 0.5, 0, 1))
    phi = torch.tanh if options.cell_activation == "tanh" else F.softsign
    return sigma, phi


def gru_loop(module, x, h0, masks=None):
    """The variant of `module` (a one-layer, one-direction gatelab.nn.GRU) as users write
    it today: a Python loop over the steps, GRUCell-style (the input and the recurrent
    products per step with F.linear), torch ops and autograd; its own parameters.
    Equations: gatelab.engines, "The LSTM family" (GRU rows r|z|n, d the recurrent dropout
    mask, m the zoneout mask, W_hh ⊙ M with weight_drop):

        ax = x_t W_ih^T,  ah = (d ⊙ h_{t-1}) W_hh^T         (layer_norm: LN of each, before the biases)
        r = σ(ax_r + b_ir + ah_r + b_hr),  z = σ(ax_z + b_iz + ah_z + b_hz)
        n = φ(ax_n + b_in + r ⊙ (ah_n + b_hn))               reset after (torch.nn)
        n = φ(ax_n + b_in + (r ⊙ d ⊙ h_{t-1}) W_hn^T + b_hn)  reset_after=False
        h_t = m ⊙ h_{t-1} + (1 - m) ⊙ ((1 - z) ⊙ n + z ⊙ h_{t-1})

    `masks`: None or module.draw_masks(T, B) (a list of one dict).
    x (T, B, I); h0 (B, H). Returns (out (T, B, H), h_T).
    """
    import torch
    import torch.nn.functional as F

    o, H = module.options, module.hidden_size
    p = {k.removesuffix("_l0"): v for k, v in module.named_parameters()}
    m = masks[0] if masks else {}
    w_hh = p["weight_hh"] if "weight_hh" not in m else p["weight_hh"] * m["weight_hh"]  # DropConnect
    d, zh = m.get("recurrent_dropout"), m.get("zoneout_h")
    sigma, phi = _loop_activations(o)
    b_ih, b_hh = p.get("bias_ih"), p.get("bias_hh")
    w_rz, w_n = w_hh[: 2 * H], w_hh[2 * H:]  # reset before: two recurrent products
    b_rz, b_n = (None, None) if b_hh is None else (b_hh[: 2 * H], b_hh[2 * H:])
    h = h0
    outs = []
    for t in range(x.shape[0]):
        h_in = h if d is None else d * h
        if o.layer_norm:  # needs reset_after
            ax = F.layer_norm(F.linear(x[t], p["weight_ih"]), (3 * H,), p["ln_ih_weight"], p["ln_ih_bias"])
            ah = F.layer_norm(F.linear(h_in, w_hh), (3 * H,), p["ln_hh_weight"], p["ln_hh_bias"])
            if b_ih is not None:
                ax, ah = ax + b_ih, ah + b_hh
        else:
            ax = F.linear(x[t], p["weight_ih"], b_ih)  # (B, 3H)
            ah = F.linear(h_in, w_hh, b_hh) if o.reset_after else F.linear(h_in, w_rz, b_rz)  # (B, 3H | 2H)
        x_r, x_z, x_n = ax.chunk(3, 1)
        r = sigma(x_r + ah[:, :H])
        z = sigma(x_z + ah[:, H: 2 * H])
        n = phi(x_n + r * ah[:, 2 * H:]) if o.reset_after else phi(x_n + F.linear(r * h_in, w_n, b_n))
        h_new = (1 - z) * n + z * h
        h = h_new if zh is None else zh[t] * h + (1 - zh[t]) * h_new
        outs.append(h)
    return torch.stack(outs), h


def _variant_contenders(torch, gnn, variant, shape, backend, dtype):
    """name -> forward + backward for the plain fused LSTM (GRU), the variant in gatelab.nn
    and the variant as a PyTorch loop; and the engine that runs the variant."""
    from gatelab import engines

    cell, options = ALL_VARIANTS[variant]
    T, B, I, H = shape
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    cls = getattr(gnn, cell)
    plain = cls(I, H, dtype=dtype, backend="fused")
    ours = cls(I, H, dtype=dtype, backend=backend, **options)
    plain.train()
    ours.train()
    x = torch.randn(T, B, I, generator=gen, dtype=dtype).requires_grad_()
    h0 = torch.zeros(B, H, dtype=dtype).requires_grad_()
    c0 = torch.zeros(B, H, dtype=dtype).requires_grad_()
    grad = torch.randn(T, B, H, generator=gen, dtype=dtype)
    masks = ours.draw_masks(T, B) if ours.options.stochastic else []
    engine = engines.select(backend, ours._cell_spec(0), x, False,
                            {k: None for m in masks for k in m if k != "weight_hh"})
    state = (h0[None], c0[None]) if cell == "LSTM" else h0[None]

    def module_run(module):
        def f():
            module.zero_grad(set_to_none=True)
            x.grad = h0.grad = c0.grad = None
            out = module(x, state)[0]
            out.backward(grad)
        return f

    def loop_run():
        ours.zero_grad(set_to_none=True)
        x.grad = h0.grad = c0.grad = None
        drawn = ours.draw_masks(T, B) if ours.options.stochastic else None
        if cell == "LSTM":
            out, _ = lstm_loop(ours, x, (h0, c0), drawn)
        else:
            out, _ = gru_loop(ours, x, h0, drawn)
        out.backward(grad)

    return {"plain fused": module_run(plain), "gatelab": module_run(ours), "loop": loop_run}, engine.NAME


def _run_variants(args, torch, numpy, gnn, clock, repeats, warmup, shapes, variants, dtype) -> int:
    fallbacks_before = _fallbacks()
    info = machine_info(torch, numpy)
    print(f"gatelab bench --variants: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
          f"({info['torch_threads']} threads), engine threads {info['engine_threads']} "
          f"(OpenBLAS {info['openblas_threads_per_engine_thread']} each), "
          f"numba {info['numba']}; backend={args.backend}, {args.dtype}, {args.clock} clock, "
          f"training (forward + backward), median of {repeats} after {warmup} warm-up")
    print(f"{'variant':24} {'T,B,I,H':>16} {'engine':6} {'plain ms':>9} {'gatelab ms':>10} "
          f"{'x plain':>7} {'loop ms':>9} {'vs loop':>7}  targets")
    results = []
    ordered = [(shape, v) for cell in ("LSTM", "GRU") for shape in shapes
               for v in variants if ALL_VARIANTS[v][0] == cell]  # the LSTM rows, then the GRU's
    for shape, variant in ordered:
        runs, engine = _variant_contenders(torch, gnn, variant, shape, args.backend, dtype)
        times = _round_robin(runs, warmup, repeats, clock, settle=True)  # the plain cell would follow the loop
        med = {k: statistics.median(v) for k, v in times.items()}
        vs_plain = med["gatelab"] / med["plain fused"]
        vs_loop = med["loop"] / med["gatelab"]
        limit = TARGET_VS_PLAIN.get(variant, 1.2)
        ok_plain, ok_loop = vs_plain <= limit, vs_loop >= TARGET_VS_LOOP
        cell, options = ALL_VARIANTS[variant]
        row = {"variant": variant, "cell": cell, "options": dict(options),
               "shape": list(shape), "engine": engine, "times_s": times, "median_s": med,
               "vs_plain": vs_plain, "vs_loop": vs_loop, "target_vs_plain": limit,
               "target_vs_loop": TARGET_VS_LOOP, "meets_vs_plain": ok_plain,
               "meets_vs_loop": ok_loop}
        results.append(row)
        marks = (f"{'ok' if ok_plain else 'MISS'} (≤{limit}x), "
                 f"{'ok' if ok_loop else 'MISS'} (≥{TARGET_VS_LOOP:g}x)")
        print(f"{variant:24} {','.join(map(str, shape)):>16} {engine:6} "
              f"{med['plain fused'] * 1e3:9.2f} {med['gatelab'] * 1e3:10.2f} {vs_plain:7.2f} "
              f"{med['loop'] * 1e3:9.2f} {vs_loop:7.2f}  {marks}", flush=True)
    fallbacks = _note_fallbacks(fallbacks_before)
    if args.json:
        report = {"machine": info, "mode": "variants", "backend": args.backend, "clock": args.clock,
                  "dtype": args.dtype, "repeats": repeats, "warmup": warmup,
                  "settled": True,  # each timed call after one of its own
                  "one_thread_fallbacks": fallbacks, "results": results}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    return 0
