"""`gatelab experiment adding`: memory over 50-200 steps on the adding problem.

Claim: a gated cell (LSTM, GRU) learns the adding problem over 100 and more steps, where the
plain tanh RNN stays at the mean-predictor baseline (MSE 1/6 ≈ 0.167).

For each length T and each cell the same recipe (`AddingRecipe`) trains one model; the test
MSE and the fraction of test sequences answered within 0.04 are recorded against steps.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gatelab.experiments.adding_train import SOLVED_MSE, AddingRecipe, train_adding
from gatelab.experiments.models import CELLS, option_pairs
from gatelab.experiments.parallel import map_jobs
from gatelab.experiments.output import COLORS, options_note, pyplot, save_figure, write_results

NAME = "adding"
LENGTHS = (50, 100, 200)
RECIPE = AddingRecipe()
QUICK_LENGTHS = (20,)
QUICK_RECIPE = AddingRecipe(hidden=16, batch=32, steps=60, eval_every=20, test_size=200, stop_mse=0.0)


def steps_for(T: int, recipe: AddingRecipe) -> int:
    """Longer sequences get proportionally more steps: recipe.steps for T <= 100, then ∝ T."""
    return int(recipe.steps * max(1.0, T / 100))


def _job(cell: str, T: int, recipe: AddingRecipe, seed: int) -> dict:
    """One training run (a module-level function, so worker processes can run it)."""
    return train_adding(cell, T, recipe, seed=seed, desc=f"adding T={T} {cell}")[1]


def run(
    out: Path, quick: bool = False, seed: int = 0, workers: int = 1, lengths: tuple[int, ...] | None = None,
    lstm_options: dict | None = None, gru_options: dict | None = None,
) -> dict:
    """Train every cell at every length, write results.json and adding.png; return the results.

    The longest lengths are started first so that `workers` processes finish together.
    `lstm_options` and `gru_options` are gatelab.nn options of the LSTM and the GRU
    (`--lstm-option layer_norm=true`, `--gru-option layer_norm=true`); the RNN takes none.
    """
    recipe = QUICK_RECIPE if quick else RECIPE
    recipe = replace(recipe, lstm_options=option_pairs(lstm_options), gru_options=option_pairs(gru_options))
    lengths = tuple(lengths or (QUICK_LENGTHS if quick else LENGTHS))
    jobs = [
        (cell, T, replace(recipe, steps=steps_for(T, recipe)), seed + 10 * k)
        for T in sorted(lengths, reverse=True)
        for k, cell in enumerate(CELLS)
    ]
    runs = sorted(
        map_jobs(_job, jobs, workers, desc="adding"),
        key=lambda r: (lengths.index(r["T"]), CELLS.index(r["cell"])),
    )
    summary = {
        f"T={rec['T']} {rec['cell']}": {
            "final_mse": rec["final_mse"],
            "best_mse": rec["best_mse"],
            "final_frac_close": rec["final_frac_close"],
            "first_solved_step": rec["first_solved_step"],
            "steps_run": rec["steps_run"],
            "seconds": round(rec["seconds"], 1),
        }
        for rec in runs
    }
    results = {
        "experiment": NAME,
        "quick": quick,
        "seed": seed,
        "lengths": list(lengths),
        "cells": list(CELLS),
        "lstm_options": dict(lstm_options or {}),
        "gru_options": dict(gru_options or {}),
        "solved_mse": SOLVED_MSE,
        "mean_predictor_mse": 1 / 6,
        "summary": summary,
        "runs": runs,
        "figures": ["adding.png"],
    }
    write_results(out, results)
    draw(runs, lengths, out / "adding.png", options_note(lstm_options, gru_options))
    return results


def draw(runs: list[dict], lengths: tuple[int, ...], path: Path, note: str = "") -> Path:
    """Test MSE (log) and fraction within 0.04 against training steps, one column per T."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(lengths), figsize=(3.6 * len(lengths), 5.4), squeeze=False, sharey="row")
    for col, T in enumerate(lengths):
        top, bottom = axes[0][col], axes[1][col]
        for rec in (r for r in runs if r["T"] == T):
            color = COLORS[rec["cell"]]
            top.semilogy(rec["steps"], rec["test_mse"], color=color, label=rec["cell"])
            bottom.plot(rec["steps"], rec["frac_close"], color=color, label=rec["cell"])
        top.axhline(1 / 6, color="gray", ls="--", lw=1, label="mean predictor")
        top.axhline(SOLVED_MSE, color="black", ls=":", lw=1, label="target 0.01")
        top.set_title(f"adding problem, T = {T}")
        bottom.set_xlabel("training step")
        bottom.set_ylim(0, 1)
    axes[0][0].set_ylabel("test MSE")
    axes[1][0].set_ylabel("fraction |error| < 0.04")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, note)
