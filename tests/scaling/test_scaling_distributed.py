"""Data-parallel helpers (issue 8): the --nproc shortcut, the one-process fallbacks, and two
CPU processes under torchrun (gloo): one DDP step's gradients equal one process's on the
concatenated batch (float64, ≤ 1e-10), and the collectives and rank-0 writes behave."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gatelab.lm import distributed as dist_

WORKER = Path(__file__).with_name("scaling_ddp_worker.py")


def test_strip_nproc_takes_both_spellings_and_keeps_the_rest():
    assert dist_.strip_nproc(["--steps", "5", "--nproc", "2", "--out", "r"]) == (2, ["--steps", "5", "--out", "r"])
    assert dist_.strip_nproc(["--nproc=3", "--resume"]) == (3, ["--resume"])
    assert dist_.strip_nproc(["--steps", "5"]) == (None, ["--steps", "5"])
    for bad in (["--nproc"], ["--nproc", "0"], ["--nproc=two"]):
        with pytest.raises(ValueError, match="--nproc"):
            dist_.strip_nproc(bad)


def test_torchrun_command_runs_gatelab_train_on_this_machine():
    cmd = dist_.torchrun_command(2, ["--steps", "5"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in cmd and "--nproc-per-node=2" in cmd
    assert cmd[-5:] == ["-m", "gatelab", "train", "--steps", "5"]


def test_a_lone_process_is_rank_zero_of_one(monkeypatch, tmp_path):
    for name in dist_.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    ctx = dist_.setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.distributed, ctx.is_main) == (0, 1, False, True)
    assert dist_.all_reduce_sums(ctx, 1.5, 2) == (1.5, 2.0)
    assert dist_.reduce_mean_loss(ctx, 6.0, 4) == 1.5
    assert dist_.broadcast_int(ctx, 7) == 7
    assert dist_.split_batch(8, ctx) == slice(0, 8)
    assert dist_.on_main(ctx, lambda: "ran") == "ran"
    t = torch.arange(6.0).view(1, 2, 3)
    assert dist_.gather_rows(ctx, t, dim=1) is t
    dist_.teardown(ctx)


def test_split_batch_slices_the_global_batch_in_rank_order():
    ctxs = [dist_.Context(rank=r, world_size=4, backend="gloo") for r in range(4)]
    assert [dist_.split_batch(8, c) for c in ctxs] == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    with pytest.raises(ValueError, match="multiple"):
        dist_.split_batch(6, ctxs[0])


def test_backend_is_gloo_on_cpu_and_nccl_on_cuda():
    assert dist_.backend_for(torch.device("cpu")) == "gloo"
    assert dist_.backend_for(torch.device("cuda", 0)) == "nccl"


def test_launch_refuses_to_nest_inside_torchrun(monkeypatch):
    for name in dist_.TORCHRUN_ENV:
        monkeypatch.setenv(name, "0")
    with pytest.raises(ValueError, match="inside torchrun"):
        dist_.launch(2, [])


@pytest.mark.slow
def test_two_gloo_processes_compute_the_one_process_gradient(tmp_path):
    sys.path.insert(0, str(WORKER.parent))
    import scaling_ddp_worker as worker

    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node=2", str(WORKER), str(tmp_path)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2 and result["backend"] == "gloo"
    assert result["sums"] == [3.0, 30.0]
    assert result["broadcast"] == 1000  # rank 0's value
    assert result["gathered"] == [[[0.0] * 3, [1.0] * 3]] * 2  # rank order along dim 1
    assert result["writers"] == 1.0 and result["marker_visible_on"] == 2.0
    assert json.loads((tmp_path / "marker.json").read_text()) == {"rank": 0}

    # one process, the whole batch, mean loss
    model = worker.build_model()
    x, y = worker.global_batch()
    loss_sum = model(x, y)
    (loss_sum / y.numel()).backward()
    assert result["mean_loss"] == pytest.approx(loss_sum.item() / y.numel(), rel=0, abs=1e-12)
    ddp_grads = load_file(str(tmp_path / "grads.safetensors"))
    names = [n for n, _ in model.named_parameters()]
    assert sorted(ddp_grads) == sorted(names)
    for name, p in model.named_parameters():
        assert ddp_grads[name].dtype == torch.float64
        torch.testing.assert_close(ddp_grads[name], p.grad, rtol=0, atol=1e-10, msg=name)
        assert p.grad.abs().max() > 1e-3  # a real gradient, not zeros on both sides
