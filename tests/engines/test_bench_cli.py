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
    rows = report["results"]
    assert {(r["cell"], r["kind"]) for r in rows} == {
        (c, k) for c in ("LSTM", "GRU") for k in ("inference", "training")}
    for r in rows:
        assert len(r["times_s"]["torch"]) == len(r["times_s"]["gatelab"]) == report["repeats"]
        assert r["speedup"] > 0 and r["gflops"] > 0 and "gates_overhead" in r
        assert f"{r['speedup']:8.2f}" in printed


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
