"""The synthetic tasks: layout, targets, baselines from the data, seeding."""

import math

import pytest
import torch
from torch.nn import functional as F

from gatelab.data.synthetic import (
    COPY_DELIMITER,
    adding_batch,
    copy_baseline,
    copy_batch,
    generator,
    noisy_memory_batch,
)


def test_adding_layout_and_target():
    T, B = 31, 500
    x, y = adding_batch(T, B, generator(0))
    assert x.shape == (T, B, 2) and y.shape == (B,)
    values, markers = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values <= 1)).all()
    half = T // 2
    assert (markers[:half].sum(0) == 1).all() and (markers[half:].sum(0) == 1).all()
    torch.testing.assert_close((values * markers).sum(0), y)


def test_adding_mean_predictor_scores_one_sixth():
    # u1 + u2 with u ~ U[0, 1]: mean 1, variance 2/12; predicting 1.0 scores MSE 1/6.
    _, y = adding_batch(10, 50_000, generator(1))
    assert abs(float(((y - 1.0) ** 2).mean()) - 1 / 6) < 0.004
    assert abs(float(y.mean()) - 1.0) < 0.01


def test_seeded_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    a = adding_batch(20, 8, generator(5))
    b = adding_batch(20, 8, generator(5))
    c = adding_batch(20, 8, generator(6))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_copy_layout():
    delay, B = 7, 40
    x, y = copy_batch(delay, B, generator(2))
    assert x.shape == y.shape == (delay + 20, B)
    assert ((x[:10] >= 1) & (x[:10] <= 8)).all()
    assert (x[10 + delay - 1] == COPY_DELIMITER).all()
    rest = torch.cat([x[10 : 10 + delay - 1], x[10 + delay :]])
    assert (rest == 0).all()
    assert (y[: delay + 10] == 0).all() and torch.equal(y[-10:], x[:10])


@pytest.mark.parametrize("delay", [1, 50, 100])
def test_copy_baseline_is_the_memoryless_optimum(delay):
    # Predict "blank" for certain on the first delay + 10 steps, uniform over the 8 data
    # symbols on the last 10: the cross-entropy of that predictor on real data.
    x, y = copy_batch(delay, 64, generator(3))
    logits = torch.full((delay + 20, 64, 10), -1e9)
    logits[: delay + 10, :, 0] = 0.0
    logits[delay + 10 :, :, 1:9] = 0.0
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    assert math.isclose(float(ce), copy_baseline(delay), rel_tol=1e-6)
    assert math.isclose(copy_baseline(delay), 10 * math.log(8) / (delay + 20))


def test_noisy_memory_layout():
    T, B, S, noise = 16, 300, 4, 1.5
    x, y, signal = noisy_memory_batch(T, B, noise, generator(4), symbols=S)
    assert x.shape == (T, B, S + 1) and y.shape == (B,) and signal.shape == (T, B)
    assert (signal.sum(0) == 1).all() and not signal[T // 2 :].any()
    assert torch.equal(x[..., S] == 1, signal)
    at_signal = x.transpose(0, 1)[signal.T]  # (B, S + 1), in batch order
    assert torch.equal(at_signal[:, :S].argmax(-1), y) and (at_signal[:, :S].sum(-1) == 1).all()
    distractors = x[~signal][:, :S]  # (T·B − B, S)
    assert torch.allclose(distractors.sum(-1), torch.full((T * B - B,), noise))
    # distractor symbols are uniform: each appears about a quarter of the time
    share = (distractors > 0).float().mean(0)
    assert ((share - 1 / S).abs() < 0.02).all()


def test_bad_arguments():
    gen = generator(0)
    with pytest.raises(ValueError, match="T must be"):
        adding_batch(1, 4, gen)
    with pytest.raises(ValueError, match="delay must be"):
        copy_batch(0, 4, gen)
    with pytest.raises(ValueError, match="noise must be"):
        noisy_memory_batch(10, 4, -1.0, gen)
