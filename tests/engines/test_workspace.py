"""The engines' workspace pool: a buffer is reused only when nothing references it, and a
training step in steady state maps no fresh memory."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import gatelab.nn as gnn
from gatelab.engines import workspace

SHAPE = (512, 1024)  # 2 MiB of float32: pooled (>= MIN_BYTES)


@pytest.fixture(autouse=True)
def fresh_pool(monkeypatch):
    monkeypatch.delenv("GATELAB_WORKSPACE_MB", raising=False)
    workspace.clear()
    yield
    workspace.clear()


def address(a):
    return a.__array_interface__["data"][0]


def test_a_dropped_array_is_reused_and_a_live_one_is_not():
    a = workspace.empty(SHAPE, np.float32)
    where = address(a)
    b = workspace.empty(SHAPE, np.float32)
    assert address(b) != where  # a is alive
    del a
    c = workspace.empty((SHAPE[0] * 2, SHAPE[1] // 2), np.float32)  # same size, other shape
    assert address(c) == where
    assert c.shape == (1024, 512) and c.flags.c_contiguous and c.dtype == np.float32


def test_views_and_tensors_keep_their_buffer_in_use():
    a = workspace.empty(SHAPE, np.float32)
    where = address(a)
    view = a[10:20, ::2]
    tensor = torch.from_numpy(a.reshape(-1)[5:])
    del a
    assert address(workspace.empty(SHAPE, np.float32)) != where  # the view holds it
    del view
    assert address(workspace.empty(SHAPE, np.float32)) != where  # the tensor holds it
    del tensor
    assert address(workspace.empty(SHAPE, np.float32)) == where


def test_zeros_are_zero_even_in_a_used_buffer():
    a = workspace.empty(SHAPE, np.float64)
    a.fill(7.0)
    del a
    z = workspace.zeros(SHAPE, np.float64)
    assert not z.any()


def test_small_arrays_bypass_the_pool():
    workspace.empty((8, 8), np.float32)
    assert workspace.held_bytes() == 0


def test_limit_off_and_eviction(monkeypatch):
    monkeypatch.setenv("GATELAB_WORKSPACE_MB", "0")
    workspace.empty(SHAPE, np.float32)
    assert workspace.held_bytes() == 0
    monkeypatch.setenv("GATELAB_WORKSPACE_MB", "3")  # room for one 2 MiB buffer
    line = workspace.LINE  # each buffer holds a cache line more, to start the array on one
    a = workspace.empty(SHAPE, np.float32)
    assert workspace.held_bytes() == (2 << 20) + line
    b = workspace.empty(SHAPE, np.float32)  # a in use: b comes from NumPy, unpooled
    assert workspace.held_bytes() == (2 << 20) + line and address(b) != address(a)
    del a
    workspace.empty((768, 1024 - 32), np.float32)  # ~3 MiB: the free 2 MiB buffer makes room
    assert workspace.held_bytes() == (3 << 20) - 32 * 768 * 4 + line


def test_every_array_starts_on_a_cache_line():
    """The units split's threads write the two halves of each row of a shared array: its
    rows must not share a cache line across the split (for H a multiple of 16 floats)."""
    kept = []
    for shape, dtype in (((8, 8), np.float32), ((3, 5), np.float64), (SHAPE, np.float32), ((7, 1000, 3), np.float64)):
        for _ in range(3):  # fresh, pooled and reused buffers alike
            a = workspace.empty(shape, dtype)
            assert address(a) % workspace.LINE == 0 and a.shape == shape and a.flags.c_contiguous
            kept.append(a if len(kept) % 2 else None)
    c = workspace.copy(np.arange(12.0).reshape(3, 4)[:, ::2])
    assert address(c) % workspace.LINE == 0 and c.flags.c_contiguous
    assert np.array_equal(c, np.arange(12.0).reshape(3, 4)[:, ::2])


def test_bad_limit_names_the_variable(monkeypatch):
    monkeypatch.setenv("GATELAB_WORKSPACE_MB", "lots")
    with pytest.raises(ValueError, match="GATELAB_WORKSPACE_MB.*'lots'"):
        workspace.empty(SHAPE, np.float32)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_outputs_kept_from_an_earlier_step_are_not_overwritten(cell):
    torch.manual_seed(0)
    module = getattr(gnn, cell)(32, 128, num_layers=2)
    kept = []
    for step in range(3):
        x = torch.randn(100, 32, 32, requires_grad=True)
        out, _, gates = module(x, return_gates=True)
        out.backward(torch.randn_like(out))
        kept.append((out, x.grad, gates, out.detach().clone(), x.grad.clone(),
                     {k: v.detach().clone() for k, v in gates.items()}))
    assert workspace.held_bytes() > 0  # the steps did use the pool
    for out, grad, gates, out0, grad0, gates0 in kept:
        assert torch.equal(out, out0) and torch.equal(grad, grad0)
        assert all(torch.equal(gates[k], gates0[k]) for k in gates0)


STEADY_STEPS = """
import resource, torch, gatelab.nn as gnn
torch.manual_seed(0)
module = gnn.LSTM(128, 256)
x = torch.randn(100, 32, 128, requires_grad=True)
grad = torch.randn(100, 32, 256)
def step():
    module.zero_grad(set_to_none=True)
    x.grad = None
    module(x)[0].backward(grad)
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.parametrize("pool_mb", ["1024", "0"])
def test_a_training_step_in_steady_state_maps_no_fresh_memory(pool_mb):
    # glibc told to return every freed block to the OS (what it does to a step's ~45 MB
    # whenever they sit above its trim threshold): without the pool each step faults its
    # memory back in, ~7,700 minor page faults at this shape; with it, ~130
    env = dict(os.environ, GATELAB_WORKSPACE_MB=pool_mb, GATELAB_THREADS="1",
               MALLOC_TRIM_THRESHOLD_="0", MALLOC_MMAP_THRESHOLD_="131072")
    run = subprocess.run([sys.executable, "-c", STEADY_STEPS], env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    faults = float(run.stdout.split()[-1])
    if pool_mb == "0":
        assert faults > 5000, f"{faults:.0f} page faults per step: the unpooled run should fault"
    else:
        assert faults < 500, f"{faults:.0f} page faults per step"
