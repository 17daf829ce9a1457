"""The NumPy reference of the LSTM family (gatelab.reference.lstm_family / gru_family) run over a
whole gatelab.nn stack, forward AND backward: the independent oracle of the variant tests.

Every layer, direction and sequence is run on its own by the reference (forward and its
hand-derived BPTT), with the masks the module was given; layers are chained by hand
(∂L/∂input of layer k is ∂L/∂output of layer k - 1). Nothing here calls gatelab.nn or an
engine: the module is only read for its options and parameters.
"""

from __future__ import annotations

import numpy as np

from gatelab import reference


def suffix(layer: int, direction: int) -> str:
    return f"_l{layer}" + ("_reverse" if direction == 1 else "")


def layer_weights(module, layer: int, direction: int, suffix_: str | None = None) -> dict:
    """float64 numpy copies of one layer-direction's parameters under their base names."""
    s = suffix(layer, direction) if suffix_ is None else suffix_
    out = {}
    for name, p in module.named_parameters():
        if s and not name.endswith(s):
            continue
        out[name[: -len(s)] if s else name] = p.detach().numpy().astype(np.float64)  # the reference in float64
    return out


def run_reference(mode, options, weights, seq, init, masks):
    """One layer-direction on one sequence. Returns (hs, finals, gates, cache).

    Arguments:
        mode: "LSTM" or "GRU".   options: the module's Options.
        weights: torch-named numpy parameters (weight_hh already dropped).
        seq: (n, 1, I).   init: list of (1, *) initial states.   masks: numpy dict.
    """
    params = reference.from_torch_layout(weights, mode)
    if mode == "LSTM":
        kw = dict(peephole=options.peephole, layer_norm=options.layer_norm, coupled_gates=options.coupled_gates,
                  remove=options.remove, gate_activation=options.gate_activation,
                  cell_activation=options.cell_activation)
        hs, (h, c), cache = reference.lstm_family_forward(seq, params, *init, masks=masks, **kw)
        return hs, (h, c), reference.lstm_family_gates(cache), cache
    kw = dict(layer_norm=options.layer_norm, gate_activation=options.gate_activation,
              cell_activation=options.cell_activation, reset_after=options.reset_after)
    hs, h, cache = reference.gru_family_forward(seq, params, init[0], masks=masks, **kw)
    return hs, (h,), reference.gru_family_gates(cache), cache


def stack(module, x, lengths, h0, masks, d_out, d_final):
    """Forward and backward of a gatelab.nn LSTM/GRU stack by the reference.

    Arguments:
        module: gatelab.nn.LSTM or GRU (inter-layer dropout must be off).
        x: (T, B, I) numpy, time-major; sequence b is x[:lengths[b], b].
        lengths: B ints.   h0: tuple of (L*D, B, H_out) [, (L*D, B, H)] numpy.
        masks: list of L*D numpy dicts (weight_hh, recurrent_dropout, zoneout_h, zoneout_c),
            batch in the order of x, time that of x.
        d_out: (T, B, D*H_out) ∂L/∂output (zero at padded steps).
        d_final: tuple like h0, ∂L/∂(final states).
    Returns (out, finals, gates (L*D, T, B, H) per name, grads) with grads: parameter name
    (with suffix) -> numpy, plus "x" (T, B, I) and "h0" (a tuple like h0).
    """
    mode = module.mode
    D = 2 if module.bidirectional else 1
    L, H = module.num_layers, module.hidden_size
    T, B, _ = x.shape
    lstm = mode == "LSTM"
    names = ("f", "i", "g", "o", "c") if lstm else ("r", "z", "n")
    gates = {k: np.zeros((L * D, T, B, H)) for k in names}
    finals = [np.zeros_like(s) for s in h0]
    grads = {}
    caches = {}
    layer_in = x
    inputs = []
    for layer in range(L):
        inputs.append(layer_in)
        outs = []
        for d in range(D):
            k = layer * D + d
            w = layer_weights(module, layer, d)
            m = masks[k]
            if "weight_hh" in m:
                w["weight_hh"] = w["weight_hh"] * m["weight_hh"]  # DropConnect
            H_out = h0[0].shape[-1]
            out = np.zeros((T, B, H_out))
            for b, n in enumerate(lengths):
                seq = layer_in[:n, b: b + 1]
                mb = {}
                for name in ("zoneout_h", "zoneout_c"):
                    if name in m:
                        mb[name] = m[name][:n, b: b + 1]
                if "recurrent_dropout" in m:
                    mb["recurrent_dropout"] = m["recurrent_dropout"][b: b + 1]
                if d == 1:
                    seq = seq[::-1].copy()
                    mb = {name: v[::-1].copy() if name.startswith("zoneout") else v for name, v in mb.items()}
                init = [s[k, b: b + 1] for s in h0]
                hs, state_T, rec, cache = run_reference(mode, module.options, w, seq, init, mb)
                caches[k, b] = cache
                if d == 1:
                    hs = hs[::-1]
                    rec = {g: v[::-1] for g, v in rec.items()}
                out[:n, b] = hs[:, 0]
                for g in names:
                    gates[g][k, :n, b] = rec[g][:, 0]
                for acc, s in zip(finals, state_T):
                    acc[k, b] = s[0]
            outs.append(out)
        layer_in = np.concatenate(outs, axis=2)

    d_h0 = [np.zeros_like(s) for s in h0]
    d_layer_out = d_out
    for layer in reversed(range(L)):
        d_layer_in = np.zeros_like(inputs[layer])
        for d in range(D):
            k = layer * D + d
            H_out = h0[0].shape[-1]
            acc = {}
            for b, n in enumerate(lengths):
                dhs = d_layer_out[:n, b: b + 1, d * H_out: (d + 1) * H_out]
                if d == 1:
                    dhs = dhs[::-1].copy()
                finals_grad = [s[k, b: b + 1] for s in d_final]
                cache = caches[k, b]
                if lstm:
                    g = reference.lstm_family_backward(dhs, cache, *finals_grad)
                else:
                    g = reference.gru_family_backward(dhs, cache, finals_grad[0])
                dx = g["x"][::-1] if d == 1 else g["x"]
                d_layer_in[:n, b] += dx[:, 0]
                d_h0[0][k, b] += g["h0"][0]
                if lstm:
                    d_h0[1][k, b] += g["c0"][0]
                for name, v in reference.to_torch_layout(g, mode, gradients=True).items():
                    acc[name] = acc.get(name, 0) + v
            m = masks[k]
            if "weight_hh" in m:
                acc["weight_hh"] = acc["weight_hh"] * m["weight_hh"]  # ∂(W ⊙ M)/∂W = M
            for name, v in acc.items():
                grads[name + suffix(layer, d)] = v
        d_layer_out = d_layer_in
    grads["x"] = d_layer_out
    grads["h0"] = tuple(d_h0)
    return layer_in, tuple(finals), gates, grads
