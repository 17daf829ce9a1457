"""The gate record returned by `forward(..., return_gates=True)`.

A plain `dict` from gate name to tensor:

    LSTM  f, i, g, o, c      (forget, input, candidate, output gate; cell state c_t)
    GRU   r, z, n            (reset, update, candidate)
    RNN   h                  (the hidden state, the RNN's only "gate")

Every tensor has shape `(num_layers * num_directions, T, B, H)`, index `layer * D + direction`
like torch.nn's h_n; with batch_first `(L*D, B, T, H)`; for unbatched input `(L*D, T, H)`;
for a single cell step `(B, H)` or `(H,)`. For packed input the layout is that of
`pad_packed_sequence(output, batch_first=module.batch_first)`: T is the longest sequence,
the batch is in the original (unsorted) order of the sequences, the padded steps are zero.

LSTM-family variants (gatelab.nn options): a removed gate is recorded as its constant
(f = 1, i = 1, o = 1; g = a_g without the candidate activation), a coupled input gate as
i = 1 - f; `c` is the carried cell c_t (after zoneout).

The tensors are part of the autograd graph (not detached) when the engine records them
with autograd (the eager engine); recording never changes any output or gradient.
"""

from __future__ import annotations

import torch

GATE_NAMES = {"LSTM": ("f", "i", "g", "o", "c"), "GRU": ("r", "z", "n"),
              "RNN_TANH": ("h",), "RNN_RELU": ("h",)}


def stack_layers(records, names):
    """Stack the records of every layer-direction into one dict.

    Arguments:
        records: list of L*D dicts name -> (T, B, H), in the order layer * D + direction.
        names: the gate names to keep, in order.
    Returns dict name -> (L*D, T, B, H).
    """
    return {k: torch.stack([r[k] for r in records], 0) for k in names}


def arrange(gates, *, unsorted_indices=None, batch_first=False, batched=True):
    """Put stacked gates (L*D, T, B, H) into the layout of the module's output.

    Arguments:
        gates: dict name -> (L*D, T, B, H), batch in the engine's (sorted) order.
        unsorted_indices: PackedSequence.unsorted_indices, or None.
        batch_first: return (L*D, B, T, H).
        batched: False for unbatched input: (L*D, T, H).
    """
    out = {}
    for k, v in gates.items():
        if unsorted_indices is not None:
            v = v.index_select(2, unsorted_indices)  # (L*D, T, B, H), original order
        if not batched:
            v = v.squeeze(2)  # (L*D, T, H)
        elif batch_first:
            v = v.transpose(1, 2)  # (L*D, B, T, H)
        out[k] = v
    return out


def summary(gates, lengths=None):
    """Mean value of every gate over the steps, per layer-direction: dict name -> (L*D,).

    Arguments:
        gates: dict name -> (L*D, T, B, H) (time-major, batched).
        lengths: optional (B,) real lengths; padded steps are left out of the mean.
    """
    out = {}
    for k, v in gates.items():
        if lengths is None:
            out[k] = v.mean(dim=(1, 2, 3))
            continue
        T = v.shape[1]
        mask = (torch.arange(T, device=v.device)[:, None]
                < torch.as_tensor(lengths, device=v.device)[None, :]).to(v.dtype)  # (T, B)
        total = (v * mask[None, :, :, None]).sum(dim=(1, 2, 3))
        out[k] = total / (mask.sum() * v.shape[-1])
    return out
