"""`gatelab experiment ablation --quick` and `--lstm-option`: every variant trains with its own
gatelab.nn options, results and figure are written; a bad option is a one-line exit 2."""

import json
import math

from gatelab.cli import main

# what each variant must switch on in the built module (docs/variants.md names)
EXPECTED = {
    "plain": {},
    "no_forget_gate": {"remove": ["forget_gate"]},
    "no_input_gate": {"remove": ["input_gate"]},
    "no_output_gate": {"remove": ["output_gate"]},
    "no_output_activation": {"remove": ["output_activation"]},
    "no_candidate_activation": {"remove": ["candidate_activation"]},
    "coupled_gates": {"coupled_gates": True},
    "peephole": {"peephole": True},
    "hard_sigmoid": {"gate_activation": "hard_sigmoid"},
    "layer_norm": {"layer_norm": True},
}


def test_ablation_quick(tmp_path):
    out = tmp_path / "ablation"
    assert main(["experiment", "ablation", "--quick", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["experiment"] == "ablation" and results["quick"] is True
    png = (out / "ablation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert set(results["summary"]) == set(EXPECTED)
    for variant, row in results["summary"].items():
        assert all(math.isfinite(row[k]) for k in ("adding_test_mse", "adding_mse_vs_plain",
                                                   "text_val_bpc", "text_bpc_minus_plain")), variant
        assert row["adding_test_mse"] > 0 and row["text_val_bpc"] > 0
    assert results["summary"]["plain"]["adding_mse_vs_plain"] == 1.0
    assert results["summary"]["plain"]["text_bpc_minus_plain"] == 0.0
    runs = {(r["task"], r["variant"]): r for r in results["runs"]}
    assert len(runs) == 2 * len(EXPECTED)
    for (task, variant), r in runs.items():
        assert r["module_options"] == EXPECTED[variant], (task, variant)
    # the same seed and data: a variant that changes the computation changes the score
    for variant in ("no_forget_gate", "no_output_activation", "layer_norm"):
        assert results["summary"][variant]["text_val_bpc"] != results["summary"]["plain"]["text_val_bpc"]


def test_adding_with_lstm_options(tmp_path, capsys):
    out = tmp_path / "adding"
    argv = ["experiment", "adding", "--quick", "--out", str(out), "--lengths", "8",
            "--lstm-option", "layer_norm=true", "--lstm-option", "zoneout=0.1"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["lstm_options"] == {"layer_norm": True, "zoneout": 0.1} and results["gru_options"] == {}
    lstm = next(r for r in results["runs"] if r["cell"] == "lstm")
    assert dict(map(tuple, lstm["recipe"]["lstm_options"])) == {"layer_norm": True, "zoneout": 0.1}
    gru = next(r for r in results["runs"] if r["cell"] == "gru")
    assert math.isfinite(gru["final_mse"]) and math.isfinite(lstm["final_mse"])
    capsys.readouterr()
    assert main(["experiment", "adding", "--quick", "--out", str(out), "--lstm-option", "zoneout=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "zoneout" in err
    assert main(["experiment", "ablation", "--quick", "--out", str(out), "--lstm-option", "layer_norm=true"]) == 2
    assert "does not apply to the ablation experiment" in capsys.readouterr().err
