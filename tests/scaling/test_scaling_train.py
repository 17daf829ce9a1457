"""`gatelab train` on several processes (issue 8): DistributedDataParallel under torchrun
(gloo, two CPU processes), exact resume with another number of processes, validation
reduced over ranks, the on-disk corpus, and bf16 mixed precision end to end.

The exactness tests train in float64 (`--precision float64`) so that runs whose only
difference is the order of floating-point sums (one process vs two, DDP's gradient
average) agree to 1e-10.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gatelab import cli

WORKER = Path(__file__).with_name("scaling_train_worker.py")
WORDS = ["def", "return", "self", "(x)", "[i]", "{k: v}", "for", "in", "if", "else:", "\n    ", "# note",
         "'text'", "=", "+", "0", "1", "None", "import", "class"]


def _corpus(path: Path, n_words: int = 6000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.write_text(" ".join(np.array(WORDS)[rng.integers(0, len(WORDS), n_words)].tolist()), encoding="utf-8")
    return path


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--precision", "float64", "--cell", "lstm",
            "--layers", "2", "--hidden-size", "12", "--embed-size", "6", "--seq-len", "10",
            "--batch-size", "4", "--steps", "9", "--tbptt", "--checkpoint-every", "3",
            "--eval-every", "4", "--eval-chars", "300", "--log-every", "2", "--lr", "0.01",
            "--quiet", *extra]


def _torchrun(script_and_args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={nproc}", *script_and_args],
                          capture_output=True, text=True, timeout=300)


def _params(run: Path) -> dict:
    return load_file(str(run / "model.safetensors"))


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]


def _assert_same_params(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == torch.float64
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-10, msg=name)


@pytest.mark.slow
def test_killed_two_process_run_resumes_exactly_with_two_or_one_processes(tmp_path):
    data = _corpus(tmp_path / "corpus.txt")
    whole = tmp_path / "whole"
    assert cli.main(["train", *_args(data, whole)]) == 0  # one process, uninterrupted

    two = tmp_path / "two"
    killed = _torchrun([str(WORKER), "5", *_args(data, two)])  # dies after step 5
    assert killed.returncode != 0
    meta = json.loads((two / "checkpoint.safetensors").read_bytes()[8:8 + int.from_bytes(
        (two / "checkpoint.safetensors").read_bytes()[:8], "little")])["__metadata__"]
    assert int(meta["step"]) == 3  # the last checkpoint before the kill
    one = tmp_path / "one"
    shutil.copytree(two, one)

    resumed = subprocess.run([sys.executable, "-m", "gatelab", "train", "--nproc", "2", "--resume",
                              *_args(data, two)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert cli.main(["train", "--resume", "--corpus-on-disk", *_args(data, one)]) == 0
    assert (one / "corpus" / "tokens.bin").is_file()

    reference = _params(whole)
    _assert_same_params(_params(two), reference)
    _assert_same_params(_params(one), reference)
    # validation bpc, reduced over two processes, equals one process's
    finals = [next(r for r in _metrics(run) if r.get("final")) for run in (whole, two, one)]
    for final in finals[1:]:
        assert final["val_bpc"] == pytest.approx(finals[0]["val_bpc"], rel=0, abs=1e-10)
    # rank 0 alone wrote the metrics: every record once, steps in order
    steps = [r["step"] for r in _metrics(two) if not r.get("final")]
    assert steps == sorted(set(steps)) and steps == [r["step"] for r in _metrics(whole) if not r.get("final")]


def test_bf16_trains_end_to_end_with_float32_master_weights(tmp_path):
    data = _corpus(tmp_path / "corpus.txt")
    finals = {}
    for precision in ("float32", "bf16"):
        run = tmp_path / precision
        assert cli.main(["train", "--data", str(data), "--out", str(run), "--precision", precision,
                         "--hidden-size", "32", "--embed-size", "16", "--seq-len", "32", "--batch-size", "8",
                         "--steps", "40", "--eval-every", "100", "--eval-chars", "1000", "--lr", "0.02",
                         "--warmup-steps", "5", "--quiet"]) == 0
        assert all(p.dtype == torch.float32 for p in _params(run).values())  # master weights
        assert json.loads((run / "config.json").read_text())["train"]["precision"] == precision
        finals[precision] = next(r for r in _metrics(run) if r.get("final"))
    bf16, fp32 = finals["bf16"]["val_bpc"], finals["float32"]["val_bpc"]
    assert bf16 < finals["bf16"]["unigram_bits"] - 1.0  # it learned (unigram ≈ 4.1 bits here)
    assert bf16 != fp32 and abs(bf16 - fp32) < 0.05  # bfloat16 arithmetic ran, to the same result


def _parse(argv):
    import argparse

    from gatelab.lm import train_cmd

    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    return parser.parse_args(argv)


def test_nproc_relaunch_passes_every_option_on():
    from gatelab.lm import train_cmd

    argv = ["--data", "x.txt", "--out", "r", "--resume", "--lr", "0.003", "--steps", "7", "--tbptt",
            "--precision", "bf16", "--corpus-on-disk", "--quiet", "--nproc", "2", "--dropout", "0.1"]
    args = _parse(argv)
    again = _parse(train_cmd.to_argv(args))
    assert again.nproc is None and "--nproc" not in train_cmd.to_argv(args)
    assert {k: v for k, v in vars(again).items() if k != "nproc"} == \
        {k: v for k, v in vars(args).items() if k != "nproc"}


def test_large_data_goes_on_disk_automatically(tmp_path, monkeypatch):
    from gatelab.lm import train_cmd

    data = _corpus(tmp_path / "corpus.txt", n_words=100)
    out = tmp_path / "run"
    assert train_cmd._on_disk(_parse([]), out, data) is None  # small: in memory
    assert train_cmd._on_disk(_parse(["--corpus-on-disk"]), out, data) == out / "corpus"
    monkeypatch.setattr(train_cmd, "ON_DISK_BYTES", data.stat().st_size - 1)
    assert train_cmd._on_disk(_parse([]), out, data) == out / "corpus"  # larger than the limit


@pytest.mark.parametrize(("gpus", "processes", "auto"), [(0, 1, "cpu"), (1, 1, "cuda"), (1, 2, "cpu"),
                                                         (2, 2, "cuda"), (4, 2, "cuda")])
def test_each_process_gets_a_gpu_of_its_own_or_none(monkeypatch, capsys, gpus, processes, auto):
    """--device auto takes the GPUs only when each process of this machine gets its own (seen on
    a one-GPU machine: two torchrun processes on "auto" both took a GPU and the second, cuda:1,
    failed); --device cuda with too few says so before anything starts."""
    from gatelab.errors import UsageError
    from gatelab.lm import train_cmd

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(processes))
    assert train_cmd._device("auto") == auto
    assert train_cmd._device("cpu") == "cpu"
    if gpus >= processes:
        assert train_cmd._device("cuda") == "cuda"
    else:
        with pytest.raises(UsageError, match=f"--device cuda: .*{processes if gpus else 'no CUDA GPU'}"):
            train_cmd._device("cuda")
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert train_cmd._device("auto", processes) == auto  # the launcher's check, before torchrun
    if gpus == 1:
        assert cli.main(["train", "--nproc", "2", "--device", "cuda", "--data", "x.txt", "--out", "r"]) == 2
        assert "2 processes on this machine but 1 GPU(s)" in capsys.readouterr().err
