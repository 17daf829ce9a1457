"""gatelab.nn.LSTM: torch.nn.LSTM, plus the gates of every step.

    f_t = σ(W_f·[h_{t-1}, x_t] + b_f)        forget gate
    i_t = σ(W_i·[h_{t-1}, x_t] + b_i)        input gate
    g_t = tanh(W_g·[h_{t-1}, x_t] + b_g)     candidate memory C̃_t
    o_t = σ(W_o·[h_{t-1}, x_t] + b_o)        output gate
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)                    (proj_size > 0: h_t = W_hr (o_t ⊙ tanh(c_t)))

The LSTM family (keyword-only options, all off by default; gatelab.nn.options, docs/variants.md),
with a = x_t W_ih^T + b_ih + (d ⊙ h_{t-1}) W_hh^T + b_hh split into a_i|a_f|a_g|a_o:
    forget_bias=b          initial b_f = b (f rows of bias_ih = b, of bias_hh = 0)   Gers et al. 2000
    peephole=True          a_f += p_f ⊙ c_{t-1}, a_i += p_i ⊙ c_{t-1},
                           a_o += p_o ⊙ c̃_t                                        Gers & Schmidhuber 2000
    layer_norm=True        a = LN(x_t W_ih^T) + LN(h_{t-1} W_hh^T) + b_ih + b_hh,
                           h̃_t = o ⊙ φ(LN(c̃_t))                                    Ba et al. 2016
    coupled_gates=True     i = 1 - f                                                 Greff et al. 2017
    remove={...}, no_*     f = 1, i = 1, o = 1, h̃_t = o ⊙ c̃_t, g = a_g             Greff et al. 2017
    gate_activation, cell_activation   σ ∈ {sigmoid, hard_sigmoid}, φ ∈ {tanh, softsign}
    zoneout=p | (p_h, p_c) c_t = m_c ⊙ c_{t-1} + (1 - m_c) ⊙ c̃_t, h_t likewise    Krueger et al. 2016
    recurrent_dropout=p    d ~ Bernoulli(1 - p) / (1 - p), one per sequence          Gal & Ghahramani 2016
    weight_drop=p          W_hh ⊙ M / (1 - p), one M per forward                     Merity et al. 2018
(c̃_t = f ⊙ c_{t-1} + i ⊙ g is the new cell before zoneout; the recorded `c` is the carried c_t.)
"""

from __future__ import annotations

from gatelab.nn.base import RNNBase


class LSTM(RNNBase):
    """Drop-in torch.nn.LSTM (same arguments, parameters, outputs, gradients and errors).

    Arguments:
        input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
        bidirectional=False, proj_size=0, device=None, dtype=None: as torch.nn.LSTM.
        backend: keyword-only, "auto" | "fused" | "eager".
        forget_bias: keyword-only, None or the initial forget-gate bias.
        peephole, layer_norm, coupled_gates: keyword-only booleans.
        remove: keyword-only set of parts from gatelab.engines.ABLATIONS; or the booleans
            no_forget_gate, no_input_gate, no_output_gate, no_output_activation,
            no_candidate_activation.
        gate_activation: "sigmoid" | "hard_sigmoid".   cell_activation: "tanh" | "softsign".
        zoneout: p or (p_h, p_c) in [0, 1).   recurrent_dropout, weight_drop: p in [0, 1).

    New parameters, per layer-direction (suffix _l{k}[_reverse]):
        weight_ph (3, H) rows p_f|p_i|p_o (peephole); ln_ih_weight, ln_ih_bias, ln_hh_weight,
        ln_hh_bias (4H,) in the i|f|g|o row order, ln_c_weight, ln_c_bias (H,) (layer_norm).

    forward(input, hx=None, *, return_gates=False, masks=None):
        input: (T, B, I), (B, T, I) with batch_first, (T, I) unbatched, or a PackedSequence.
        hx: optional (h_0, c_0), (L*D, B, H_out) and (L*D, B, H) ((L*D, H_out), (L*D, H) unbatched).
        masks: None (drawn in training mode; see draw_masks) or the list draw_masks returns.
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
