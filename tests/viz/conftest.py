"""A small untrained run folder for the report tests (the report does not need a good model)."""

from __future__ import annotations

import pytest
import torch

PY_TEXT = '''import os

def tidy(path, depth=0):
    """Return a cleaned path (see "docs")."""
    # strip the trailing separators
    while path.endswith((os.sep, "/")):
        path = path[:-1]
    return [path, {"depth": depth + 1}]
'''


@pytest.fixture
def py_text() -> str:
    return PY_TEXT


def _make_run(folder, cell: str = "lstm", layers: int = 2, hidden: int = 12):
    from gatelab.lm import checkpoint as ckpt
    from gatelab.lm.config import ModelConfig, RunConfig, TrainConfig
    from gatelab.lm.trainer import build_model

    vocab = sorted(set(PY_TEXT + "é"))
    run = RunConfig(model=ModelConfig(vocab_size=len(vocab), cell=cell, embed_size=6, hidden_size=hidden,
                                      num_layers=layers),
                    train=TrainConfig(steps=10), vocab=vocab, corpus={"sha256": "x", "source": "test"})
    model = build_model(run)
    ckpt.write_config(folder, run)
    ckpt.save_checkpoint(folder, model, torch.optim.SGD(model.parameters(), 0.1), 10)
    ckpt.write_metrics(folder, [{"step": 5, "train_bpc": 5.0}, {"step": 10, "train_bpc": 4.5, "val_bpc": 4.6},
                                {"step": 10, "val_bpc": 4.55, "final": True, "unigram_bits": 4.2}])
    return folder


@pytest.fixture
def make_run():
    """make_run(folder, cell="lstm", layers=2, hidden=12) -> folder, a written run."""
    return _make_run


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "run").mkdir()
    return _make_run(tmp_path / "run")
