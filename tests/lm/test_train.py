"""`gatelab train`: a short run learns; kill and resume equals an uninterrupted run; bad input
fails with one line and leaves what exists untouched."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gatelab.cli import main
from gatelab.lm import checkpoint as ckpt

TINY = ["--embed-size", "8", "--hidden-size", "24", "--seq-len", "16", "--batch-size", "8",
        "--log-every", "5", "--eval-every", "10", "--eval-chars", "2000", "--quiet"]


def _train(out, data, *extra):
    return main(["train", "--data", str(data), "--out", str(out), *TINY, *extra])


def _tensors(run):
    """Every tensor of the run's checkpoint: model, optimizer, carried state."""
    return load_file(str(Path(run) / ckpt.CHECKPOINT))


def _assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture
def one_thread():
    """Identical float results need identical thread counts in every run being compared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _regular_python(n_lines: int) -> str:
    """Python-looking lines with a simple structure a tiny model learns in a few dozen steps."""
    return "".join(f"value_{k % 7} = value_{(3 * k) % 7} + {k % 5}\n" for k in range(n_lines))


def test_short_run_lowers_validation_bpc(tmp_path, capsys):
    data = tmp_path / "regular.py"
    data.write_text(_regular_python(600), encoding="utf-8")
    out = tmp_path / "run"
    assert _train(out, data, "--steps", "50", "--lr", "3e-2", "--warmup-steps", "5") == 0
    printed = capsys.readouterr().out
    records = [json.loads(line) for line in (out / ckpt.METRICS).read_text().splitlines()]
    val = [r["val_bpc"] for r in records if "val_bpc" in r]
    final = records[-1]
    assert final["final"] and final["step"] == 50
    assert val[0] > final["val_bpc"] + 0.5  # learned after the first estimate
    assert final["val_bpc"] < final["unigram_bits"] - 0.5  # beats the character frequencies
    assert f"{final['val_bpc']:.3f} bits per character" in printed
    config = json.loads((out / ckpt.CONFIG).read_text())
    assert config["corpus"]["files"][0]["path"] == "regular.py"
    assert config["train"]["steps"] == 50 and config["gatelab_version"]
    for name in (ckpt.CONFIG, ckpt.MODEL, ckpt.CHECKPOINT, ckpt.METRICS, ckpt.CURVE):
        assert (out / name).stat().st_size > 0
    assert (out / ckpt.CURVE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


KILLER = """
import os, signal, sys
import torch
torch.set_num_threads(1)
from gatelab.lm import trainer
real_train = trainer.train
def killed_at_step_25(*args, **kwargs):
    kwargs["on_step"] = lambda step: step == 25 and os.kill(os.getpid(), signal.SIGKILL)
    return real_train(*args, **kwargs)
trainer.train = killed_at_step_25
from gatelab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, corpus_file, one_thread):
    args = ["--steps", "40", "--checkpoint-every", "10"]
    assert _train(tmp_path / "straight", corpus_file, *args) == 0
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-c", KILLER, "train", "--data", str(corpus_file), "--out", str(killed),
           *TINY, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    step, _, _ = ckpt.load_checkpoint(killed, *_fresh(killed))
    assert step == 20  # the last checkpoint before the kill at 25
    assert main(["train", "--out", str(killed), "--resume", "--quiet"]) == 0
    _assert_same_tensors(_tensors(tmp_path / "straight"), _tensors(killed))
    straight = [json.loads(l) for l in (tmp_path / "straight" / ckpt.METRICS).read_text().splitlines()]
    resumed = [json.loads(l) for l in (killed / ckpt.METRICS).read_text().splitlines()]
    key = ("step", "train_bpc", "val_bpc", "lr")
    assert [{k: r.get(k) for k in key} for r in straight] == [{k: r.get(k) for k in key} for r in resumed]


def _fresh(run_dir):
    from gatelab.lm.trainer import build_model, make_optimizer

    run = ckpt.read_config(run_dir)
    model = build_model(run)
    return model, make_optimizer(model, run.train)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_interrupted_tbptt_dropout_run_resumes_exactly(tmp_path, corpus_file, one_thread, cell):
    """Carried state and dropout masks survive an interruption too."""
    from gatelab.lm import trainer
    from gatelab.lm.train_cmd import new_run_config
    from gatelab.data.text import load_corpus
    import argparse

    from gatelab.lm.train_cmd import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", str(corpus_file), *TINY, "--steps", "30", "--tbptt",
                              "--dropout", "0.2", "--layers", "2", "--cell", cell,
                              "--checkpoint-every", "10"])
    corpus = load_corpus(corpus_file)
    for name in ("straight", "stopped"):
        (tmp_path / name).mkdir()
    trainer.train(new_run_config(args, corpus), corpus, tmp_path / "straight", progress=False,
                  echo=lambda *a: None)

    def stop_at_17(step):
        if step == 17:
            raise _Stop

    with pytest.raises(_Stop):
        trainer.train(new_run_config(args, corpus), corpus, tmp_path / "stopped", progress=False,
                      echo=lambda *a: None, on_step=stop_at_17)
    trainer.train(ckpt.read_config(tmp_path / "stopped"), corpus, tmp_path / "stopped", resume=True,
                  progress=False, echo=lambda *a: None)
    _assert_same_tensors(_tensors(tmp_path / "straight"), _tensors(tmp_path / "stopped"))
    assert "carry.0" in _tensors(tmp_path / "stopped")


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir()}


def _fails(capsys, argv, message):
    """Run the command line; assert exit 2 and a one-line error naming the problem."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    return err


def test_bad_inputs_fail_with_one_line_and_touch_nothing(tmp_path, corpus_file, capsys):
    out = tmp_path / "run"
    assert _train(out, corpus_file, "--steps", "10") == 0
    capsys.readouterr()
    before = _snapshot(out)
    # an existing run is never overwritten without --resume
    _fails(capsys, ["train", "--data", str(corpus_file), "--out", str(out), *TINY], "already exists")
    # a resume cannot change the model
    _fails(capsys, ["train", "--out", str(out), "--resume", "--hidden-size", "32"], "--hidden-size")
    # nor the data
    other = tmp_path / "other.txt"
    other.write_text("x = 1\n" * 500, encoding="utf-8")
    _fails(capsys, ["train", "--out", str(out), "--resume", "--data", str(other)], "differs")
    assert _snapshot(out) == before
    # a corrupt checkpoint
    (out / ckpt.CHECKPOINT).write_bytes(before[ckpt.CHECKPOINT][:100])
    _fails(capsys, ["train", "--out", str(out), "--resume", "--steps", "20"], "corrupt")
    # nothing to resume
    _fails(capsys, ["train", "--out", str(tmp_path / "none"), "--resume"], "no such run folder")


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"", "empty"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary"),
    ("café".encode("latin-1"), "not UTF-8"),
    (b"x = 1\n" * 3, "too short"),
])
def test_bad_data_writes_nothing(tmp_path, capsys, content, message):
    data = tmp_path / "data.txt"
    if content is not None:
        data.write_bytes(content)
    out = tmp_path / "run"
    _fails(capsys, ["train", "--data", str(data), "--out", str(out), *TINY], message)
    assert not out.exists()


def test_resume_before_the_first_checkpoint_starts_over(tmp_path, corpus_file, capsys):
    from gatelab.lm import trainer

    real_train = trainer.train

    def stop_at_3(*args, **kwargs):
        def on_step(step):
            if step == 3:
                raise _Stop
        return real_train(*args, **kwargs, on_step=on_step)

    out = tmp_path / "run"
    trainer.train = stop_at_3
    try:
        with pytest.raises(_Stop):
            _train(out, corpus_file, "--steps", "12", "--checkpoint-every", "10")
    finally:
        trainer.train = real_train
    assert (out / ckpt.CONFIG).exists() and not (out / ckpt.CHECKPOINT).exists()
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    assert "no checkpoint yet" in capsys.readouterr().out
    step, _, _ = ckpt.load_checkpoint(out, *_fresh(out))
    assert step == 12


def test_resume_with_more_steps_records_them_in_the_config(tmp_path, corpus_file):
    out = tmp_path / "run"
    assert _train(out, corpus_file, "--steps", "10") == 0
    assert main(["train", "--out", str(out), "--resume", "--steps", "14", "--quiet"]) == 0
    assert ckpt.read_config(out).train.steps == 14
    assert ckpt.load_checkpoint(out, *_fresh(out))[0] == 14
