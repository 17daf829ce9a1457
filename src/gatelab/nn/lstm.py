"""gatelab.nn.LSTM: torch.nn.LSTM, plus the gates of every step.

    f_t = σ(W_f·[h_{t-1}, x_t] + b_f)        forget gate
    i_t = σ(W_i·[h_{t-1}, x_t] + b_i)        input gate
    g_t = tanh(W_g·[h_{t-1}, x_t] + b_g)     candidate memory C̃_t
    o_t = σ(W_o·[h_{t-1}, x_t] + b_o)        output gate
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)                    (proj_size > 0: h_t = W_hr (o_t ⊙ tanh(c_t)))
"""

from __future__ import annotations

from gatelab.nn.base import RNNBase


class LSTM(RNNBase):
    """Drop-in torch.nn.LSTM (same arguments, parameters, outputs, gradients and errors).

    Arguments:
        input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
        bidirectional=False, proj_size=0, device=None, dtype=None: as torch.nn.LSTM.
        backend: keyword-only, "auto" | "fused" | "eager".

    forward(input, hx=None, *, return_gates=False):
        input: (T, B, I), (B, T, I) with batch_first, (T, I) unbatched, or a PackedSequence.
        hx: optional (h_0, c_0), (L*D, B, H_out) and (L*D, B, H) ((L*D, H_out), (L*D, H) unbatched).
        Returns (output, (h_n, c_n)), and with return_gates=True a third element: dict
        f, i, g, o, c -> (L*D, T, B, H) (see gatelab.gates for the layouts).
    """

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    def forward(self, input, hx=None, *, return_gates=False, masks=None):
        output, (h_n, c_n), gates = self._forward(input, None if hx is None else tuple(hx),
                                                  return_gates, masks)
        if return_gates:
            return output, (h_n, c_n), gates
        return output, (h_n, c_n)
