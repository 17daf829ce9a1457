"""Text from a trained character model: feed the prime, then draw one character at a time."""

from __future__ import annotations

import torch

from gatelab.data.text import encode
from gatelab.errors import UsageError


@torch.no_grad()
def generate(model, vocab: list[str], prime: str, length: int, *, temperature: float = 1.0,
             seed: int = 0) -> str:
    """`length` characters that follow `prime`, drawn from the model's distribution.

    Deterministic for a seed: the draws come from a torch.Generator seeded here, never
    from the global generator.

    Arguments:
        model: a CharLM (switched to eval mode for the call, restored after).
        vocab: the run's characters, id = position.
        prime: the text to continue (every character must be in the vocabulary; non-empty).
        length: how many characters to draw (≥ 0).
        temperature: > 0; below 1 sharper (more likely characters), above 1 flatter.
        seed: the generator's seed.
    """
    if not prime:
        raise UsageError("--prime must not be empty")
    if length < 0:
        raise UsageError(f"--length must be ≥ 0, got {length}")
    if not temperature > 0:
        raise UsageError(f"--temperature must be > 0, got {temperature}")
    ids = torch.from_numpy(encode(prime, vocab).astype("int64"))  # (P,)
    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    out = []
    try:
        logits, state = model(ids.view(-1, 1))  # (P, 1, V)
        last = logits[-1, 0]  # (V,)
        for _ in range(length):
            probs = torch.softmax(last.double() / temperature, dim=-1)  # (V,)
            nxt = int(torch.multinomial(probs, 1, generator=g))
            out.append(vocab[nxt])
            logits, state = model(torch.tensor([[nxt]]), state)  # (1, 1, V)
            last = logits[0, 0]
    finally:
        model.train(was_training)
    return "".join(out)


def default_prime(vocab: list[str]) -> str:
    """A newline when the vocabulary has one (a fresh line), else its first character."""
    return "\n" if "\n" in vocab else vocab[0]
