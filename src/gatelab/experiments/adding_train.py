"""Training a cell on the adding problem: shared by the `adding` and `gradient-flow` experiments.

Recipe (the same for every cell): Adam, gradient-norm clipping, a fresh random batch every
step, a fixed seeded test set evaluated every `eval_every` steps, MSE loss on the readout of
the last step. The LSTM starts with forget-gate bias 1 unless told otherwise.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from gatelab.data.synthetic import adding_batch, generator
from gatelab.experiments.parallel import progress
from gatelab.experiments.models import SequenceModel, build_from_recipe, module_options

SOLVED_MSE = 0.01  # the target
CLOSE = 0.04  # |error| below this counts as a correct answer


@dataclass(frozen=True)
class AddingRecipe:
    """How one cell is trained on the adding problem."""

    hidden: int = 64  # hidden units, every cell
    batch: int = 64  # training sequences per step
    lr: float = 1e-2  # Adam learning rate
    clip: float = 1.0  # gradient-norm clipping
    steps: int = 2000  # most training steps (T <= 100; ∝ T beyond)
    eval_every: int = 50  # steps between test evaluations
    test_size: int = 1000  # test sequences (one fixed set per T)
    stop_mse: float = 1e-3  # stop early once test MSE falls below this (0 never stops)
    lstm_forget_bias: float = 1.0  # Jozefowicz et al. 2015
    # gatelab.nn options of the LSTM and the GRU (docs/variants.md) as sorted (name, value)
    # pairs (`models.option_pairs`), e.g. (("layer_norm", True),); a forget_bias among the
    # LSTM's replaces lstm_forget_bias.
    lstm_options: tuple = ()
    gru_options: tuple = ()


def evaluate(model: SequenceModel, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Test MSE and the fraction of sequences with |error| < CLOSE."""
    model.eval()
    with torch.no_grad():
        err = model(x, last_only=True).squeeze(-1) - y  # (B,)
    model.train()
    return float((err**2).mean()), float((err.abs() < CLOSE).float().mean())


def train_adding(
    cell: str, T: int, recipe: AddingRecipe, seed: int, desc: str | None = None
) -> tuple[SequenceModel, dict]:
    """Train `cell` on the adding problem of length T; returns the model and its record.

    The record holds the recipe, the options the built layer holds (`module_options`), the
    evaluation curve (`steps`, `test_mse`, `frac_close`), `final_mse`, `best_mse`,
    `first_solved_step` (first evaluation with MSE <= 0.01, or None), `baseline_mse` (the test
    set's variance: what predicting its mean scores), the number of steps run and the wall time.
    """
    model = build_from_recipe(cell, 2, 1, seed, recipe)
    x_test, y_test = adding_batch(T, recipe.test_size, generator(seed + 1_000_003))
    train_gen = generator(seed + 2_000_003)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    curve: dict[str, list] = {"steps": [], "test_mse": [], "frac_close": []}
    start = time.perf_counter()
    step = 0
    bar = progress(range(recipe.steps + 1), desc=desc or f"adding {cell} T={T}")
    for step in bar:
        if step % recipe.eval_every == 0 or step == recipe.steps:
            mse, close = evaluate(model, x_test, y_test)
            curve["steps"].append(step)
            curve["test_mse"].append(mse)
            curve["frac_close"].append(close)
            bar.set_postfix(mse=f"{mse:.4f}")
            if mse < recipe.stop_mse or step == recipe.steps:
                break
        x, y = adding_batch(T, recipe.batch, train_gen)  # (T, B, 2), (B,)
        loss = torch.nn.functional.mse_loss(model(x, last_only=True).squeeze(-1), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
        opt.step()
    bar.close()
    solved = [s for s, m in zip(curve["steps"], curve["test_mse"]) if m <= SOLVED_MSE]
    record = {
        "cell": cell,
        "T": T,
        "seed": seed,
        "recipe": asdict(recipe),
        "module_options": module_options(model.rnn),
        **curve,
        "final_mse": curve["test_mse"][-1],
        "best_mse": min(curve["test_mse"]),
        "final_frac_close": curve["frac_close"][-1],
        "first_solved_step": solved[0] if solved else None,
        "baseline_mse": float(y_test.var(unbiased=False)),
        "steps_run": step,
        "seconds": time.perf_counter() - start,
    }
    return model, record
