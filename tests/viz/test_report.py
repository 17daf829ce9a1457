"""The report's data: exact values, h from the equations, no network, and `gatelab inspect` errors."""

import base64
import json
import re

import numpy as np
import pytest
import torch

from gatelab.cli import main
from gatelab.lm import checkpoint as ckpt
from gatelab.viz.activations import record
from gatelab.viz.report import render, report_data


def _page_data(html: str) -> dict:
    payload = re.search(r'<script id="data" type="application/json">(.*?)</script>', html, re.S).group(1)
    return json.loads(payload)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_recorded_h_is_the_modules_output(tmp_path, py_text, make_run, cell):
    run, model = ckpt.load_run(make_run(tmp_path, cell=cell))
    acts = record(model, run.vocab, py_text)
    ids = torch.tensor([run.vocab.index(ch) for ch in py_text]).view(-1, 1)  # (T, 1)
    with torch.no_grad():
        out, _ = model.rnn(model.embed(ids))  # (T, 1, H), the last layer
    np.testing.assert_allclose(acts.values["h"][-1], out[:, 0].numpy(), rtol=0, atol=1e-6)
    if cell == "lstm":  # the lower layer's h against the equation h = o ⊙ tanh(c)
        v = acts.values
        np.testing.assert_allclose(v["h"][0], v["o"][0] * np.tanh(v["c"][0]), rtol=0, atol=1e-6)
    if cell == "gru":  # h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}, from h_0 = 0
        z, n, h = (acts.values[k][0].astype(np.float64) for k in "znh")
        prev = np.vstack([np.zeros((1, h.shape[1])), h[:-1]])
        np.testing.assert_allclose(h, (1 - z) * n + z * prev, rtol=0, atol=1e-6)
    assert set(acts.values) == {"lstm": set("figoch"), "gru": set("rznh"), "rnn": {"h"}}[cell]
    L, T, H = acts.shape
    assert (L, T, H) == (2, len(py_text), 12)
    assert 0 < acts.probs[1:].min() and acts.probs.max() < 1 and acts.probs[0] == 0


def test_page_carries_exact_values_and_cannot_be_broken_by_the_text(tmp_path, run_dir):
    run, model = ckpt.load_run(run_dir)
    text = 'print("</script><script>alert(1)</script>")\n'
    text = "".join(ch for ch in text if ch in run.vocab)
    acts = record(model, run.vocab, text)
    html = render(report_data(acts, title="t", subtitle="s"))
    assert html.count("</script>") == 2  # the data block's and the code's, nothing from the text
    data = _page_data(html)
    assert data["text"] == text
    values = np.frombuffer(base64.b64decode(data["values"]), dtype="<f4").reshape(6, 2, len(text), 12)
    for k, q in enumerate(acts.quantities):
        assert np.array_equal(values[k], acts.values[q])


def test_inspect_writes_a_self_contained_page(run_dir, py_text, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["inspect", str(run_dir), "--text", py_text, "--out", str(out)]) == 0
    assert "report:" in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    code = html.split('<script id="data"')[0] + html.split("</script>", 1)[1]  # the page minus its data
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", code)
    assert "http://" not in code and "https://" not in code and "@import" not in code
    data = _page_data(html)
    assert data["curve"].startswith("data:image/png;base64,")
    assert {r["feature"] for r in data["top"]} >= {"in_string", "bracket_depth", "indentation"}
    assert (tmp_path / "report-curve.png").read_bytes()[:4] == b"\x89PNG"


def _fails(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_inspect_bad_inputs(run_dir, tmp_path, capsys):
    out = tmp_path / "r.html"
    out.write_text("keep me", encoding="utf-8")
    _fails(capsys, ["inspect", str(run_dir), "--text", "path = ½", "--out", str(out)], "'½'")
    _fails(capsys, ["inspect", str(run_dir), "--text", "", "--out", str(out)], "empty")
    _fails(capsys, ["inspect", str(run_dir), "--file", str(tmp_path / "nope.py"), "--out", str(out)],
           "no such file")
    bad = tmp_path / "bad.py"
    bad.write_bytes(b"x = '\xff'\n")
    _fails(capsys, ["inspect", str(run_dir), "--file", str(bad), "--out", str(out)], "not UTF-8")
    _fails(capsys, ["inspect", str(tmp_path / "norun"), "--text", "x", "--out", str(out)], "no such run")
    assert out.read_text(encoding="utf-8") == "keep me"
