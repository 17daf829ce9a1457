"""Which windows of the corpus a training step reads: a pure function of (seed, step).

Nothing here keeps state between steps, so resuming at step k needs only k, and a job of
any number of processes sees the same global batch: rank r of world_size takes its
contiguous share of the rows (`gatelab.lm.distributed.split_batch`'s convention).

Two orders:
    random windows (default): B window starts drawn uniformly from the training part by a
        torch.Generator seeded from (seed, step).
    truncated BPTT (tbptt=True): the training part cut into B contiguous streams; step k
        reads chunk k mod n_chunks of every stream, so the state can be carried from one
        window to the next; it is reset when the streams wrap around.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from gatelab.errors import UsageError

# The purposes a seed is derived for, so that no two draw the same numbers.
BATCH, DROPOUT, INIT = 0, 1, 2


def derived_seed(seed: int, purpose: int, *keys: int) -> int:
    """A 63-bit seed that is a pure, well-mixed function of (seed, purpose, *keys).

    Arguments:
        seed: the run's seed.
        purpose: BATCH, DROPOUT or INIT.
        keys: e.g. the step and the rank.
    """
    words = [int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF, purpose, *map(int, keys)]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device | str = "cpu"):
    """Run a block with torch's global generator seeded to `seed`, and restore it after.

    Dropout (and the stochastic gatelab.nn variants) draw from the global generator; seeding
    it from (seed, step) per step makes their masks a function of the step, so nothing
    random has to be saved for an exact resume. The caller's generator state is untouched.

    Arguments:
        seed: the seed for the block.
        device: the device computed on (its CUDA generator is forked too).
    """
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        yield


class BatchSampler:
    """The window starts of every step, for the training part [0, n_train) of a corpus.

    Arguments:
        n_train: characters in the training part.
        seq_len: T; a window holds T + 1 characters (inputs and their next characters).
        batch_size: B, the global number of windows per step.
        seed: the run's seed.
        tbptt: contiguous streams (state carried) instead of random windows.
        rank, world_size: this process's share of the B rows.
    """

    def __init__(self, n_train: int, seq_len: int, batch_size: int, seed: int, *,
                 tbptt: bool = False, rank: int = 0, world_size: int = 1):
        if n_train < seq_len + 1:
            raise UsageError(f"the training text has {n_train} characters, fewer than one "
                             f"window of --seq-len {seq_len} + 1")
        if batch_size % world_size:
            raise UsageError(f"--batch-size {batch_size} is not a multiple of the {world_size} processes")
        self.n_train, self.seq_len, self.batch_size, self.seed = n_train, seq_len, batch_size, seed
        self.tbptt = tbptt
        per_rank = batch_size // world_size
        self.rows = slice(rank * per_rank, (rank + 1) * per_rank)
        self.stream_len = n_train // batch_size
        self.n_chunks = (self.stream_len - 1) // seq_len
        if tbptt and self.n_chunks < 1:
            raise UsageError(f"--tbptt: the training text ({n_train} characters) cut into "
                             f"{batch_size} streams is shorter than one window of {seq_len} + 1")

    def starts(self, step: int) -> np.ndarray:
        """(B / world_size,) int64 starts of this process's windows at `step`."""
        if self.tbptt:
            chunk = step % self.n_chunks
            rows = np.arange(self.batch_size, dtype=np.int64)  # (B,)
            starts = rows * self.stream_len + chunk * self.seq_len  # (B,)
        else:
            g = torch.Generator().manual_seed(derived_seed(self.seed, BATCH, step))
            high = self.n_train - self.seq_len  # windows [s, s + T + 1) inside [0, n_train)
            starts = torch.randint(0, high, (self.batch_size,), generator=g).numpy()  # (B,)
        return starts[self.rows]

    def resets_state(self, step: int) -> bool:
        """True when the carried state must start from zeros at `step` (new streams)."""
        return not self.tbptt or step % self.n_chunks == 0


def make_batch(corpus, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of some windows, by one fancy index (no per-character loop).

    Arguments:
        corpus: anything with `windows(starts, length) -> (B, length)` (TextCorpus, DiskCorpus).
        starts: (B,) window starts.
        seq_len: T.

    Returns x (T, B) and y (T, B) int64, y[t] the character after x[t].
    """
    w = corpus.windows(starts, seq_len + 1)  # (B, T + 1)
    w = torch.from_numpy(np.ascontiguousarray(w.T))  # (T + 1, B)
    return w[:-1], w[1:]
