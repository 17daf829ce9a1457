"""Data-parallel training on PyTorch's own machinery: torchrun + torch.distributed.

`gatelab train` runs as one process, or as N processes started by torchrun:

    torchrun --standalone --nproc-per-node N -m gatelab train ...     # one machine
    gatelab train --nproc N ...                                        # the same, shorter

torchrun gives each process RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in
its environment; `setup()` reads them and joins the process group (gloo on CPU, nccl on
CUDA). Without those variables everything here degrades to one process: rank 0 of 1, and
every collective is the identity, so the trainer has one code path.

Nothing here runs at import time, and torch.distributed is only touched inside functions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Context:
    """Where this process stands in the job.

    Arguments:
        rank: this process's index in [0, world_size).
        world_size: the number of processes (1 without torchrun).
        local_rank: the index among the processes of this machine (selects the GPU).
        device: the torch.device this process computes on.
        backend: "gloo", "nccl", or None when not distributed.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """True on the one process that writes checkpoints, metrics and prints."""
        return self.rank == 0


def launched_by_torchrun(environ=None) -> bool:
    """True when torchrun (or any launcher with its variables) started this process."""
    environ = os.environ if environ is None else environ
    return all(name in environ for name in TORCHRUN_ENV)


def backend_for(device: torch.device) -> str:
    """The process-group backend for a device: nccl for CUDA, gloo for everything else."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def setup(device: str | torch.device = "cpu") -> Context:
    """Join torchrun's process group, or describe a lone process when not launched by it.

    Arguments:
        device: "cpu" or "cuda". With "cuda" each process takes GPU number LOCAL_RANK.

    Returns a Context; call `teardown()` at the end when `ctx.distributed`.
    """
    device = torch.device(device)
    if not launched_by_torchrun():
        return Context(device=device)
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = backend_for(device)
    if not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **kwargs)
    return Context(rank=rank, world_size=world_size, local_rank=local_rank, device=device,
                   backend=backend)


def teardown(ctx: Context) -> None:
    """Leave the process group (a no-op for a lone process), once every process has come
    here (no rank tears gloo down while a peer still talks to it). A torchrun worker then
    ends with exit_process()."""
    if ctx.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_process(code: int) -> None:
    """End a torchrun worker now, with `code`, after teardown(): output flushed, Python's
    finalisation skipped. At interpreter exit a gloo worker aborted about one time in twelve
    ("terminate called without an active exception", exit -6, torchrun then reports the
    finished run as failed); skipping finalisation: 0 in 24 (tests/scaling)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def barrier(ctx: Context) -> None:
    """Wait for every process (a no-op for a lone process)."""
    if ctx.distributed:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def all_reduce_sums(ctx: Context, *values: float) -> tuple[float, ...]:
    """The sums over all processes of a few numbers (e.g. a loss sum and a token count).

    Sums are taken in float64 so that a validation loss summed over shards equals, to
    rounding, the loss of one process over the whole split. For one process the values
    come back unchanged.
    """
    if not ctx.distributed:
        return tuple(float(v) for v in values)
    buf = torch.tensor(values, dtype=torch.float64, device=ctx.device)  # (n,)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return tuple(buf.tolist())


def reduce_mean_loss(ctx: Context, loss_sum: float, count: float) -> float:
    """The mean loss over every process's share: Σ loss_sum / Σ count (nats per token)."""
    total, n = all_reduce_sums(ctx, loss_sum, count)
    if n <= 0:
        raise ValueError("no tokens to average the loss over")
    return total / n


def broadcast_int(ctx: Context, value: int) -> int:
    """Rank 0's value of an integer on every process (e.g. the step a resume starts at)."""
    if not ctx.distributed:
        return int(value)
    buf = torch.tensor([int(value)], dtype=torch.int64, device=ctx.device)
    dist.broadcast(buf, src=0)
    return int(buf.item())


def gather_rows(ctx: Context, tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """Every process's equal share of a batch, concatenated along `dim` in rank order.

    The inverse of taking `split_batch` rows: e.g. the recurrent state each process carries
    for its rows (L, B / world_size, H) becomes the state of the global batch (L, B, H),
    which a checkpoint stores so that a resume with any number of processes can take its
    own rows from it. For one process the tensor comes back as it is.
    """
    if not ctx.distributed:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(ctx.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=dim)


def on_main(ctx: Context, fn, *args, **kwargs):
    """Call `fn(*args, **kwargs)` on rank 0 only, then wait for every process.

    Use it for every write to the run folder (checkpoints, metrics, config), so that the
    other processes never race rank 0 and never read a half-written file: the barrier
    returns only after rank 0's write (which is itself atomic: temporary file + rename)
    is complete. Returns fn's result on rank 0 and None elsewhere.
    """
    result = fn(*args, **kwargs) if ctx.is_main else None
    barrier(ctx)
    return result


def split_batch(global_batch: int, ctx: Context) -> slice:
    """The rows of a global batch that this process computes.

    The global batch (what one optimizer step sees) is the same whatever the number of
    processes; rank r takes the r-th of world_size equal, contiguous slices. With the
    loss averaged over each slice and DDP averaging gradients over ranks, the gradient is
    that of the mean loss over the whole global batch, i.e. the one-process gradient.
    """
    if global_batch % ctx.world_size:
        raise ValueError(f"the batch size ({global_batch}) must be a multiple of the number of "
                         f"processes ({ctx.world_size})")
    per_rank = global_batch // ctx.world_size
    return slice(ctx.rank * per_rank, (ctx.rank + 1) * per_rank)


def strip_nproc(argv: list[str]) -> tuple[int | None, list[str]]:
    """Split `--nproc N` / `--nproc=N` out of a command's arguments.

    Returns (N or None, the other arguments in order).
    """
    nproc, rest, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--nproc":
            if i + 1 >= len(argv):
                raise ValueError("--nproc needs a number of processes")
            nproc, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--nproc="):
            nproc, i = arg.split("=", 1)[1], i + 1
            continue
        rest.append(arg)
        i += 1
    if nproc is None:
        return None, rest
    try:
        n = int(nproc)
    except ValueError:
        raise ValueError(f"--nproc: expected a positive integer, got {nproc!r}") from None
    if n < 1:
        raise ValueError(f"--nproc: expected a positive integer, got {n}")
    return n, rest


def torchrun_command(nproc: int, train_args: list[str]) -> list[str]:
    """The command `gatelab train --nproc N ARGS` runs: torchrun on this machine.

    `python -m torch.distributed.run` is the module behind the `torchrun` script, so the
    command works whether or not the script is on PATH; `-m gatelab` runs
    `gatelab/__main__.py` in each process.
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={int(nproc)}", "-m", "gatelab", "train", *train_args]


def launch(nproc: int, train_args: list[str]) -> int:
    """Run `gatelab train` as `nproc` processes under torchrun; return its exit status.

    Arguments:
        nproc: the number of processes (≥ 1).
        train_args: the train command's other arguments (without --nproc).
    """
    if launched_by_torchrun():
        raise ValueError("--nproc cannot be used inside torchrun; pass --nproc-per-node to torchrun")
    # torchrun itself sets OMP_NUM_THREADS=1 for N > 1 unless the user chose a value, so
    # N processes do not oversubscribe the cores with N thread pools each.
    return subprocess.call(torchrun_command(nproc, train_args))
