"""The cuDNN engine: PyTorch's own recurrent kernel, for requests torch.nn can express.

On CUDA, torch.nn.LSTM/GRU/RNN run cuDNN's fused kernel (or, with cuDNN switched off,
PyTorch's native CUDA kernel). This engine calls that same kernel, through the functions
torch.nn's modules call (`torch._VF.lstm`, `gru`, `rnn_tanh`, `rnn_relu`), for one
layer-direction (see `gatelab.engines` for the contract). It therefore computes exactly
what torch.nn computes on the same device, and it can only do what torch.nn can:

    - x on a CUDA device (on CPU the fused and eager engines are used),
    - the plain cell (`spec.is_plain`: no peephole, layer norm, coupled gates, ablation
      or other activation),
    - no gates recorded (cuDNN does not expose them),
    - no stochastic masks (zoneout, recurrent dropout).

`unsupported()` names the first of these that fails, so `backend="auto"` passes over
this engine (and logs why) and the next engine runs the request.

Two details of the glue:
    - The reverse direction: each row's real steps are reversed in time (a gather), run
      forward, and reversed back. For padded (packed) batches a row of length L_b maps
      t -> L_b - 1 - t for t < L_b, which is exactly torch.nn's reverse direction: every
      row starts from the initial state at its own last real step.
    - The weights arrive as separate tensors (the module's parameters, possibly after
      weight_drop), not as cuDNN's single flattened buffer, so cuDNN compacts them on
      each call (a copy of the layer's weights, small next to the recurrence). PyTorch
      warns about that copy; the warning is silenced here and only here, because the
      copy is the price of keeping gatelab's parameters as ordinary tensors.
"""

from __future__ import annotations

import warnings

import torch

NAME = "cudnn"

# spec.mode -> the function torch.nn's module calls (torch/nn/modules/rnn.py).
_KERNELS = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_COMPACTION_WARNING = "RNN module weights are not part of single contiguous chunk of memory"


def unsupported(spec, x, record) -> str | None:
    """None when torch's CUDA kernel computes exactly this request, else the reason."""
    if not isinstance(x, torch.Tensor) or not x.is_cuda:
        return "not on CUDA"
    if record:
        return "gates recorded (cuDNN does not expose them)"
    if spec.mode not in _KERNELS:
        return f"unknown mode {spec.mode!r}"
    if not spec.is_plain:
        return "an LSTM-family variant (cuDNN computes only the plain cell)"
    if x.dtype not in _DTYPES:
        return f"dtype {x.dtype} (cuDNN takes float16, bfloat16, float32, float64)"
    return None


def _flat_weights(spec, weights) -> list:
    """The layer-direction's weights in torch.nn's `_flat_weights` order, always with biases.

    Without biases (spec.bias False) zeros are passed: given weights only, torch takes them
    for cuDNN's flat buffer when they lie where such a buffer would hold them, and checks
    only the weights' places, not the biases', which it expects to be zero. The weights of
    one direction of a torch.nn module (views into its own flat buffer, the forward
    direction first) pass that check while the places after them hold the other
    direction's weights: measured on an H200, outputs off by up to 0.63. With biases every
    place is checked, and separate zeros never match, so torch compacts the weights."""
    flat = [weights["weight_ih"], weights["weight_hh"]]  # (G*H, I), (G*H, H_out)
    if spec.bias:
        flat += [weights["bias_ih"], weights["bias_hh"]]  # (G*H,), (G*H,)
    else:
        zero = flat[0].new_zeros(flat[0].shape[0])  # (G*H,)
        flat += [zero, zero]
    if spec.mode == "LSTM" and spec.proj_size > 0:
        flat.append(weights["weight_hr"])  # (H_out, H)
    return flat


def _reverse_index(T: int, B: int, batch_sizes, device) -> torch.Tensor:
    """(T, B) time index that reverses each row's real steps and keeps its padding."""
    t = torch.arange(T, device=device)[:, None]  # (T, 1)
    if batch_sizes is None:
        return (T - 1 - t).expand(T, B)  # (T, B)
    sizes = torch.as_tensor(list(batch_sizes), device=device)  # (T,)
    L = (sizes[:, None] > torch.arange(B, device=device)[None, :]).sum(0, keepdim=True)  # (1, B) real steps per row
    return torch.where(t < L, L - 1 - t, t)  # (T, B)


def _time_gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[index[t, b], b, :] for (T, B, K) x and (T, B) index."""
    return x.gather(0, index[:, :, None].expand(-1, -1, x.shape[2]))  # (T, B, K)


def run(spec, x, state, weights, *, batch_sizes=None, reverse=False, record=False,
        training=False, masks=None):
    """Run one layer-direction with torch's CUDA kernel; see `gatelab.engines`.

    Arguments:
        spec: the CellSpec (plain cell only).
        x: (T, B, I) time-major input on a CUDA device.
        state: LSTM (h0 (B, H_out), c0 (B, H)); GRU/RNN (h0 (B, H),).
        weights: weight_ih, weight_hh, bias_ih/bias_hh (spec.bias), weight_hr (proj_size).
        batch_sizes: None or T non-increasing ints (rows b < batch_sizes[t] are real).
        reverse: the reverse direction.
        record: must be False (see unsupported()).
        training: the module's training flag (passed on; no dropout inside one layer).
        masks: must be None.
    Returns (out (T, B, H_out), state_T, None).
    """
    if record:
        raise ValueError("cudnn engine: cannot record gates")
    if masks:
        raise ValueError("cudnn engine: cannot apply zoneout or recurrent-dropout masks")
    kernel = getattr(torch._VF, _KERNELS[spec.mode])
    T, B, _ = x.shape
    lstm = spec.mode == "LSTM"
    hx = tuple(s.unsqueeze(0) for s in state)  # each (1, B, ·): one layer, one direction
    hx = hx if lstm else hx[0]
    flat = _flat_weights(spec, weights)
    index = _reverse_index(T, B, batch_sizes, x.device) if reverse else None
    if index is not None:
        x = _time_gather(x, index)  # (T, B, I), each row's real steps reversed
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_COMPACTION_WARNING, category=UserWarning)
        if batch_sizes is None:
            # (input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
            out, *hidden = kernel(x, hx, flat, True, 1, 0.0, training, False, False)
        else:
            sizes = torch.as_tensor(list(batch_sizes), dtype=torch.int64)  # (T,) on the CPU, as torch wants
            real = torch.arange(B, device=x.device)[None, :] < sizes.to(x.device)[:, None]  # (T, B)
            data = x[real]  # (N, I), packed order: time-major, rows in order within a step
            # (data, batch_sizes, hx, params, has_biases, num_layers, dropout, train, bidirectional)
            packed, *hidden = kernel(data, sizes, hx, flat, True, 1, 0.0, training, False)
            out = packed.new_zeros(T, B, packed.shape[1]).index_put((real,), packed)  # (T, B, H_out)
    if index is not None:
        out = _time_gather(out, index)  # the reversal is its own inverse
    state_T = tuple(s.squeeze(0) for s in hidden)  # (B, H_out) [, (B, H)]
    return out, state_T, None
