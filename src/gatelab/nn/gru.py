"""gatelab.nn.GRU: torch.nn.GRU ("reset after", as torch), plus the gates of every step.

    r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)             reset gate
    z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)             update gate
    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))  candidate
    h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

Keyword-only options (off by default; gatelab.nn.options, docs/variants.md):
    reset_after=False      n_t = φ(W_in x_t + b_in + W_hn (r_t ⊙ h_{t-1}) + b_hn)    Cho et al. 2014
    layer_norm=True        LN(W_i x_t) and LN(W_h h_{t-1}) over all 3H rows, before the biases
                           (needs reset_after=True)                                   Ba et al. 2016
    gate_activation, cell_activation   σ ∈ {sigmoid, hard_sigmoid}, φ ∈ {tanh, softsign}
    zoneout=p              h_t = m ⊙ h_{t-1} + (1 - m) ⊙ h̃_t                          Krueger et al. 2016
    recurrent_dropout=p    d ⊙ h_{t-1} inside the recurrent products only            Gal & Ghahramani 2016
    weight_drop=p          W_hh ⊙ M / (1 - p), one M per forward                     Merity et al. 2018
"""

from __future__ import annotations

from gatelab.nn.base import RNNBase


class GRU(RNNBase):
    """Drop-in torch.nn.GRU (same arguments, parameters, outputs, gradients and errors).

    Arguments:
        input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
        bidirectional=False, device=None, dtype=None: as torch.nn.GRU.
        backend: keyword-only, "auto" | "fused" | "eager".
        reset_after, layer_norm: keyword-only booleans.
        gate_activation: "sigmoid" | "hard_sigmoid".   cell_activation: "tanh" | "softsign".
        zoneout, recurrent_dropout, weight_drop: keyword-only probabilities in [0, 1).

    New parameters with layer_norm, per layer-direction: ln_ih_weight, ln_ih_bias,
        ln_hh_weight, ln_hh_bias (3H,), rows r|z|n.

    forward(input, hx=None, *, return_gates=False, masks=None):
        input: (T, B, I), (B, T, I) with batch_first, (T, I) unbatched, or a PackedSequence.
        hx: optional h_0, (L*D, B, H) ((L*D, H) unbatched).
        masks: None (drawn in training mode; see draw_masks) or the list draw_masks returns.
        Returns (output, h_n), and with return_gates=True a third element: dict
        r, z, n -> (L*D, T, B, H) (see gatelab.gates for the layouts).
    """

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)

    def forward(self, input, hx=None, *, return_gates=False, masks=None):
        output, (h_n,), gates = self._forward(input, None if hx is None else (hx,), return_gates, masks)
        if return_gates:
            return output, h_n, gates
        return output, h_n
