"""`gatelab experiment noise`: remembering one flagged symbol among distractors.

Claim: the LSTM's input gate lets it ignore noise: it opens on the step that carries the
signal and stays shut on distractor steps, so its memory survives distractors that a plain
RNN writes into its state.

Task (`gatelab.data.synthetic.noisy_memory_batch`): one flagged symbol in the first half of
the sequence, distractor symbols of amplitude `noise` at every other step, classify the
flagged symbol after the last step. For each noise level and cell the same recipe trains one
model; recorded: test accuracy (chance 1/symbols), and for the LSTM the mean input gate i_t
on signal versus distractor steps (for the GRU its write gate 1 − z_t, the share of the new
candidate in h_t), over all units and test sequences, and for the one unit whose gate
separates signal from distractors most.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch.nn import functional as F

from gatelab.data.synthetic import generator, noisy_memory_batch
from gatelab.experiments.parallel import map_jobs, progress
from gatelab.experiments.models import CELLS, SequenceModel, build_from_recipe, module_options, option_pairs
from gatelab.experiments.output import COLORS, options_note, pyplot, save_figure, write_results

NAME = "noise"


@dataclass(frozen=True)
class NoiseRecipe:
    """The task and how every cell is trained on it."""

    T: int = 30  # sequence length
    symbols: int = 4  # classes (chance accuracy 1/symbols)
    levels: tuple = (0.0, 0.5, 1.0, 2.0)  # distractor amplitudes
    hidden: int = 32
    batch: int = 64
    lr: float = 5e-3  # Adam
    clip: float = 1.0
    steps: int = 1500
    test_size: int = 500
    lstm_forget_bias: float = 1.0
    # gatelab.nn options of the LSTM and the GRU as sorted (name, value) pairs
    # (`models.option_pairs`); a forget_bias among the LSTM's replaces lstm_forget_bias.
    lstm_options: tuple = ()
    gru_options: tuple = ()


RECIPE = NoiseRecipe()
QUICK_RECIPE = NoiseRecipe(T=12, levels=(0.0, 1.0), hidden=8, batch=32, steps=30, test_size=100)


def write_gate(model: SequenceModel, x: torch.Tensor) -> torch.Tensor | None:
    """(T, B, H) the gate that admits new input: LSTM i, GRU 1 − z; None for the rnn."""
    if model.cell == "rnn":
        return None
    with torch.no_grad():
        gates = model.rnn(x, return_gates=True)[-1]  # dict of (1, T, B, H)
    gate = gates["i"] if model.cell == "lstm" else 1 - gates["z"]
    return gate[0]  # (T, B, H)


def gate_means(gate: torch.Tensor | None, signal: torch.Tensor) -> dict:
    """Write-gate means on signal and distractor steps: over all units, and for the unit
    whose gate separates them most (mean on signal minus mean on distractors)."""
    if gate is None:
        return {"write_gate_signal": None, "write_gate_distractor": None, "top_unit_signal": None,
                "top_unit_distractor": None}
    on_signal, on_noise = gate[signal].mean(0), gate[~signal].mean(0)  # (H,) each
    top = int((on_signal - on_noise).argmax())
    return {
        "write_gate_signal": float(on_signal.mean()),
        "write_gate_distractor": float(on_noise.mean()),
        "top_unit_signal": float(on_signal[top]),
        "top_unit_distractor": float(on_noise[top]),
    }


def train_noise(cell: str, noise: float, recipe: NoiseRecipe, seed: int) -> dict:
    """Train one cell at one noise level; return accuracy and write-gate means."""
    model = build_from_recipe(cell, recipe.symbols + 1, recipe.symbols, seed, recipe)
    x_test, y_test, signal = noisy_memory_batch(
        recipe.T, recipe.test_size, noise, generator(seed + 1_000_003), recipe.symbols
    )
    gen = generator(seed + 2_000_003)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    start = time.perf_counter()
    for _ in progress(range(recipe.steps), desc=f"noise={noise} {cell}"):
        x, y, _ = noisy_memory_batch(recipe.T, recipe.batch, noise, gen, recipe.symbols)  # (T, B, S+1), (B,)
        loss = F.cross_entropy(model(x, last_only=True), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test, last_only=True).argmax(-1) == y_test).float().mean())
    return {
        "cell": cell,
        "noise": noise,
        "seed": seed,
        "module_options": module_options(model.rnn),
        "accuracy": accuracy,
        **gate_means(write_gate(model, x_test), signal),
        "seconds": time.perf_counter() - start,
    }


def run(
    out: Path, quick: bool = False, seed: int = 0, workers: int = 1, lstm_options: dict | None = None,
    gru_options: dict | None = None,
) -> dict:
    """Train every cell at every noise level, write results.json and noise.png; return the results.

    `lstm_options` and `gru_options` are gatelab.nn options of the LSTM and the GRU
    (`--lstm-option`, `--gru-option`); the RNN takes none.
    """
    recipe = QUICK_RECIPE if quick else RECIPE
    recipe = replace(recipe, lstm_options=option_pairs(lstm_options), gru_options=option_pairs(gru_options))
    jobs = [(cell, lvl, recipe, seed + 10 * k) for lvl in recipe.levels for k, cell in enumerate(CELLS)]
    runs = map_jobs(train_noise, jobs, workers, desc="noise")
    kept = ("accuracy", "write_gate_signal", "write_gate_distractor", "top_unit_signal", "top_unit_distractor")
    summary = {f"noise={r['noise']} {r['cell']}": {k: r[k] for k in kept} for r in runs}
    results = {
        "experiment": NAME,
        "quick": quick,
        "seed": seed,
        "cells": list(CELLS),
        "recipe": asdict(recipe),
        "lstm_options": dict(lstm_options or {}),
        "gru_options": dict(gru_options or {}),
        "chance_accuracy": 1 / recipe.symbols,
        "write_gate": "lstm: input gate i_t; gru: 1 - z_t; mean over test sequences, over all units "
        "(write_gate_*) and for the unit with the largest signal - distractor gap (top_unit_*)",
        "summary": summary,
        "runs": runs,
        "figures": ["noise.png"],
    }
    write_results(out, results)
    draw(runs, recipe, out / "noise.png", options_note(lstm_options, gru_options))
    return results


def draw(runs: list[dict], recipe: NoiseRecipe, path: Path, note: str = "") -> Path:
    """Accuracy against noise level; write-gate mean on signal and distractor steps."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    levels = list(recipe.levels)
    for cell in CELLS:
        mine = [r for r in runs if r["cell"] == cell]
        left.plot(levels, [r["accuracy"] for r in mine], "o-", color=COLORS[cell], label=cell)
        if mine[0]["write_gate_signal"] is not None:
            signal = [r["write_gate_signal"] for r in mine]
            distractor = [r["write_gate_distractor"] for r in mine]
            right.plot(levels, signal, "o-", color=COLORS[cell], label=f"{cell}: signal step")
            right.plot(levels, distractor, "x--", color=COLORS[cell], label=f"{cell}: distractor steps")
    left.axhline(1 / recipe.symbols, color="gray", ls="--", lw=1, label="chance")
    left.set_ylim(0, 1.05)
    left.set_xlabel("distractor amplitude (signal = 1)")
    left.set_ylabel("test accuracy")
    left.set_title(f"noisy memory, T = {recipe.T}")
    left.legend(fontsize=7)
    right.set_ylim(0, 1)
    right.set_xlabel("distractor amplitude (signal = 1)")
    right.set_ylabel("mean write gate (lstm i, gru 1 − z)")
    right.set_title("how much new input is written")
    right.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, note)
