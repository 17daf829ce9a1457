"""The character-level language model: embedding -> gatelab.nn LSTM/GRU/RNN -> linear.

Time-major throughout, like the engines: token ids (T, B) in, logits (T, B, V) out.
"""

from __future__ import annotations

import torch
from torch import nn as tnn

from gatelab import nn as gnn
from gatelab.lm.config import ModelConfig

_CELLS = {"lstm": gnn.LSTM, "gru": gnn.GRU, "rnn": gnn.RNN}


class CharLM(tnn.Module):
    """Predicts the next character from the characters so far.

    Arguments:
        config: a ModelConfig (vocab_size must be set).
        backend: the gatelab.nn engine ("auto" picks the fused CPU engine when it can).
    """

    def __init__(self, config: ModelConfig, *, backend: str = "auto"):
        super().__init__()
        config.check()
        self.config = config
        V, E, H = config.vocab_size, config.embed_size, config.hidden_size
        self.embed = tnn.Embedding(V, E)
        self.drop = tnn.Dropout(config.dropout)
        self.rnn = _CELLS[config.cell](E, H, num_layers=config.num_layers,
                                      dropout=config.dropout if config.num_layers > 1 else 0.0,
                                      backend=backend, **config.cell_options)
        self.head = tnn.Linear(H, V)

    def forward(self, x: torch.Tensor, state=None, *, return_gates: bool = False):
        """Logits of the next character at every step.

        Arguments:
            x: (T, B) int64 token ids.
            state: the recurrent state a previous call returned, or None (zeros).
            return_gates: also return gatelab.nn's gate record, a dict of (L, T, B, H).

        Returns (logits (T, B, V), state), plus the gate dict with return_gates=True.
        """
        emb = self.drop(self.embed(x))  # (T, B, E)
        if return_gates:
            out, state, gates = self.rnn(emb, state, return_gates=True)  # out (T, B, H)
        else:
            out, state = self.rnn(emb, state)  # (T, B, H)
        logits = self.head(self.drop(out))  # (T, B, V)
        return (logits, state, gates) if return_gates else (logits, state)


def detach_state(state):
    """The recurrent state cut from the graph (truncated BPTT carries it across windows)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def count_parameters(model: tnn.Module) -> int:
    """The number of trainable numbers."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
