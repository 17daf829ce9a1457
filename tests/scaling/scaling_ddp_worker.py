"""One process of the two-process (gloo) test in test_scaling_distributed.py.

    python -m torch.distributed.run --standalone --nproc-per-node 2 scaling_ddp_worker.py OUT

Each rank takes its rows of one global batch (gatelab.lm.distributed.split_batch), runs
one DistributedDataParallel forward + backward of a small float64 character model
(embedding -> gatelab.nn.LSTM -> linear) with the mean loss over its rows, and rank 0
writes the gradients (which DDP has averaged over the ranks) to OUT/grads.safetensors and
the results of the other collectives to OUT/result.json.
"""

import json
import sys
from pathlib import Path

import torch

V, E, H, T, B = 11, 5, 7, 6, 4


class TinyLM(torch.nn.Module):
    """embedding -> 2-layer gatelab.nn.LSTM -> linear, float64; returns Σ cross-entropy."""

    def __init__(self):
        super().__init__()
        from gatelab import nn as gnn

        self.embed = torch.nn.Embedding(V, E, dtype=torch.float64)
        self.rnn = gnn.LSTM(E, H, num_layers=2, dtype=torch.float64)
        self.head = torch.nn.Linear(H, V, dtype=torch.float64)

    def forward(self, x, y):  # x, y (T, b) int64
        out, _ = self.rnn(self.embed(x))  # (T, b, H)
        logits = self.head(out)  # (T, b, V)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1), reduction="sum")


def build_model() -> TinyLM:
    """The model, identical in every process."""
    torch.manual_seed(1234)
    return TinyLM()


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """x, y (T, B) int64: the same global batch in every process."""
    g = torch.Generator().manual_seed(99)
    w = torch.randint(0, V, (T + 1, B), generator=g)  # (T + 1, B)
    return w[:-1], w[1:]


def main(out_dir: str) -> None:
    from safetensors.torch import save_file
    from torch.nn.parallel import DistributedDataParallel as DDP

    from gatelab.lm import distributed as dist_

    ctx = dist_.setup("cpu")
    out = Path(out_dir)
    model = DDP(build_model())
    x, y = global_batch()
    rows = dist_.split_batch(B, ctx)
    x, y = x[:, rows], y[:, rows]  # (T, B / world)
    loss_sum = model(x, y)
    (loss_sum / y.numel()).backward()  # mean over this rank's rows; DDP averages over ranks
    mean = dist_.reduce_mean_loss(ctx, loss_sum.item(), y.numel())
    sums = dist_.all_reduce_sums(ctx, ctx.rank + 1, 10 * (ctx.rank + 1))
    step = dist_.broadcast_int(ctx, 1000 + ctx.rank)
    rows_of = dist_.gather_rows(ctx, torch.full((2, 1, 3), float(ctx.rank)), dim=1)  # (2, world, 3)

    def write(path: Path, obj) -> str:
        path.write_text(json.dumps(obj))
        return "written"

    seen = dist_.on_main(ctx, write, out / "marker.json", {"rank": ctx.rank})
    marker_visible = (out / "marker.json").is_file()  # after on_main's barrier, on every rank
    flags = dist_.all_reduce_sums(ctx, float(marker_visible), float(seen == "written"))
    if ctx.is_main:
        grads = {n: p.grad.contiguous() for n, p in model.module.named_parameters()}
        save_file(grads, str(out / "grads.safetensors"))
        (out / "result.json").write_text(json.dumps({
            "world_size": ctx.world_size, "backend": ctx.backend, "mean_loss": mean,
            "sums": sums, "broadcast": step, "gathered": rows_of.tolist(),
            "marker_visible_on": flags[0], "writers": flags[1]}))
    del model  # DDP's reducer before the process group it holds
    dist_.teardown(ctx)
    dist_.exit_process(0)


if __name__ == "__main__":
    main(sys.argv[1])
