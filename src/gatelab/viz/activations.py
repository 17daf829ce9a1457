"""Every gate of every unit at every character of a text, from gatelab.nn's gate record.

The record holds LSTM f i g o c, GRU r z n, RNN h per layer; the hidden output h of each
layer is added here from the equations (LSTM h_t = o_t ⊙ tanh(c_t); GRU
h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}), since the module returns only the last layer's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gatelab.data.text import encode

QUANTITIES = {"lstm": ("f", "i", "g", "o", "c", "h"), "gru": ("r", "z", "n", "h"), "rnn": ("h",)}
MEANING = {"f": "forget gate", "i": "input gate", "g": "candidate memory", "o": "output gate",
           "c": "cell state", "h": "hidden output", "r": "reset gate", "z": "update gate",
           "n": "candidate"}


@dataclass
class Activations:
    """values[q] is (L, T, H) float32: quantity q of layer l, unit u at character t."""

    text: str
    quantities: tuple[str, ...]
    values: dict[str, np.ndarray]
    probs: np.ndarray  # (T,) the model's probability of each character given those before it

    @property
    def shape(self) -> tuple[int, int, int]:
        return next(iter(self.values.values())).shape

    def matrix(self) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
        """All values as columns: (T, Q*L*H) and the (quantity, layer, unit) of each column."""
        L, T, H = self.shape
        cols = [self.values[q].transpose(1, 0, 2).reshape(T, L * H) for q in self.quantities]
        labels = [(q, l, u) for q in self.quantities for l in range(L) for u in range(H)]
        return np.concatenate(cols, axis=1), labels


@torch.no_grad()
def record(model, vocab: list[str], text: str) -> Activations:
    """Run the model over `text` (one sequence) and collect its gates.

    Arguments:
        model: a CharLM.
        vocab: its characters (UsageError naming any character of `text` outside them).
        text: the characters to read.
    """
    ids = torch.from_numpy(encode(text, vocab).astype(np.int64)).view(-1, 1)  # (T, 1)
    model.eval()
    logits, _, gates = model(ids, return_gates=True)  # (T, 1, V); gates (L, T, 1, H)
    g = {k: v[:, :, 0, :].double() for k, v in gates.items()}  # (L, T, H)
    cell = model.config.cell
    if cell == "lstm":
        g["h"] = g["o"] * torch.tanh(g["c"])
    elif cell == "gru":
        h = torch.zeros_like(g["n"][:, 0])  # (L, H)
        hs = []
        for t in range(g["n"].shape[1]):
            h = (1 - g["z"][:, t]) * g["n"][:, t] + g["z"][:, t] * h
            hs.append(h)
        g["h"] = torch.stack(hs, 1)  # (L, T, H)
    logp = torch.log_softmax(logits[:, 0].double(), -1)  # (T, V)
    probs = torch.zeros(len(text), dtype=torch.float64)
    probs[1:] = logp[:-1].gather(1, ids[1:]).exp()[:, 0]  # the first character has no context
    quantities = QUANTITIES[cell]
    values = {q: g[q].float().numpy() for q in quantities}
    return Activations(text=text, quantities=quantities, values=values, probs=probs.float().numpy())
