"""`gatelab bench --quick` runs end to end and writes every number it prints."""

from __future__ import annotations

import json

import pytest

from gatelab.cli import main


def test_bench_quick_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    import torch

    before = torch.get_num_threads()
    assert main(["bench", "--quick", "--threads", "1", "--json", str(path)]) == 0
    assert torch.get_num_threads() == before  # thread pools restored
    printed = capsys.readouterr().out
    report = json.loads(path.read_text())
    assert report["machine"]["cores"] >= 1 and report["machine"]["torch"]
    assert set(report["gemm_peak_gflops"]) == {"numpy", "torch"}
    assert report["one_thread_fallbacks"] == 0 and "note:" not in printed
    assert report["settled"] is True  # each timed call after one of its own
    rows = report["results"]
    assert {(r["cell"], r["kind"]) for r in rows} == {
        (c, k) for c in ("LSTM", "GRU") for k in ("inference", "training")}
    for r in rows:
        for times in (r["times_s"], r["times_first_s"]):
            assert {k: len(v) for k, v in times.items()} == dict.fromkeys(
                ("torch", "gatelab", "gatelab+gates"), report["repeats"])
        assert r["speedup"] > 0 and r["gflops"] > 0
        assert r["speedup"] == r["median_s"]["torch"] / r["median_s"]["gatelab"]
        assert r["speedup_alternating"] == r["median_first_s"]["torch"] / r["median_first_s"]["gatelab"]
        assert r["gates_overhead"] == r["median_s"]["gatelab+gates"] / r["median_s"]["gatelab"] - 1
        assert f"{r['speedup']:8.2f} {r['speedup_alternating']:5.2f}" in printed


def test_bench_times_each_call_after_one_of_its_own(tmp_path, monkeypatch):
    """The order `gatelab bench` runs the contenders in: each twice in a row (torch, torch,
    gatelab, gatelab, gatelab+gates, gatelab+gates, torch, ...); the speed-up and the
    return_gates overhead divide the second calls' medians, `speedup_alternating` the first
    calls' (gatelab's right after torch.nn's, torch.nn's right after gatelab's)."""
    import itertools

    import torch

    import gatelab.nn as gnn
    from gatelab import bench

    assert list(bench._contenders(torch, gnn, "GRU", (3, 2, 4, 5), "training", "auto", torch.float64,
                                  gates=False)) == ["torch", "gatelab"]  # --no-gates
    calls = []
    clock = itertools.count()  # every clock() reads one more second
    cost = {"torch": 4, "gatelab": 2, "gatelab+gates": 3}  # seconds a call takes

    def contender(name):
        def f():
            after_torch = calls[-1:] == ["torch"]
            calls.append(name)
            for _ in range(cost[name] - 1 + (name == "gatelab" and after_torch)):
                next(clock)  # gatelab's call right after torch's takes a second more
        return f

    monkeypatch.setattr(bench, "_contenders", lambda *a, gates: {k: contender(k) for k in cost})
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(bench, "gemm_peak", lambda *a, **k: {"numpy": 1.0, "torch": 1.0})
    path = tmp_path / "order.json"
    assert main(["bench", "--cells", "LSTM", "--kinds", "training", "--shapes", "2,1,2,2",
                 "--repeats", "3", "--warmup", "1", "--json", str(path)]) == 0
    t, g, G = "torch", "gatelab", "gatelab+gates"
    assert calls == [t, g, G] + [t, t, g, g, G, G] * 3
    (row,) = json.loads(path.read_text())["results"]
    assert row["median_s"] == {t: 4, g: 2, G: 3} and row["median_first_s"] == {t: 4, g: 3, G: 3}
    assert row["speedup"] == 2 and row["speedup_alternating"] == 4 / 3
    assert row["gates_overhead"] == 0.5


def test_bench_says_when_the_engine_fell_back_to_one_thread(tmp_path, capsys, monkeypatch):
    """A run during which the engine kept to one thread for a while (its threads waited at
    their barriers) says so, and its JSON counts the fallbacks."""
    from gatelab.engines import _kernels_sync

    events = iter([3, 5])  # before the run, after it
    monkeypatch.setattr(_kernels_sync, "contention_events", lambda: next(events))
    path = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--cells", "GRU", "--kinds", "inference", "--threads", "1",
                 "--json", str(path)]) == 0
    assert "note: the fused engine ran on one thread for a while 2 time(s)" in capsys.readouterr().out
    assert json.loads(path.read_text())["one_thread_fallbacks"] == 2


def test_bench_rejects_bad_shapes(capsys):
    assert main(["bench", "--quick", "--shapes", "1,2,3"]) == 2
    assert "--shapes" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [(["--clock", "cpu", "--threads", "2"], "--threads 1"),
                                           (["--threads", "0"], "--threads must be")])
def test_bench_refuses_bad_thread_options(args, message, capsys):
    import torch

    before = torch.get_num_threads()
    assert main(["bench", "--quick", *args]) == 2
    assert message in capsys.readouterr().err
    assert torch.get_num_threads() == before


def test_bench_variants_quick_writes_json(tmp_path, capsys):
    path = tmp_path / "variants.json"
    assert main(["bench", "--variants", "plain,zoneout,layer_norm", "--quick", "--threads", "1",
                 "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(path.read_text())
    rows = report["results"]
    assert [r["variant"] for r in rows] == ["plain", "zoneout", "layer_norm"]
    for r in rows:
        assert r["engine"] == "fused"
        assert set(r["median_s"]) == {"plain fused", "gatelab", "loop"}
        assert r["vs_plain"] > 0 and r["vs_loop"] > 0
        assert f"{r['vs_loop']:7.2f}" in printed


def test_bench_rejects_unknown_variants(capsys):
    assert main(["bench", "--variants", "plain,nonsense", "--quick"]) == 2
    assert "--variants" in capsys.readouterr().err


@pytest.mark.parametrize("variant", ["peephole", "coupled_gates", "no_output_activation", "hard_sigmoid",
                                     "softsign", "zoneout", "recurrent_dropout", "weight_drop", "layer_norm",
                                     "no_forget_gate", "no_candidate_activation"])
def test_the_loop_baseline_computes_the_variant(variant):
    """The benchmark's PyTorch loop is the same function as gatelab.nn.LSTM with the option
    (float64, the same masks, outputs and final state): the comparison is like for like."""
    import torch

    from gatelab import bench
    import gatelab.nn as gnn

    torch.manual_seed(0)
    module = gnn.LSTM(3, 5, dtype=torch.float64, **bench.VARIANTS[variant])
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    h0, c0 = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    masks = module.draw_masks(6, 2) if module.options.stochastic else None
    out, (h, c) = module(x, (h0[None], c0[None]), masks=masks)
    out_loop, (h_loop, c_loop) = bench.lstm_loop(module, x, (h0, c0), masks)
    for a, b in ((out, out_loop), (h[0], h_loop), (c[0], c_loop)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_bench_gru_variants_quick_writes_json(tmp_path, capsys):
    """The GRU rows come after the LSTM's, whatever order the names are given in."""
    path = tmp_path / "variants.json"
    assert main(["bench", "--variants", "gru plain, gru reset_before,plain,gru  layer_norm", "--quick",
                 "--threads", "1", "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(path.read_text())
    rows = report["results"]
    assert [(r["cell"], r["variant"]) for r in rows] == [
        ("LSTM", "plain"), ("GRU", "gru plain"), ("GRU", "gru reset_before"), ("GRU", "gru layer_norm")]
    assert rows[2]["options"] == {"reset_after": False}
    assert [r["target_vs_plain"] for r in rows] == [1.2, 1.2, 1.2, 1.5]
    for r in rows:
        assert r["engine"] == "fused"
        assert set(r["median_s"]) == {"plain fused", "gatelab", "loop"}
        assert r["vs_plain"] > 0 and r["vs_loop"] > 0
        assert f"{r['variant']:24} " in printed and f"{r['vs_loop']:7.2f}" in printed


GRU_LOOP_CASES = [
    *[(name, {}) for name in ("gru plain", "gru reset_before", "gru hard_sigmoid", "gru softsign", "gru zoneout",
                              "gru recurrent_dropout", "gru weight_drop", "gru layer_norm")],
    # every mask together, in both forms (d inside r ⊙ h_{t-1} under reset before), and no biases
    ("gru reset_before", dict(zoneout=0.3, recurrent_dropout=0.25, weight_drop=0.5, gate_activation="hard_sigmoid")),
    ("gru layer_norm", dict(zoneout=0.3, recurrent_dropout=0.25, weight_drop=0.5, cell_activation="softsign")),
    ("gru reset_before", dict(bias=False, recurrent_dropout=0.25)),
    ("gru layer_norm", dict(bias=False, weight_drop=0.5)),
]


@pytest.mark.parametrize("variant, extra", GRU_LOOP_CASES)
def test_the_gru_loop_baseline_computes_the_variant(variant, extra):
    """The benchmark's PyTorch GRU loop is the same function as gatelab.nn.GRU with the
    option (float64, the same masks, outputs and final state): the comparison is like for like."""
    import torch

    from gatelab import bench
    import gatelab.nn as gnn

    torch.manual_seed(0)
    module = gnn.GRU(3, 5, dtype=torch.float64, **bench.GRU_VARIANTS[variant], **extra)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    h0 = torch.randn(2, 5, dtype=torch.float64)
    masks = module.draw_masks(6, 2) if module.options.stochastic else None
    out, h = module(x, h0[None], masks=masks)
    out_loop, h_loop = bench.gru_loop(module, x, h0, masks)
    for a, b in ((out, out_loop), (h[0], h_loop)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_round_robin_settle_runs_each_timed_call_after_its_own():
    """settle: each timed call right after an untimed one of the same contender, so that
    what the contender before it leaves behind (freed memory, cold caches) is not counted."""
    from gatelab.bench import _round_robin

    calls = []
    runs = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    ticks = iter(range(100))
    firsts = {}
    times = _round_robin(runs, warmup=1, repeats=2, clock=lambda: next(ticks), settle=True, firsts=firsts)
    assert "".join(calls) == "abc" + "aabbcc" * 2
    for timed in (times, firsts):  # the second call of each pair, and the first
        assert {k: len(v) for k, v in timed.items()} == {"a": 2, "b": 2, "c": 2}
        assert all(t == 1 for v in timed.values() for t in v)  # one call inside each timing
    calls.clear()
    _round_robin(runs, warmup=0, repeats=2, clock=lambda: 0)
    assert "".join(calls) == "abcabc"


def test_median_of_runs_reads_settled_runs_and_refuses_to_mix_orders(tmp_path, capsys):
    """benchmarks/median_of_runs.py prints the settled speed-ups against the targets and the
    alternating ones after them, will not combine settled runs with older ones, and names the
    runs during which the engine fell back to one thread (one thread here: a clean run)."""
    import runpy
    from pathlib import Path

    script = runpy.run_path(str(Path(__file__).parents[2] / "benchmarks" / "median_of_runs.py"))
    path = tmp_path / "run.json"
    assert main(["bench", "--quick", "--cells", "LSTM", "--kinds", "training", "--threads", "1",
                 "--json", str(path)]) == 0
    (row,) = json.loads(path.read_text())["results"]
    capsys.readouterr()
    assert script["main"]([str(path), str(path)]) == 0
    printed = capsys.readouterr().out
    assert f"| LSTM training | {row['speedup']:.2f}" in printed
    assert f"| LSTM training | {row['speedup_alternating']:.2f} |" in printed.split("follow the other library")[1]
    old = json.loads(path.read_text())
    del old["settled"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(SystemExit, match="mix two timing orders"):
        script["main"]([str(path), str(tmp_path / "old.json")])
    assert "fell back to one thread" not in printed
    busy = json.loads(path.read_text())
    busy["one_thread_fallbacks"] = 15
    (tmp_path / "busy.json").write_text(json.dumps(busy))
    assert script["main"]([str(path), str(tmp_path / "busy.json")]) == 0
    note = capsys.readouterr().out.splitlines()[0]
    assert "fell back to one thread" in note and f"{tmp_path / 'busy.json'} (15×)" in note
    assert str(path) + " " not in note
