"""`gatelab sample`: deterministic for a seed; bad prime, missing or corrupt run: one line, exit 2."""

import pytest

from gatelab.cli import main
from gatelab.lm import checkpoint as ckpt
from gatelab.lm.config import ModelConfig, RunConfig, TrainConfig
from gatelab.lm.sample import generate
from gatelab.lm.trainer import build_model


@pytest.fixture
def run_dir(tmp_path):
    """An untrained but complete run folder (sampling does not care how good the model is)."""
    vocab = sorted(set("def f(x):\n    return x + 1\n"))
    run = RunConfig(model=ModelConfig(vocab_size=len(vocab), embed_size=8, hidden_size=16),
                    train=TrainConfig(), vocab=vocab, corpus={"sha256": "x"})
    model = build_model(run)
    ckpt.write_config(tmp_path, run)
    ckpt.save_checkpoint(tmp_path, model, __import__("torch").optim.SGD(model.parameters(), 0.1), 0)
    return tmp_path


def _sample(capsys, run_dir, *extra):
    assert main(["sample", str(run_dir), "--length", "60", *extra]) == 0
    return capsys.readouterr().out


def test_same_seed_same_text_other_seed_other_text(run_dir, capsys):
    a = _sample(capsys, run_dir, "--prime", "def ", "--seed", "3")
    b = _sample(capsys, run_dir, "--prime", "def ", "--seed", "3")
    c = _sample(capsys, run_dir, "--prime", "def ", "--seed", "4")
    assert a == b and a != c
    assert a.startswith("def ") and len(a) == len("def ") + 60 + 1


def test_generate_leaves_the_global_generator_alone(run_dir):
    import torch

    run, model = ckpt.load_run(run_dir)
    before = torch.get_rng_state()
    text = generate(model, run.vocab, "x", 30, temperature=0.5, seed=1)
    assert len(text) == 30 and set(text) <= set(run.vocab)
    assert torch.equal(before, torch.get_rng_state())


def _fails(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_bad_inputs(run_dir, tmp_path, capsys):
    _fails(capsys, ["sample", str(run_dir), "--prime", "dèf"], "not in the model's vocabulary: 'è'")
    _fails(capsys, ["sample", str(run_dir), "--temperature", "0"], "--temperature")
    _fails(capsys, ["sample", str(tmp_path / "nope")], "no such run folder")
    data = (run_dir / ckpt.MODEL).read_bytes()
    (run_dir / ckpt.MODEL).write_bytes(data[:-7])
    _fails(capsys, ["sample", str(run_dir)], "corrupt")
    (run_dir / ckpt.MODEL).write_bytes(data)
    cfg = (run_dir / ckpt.CONFIG).read_text()
    (run_dir / ckpt.CONFIG).write_text(cfg.replace('"hidden_size": 16', '"hidden_size": 17'))
    _fails(capsys, ["sample", str(run_dir)], "does not match")
