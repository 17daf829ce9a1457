"""Run-folder files: atomic writes, checkpoint round trip, corrupt and mismatched files."""

import json

import pytest
import torch

from gatelab.errors import UsageError
from gatelab.lm import checkpoint as ckpt
from gatelab.lm.config import ModelConfig, RunConfig, TrainConfig
from gatelab.lm.trainer import build_model, make_optimizer


def _run(hidden=12, cell="lstm"):
    return RunConfig(model=ModelConfig(vocab_size=5, cell=cell, embed_size=4, hidden_size=hidden),
                     train=TrainConfig(), vocab=list("\nabcd"), corpus={"sha256": "x"})


def _trained(run):
    model = build_model(run)
    opt = make_optimizer(model, run.train)
    x = torch.randint(0, 5, (6, 3), generator=torch.Generator().manual_seed(0))
    logits, _ = model(x)
    logits.sum().backward()
    opt.step()
    return model, opt


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.json"
    ckpt.atomic_write(path, "old")
    ckpt.atomic_write(path, "new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_checkpoint_round_trip_is_exact(tmp_path, cell):
    run = _run(cell=cell)
    model, opt = _trained(run)
    carry = (torch.randn(1, 3, 12), torch.randn(1, 3, 12)) if cell == "lstm" else torch.randn(1, 3, 12)
    ckpt.save_checkpoint(tmp_path, model, opt, 7, carry, {"wall_s": 1.5})
    model2 = build_model(_run(cell=cell))
    opt2 = make_optimizer(model2, run.train)
    step, carry2, counters = ckpt.load_checkpoint(tmp_path, model2, opt2)
    assert step == 7 and counters == {"wall_s": 1.5}
    for a, b in zip(carry if isinstance(carry, tuple) else (carry,),
                    carry2 if isinstance(carry2, tuple) else (carry2,)):
        assert torch.equal(a, b)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for pid in s1["state"]:
        for key, value in s1["state"][pid].items():
            assert torch.equal(value, s2["state"][pid][key])


def test_no_pickle_anywhere_in_a_run_folder(tmp_path):
    run = _run()
    model, opt = _trained(run)
    ckpt.write_config(tmp_path, run)
    ckpt.save_checkpoint(tmp_path, model, opt, 1)
    for path in tmp_path.iterdir():
        head = path.read_bytes()[:2]
        assert head != b"\x80\x04" and head != b"PK", path  # pickle / torch.save zip


def test_corrupt_and_mismatched_files_are_usage_errors(tmp_path):
    run = _run()
    model, opt = _trained(run)
    ckpt.write_config(tmp_path, run)
    ckpt.save_checkpoint(tmp_path, model, opt, 3)
    # mismatched: another hidden size
    other = build_model(_run(hidden=13))
    with pytest.raises(UsageError, match="does not match"):
        ckpt.load_checkpoint(tmp_path, other, make_optimizer(other, run.train))
    # corrupt: truncated
    data = (tmp_path / ckpt.CHECKPOINT).read_bytes()
    (tmp_path / ckpt.CHECKPOINT).write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="corrupt"):
        ckpt.load_checkpoint(tmp_path, model, opt)
    (tmp_path / ckpt.MODEL).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(UsageError, match="corrupt"):
        ckpt.load_run(tmp_path)
    (tmp_path / ckpt.CONFIG).write_text("{", encoding="utf-8")
    with pytest.raises(UsageError, match="not a gatelab run config"):
        ckpt.read_config(tmp_path)


def test_config_round_trip_and_refuses_unknown_fields():
    run = _run()
    back = RunConfig.from_json(run.to_json())
    assert back == run
    obj = json.loads(run.to_json())
    obj["model"]["hidden_sise"] = 3
    with pytest.raises(UsageError, match="unknown"):
        RunConfig.from_json(json.dumps(obj))
    obj = json.loads(run.to_json())
    obj["model"]["hidden_size"] = "12"
    with pytest.raises(UsageError, match="must be int"):
        RunConfig.from_json(json.dumps(obj))
