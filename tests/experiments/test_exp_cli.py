"""`gatelab experiment NAME --quick`: every experiment runs, writes its files, and its numbers
hold together (checked against facts that do not come from the experiment's own code)."""

import json
import math

import pytest
import torch

from gatelab.cli import main
from gatelab.data.synthetic import copy_baseline


def _run(tmp_path, name, *extra):
    out = tmp_path / name
    assert main(["experiment", name, "--quick", "--out", str(out), *extra]) == 0
    results = json.loads((out / "results.json").read_text())
    for figure in results["figures"]:
        png = (out / figure).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(png) < 400_000
    assert results["experiment"] == name and results["quick"] is True
    return results


def test_cost_quick(tmp_path):
    results = _run(tmp_path, "cost")
    rows = results["rows"]
    assert {(r["cell"], r["hidden"]) for r in rows} == {(c, h) for c in ("rnn", "gru", "lstm") for h in (8, 16)}
    I = results["recipe"]["input_size"]
    torch_nn = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}
    for r in rows:
        reference = sum(p.numel() for p in torch_nn[r["cell"]](I, r["hidden"]).parameters())
        assert r["params"] == r["params_formula"] == reference
        assert r["param_bytes"] == 4 * reference  # float32
        assert r["forward_us_per_step"] > 0 and r["train_us_per_step"] > 0
        # backward needs at least every hidden state (T·B·H floats); the LSTM its 4 gates too
        units = results["recipe"]["T"] * results["recipe"]["batch"] * r["hidden"] * 4
        lower = {"rnn": 1, "gru": 3, "lstm": 4}[r["cell"]]
        assert lower * units <= r["activation_bytes"] <= 10 * units
    assert results["all_params_match_formula"] is True


def test_adding_quick(tmp_path):
    results = _run(tmp_path, "adding")
    assert results["lengths"] == [20]
    for run in results["runs"]:
        # the test set's variance (what the mean predictor scores) is near 1/6 on 200 sequences
        assert abs(run["baseline_mse"] - 1 / 6) < 0.05
        assert len(run["steps"]) == len(run["test_mse"]) == len(run["frac_close"])
        assert all(0 <= f <= 1 for f in run["frac_close"])
        assert run["final_mse"] == run["test_mse"][-1]


def test_adding_quick_is_reproducible(tmp_path):
    a = _run(tmp_path / "a", "adding", "--seed", "3")
    b = _run(tmp_path / "b", "adding", "--seed", "3")
    assert [r["test_mse"] for r in a["runs"]] == [r["test_mse"] for r in b["runs"]]


def test_copy_quick(tmp_path):
    results = _run(tmp_path, "copy")
    for run in results["runs"]:
        assert math.isclose(run["baseline_ce"], 10 * math.log(8) / (run["delay"] + 20))
        assert run["baseline_ce"] == copy_baseline(run["delay"])
        assert 0 <= run["final_recall_acc"] <= 1 and run["final_ce"] > 0


def test_noise_quick(tmp_path):
    results = _run(tmp_path, "noise")
    runs = {(r["cell"], r["noise"]): r for r in results["runs"]}
    assert set(runs) == {(c, n) for c in ("rnn", "gru", "lstm") for n in (0.0, 1.0)}
    for (cell, _), r in runs.items():
        assert 0 <= r["accuracy"] <= 1
        if cell == "rnn":
            assert r["write_gate_signal"] is None
        else:
            assert 0 < r["write_gate_signal"] < 1 and 0 < r["write_gate_distractor"] < 1


def test_gradient_flow_quick(tmp_path):
    results = _run(tmp_path, "gradient-flow")
    T = results["T"]
    assert set(results["profiles"]["init"]) == {"rnn", "gru", "lstm", "lstm fb=1"}
    assert set(results["profiles"]["trained"]) == {"rnn", "gru", "lstm"}
    for group in results["profiles"].values():
        for g in group.values():
            assert len(g) == T and all(v > 0 for v in g)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["experiment", "nonsense"], "unknown experiment"),
        (["experiment", "noise", "--lengths", "50"], "--lengths does not apply"),
        (["experiment", "adding", "--jobs", "0"], "--jobs must be"),
        (["experiment", "gradient-flow", "--T", "1"], "--T must be"),
    ],
)
def test_usage_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
