"""Synthetic memory tasks: the adding problem, the copy-memory task and a noisy memory task.

Every generator is a pure function of its arguments and a `torch.Generator`, so a task is
reproduced exactly by the same seed; none touches the global random state. All tensors are
time-major, `(T, B, ...)`, like `torch.nn.LSTM`'s default layout.

References:
    Hochreiter & Schmidhuber 1997, "Long Short-Term Memory" (adding problem, noisy sequences).
    Arjovsky, Shah & Bengio 2016, "Unitary Evolution Recurrent Neural Networks" (the adding
    variant used here and the copy-memory task).
"""

from __future__ import annotations

import math

import torch

# copy-memory alphabet (Arjovsky et al. 2016): 0 blank, 1..8 data symbols, 9 delimiter ("go").
COPY_BLANK = 0
COPY_SYMBOLS = 8
COPY_DELIMITER = COPY_SYMBOLS + 1
COPY_CLASSES = COPY_SYMBOLS + 2
COPY_LENGTH = 10  # symbols to remember


def generator(seed: int) -> torch.Generator:
    """A CPU `torch.Generator` seeded with `seed` (the only source of randomness here)."""
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen


def _check(name: str, value: int, minimum: int) -> None:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def adding_batch(T: int, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The adding problem, Arjovsky et al.'s variant.

    Each sequence has two input channels: channel 0 holds values uniform in [0, 1], channel 1
    marks exactly two steps, one drawn uniformly in the first half [0, T//2) and one in the
    second half [T//2, T). The target is the sum of the two marked values. Predicting the
    mean (1.0) scores MSE = Var(u1 + u2) = 2/12 = 1/6 ≈ 0.167.

    Arguments:
        T: sequence length (>= 2).
        batch: number of sequences (>= 1).
        gen: the random generator.

    Returns:
        x: (T, B, 2) float32; y: (B,) float32.
    """
    _check("T", T, 2)
    _check("batch", batch, 1)
    values = torch.rand(T, batch, generator=gen)  # (T, B)
    half = T // 2
    first = torch.randint(0, half, (batch,), generator=gen)  # (B,)
    second = torch.randint(half, T, (batch,), generator=gen)  # (B,)
    markers = torch.zeros(T, batch)  # (T, B)
    cols = torch.arange(batch)
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    x = torch.stack([values, markers], dim=-1)  # (T, B, 2)
    y = values[first, cols] + values[second, cols]  # (B,)
    return x, y


def copy_batch(delay: int, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The copy-memory task (Arjovsky et al. 2016).

    The input, of length delay + 20, shows 10 symbols drawn uniformly from 1..8, then
    delay - 1 blanks (0), then the delimiter 9, then 10 blanks. The target is blank for the
    first delay + 10 steps and the 10 symbols, in order, for the last 10. A model with no
    memory can at best predict blanks and then guess uniformly among the 8 symbols, which
    scores the cross-entropy 10·log 8 / (delay + 20) per step (`copy_baseline`).

    Arguments:
        delay: steps from the last symbol shown to the delimiter, T in Arjovsky et al.'s
            notation (>= 1).
        batch: number of sequences (>= 1).
        gen: the random generator.

    Returns:
        x: (delay + 20, B) int64 symbols in 0..9 (embed or one-hot them);
        y: (delay + 20, B) int64 targets in 0..8.
    """
    _check("delay", delay, 1)
    _check("batch", batch, 1)
    n = COPY_LENGTH
    length = delay + 2 * n
    data = torch.randint(1, COPY_SYMBOLS + 1, (n, batch), generator=gen)  # (10, B)
    x = torch.full((length, batch), COPY_BLANK, dtype=torch.long)  # (T + 20, B)
    x[:n] = data
    x[n + delay - 1] = COPY_DELIMITER
    y = torch.full((length, batch), COPY_BLANK, dtype=torch.long)  # (T + 20, B)
    y[-n:] = data
    return x, y


def copy_baseline(delay: int) -> float:
    """Cross-entropy per step of the best memoryless predictor: 10·log(8) / (delay + 20)."""
    return COPY_LENGTH * math.log(COPY_SYMBOLS) / (delay + 2 * COPY_LENGTH)


def noisy_memory_batch(
    T: int, batch: int, noise: float, gen: torch.Generator, symbols: int = 4
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Remember one flagged symbol among distractors (after Hochreiter & Schmidhuber 1997).

    Input channels: `symbols` one-hot channels and one flag channel. At one step drawn
    uniformly in the first half of the sequence the input is the one-hot code of the class
    to remember, with the flag set to 1. At every other step the symbol channels carry a
    distractor: `noise` times the one-hot code of a random symbol, with the flag 0. The
    target is the flagged class, to be reported after the last step. With noise = 0 the
    task is a plain delay; at noise = 1 distractors differ from the signal only by the flag;
    above 1 they are louder than the signal. Chance accuracy is 1 / symbols.

    Arguments:
        T: sequence length (>= 2).
        batch: number of sequences (>= 1).
        noise: distractor amplitude (>= 0).
        gen: the random generator.
        symbols: number of classes (>= 2).

    Returns:
        x: (T, B, symbols + 1) float32; y: (B,) int64 class; signal: (T, B) bool, True at
        the flagged step.
    """
    _check("T", T, 2)
    _check("batch", batch, 1)
    _check("symbols", symbols, 2)
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    cols = torch.arange(batch)
    y = torch.randint(0, symbols, (batch,), generator=gen)  # (B,)
    where = torch.randint(0, T // 2, (batch,), generator=gen)  # (B,)
    distract = torch.randint(0, symbols, (T, batch), generator=gen)  # (T, B)
    x = torch.zeros(T, batch, symbols + 1)  # (T, B, S + 1)
    x[..., :symbols] = noise * torch.nn.functional.one_hot(distract, symbols).float()
    signal = torch.zeros(T, batch, dtype=torch.bool)  # (T, B)
    signal[where, cols] = True
    x[where, cols, :symbols] = torch.nn.functional.one_hot(y, symbols).float()
    x[where, cols, symbols] = 1.0
    return x, y, signal
