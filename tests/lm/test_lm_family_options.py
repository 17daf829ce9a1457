"""`gatelab train` with the LSTM-family options: recorded in config.json, applied on rebuild."""

from __future__ import annotations

import json

import pytest

from gatelab.cli import main
from gatelab.lm.checkpoint import read_config
from gatelab.lm.trainer import build_model

from tests.lm.conftest import TINY


def test_layer_norm_zoneout_run_records_and_rebuilds(tmp_path, corpus_file, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(corpus_file), "--out", str(out), *TINY, "--steps", "10",
            "--layer-norm", "--zoneout", "0.1", "--remove", "output_gate"]
    assert main(argv) == 0
    recorded = json.loads((out / "config.json").read_text())["model"]["cell_options"]
    assert recorded == {"layer_norm": True, "zoneout": 0.1, "remove": ["output_gate"]}
    model = build_model(read_config(out))  # what sample/inspect/resume rebuild
    options = model.rnn.options.non_defaults()
    assert options["layer_norm"] is True and options["zoneout"] == (0.1, 0.1)
    assert "output_gate" in options["remove"]
    assert any(name.startswith("ln_ih_weight") for name, _ in model.rnn.named_parameters())
    capsys.readouterr()
    assert main(["sample", str(out), "--length", "20", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out) > 0
    # resuming with a different family option is refused; with the same one, accepted
    assert main(["train", "--out", str(out), "--resume", "--quiet", "--peephole"]) == 2
    assert "LSTM-family" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--quiet", "--layer-norm", "--steps", "12"]) == 0


def test_gru_reset_before_is_recorded(tmp_path, corpus_file):
    out = tmp_path / "gru"
    assert main(["train", "--data", str(corpus_file), "--out", str(out), *TINY, "--steps", "4",
                 "--cell", "gru", "--reset-before"]) == 0
    assert read_config(out).model.cell_options == {"reset_after": False}
    assert build_model(read_config(out)).rnn.options.non_defaults()["reset_after"] is False


@pytest.mark.parametrize("extra, message", [
    (["--zoneout", "1.5"], "zoneout"),
    (["--remove", "forget_gate,nose"], "--remove"),
    (["--gate-activation", "relu"], "gate_activation"),
    (["--cell", "gru", "--peephole"], "peephole"),
])
def test_invalid_option_is_a_one_line_error(tmp_path, corpus_file, capsys, extra, message):
    out = tmp_path / "bad"
    assert main(["train", "--data", str(corpus_file), "--out", str(out), *TINY, "--steps", "2", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("gatelab train: error:")
    assert not out.exists()


def test_nproc_relaunch_passes_the_family_flags_on():
    import argparse

    from gatelab.family_cli import family_options
    from gatelab.lm import train_cmd

    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    argv = ["--forget-bias", "2.0", "--peephole", "--remove", "input_gate,forget_gate",
            "--gate-activation", "hard_sigmoid", "--weight-drop", "0.25", "--recurrent-dropout", "0.1"]
    first = parser.parse_args(argv)
    again = parser.parse_args(train_cmd.to_argv(first))
    assert family_options(again) == family_options(first) == {
        "forget_bias": 2.0, "peephole": True, "remove": ["forget_gate", "input_gate"],
        "gate_activation": "hard_sigmoid", "weight_drop": 0.25, "recurrent_dropout": 0.1}
