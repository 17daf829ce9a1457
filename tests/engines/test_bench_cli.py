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
    rows = report["results"]
    assert {(r["cell"], r["kind"]) for r in rows} == {
        (c, k) for c in ("LSTM", "GRU") for k in ("inference", "training")}
    for r in rows:
        assert len(r["times_s"]["torch"]) == len(r["times_s"]["gatelab"]) == report["repeats"]
        assert r["speedup"] > 0 and r["gflops"] > 0
        assert r["speedup"] == r["median_s"]["torch"] / r["median_s"]["gatelab"]
        assert r["gates_overhead"] == r["median_s"]["gatelab+gates"] / r["median_s"]["gatelab again"] - 1
        assert f"{r['speedup']:8.2f}" in printed


@pytest.mark.parametrize("kind", ["inference", "training"])
def test_bench_times_gates_against_gatelab_after_gatelab(kind):
    """The round-robin order: torch, gatelab (after torch's call), gatelab+gates, and the
    plain gatelab call again (after gatelab+gates'), the return_gates overhead's baseline:
    both calls of that ratio follow a gatelab call, not torch's."""
    import torch

    import gatelab.nn as gnn
    from gatelab.bench import _contenders

    runs = _contenders(torch, gnn, "LSTM", (3, 2, 4, 5), kind, "auto", torch.float64, gates=True)
    assert list(runs) == ["torch", "gatelab", "gatelab+gates", "gatelab again"]
    assert runs["gatelab again"] is runs["gatelab"]
    assert list(_contenders(torch, gnn, "GRU", (3, 2, 4, 5), kind, "auto", torch.float64, gates=False)) == [
        "torch", "gatelab"]


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
    times = _round_robin(runs, warmup=1, repeats=2, clock=lambda: next(ticks), settle=True)
    assert "".join(calls) == "abc" + "aabbcc" * 2
    assert {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2, "c": 2}
    assert all(t == 1 for v in times.values() for t in v)  # one call inside each timing
    calls.clear()
    _round_robin(runs, warmup=0, repeats=2, clock=lambda: 0)
    assert "".join(calls) == "abcabc"
