"""Batch order: a pure function of (seed, step), shared out over ranks, no Python per-character work."""

import numpy as np
import pytest
import torch

from gatelab.errors import UsageError
from gatelab.lm.batches import BatchSampler, derived_seed, make_batch, seeded_rng
from gatelab.data.text import TextCorpus


def test_starts_are_a_function_of_seed_and_step():
    a = BatchSampler(10_000, 16, 8, seed=3)
    b = BatchSampler(10_000, 16, 8, seed=3)
    for step in (0, 7, 123):
        np.testing.assert_array_equal(a.starts(step), b.starts(step))
    assert not np.array_equal(a.starts(0), a.starts(1))
    assert not np.array_equal(a.starts(0), BatchSampler(10_000, 16, 8, seed=4).starts(0))
    starts = np.concatenate([a.starts(s) for s in range(200)])
    assert starts.min() >= 0 and starts.max() + 17 <= 10_000


@pytest.mark.parametrize("tbptt", [False, True])
def test_ranks_split_the_global_batch(tbptt):
    whole = BatchSampler(10_000, 16, 8, seed=1, tbptt=tbptt)
    parts = [BatchSampler(10_000, 16, 8, seed=1, tbptt=tbptt, rank=r, world_size=4) for r in range(4)]
    for step in (0, 5):
        np.testing.assert_array_equal(np.concatenate([p.starts(step) for p in parts]), whole.starts(step))


def test_tbptt_streams_are_consecutive_and_wrap():
    s = BatchSampler(1000, 10, 4, seed=0, tbptt=True)  # streams of 250, 24 chunks
    assert s.n_chunks == 24
    np.testing.assert_array_equal(s.starts(1) - s.starts(0), [10] * 4)
    np.testing.assert_array_equal(s.starts(0), [0, 250, 500, 750])
    np.testing.assert_array_equal(s.starts(24), s.starts(0))
    assert s.resets_state(0) and s.resets_state(24) and not s.resets_state(5)
    assert (s.starts(23) + 11).max() <= 1000


def test_make_batch_targets_are_next_characters():
    corpus = TextCorpus(tokens=np.arange(100, dtype=np.uint8), vocab=[chr(65 + i) for i in range(100)],
                        source="t")
    x, y = make_batch(corpus, np.array([0, 40]), 5)
    assert x.shape == y.shape == (5, 2) and x.dtype == torch.int64
    np.testing.assert_array_equal(x[:, 1].numpy(), np.arange(40, 45))
    np.testing.assert_array_equal(y.numpy(), x.numpy() + 1)


def test_too_short_for_one_window():
    with pytest.raises(UsageError, match="fewer than one window"):
        BatchSampler(16, 16, 2, seed=0)
    with pytest.raises(UsageError, match="tbptt"):
        BatchSampler(100, 16, 8, seed=0, tbptt=True)


def test_derived_seeds_differ_and_seeded_rng_restores_global_state():
    seeds = {derived_seed(0, p, s) for p in range(3) for s in range(100)}
    assert len(seeds) == 300
    before = torch.get_rng_state()
    with seeded_rng(derived_seed(0, 1, 5)):
        a = torch.rand(3)
    with seeded_rng(derived_seed(0, 1, 5)):
        b = torch.rand(3)
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), before)
