"""Validation bits per character: every character of a contiguous span scored once.

The span is cut into B contiguous streams read in chunks of T characters with the state
carried from chunk to chunk, so each character is predicted from everything before it in
its stream (not from a fresh state every T characters). With several processes each
takes its share of the streams and the sums are reduced over processes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from gatelab.lm.model import detach_state


@torch.no_grad()
def span_bits(model, corpus, start: int, stop: int, *, seq_len: int, batch_size: int = 64,
              rank: int = 0, world_size: int = 1) -> tuple[float, int]:
    """The summed loss (bits) and the number of characters scored over corpus[start:stop].

    Arguments:
        model: a CharLM (put in eval mode for the call, restored after).
        corpus: anything with `read(start, stop)` (TextCorpus, DiskCorpus).
        start, stop: the span.
        seq_len: T, characters per forward call.
        batch_size: B, streams (fewer when the span is short).
        rank, world_size: score only this process's share of the streams.
    """
    n = stop - start
    B = max(1, min(batch_size, (n - 1) // 2))
    S = n // B  # characters per stream
    if S < 2:
        return 0.0, 0
    lo, hi = (B * rank) // world_size, (B * (rank + 1)) // world_size
    if hi <= lo:
        return 0.0, 0
    row_starts = start + np.arange(lo, hi, dtype=np.int64) * S  # (B_r,) where each stream begins
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    try:
        for t0 in range(0, S - 1, seq_len):
            t1 = min(t0 + seq_len, S - 1)
            # only this chunk of every stream is read, so memory stays bounded on a large corpus
            chunk = corpus.windows(row_starts + t0, t1 + 1 - t0)  # (B_r, T + 1)
            chunk = torch.from_numpy(np.ascontiguousarray(chunk.T)).to(device)  # (T + 1, B_r)
            x, y = chunk[:-1], chunk[1:]  # (T, B_r)
            logits, state = model(x, state)  # (T, B_r, V)
            state = detach_state(state)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
            total += float(loss) / math.log(2.0)
            count += y.numel()
    finally:
        model.train(was_training)
    return total, count


def validation_bpc(model, corpus, start: int, stop: int, *, seq_len: int, batch_size: int = 64,
                   ctx=None) -> float:
    """Bits per character over corpus[start:stop], reduced over processes when distributed.

    Arguments:
        model, corpus, start, stop, seq_len, batch_size: as for span_bits.
        ctx: a gatelab.lm.distributed.Context, or None for one process.
    """
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    bits, count = span_bits(model, corpus, start, stop, seq_len=seq_len, batch_size=batch_size,
                            rank=rank, world_size=world)
    if ctx is not None and ctx.distributed:
        from gatelab.lm.distributed import all_reduce_sums

        bits, count = all_reduce_sums(ctx, bits, count)
    if count <= 0:
        raise ValueError("no characters to evaluate")
    return bits / count
