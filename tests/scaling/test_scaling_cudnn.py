"""The cudnn engine: who it refuses and why (on any machine), and its glue around torch's
kernel (packing, reverse direction, projection) checked on the CPU, where the same
`torch._VF` functions run torch's native kernel, against torch.nn itself (float64 ≤ 1e-10).
On a GPU the same checks run on CUDA (tests marked `cuda`)."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gatelab.engines import CellSpec, cudnn

MODULES = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN_TANH": torch.nn.RNN, "RNN_RELU": torch.nn.RNN}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _torch_module(spec, bidirectional=True):
    kwargs = dict(bias=spec.bias, bidirectional=bidirectional, dtype=torch.float64)
    if spec.mode == "LSTM":
        kwargs["proj_size"] = spec.proj_size
    if spec.mode.startswith("RNN"):
        kwargs["nonlinearity"] = spec.mode[4:].lower()
    return MODULES[spec.mode](spec.input_size, spec.hidden_size, **kwargs)


def _weights(module, suffix):
    names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"]
    return {n: getattr(module, f"{n}_l0{suffix}") for n in names if hasattr(module, f"{n}_l0{suffix}")}


def _state(spec, module, B, gen, device):
    h = torch.randn(2, B, spec.out_size, generator=gen, dtype=torch.float64).to(device)
    if spec.mode == "LSTM":
        c = torch.randn(2, B, spec.hidden_size, generator=gen, dtype=torch.float64).to(device)
        return (h, c)
    return h


# ---- refusals: every reason, on any machine ----------------------------------------

def test_refuses_cpu_input_so_cpu_behaviour_is_unchanged():
    spec = CellSpec("LSTM", 3, 4)
    assert cudnn.unsupported(spec, torch.zeros(2, 1, 3), False) == "not on CUDA"
    assert cudnn.unsupported(spec, torch.zeros(2, 1, 3), True) == "not on CUDA"


@CUDA
@pytest.mark.cuda
def test_refusal_reasons_on_cuda():
    x = torch.zeros(2, 1, 3, device="cuda")
    assert cudnn.unsupported(CellSpec("LSTM", 3, 4), x, False) is None
    assert cudnn.unsupported(CellSpec("GRU", 3, 4), x, False) is None
    assert "gates recorded" in cudnn.unsupported(CellSpec("LSTM", 3, 4), x, True)
    assert "variant" in cudnn.unsupported(CellSpec("LSTM", 3, 4, peephole=True), x, False)
    assert "variant" in cudnn.unsupported(CellSpec("GRU", 3, 4, reset_after=False), x, False)
    assert "dtype" in cudnn.unsupported(CellSpec("LSTM", 3, 4), x.to(torch.int64), False)


def test_run_refuses_record_and_masks():
    spec = CellSpec("GRU", 3, 4)
    x, h = torch.zeros(2, 1, 3), torch.zeros(1, 4)
    w = {"weight_ih": torch.zeros(12, 3), "weight_hh": torch.zeros(12, 4),
         "bias_ih": torch.zeros(12), "bias_hh": torch.zeros(12)}
    with pytest.raises(ValueError, match="record"):
        cudnn.run(spec, x, (h,), w, record=True)
    with pytest.raises(ValueError, match="masks"):
        cudnn.run(spec, x, (h,), w, masks={"zoneout_h": torch.zeros(2, 1, 4)})


# ---- the glue, against torch.nn on the same device ------------------------------------

SPECS = [
    CellSpec("LSTM", 5, 6),
    CellSpec("LSTM", 5, 6, proj_size=3),
    CellSpec("LSTM", 5, 6, bias=False),
    CellSpec("GRU", 5, 6),
    CellSpec("RNN_TANH", 5, 6),
    CellSpec("RNN_RELU", 5, 6, bias=False),
]
LENGTHS = [None, [7, 7, 4, 1]]  # None: every row real at every step; else packed lengths


def _check_against_torch(spec, lengths, device):
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(11)
    module = _torch_module(spec).to(device)
    T, B = 7, 4
    x = torch.randn(T, B, spec.input_size, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    hx = _state(spec, module, B, gen, device)
    ref_in = x if lengths is None else pack_padded_sequence(x, torch.tensor(lengths))
    ref_out, ref_state = module(ref_in, hx)
    if lengths is not None:
        ref_out, _ = pad_packed_sequence(ref_out, total_length=T)  # (T, B, 2*H_out), zero-padded
    ref_states = ref_state if spec.mode == "LSTM" else (ref_state,)
    hx = hx if spec.mode == "LSTM" else (hx,)
    batch_sizes = None if lengths is None else [sum(1 for L in lengths if L > t) for t in range(T)]
    H = spec.out_size
    outs = []
    for d, suffix in enumerate(("", "_reverse")):
        state = tuple(s[d] for s in hx)
        out, state_T, gates = cudnn.run(spec, x, state, _weights(module, suffix),
                                        batch_sizes=batch_sizes, reverse=bool(d), training=True)
        assert gates is None
        torch.testing.assert_close(out, ref_out[..., d * H:(d + 1) * H], rtol=0, atol=1e-10)
        for mine, ref in zip(state_T, ref_states):
            torch.testing.assert_close(mine, ref[d], rtol=0, atol=1e-10)
        outs.append(out)
    # gradients flow to the input and to every weight of both directions, as through torch.nn
    loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype, device=device).view_as(o)).sum() for o in outs)
    grads = torch.autograd.grad(loss, [x, *module.parameters()])
    ref_loss = (ref_out * torch.cat([torch.linspace(-1, 1, outs[0].numel(), dtype=x.dtype, device=device)
                                     .view_as(outs[0])] * 2, dim=-1)).sum()
    ref_grads = torch.autograd.grad(ref_loss, [x, *module.parameters()])
    for mine, ref in zip(grads, ref_grads):
        torch.testing.assert_close(mine, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("lengths", LENGTHS, ids=["full", "packed"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.mode}-p{s.proj_size}-b{int(s.bias)}")
def test_glue_equals_torch_nn_on_cpu(spec, lengths):
    _check_against_torch(spec, lengths, "cpu")


@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("lengths", LENGTHS, ids=["full", "packed"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.mode}-p{s.proj_size}-b{int(s.bias)}")
def test_glue_equals_torch_nn_on_cuda(spec, lengths):
    _check_against_torch(spec, lengths, "cuda")
