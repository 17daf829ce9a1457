"""`gatelab experiment copy`: recall 10 symbols after a delay of 50 or 100 steps.

Claim: a gated cell can hold 10 symbols over a long delay and reproduce them on cue; a model
without memory cannot beat the cross-entropy 10·log 8 / (T + 20) (predict blanks, then guess).

Each cell (one-hot input, per-step softmax readout, equal hidden size) is trained with the
same recipe; recorded against steps: the test cross-entropy per step and the accuracy on
the 10 recall positions (chance 1/8).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch.nn import functional as F

from gatelab.data.synthetic import COPY_CLASSES, COPY_LENGTH, copy_baseline, copy_batch, generator
from gatelab.experiments.parallel import map_jobs, progress
from gatelab.experiments.models import CELLS, SequenceModel, build_from_recipe, module_options, option_pairs
from gatelab.experiments.output import COLORS, options_note, pyplot, save_figure, write_results

NAME = "copy"
DELAYS = (50, 100)
QUICK_DELAYS = (10,)


@dataclass(frozen=True)
class CopyRecipe:
    """How every cell is trained on the copy task."""

    hidden: int = 64
    batch: int = 64
    lr: float = 2e-3  # Adam
    clip: float = 1.0
    steps: int = 2500
    eval_every: int = 50
    test_size: int = 500
    lstm_forget_bias: float = 1.0
    # gatelab.nn options of the LSTM and the GRU as sorted (name, value) pairs
    # (`models.option_pairs`); a forget_bias among the LSTM's replaces lstm_forget_bias.
    lstm_options: tuple = ()
    gru_options: tuple = ()


RECIPE = CopyRecipe()
QUICK_RECIPE = CopyRecipe(hidden=16, batch=32, steps=40, eval_every=20, test_size=100)


def _forward(model: SequenceModel, x: torch.Tensor) -> torch.Tensor:
    """x: (T, B) symbols -> (T, B, C) logits."""
    return model(F.one_hot(x, COPY_CLASSES).float())


def evaluate(model: SequenceModel, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Cross-entropy per step over the whole sequence, and accuracy on the 10 recall steps."""
    model.eval()
    with torch.no_grad():
        logits = _forward(model, x)  # (T, B, C)
    model.train()
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    acc = (logits[-COPY_LENGTH:].argmax(-1) == y[-COPY_LENGTH:]).float().mean()
    return float(ce), float(acc)


def train_copy(cell: str, delay: int, recipe: CopyRecipe, seed: int) -> dict:
    """Train one cell on one delay; return its record (curve, final numbers, wall time)."""
    model = build_from_recipe(cell, COPY_CLASSES, COPY_CLASSES, seed, recipe)
    x_test, y_test = copy_batch(delay, recipe.test_size, generator(seed + 1_000_003))
    gen = generator(seed + 2_000_003)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    curve: dict[str, list] = {"steps": [], "test_ce": [], "recall_acc": []}
    start = time.perf_counter()
    bar = progress(range(recipe.steps + 1), desc=f"copy delay={delay} {cell}")
    for step in bar:
        if step % recipe.eval_every == 0 or step == recipe.steps:
            ce, acc = evaluate(model, x_test, y_test)
            curve["steps"].append(step)
            curve["test_ce"].append(ce)
            curve["recall_acc"].append(acc)
            bar.set_postfix(ce=f"{ce:.4f}", acc=f"{acc:.2f}")
        if step == recipe.steps:
            break
        x, y = copy_batch(delay, recipe.batch, gen)  # (T + 20, B) each
        loss = F.cross_entropy(_forward(model, x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
        opt.step()
    bar.close()
    return {
        "cell": cell,
        "delay": delay,
        "seed": seed,
        "module_options": module_options(model.rnn),
        **curve,
        "baseline_ce": copy_baseline(delay),
        "final_ce": curve["test_ce"][-1],
        "final_recall_acc": curve["recall_acc"][-1],
        "seconds": time.perf_counter() - start,
    }


def run(
    out: Path, quick: bool = False, seed: int = 0, workers: int = 1, delays: tuple[int, ...] | None = None,
    lstm_options: dict | None = None, gru_options: dict | None = None,
) -> dict:
    """Train every cell at every delay, write results.json and copy.png; return the results.

    `lstm_options` and `gru_options` are gatelab.nn options of the LSTM and the GRU
    (`--lstm-option`, `--gru-option`); the RNN takes none.
    """
    recipe = QUICK_RECIPE if quick else RECIPE
    recipe = replace(recipe, lstm_options=option_pairs(lstm_options), gru_options=option_pairs(gru_options))
    delays = tuple(delays or (QUICK_DELAYS if quick else DELAYS))
    jobs = [(cell, d, recipe, seed + 10 * k) for d in delays for k, cell in enumerate(CELLS)]
    runs = map_jobs(train_copy, jobs, workers, desc="copy")
    summary = {
        f"delay={r['delay']} {r['cell']}": {
            "final_ce": r["final_ce"],
            "baseline_ce": r["baseline_ce"],
            "ce_over_baseline": r["final_ce"] / r["baseline_ce"],
            "final_recall_acc": r["final_recall_acc"],
            "seconds": round(r["seconds"], 1),
        }
        for r in runs
    }
    results = {
        "experiment": NAME,
        "quick": quick,
        "seed": seed,
        "delays": list(delays),
        "cells": list(CELLS),
        "recipe": asdict(recipe),
        "lstm_options": dict(lstm_options or {}),
        "gru_options": dict(gru_options or {}),
        "chance_recall_acc": 1 / 8,
        "summary": summary,
        "runs": runs,
        "figures": ["copy.png"],
    }
    write_results(out, results)
    draw(runs, delays, out / "copy.png", options_note(lstm_options, gru_options))
    return results


def draw(runs: list[dict], delays: tuple[int, ...], path: Path, note: str = "") -> Path:
    """Cross-entropy (with the memoryless baseline) and recall accuracy against steps, per delay."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(delays), figsize=(3.8 * len(delays), 5.4), squeeze=False)
    for col, d in enumerate(delays):
        top, bottom = axes[0][col], axes[1][col]
        for r in (r for r in runs if r["delay"] == d):
            top.semilogy(r["steps"], r["test_ce"], color=COLORS[r["cell"]], label=r["cell"])
            bottom.plot(r["steps"], r["recall_acc"], color=COLORS[r["cell"]], label=r["cell"])
        top.axhline(copy_baseline(d), color="gray", ls="--", lw=1, label="memoryless baseline")
        bottom.axhline(1 / 8, color="gray", ls="--", lw=1, label="chance")
        top.set_title(f"copy task, delay = {d}")
        bottom.set_xlabel("training step")
        bottom.set_ylim(0, 1)
    axes[0][0].set_ylabel("test cross-entropy per step")
    axes[1][0].set_ylabel("recall accuracy (10 symbols)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, note)
