"""gatelab on a CUDA GPU (issue 8). Every test here needs a GPU and is skipped without one.

gatelab.nn on CUDA equals torch.nn on CUDA (float64 ≤ 1e-10) with the eager engine and
with `backend="auto"`, which takes the cudnn engine for plain requests and the eager one
when gates are recorded; the gate record lives on the GPU; the trainer runs on the GPU in
float32 and bf16.
"""

import json

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(autouse=True)
def _no_tf32(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.mark.parametrize("backend", ["auto", "eager"])
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_modules_on_cuda_equal_torch_nn(backend, mode, packed, bias):
    from gatelab import nn as gnn

    dev = torch.device("cuda")
    kwargs = dict(num_layers=2, bidirectional=True, bias=bias, dtype=torch.float64, device=dev)
    if mode == "LSTM":
        kwargs["proj_size"] = 3
    ref = getattr(torch.nn, mode)(5, 6, **kwargs)
    ours = getattr(gnn, mode)(5, 6, **kwargs, backend=backend)
    ours.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 4, 5, generator=g, dtype=torch.float64).to(dev).requires_grad_()
    lengths = torch.tensor([7, 6, 3, 1])
    inputs = [pack_padded_sequence(x, lengths) if packed else x for _ in range(2)]  # a packing graph each
    outs = [m(inp)[0] for m, inp in zip((ref, ours), inputs)]
    if packed:
        outs = [pad_packed_sequence(o)[0] for o in outs]
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-10)
    grads = [torch.autograd.grad(o.square().sum(), [x, *m.parameters()]) for o, m in zip(outs, (ref, ours))]
    for mine, theirs in zip(grads[1], grads[0]):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-10)


def test_auto_takes_cudnn_for_plain_requests_and_eager_for_gates():
    from gatelab.engines import CellSpec, select

    x = torch.zeros(3, 2, 4, device="cuda")
    assert select("auto", CellSpec("LSTM", 4, 5), x, False).NAME == "cudnn"
    assert select("auto", CellSpec("LSTM", 4, 5), x, True).NAME == "eager"
    assert select("auto", CellSpec("LSTM", 4, 5, peephole=True), x, False).NAME == "eager"


def test_gate_record_on_cuda():
    from gatelab import gates as gate_record
    from gatelab import nn as gnn

    lstm = gnn.LSTM(4, 5, device="cuda")
    x = torch.randn(6, 2, 4, device="cuda")
    _, _, gates = lstm(x, return_gates=True)
    assert all(v.device.type == "cuda" and v.shape == (1, 6, 2, 5) for v in gates.values())
    means = gate_record.summary(gates, lengths=[6, 4])
    assert all(v.device.type == "cuda" for v in means.values())


@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_trainer_on_cuda(tmp_path, precision):
    from gatelab import cli

    data = tmp_path / "corpus.txt"
    rng = np.random.default_rng(0)
    data.write_text("".join(rng.choice(list("abcdef (){}\n"), 20000).tolist()), encoding="utf-8")
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(data), "--out", str(out), "--device", "cuda",
                     "--precision", precision, "--steps", "6", "--hidden-size", "32",
                     "--batch-size", "8", "--seq-len", "16", "--eval-chars", "500", "--quiet"]) == 0
    final = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line][-1]
    assert final["final"] and np.isfinite(final["val_bpc"])


CUDA_VARIANTS = [
    ("LSTM", dict(peephole=True, layer_norm=True, forget_bias=1.0)),
    ("LSTM", dict(coupled_gates=True, no_output_activation=True, gate_activation="hard_sigmoid")),
    ("LSTM", dict(zoneout=(0.2, 0.3), recurrent_dropout=0.25, weight_drop=0.3, proj_size=3)),
    ("LSTM", dict(no_forget_gate=True, no_candidate_activation=True, cell_activation="softsign")),
    ("GRU", dict(layer_norm=True, zoneout=0.2, recurrent_dropout=0.3)),
    ("GRU", dict(reset_after=False, gate_activation="hard_sigmoid", weight_drop=0.3)),
]


def variants_equal_across_devices(mode, options, packed, device, backend):
    """A family module on `device` (`backend`) against the same module on the CPU (fused), the
    same masks (drawn on the CPU): out, final states, recorded gates and every gradient, float64."""
    from gatelab import nn as gnn

    options = dict(options)
    kw = dict(num_layers=2, bidirectional=True, dtype=torch.float64, proj_size=options.pop("proj_size", 0))
    if mode == "GRU":
        kw.pop("proj_size")
    torch.manual_seed(0)
    ref = getattr(gnn, mode)(5, 6, **kw, **options, backend="fused")
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.3 * torch.randn_like(p))  # layer-norm gains, peepholes: off their initial values
    ours = getattr(gnn, mode)(5, 6, **kw, **options, device=device, backend=backend)
    ours.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(1)
    T, B, lengths = 7, 4, torch.tensor([7, 6, 3, 1])
    x = torch.randn(T, B, 5, generator=g, dtype=torch.float64)
    masks = ref.draw_masks(T, B)
    results = []
    for module, dev in ((ref, "cpu"), (ours, device)):
        xd = x.to(dev).requires_grad_()
        inp = pack_padded_sequence(xd, lengths) if packed else xd
        out, state, gates = module(inp, masks=[{k: v.to(dev) for k, v in m.items()} for m in masks],
                                   return_gates=True)
        out = pad_packed_sequence(out)[0] if packed else out
        state = state if mode == "LSTM" else (state,)
        loss = out.square().sum() + sum(s.sum() for s in state) + sum((v * v).sum() for v in gates.values())
        grads = torch.autograd.grad(loss, [xd, *module.parameters()])
        results.append([t.detach().cpu() for t in (out, *state, *gates.values(), *grads)])
    for mine, theirs in zip(results[1], results[0]):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize(("mode", "options"), CUDA_VARIANTS,
                         ids=[f"{m}-{i}" for i, (m, _) in enumerate(CUDA_VARIANTS)])
def test_variants_on_cuda_equal_the_cpu_engine(mode, options, packed):
    """Issue 7's options on a GPU (backend "auto" takes the eager engine there) equal the fused
    CPU engine's results with the same masks."""
    variants_equal_across_devices(mode, options, packed, "cuda", "auto")
