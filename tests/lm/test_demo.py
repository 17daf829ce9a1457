"""`gatelab demo` end to end on a small stand-in for the standard library (3 steps)."""

import pytest

from gatelab.cli import main
from gatelab.data import text as text_module
from gatelab.lm import checkpoint as ckpt


@pytest.fixture
def small_stdlib(tmp_path, monkeypatch, python_text):
    """The default corpus replaced by three small Python files."""
    lib = tmp_path / "Lib"
    lib.mkdir()
    for k in range(3):
        (lib / f"mod{k}.py").write_text(python_text, encoding="utf-8")
    monkeypatch.setattr(text_module, "default_corpus_files", lambda: sorted(lib.glob("*.py")))
    return lib


def test_demo_trains_samples_reports_and_reuses_the_run(small_stdlib, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "3", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "validation bits per character:" in printed and "--- sample" in printed
    sample = (out / "sample.txt").read_text(encoding="utf-8")
    assert sample.startswith("def ") and sample in printed
    html = (out / "report.html").read_text(encoding="utf-8")
    assert '"text": "def ' in html  # the report reads a function of the validation text
    for name in (ckpt.CONFIG, ckpt.MODEL, ckpt.CHECKPOINT, ckpt.METRICS, ckpt.CURVE):
        assert (out / name).exists()
    config = ckpt.read_config(out)
    assert config.corpus["data"] is None and [f["path"] for f in config.corpus["files"]] == [
        "mod0.py", "mod1.py", "mod2.py"]
    model_before = (out / ckpt.MODEL).read_bytes()
    # a second demo continues the finished run: no training, same model, same sample
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    again = capsys.readouterr().out
    assert "continuing" in again and "trained" not in again
    assert (out / ckpt.MODEL).read_bytes() == model_before
    assert (out / "sample.txt").read_text(encoding="utf-8") == sample


def test_demo_refuses_a_folder_that_is_not_its_run(small_stdlib, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    assert main(["demo", "--out", str(out), "--quiet"]) == 2
    assert "not a gatelab run" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
