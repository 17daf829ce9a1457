"""zoneout, recurrent_dropout and weight_drop: what the module hands the engine, checked by its
statistics (keep / drop fractions against binomial bounds, values, a recurrent-dropout mask
that has no time axis), exact replay with a fixed torch.manual_seed, a deterministic
evaluation mode (zoneout's expectation, no dropout), and the auto fallback when an engine
cannot apply the masks."""

import logging
import math
import types

import pytest
import torch

import gatelab.nn as gnn
from gatelab import engines
from gatelab.engines import eager

F64 = torch.float64


@pytest.fixture
def calls(monkeypatch):
    """Every eager.run call's weights and masks, as the module passed them."""
    seen = []
    real = eager.run

    def spy(spec, x, state, weights, **kw):
        seen.append(dict(spec=spec, weights=dict(weights), masks=kw.get("masks")))
        return real(spec, x, state, weights, **kw)

    monkeypatch.setattr(eager, "run", spy)
    return seen


def _within_binomial(fraction, p, n):
    """|fraction - p| within 6 standard deviations of a Binomial(n, p) fraction."""
    return abs(fraction - p) <= 6 * math.sqrt(p * (1 - p) / n) + 1e-12


def test_zoneout_keeps_each_state_with_its_probability(calls):
    torch.manual_seed(0)
    lstm = gnn.LSTM(4, 50, num_layers=2, bidirectional=True, zoneout=(0.2, 0.7), backend="eager")
    lstm(torch.randn(20, 8, 4))
    assert len(calls) == 4
    for call in calls:
        m_h, m_c = call["masks"]["zoneout_h"], call["masks"]["zoneout_c"]
        assert m_h.shape == (20, 8, 50) and m_c.shape == (20, 8, 50)
        assert set(m_h.unique().tolist()) == {0.0, 1.0} and set(m_c.unique().tolist()) == {0.0, 1.0}
        assert _within_binomial(m_h.mean().item(), 0.2, m_h.numel())
        assert _within_binomial(m_c.mean().item(), 0.7, m_c.numel())
        assert not torch.equal(m_h[0], m_h[1])  # drawn per step


def test_zoneout_keeps_the_previous_state_exactly_where_the_mask_says():
    """Behaviour, not the mask: where zoneout_h is 1 the output repeats h_{t-1} bit for bit."""
    torch.manual_seed(1)
    gru = gnn.GRU(3, 40, zoneout=0.5, backend="eager")
    masks = gru.draw_masks(12, 4)
    out, _ = gru(torch.randn(12, 4, 3), masks=masks)
    keep = masks[0]["zoneout_h"][1:].bool()  # (T-1, B, H)
    assert torch.equal(out[1:][keep], out[:-1][keep])
    assert not torch.any(out[1:][~keep] == out[:-1][~keep])
    assert _within_binomial(keep.float().mean().item(), 0.5, keep.numel())


def test_recurrent_dropout_is_one_scaled_mask_per_sequence(calls):
    torch.manual_seed(2)
    p = 0.3
    gru = gnn.GRU(3, 64, num_layers=2, recurrent_dropout=p, backend="eager", dtype=F64)
    gru(torch.randn(15, 16, 3, dtype=F64))
    for call in calls:
        d = call["masks"]["recurrent_dropout"]
        assert d.shape == (16, 64)  # (B, H): no time axis, the same mask at every step
        assert set(d.unique().tolist()) <= {0.0, 1 / (1 - p)}
        assert _within_binomial((d == 0).double().mean().item(), p, d.numel())
    assert not torch.equal(calls[0]["masks"]["recurrent_dropout"], calls[1]["masks"]["recurrent_dropout"])


def test_weight_drop_drops_weight_hh_once_per_forward(calls):
    torch.manual_seed(3)
    p = 0.4
    lstm = gnn.LSTM(3, 32, bidirectional=True, weight_drop=p, backend="eager")
    x = torch.randn(5, 2, 3)
    lstm(x)
    lstm(x)
    for call, name in zip(calls, ["weight_hh_l0", "weight_hh_l0_reverse"] * 2):
        w = getattr(lstm, name)
        dropped = call["weights"]["weight_hh"]
        zero = dropped == 0
        assert _within_binomial(zero.double().mean().item(), p, w.numel())
        torch.testing.assert_close(dropped[~zero], w[~zero] / (1 - p), rtol=0, atol=1e-7)
        assert call["weights"]["weight_ih"] is getattr(lstm, name.replace("hh", "ih"))  # only W_hh
    assert not torch.equal(calls[0]["weights"]["weight_hh"], calls[2]["weights"]["weight_hh"])  # per forward


def test_weight_drop_gradient_reaches_only_the_kept_weights():
    torch.manual_seed(4)
    gru = gnn.GRU(2, 16, weight_drop=0.5, dtype=F64, backend="eager")
    masks = gru.draw_masks(4, 3, dtype=F64)
    out, _ = gru(torch.randn(4, 3, 2, dtype=F64), masks=masks)
    out.sum().backward()
    dropped = masks[0]["weight_hh"] == 0
    assert torch.all(gru.weight_hh_l0.grad[dropped] == 0)
    assert torch.all(gru.weight_hh_l0.grad[~dropped] != 0)


@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
def test_exact_replay_with_a_fixed_seed(cls):
    options = dict(zoneout=0.3, recurrent_dropout=0.2, weight_drop=0.25)
    torch.manual_seed(5)
    module = getattr(gnn, cls)(3, 6, num_layers=2, dropout=0.3, bidirectional=True, dtype=F64, backend="eager",
                               **options)
    x = torch.randn(7, 3, 3, dtype=F64)

    def run(seed, **kw):
        torch.manual_seed(seed)
        out, _ = module(x, **kw)
        grads = torch.autograd.grad(out.sum(), list(module.parameters()))
        return out, grads

    out_a, grads_a = run(9)
    out_b, grads_b = run(9)
    assert torch.equal(out_a, out_b) and all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
    out_c, _ = run(10)
    assert not torch.equal(out_a, out_c)
    # the forward draws exactly draw_masks(T, B), first, then the dropout between layers
    torch.manual_seed(9)
    masks = module.draw_masks(7, 3, dtype=F64)
    out_d, _ = module(x, masks=masks)
    assert torch.equal(out_a, out_d)


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "LSTMCell", "GRUCell"])
def test_evaluation_is_deterministic_and_draws_nothing(cls, calls):
    torch.manual_seed(6)
    module = getattr(gnn, cls)(3, 5, backend="eager", zoneout=0.4, recurrent_dropout=0.5, weight_drop=0.5).eval()
    x = torch.randn(4, 2, 3) if not cls.endswith("Cell") else torch.randn(2, 3)
    state = torch.get_rng_state()
    first, second = module(x), module(x)
    assert torch.equal(torch.get_rng_state(), state)  # no random number drawn
    first = first[0] if isinstance(first, tuple) else first
    second = second[0] if isinstance(second, tuple) else second
    assert torch.equal(first, second)
    for call in calls:
        assert call["weights"]["weight_hh"] is module.state_dict(keep_vars=True)[
            "weight_hh_l0" if not cls.endswith("Cell") else "weight_hh"]  # no weight drop
        assert set(call["masks"]) == ({"zoneout_h", "zoneout_c"} if cls.startswith("LSTM") else {"zoneout_h"})
        assert all(torch.all(m == 0.4) for m in call["masks"].values())  # the expectation p


def test_plain_training_draws_nothing():
    """Options without randomness (and the defaults) leave torch's RNG untouched."""
    lstm = gnn.LSTM(3, 5, peephole=True, layer_norm=True, forget_bias=1.0, backend="eager")
    state = torch.get_rng_state()
    lstm(torch.randn(4, 2, 3))
    torch.set_rng_state(state)
    x = torch.randn(4, 2, 3)
    state = torch.get_rng_state()
    lstm(x)
    assert torch.equal(torch.get_rng_state(), state)


def test_given_masks_are_checked():
    lstm = gnn.LSTM(3, 5, zoneout=0.2, backend="eager")
    x = torch.randn(4, 2, 3)
    with pytest.raises(ValueError, match=r"masks\[0\]\['zoneout_h'\]: expected a tensor of shape \(4, 2, 5\)"):
        lstm(x, masks=[{"zoneout_h": torch.zeros(4, 3, 5)}])
    with pytest.raises(ValueError, match="expected a list of 1 dicts"):
        lstm(x, masks={"zoneout_h": torch.zeros(4, 2, 5)})
    with pytest.raises(ValueError, match="unknown"):
        gnn.GRU(3, 5).train()(x, masks=[{"zoneout_c": torch.zeros(4, 2, 5)}])


def test_auto_falls_back_to_eager_when_the_engine_cannot_apply_masks(monkeypatch, caplog):
    """An engine without MASKS takes no masks: auto logs why and runs eager; a named backend says why."""
    real_load = engines._load
    no_masks = types.SimpleNamespace(NAME="fused", unsupported=lambda spec, x, record: None,
                                     run=lambda *a, **k: pytest.fail("the maskless engine ran with masks"))
    monkeypatch.setattr(engines, "_load", lambda name: no_masks if name == "fused" else real_load(name))
    torch.manual_seed(7)
    auto = gnn.LSTM(2, 3, zoneout=0.5)
    with caplog.at_level(logging.DEBUG, logger="gatelab.engines"):
        auto(torch.randn(4, 1, 2))
    assert "not fused (masks ['zoneout_c', 'zoneout_h']" in caplog.text
    assert "LSTM layer 0: eager engine" in caplog.text
    named = gnn.LSTM(2, 3, zoneout=0.5, backend="fused")
    with pytest.raises(ValueError, match=r"backend='fused' cannot run this request: masks"):
        named(torch.randn(4, 1, 2))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_uniform_below_is_bernoulli_and_the_same_on_any_thread_count(monkeypatch, dtype):
    """zoneout's masks: U < p, U from SplitMix64 seeded by torch's RNG, filled on the
    engine's threads (tests/engines/test_rng.py checks the generator itself)."""
    from gatelab.nn.options import uniform_below

    shape = (30, 20, 700)  # 420,000 draws: filled by up to 3 threads
    masks = []
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("GATELAB_THREADS", threads)
        torch.manual_seed(11)
        masks.append(uniform_below(shape, 0.3, dtype=dtype, device=None))
    assert all(torch.equal(masks[0], m) for m in masks[1:])
    mask = masks[0]
    assert mask.dtype == dtype and mask.shape == shape
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert _within_binomial(mask.mean().item(), 0.3, mask.numel())
    flat = mask.reshape(-1)
    n = flat.numel() // 3
    for a, b in ((0, 1), (1, 2)):  # the threads' ranges are not correlated
        assert abs(torch.corrcoef(torch.stack([flat[a * n:(a + 1) * n], flat[b * n:(b + 1) * n]]))[0, 1]) < 0.01
    torch.manual_seed(12)
    assert not torch.equal(uniform_below(shape, 0.3, dtype=dtype, device=None), mask)  # a new seed


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_keep_mask_drops_p_and_scales_the_rest(monkeypatch, dtype):
    """recurrent_dropout's and weight_drop's masks: 0 with probability p, else 1 / (1 - p),
    the same on any thread count; from the same U as uniform_below (same seed: dropped
    exactly where uniform_below is 1)."""
    from gatelab.nn.options import keep_mask, uniform_below

    shape = (600, 300)  # 180,000 draws: filled by 2 threads
    masks = []
    for threads in ("1", "2"):
        monkeypatch.setenv("GATELAB_THREADS", threads)
        torch.manual_seed(5)
        masks.append(keep_mask(shape, 0.3, dtype=dtype, device=None))
    assert torch.equal(masks[0], masks[1])
    mask = masks[0]
    assert mask.dtype == dtype and mask.shape == shape
    assert set(mask.unique().tolist()) == {0.0, torch.tensor(1 / 0.7, dtype=dtype).item()}
    assert _within_binomial((mask == 0).double().mean().item(), 0.3, mask.numel())
    torch.manual_seed(5)
    below = uniform_below(shape, 0.3, dtype=dtype, device=None)
    assert torch.equal(mask == 0, below == 1)  # the same U: dropped exactly where U < p 2^32
    assert torch.equal(keep_mask((3, 4), 0.0, dtype=dtype, device=None), torch.ones(3, 4, dtype=dtype))


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.bfloat16], ids=["f32", "f64", "bf16"])
@pytest.mark.parametrize(("cls", "backend"), [("LSTM", "fused"), ("LSTM", "eager"), ("GRU", "fused")])
def test_masks_left_to_the_engine_replay_the_drawn_ones(monkeypatch, cls, backend, dtype, threads):
    """A forward without masks= draws zoneout's seeds and leaves the values to the engine
    (engines.masks.Deferred) on every path — the units split fills them in its loop, any other
    engine gets them filled first — and computes what the drawn masks give."""
    monkeypatch.setenv("GATELAB_THREADS", threads)
    torch.manual_seed(2)
    module = getattr(gnn, cls)(5, 24, num_layers=2, bidirectional=True, dtype=dtype, backend=backend,
                               zoneout=0.3, recurrent_dropout=0.2)
    x = torch.randn(6, 4, 5, dtype=dtype)

    def run(**kw):
        torch.manual_seed(8)
        out, _ = module(x, **kw)
        return out, torch.autograd.grad(out.float().sum(), list(module.parameters()))

    out_a, grads_a = run()
    torch.manual_seed(8)
    out_b, grads_b = run(masks=module.draw_masks(6, 4))
    assert torch.equal(out_a, out_b) and all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
