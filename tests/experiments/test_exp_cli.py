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


# --lstm-option / --gru-option: every experiment that trains or times an LSTM or a GRU passes
# the options to every such model it builds, records them, and names them in its default
# output folder. Tiny recipes keep each run to a few seconds.
TINY = {
    "gradient-flow": ("gradient_flow", "AddingRecipe", dict(hidden=4, batch=8, steps=4, eval_every=2, test_size=20,
                                                            stop_mse=0.0), ["--T", "6"]),
    "adding": ("adding", "AddingRecipe", dict(hidden=4, batch=8, steps=4, eval_every=2, test_size=20, stop_mse=0.0),
               ["--lengths", "6"]),
    "copy": ("copy_memory", "CopyRecipe", dict(hidden=4, batch=8, steps=4, eval_every=2, test_size=20),
             ["--delays", "3"]),
    "noise": ("noise", "NoiseRecipe", dict(T=6, levels=(0.0, 1.0), hidden=4, batch=8, steps=4, test_size=20), []),
    "cost": ("cost", "CostRecipe", dict(hidden_sizes=(4, 8), input_size=3, T=4, batch=2, repeats=1), []),
}


def _tiny(monkeypatch, name):
    """Make `name --quick` tiny; return its extra arguments."""
    import importlib

    module_name, recipe_name, fields, extra = TINY[name]
    module = importlib.import_module(f"gatelab.experiments.{module_name}")
    if recipe_name == "AddingRecipe":
        recipe_module = importlib.import_module("gatelab.experiments.adding_train")
    else:
        recipe_module = module
    monkeypatch.setattr(module, "QUICK_RECIPE", getattr(recipe_module, recipe_name)(**fields))
    return extra


def _spy_modules(monkeypatch):
    """Record (class name, keyword arguments, module) of every gatelab.nn LSTM and GRU built."""
    from gatelab import nn as gnn

    built = []
    for name in ("LSTM", "GRU"):
        cls = getattr(gnn, name)

        def make(*args, _cls=cls, **kwargs):
            module = _cls(*args, **kwargs)
            built.append((_cls.__name__, kwargs, module))
            return module

        monkeypatch.setattr(gnn, name, make)
    return built


@pytest.mark.parametrize("name", list(TINY))
def test_cell_options_reach_every_model(name, tmp_path, monkeypatch):
    extra = _tiny(monkeypatch, name)
    built = _spy_modules(monkeypatch)
    results = _run(tmp_path, name, *extra, "--lstm-option", "peephole=true", "--gru-option", "layer_norm=true",
                   "--gru-option", "gate_activation=hard_sigmoid")
    want = {"LSTM": {"peephole": True}, "GRU": {"layer_norm": True, "gate_activation": "hard_sigmoid"}}
    # every LSTM and GRU the experiment built (trained, measured or timed) got its options
    assert {cls for cls, _, _ in built} == {"LSTM", "GRU"}
    for cls, kwargs, module in built:
        assert kwargs == want[cls], cls
        assert module.options.non_defaults() == want[cls], cls
    assert results["lstm_options"] == want["LSTM"] and results["gru_options"] == want["GRU"]
    records = results.get("runs") or results.get("rows")
    if name == "gradient-flow":
        records = [{"cell": key.split()[1], "module_options": v} for key, v in results["module_options"].items()]
        assert len(records) == 7  # init rnn, gru, lstm, lstm fb=1; trained rnn, gru, lstm
    for record in records:
        assert record["module_options"] == {"rnn": {}, "gru": want["GRU"], "lstm": want["LSTM"]}[record["cell"]]
    if name == "cost":  # the closed form counts what peephole and layer_norm add
        assert results["all_params_match_formula"] is True
        lstm = next(r for r in results["rows"] if r["cell"] == "lstm" and r["hidden"] == 4)
        assert lstm["params"] == sum(p.numel() for p in torch.nn.LSTM(3, 4).parameters()) + 3 * 4


def test_lstm_forget_bias_option_replaces_the_recipes(tmp_path, monkeypatch):
    from gatelab.experiments import models

    extra = _tiny(monkeypatch, "copy")
    built = _spy_modules(monkeypatch)
    overwritten = []
    monkeypatch.setattr(models, "set_forget_bias", lambda lstm, value: overwritten.append(value))
    _run(tmp_path, "copy", *extra, "--lstm-option", "forget_bias=2.5")
    (kwargs,) = [kw for cls, kw, m in built if cls == "LSTM" and m.hidden_size == 4]  # not the options check's
    assert kwargs == {"forget_bias": 2.5} and overwritten == []  # not the recipe's forget bias 1
    monkeypatch.undo()
    built = _spy_modules(monkeypatch)
    _run(tmp_path / "plain", "copy", *_tiny(monkeypatch, "copy"))
    (lstm,) = [m for cls, _, m in built if cls == "LSTM"]
    assert lstm.options.forget_bias is None  # without the option: the recipe's, set after construction


def test_gradient_flow_lstm_fb1_keeps_forget_bias_one(tmp_path, monkeypatch):
    extra = _tiny(monkeypatch, "gradient-flow")
    results = _run(tmp_path, "gradient-flow", *extra, "--lstm-option", "forget_bias=3")
    assert results["module_options"]["init lstm"] == {"forget_bias": 3.0}
    assert results["module_options"]["init lstm fb=1"] == {}  # set to 1 after construction
    assert results["module_options"]["trained lstm"] == {"forget_bias": 3.0}


def test_default_out_names_the_options(tmp_path, monkeypatch):
    from gatelab.experiments.output import options_tag

    _tiny(monkeypatch, "cost")
    monkeypatch.chdir(tmp_path)
    assert main(["experiment", "cost", "--quick"]) == 0
    assert main(["experiment", "cost", "--quick", "--lstm-option", "layer_norm=true"]) == 0
    assert main(["experiment", "cost", "--quick", "--gru-option", "layer_norm=true"]) == 0
    folders = sorted(p.name for p in (tmp_path / "runs" / "experiments").iterdir())
    assert folders == ["cost", "cost--gru-layer_norm=true", "cost--lstm-layer_norm=true"]
    for folder in folders:
        assert (tmp_path / "runs" / "experiments" / folder / "results.json").exists()
    tag = options_tag({"remove": ["output_gate", "input_gate"], "zoneout": 0.1}, {"gate_activation": "a/b c"})
    assert tag == "lstm-remove=output_gate+input_gate,zoneout=0.1--gru-gate_activation=a_b_c"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["experiment", "noise", "--lstm-option", "zoneout=2"], "--lstm-option: zoneout: expected a probability"),
        (["experiment", "copy", "--gru-option", "forget_bias=1"],
         "--gru-option: forget_bias: applies to the LSTM only"),
        (["experiment", "cost", "--gru-option", "bogus=1"], "--gru-option: unknown option 'bogus'"),
        (["experiment", "gradient-flow", "--lstm-option", "layer_norm"], "--lstm-option: expected KEY=VALUE"),
        (["experiment", "adding", "--lstm-option", "remove=nothing"], "--lstm-option: remove: expected parts"),
        (["experiment", "adding", "--gru-option", "layer_norm=yes"],
         "--gru-option: layer_norm: expected True or False"),
        (["experiment", "ablation", "--lstm-option", "layer_norm=true"],
         "--lstm-option does not apply to the ablation"),
        (["experiment", "ablation", "--gru-option", "layer_norm=true"],
         "--gru-option does not apply to the ablation"),
    ],
)
def test_bad_cell_options(argv, message, capsys, tmp_path):
    assert main([*argv, "--quick", "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "never").exists()


def test_long_option_tags_stay_short_and_distinct():
    from gatelab.experiments.output import options_tag

    lstm = {"layer_norm": True, "peephole": True, "recurrent_dropout": 0.1, "weight_drop": 0.1,
            "remove": ["output_gate", "output_activation"]}
    a = options_tag(lstm | {"zoneout": 0.1}, {"layer_norm": True, "zoneout": 0.1})
    b = options_tag(lstm | {"zoneout": 0.2}, {"layer_norm": True, "zoneout": 0.1})
    assert len(a) == len(b) == 120 and a != b
