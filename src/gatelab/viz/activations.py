"""Every gate of every unit at every character of a text, from gatelab.nn's gate record.

The record holds LSTM f i g o c, GRU r z n, RNN h per layer. The module returns the hidden
output h of its last layer only, so h of every layer is computed here by running the layers
one at a time: a one-layer module of the same class and options per layer, holding that
layer's weights. That is exact for every cell and variant (no equation re-derived here).
"""

from __future__ import annotations

import re
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
    g["h"] = torch.stack([out[:, 0] for out in layer_outputs(model, ids)]).double()  # (L, T, H)
    logp = torch.log_softmax(logits[:, 0].double(), -1)  # (T, V)
    probs = torch.zeros(len(text), dtype=torch.float64)
    probs[1:] = logp[:-1].gather(1, ids[1:]).exp()[:, 0]  # the first character has no context
    quantities = QUANTITIES[cell]
    values = {q: g[q].float().numpy() for q in quantities}
    return Activations(text=text, quantities=quantities, values=values, probs=probs.float().numpy())


@torch.no_grad()
def layer_outputs(model, ids: torch.Tensor) -> list[torch.Tensor]:
    """The hidden output of every layer of the model's recurrent stack (eval mode).

    Arguments:
        model: a CharLM.
        ids: (T, B) token ids.

    Returns L tensors (T, B, H).
    """
    rnn, cfg = model.rnn, model.config
    x = model.embed(ids)  # (T, B, E)
    if cfg.num_layers == 1:
        return [rnn(x)[0]]
    state = rnn.state_dict()
    outs = []
    for layer in range(cfg.num_layers):
        single = type(rnn)(x.shape[-1], cfg.hidden_size, num_layers=1, backend=rnn.backend,
                           **cfg.cell_options)
        mine = re.compile(rf"_l{layer}(?=_|$)")
        single.load_state_dict({mine.sub("_l0", k): v for k, v in state.items() if mine.search(k)})
        single.eval()
        x, _ = single(x)  # (T, B, H)
        outs.append(x)
    return outs
