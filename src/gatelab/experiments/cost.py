"""`gatelab experiment cost`: what the gates cost in parameters, arithmetic, time and memory.

Claim: an LSTM layer has four gates' worth of weights, G·(H·I + H·H + 2H) with G = 4 against
the GRU's 3 and the plain RNN's 1, and pays about that ratio in arithmetic and time; the GRU
exists to be cheaper.

For each cell and hidden size H (input size I fixed):
    params          counted from the module, and the closed form G·(H·I + H·H + 2H)
    flops_per_step  multiply-adds counted as 2 FLOPs: the two matrix products 2·G·H·(I + H)
                    per sequence, plus the element-wise work (`ELEMENTWISE` per hidden unit)
    forward / train time per step: best wall time of a forward pass (no gradient) and of
                    forward + backward, divided by T (per batch of B sequences)
    memory          bytes of the parameters, and the activation memory of one training
                    forward pass: the bytes its autograd graph keeps for backward
                    (`activation_bytes`), which dominates training on long sequences

Options of the LSTM and the GRU (`--lstm-option`, `--gru-option`) change the layers measured:
their parameters (counted, and in `params_formula` the closed form plus what peephole and
layer_norm add), time and memory are measured on the optioned layers; `flops_per_step` stays
the plain cell's count (the options' extra arithmetic is not counted).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from gatelab.experiments.parallel import progress
from gatelab.experiments.models import (
    CELLS,
    GATE_ROWS,
    cell_options,
    module_options,
    option_pairs,
    parameter_count,
    recurrent,
)
from gatelab.experiments.output import COLORS, options_note, pyplot, save_figure, write_results

NAME = "cost"

# element-wise FLOPs per hidden unit and step, beyond the matrix products (bias adds counted
# with them): rnn tanh; gru 2 sigmoid + tanh, r ⊙ (.), +, (1 − z) n + z h; lstm 3 sigmoid +
# 2 tanh, f ⊙ c + i ⊙ g, o ⊙ tanh(c). Activations count as 1.
ELEMENTWISE = {"rnn": 3, "gru": 12, "lstm": 13}


@dataclass(frozen=True)
class CostRecipe:
    """The shapes measured and how often."""

    hidden_sizes: tuple = (32, 64, 128, 256, 512)
    input_size: int = 64
    T: int = 100
    batch: int = 32
    repeats: int = 5  # timed repetitions (the fastest reported), after one warm-up
    # gatelab.nn options of the LSTM and the GRU as sorted (name, value) pairs (`models.option_pairs`)
    lstm_options: tuple = ()
    gru_options: tuple = ()


RECIPE = CostRecipe()
QUICK_RECIPE = CostRecipe(hidden_sizes=(8, 16), input_size=4, T=10, batch=4, repeats=2)


def flops_per_step(cell: str, input_size: int, hidden_size: int) -> int:
    """FLOPs of one step for one sequence: 2·G·H·(I + H) + 2·G·H bias adds + element-wise."""
    G, H = GATE_ROWS[cell], hidden_size
    return 2 * G * H * (input_size + H) + 2 * G * H + ELEMENTWISE[cell] * H


def option_parameter_count(cell: str, hidden_size: int, options: dict) -> int:
    """Closed-form count of the parameters the options add to one layer: peephole 3H (LSTM),
    layer_norm a gain and a bias on each of the two G·H pre-activations, 4·G·H, and the
    LSTM's on the cell, 2H. The other options add none."""
    G, H = GATE_ROWS[cell], hidden_size
    extra = 3 * H if options.get("peephole") else 0
    if options.get("layer_norm"):
        extra += 4 * G * H + (2 * H if cell == "lstm" else 0)
    return extra


def _best_seconds(fn, repeats: int) -> float:
    """The fastest of `repeats` timed calls after one warm-up (other load only adds time)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _arrays(value):
    """(address, bytes) of every tensor or NumPy array in value (tuples and lists searched)."""
    if isinstance(value, torch.Tensor):
        yield value.data_ptr(), value.numel() * value.element_size()
    elif isinstance(value, np.ndarray):
        yield value.__array_interface__["data"][0], value.nbytes
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _arrays(v)


def activation_bytes(output: torch.Tensor, exclude=()) -> int:
    """Bytes the autograd graph behind `output` keeps for the backward pass.

    Walks the graph from `output.grad_fn` and adds up, once per address, the tensors each
    node saved (`_saved_*`) and the tensors or arrays a custom `autograd.Function` stored on
    its context (how fused engines keep their activations), leaving out `exclude` (the
    parameters and the input, which exist anyway).
    """
    skip = {t.data_ptr() for t in exclude}
    seen, found, stack = set(), {}, [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        values = [getattr(node, name) for name in dir(node) if name.startswith("_saved_")]
        values += list(getattr(node, "__dict__", {}).values())
        for value in values:
            for address, nbytes in _arrays(value):
                if address not in skip:
                    found[address] = max(found.get(address, 0), nbytes)
        stack.extend(fn for fn, _ in node.next_functions)
    return sum(found.values())


def measure(cell: str, hidden: int, recipe: CostRecipe, gen: torch.Generator) -> dict:
    """All numbers for one cell and hidden size."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        options = cell_options(cell, recipe.lstm_options, recipe.gru_options)
        module = recurrent(cell, recipe.input_size, hidden, options)
    x = torch.randn(recipe.T, recipe.batch, recipe.input_size, generator=gen)  # (T, B, I)
    x_grad = x.clone().requires_grad_(True)

    def forward():
        with torch.no_grad():
            module(x)

    def train():
        module.zero_grad(set_to_none=True)
        module(x_grad)[0].sum().backward()

    counted = sum(p.numel() for p in module.parameters())
    return {
        "cell": cell,
        "hidden": hidden,
        "params": counted,
        "module_options": module_options(module),
        "params_formula": parameter_count(cell, recipe.input_size, hidden)
        + option_parameter_count(cell, hidden, options),
        "flops_per_step": flops_per_step(cell, recipe.input_size, hidden),
        "forward_us_per_step": 1e6 * _best_seconds(forward, recipe.repeats) / recipe.T,
        "train_us_per_step": 1e6 * _best_seconds(train, recipe.repeats) / recipe.T,
        "param_bytes": sum(p.numel() * p.element_size() for p in module.parameters()),
        "activation_bytes": activation_bytes(module(x_grad)[0].sum(), [*module.parameters(), x_grad]),
    }


def run(
    out: Path, quick: bool = False, seed: int = 0, workers: int = 1, lstm_options: dict | None = None,
    gru_options: dict | None = None,
) -> dict:
    """Measure every cell at every hidden size, write results.json and cost.png; return the results.

    Timings run one at a time in this process (with its torch threads); `workers` is unused.
    `lstm_options` and `gru_options` are gatelab.nn options of the LSTM and the GRU layers
    measured (`--lstm-option`, `--gru-option`); the RNN takes none.
    """
    recipe = QUICK_RECIPE if quick else RECIPE
    recipe = replace(recipe, lstm_options=option_pairs(lstm_options), gru_options=option_pairs(gru_options))
    gen = torch.Generator().manual_seed(seed)
    jobs = [(cell, h) for h in recipe.hidden_sizes for cell in CELLS]
    rows = [measure(cell, h, recipe, gen) for cell, h in progress(jobs, desc="cost")]
    results = {
        "experiment": NAME,
        "quick": quick,
        "seed": seed,
        "recipe": asdict(recipe),
        "lstm_options": dict(lstm_options or {}),
        "gru_options": dict(gru_options or {}),
        "formula": "params = G * (H*I + H*H + 2*H), G = rnn 1, gru 3, lstm 4; "
        "peephole adds 3*H (lstm), layer_norm 4*G*H (+ 2*H lstm)",
        "flops": "flops_per_step counts the plain cell: the options' extra arithmetic is not counted",
        "elementwise_flops_per_unit": ELEMENTWISE,
        "all_params_match_formula": all(r["params"] == r["params_formula"] for r in rows),
        "rows": rows,
        "figures": ["cost.png"],
    }
    write_results(out, results)
    draw(rows, recipe, out / "cost.png", options_note(lstm_options, gru_options))
    return results


def draw(rows: list[dict], recipe: CostRecipe, path: Path, note: str = "") -> Path:
    """Four log-log panels against H: parameters, FLOPs, training time per step, saved memory."""
    plt = pyplot()
    panels = [
        ("params", "parameters"),
        ("flops_per_step", "FLOPs per step (one sequence)"),
        ("train_us_per_step", f"train time per step, µs (B = {recipe.batch})"),
        ("activation_bytes", f"kept for backward, bytes (T = {recipe.T}, B = {recipe.batch})"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.3))
    for ax, (key, label) in zip(axes, panels):
        for cell in CELLS:
            mine = [r for r in rows if r["cell"] == cell]
            ax.loglog([r["hidden"] for r in mine], [r[key] for r in mine], "o-", color=COLORS[cell], label=cell)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(recipe.hidden_sizes), [str(h) for h in recipe.hidden_sizes])
        ax.minorticks_off()
        ax.set_xlabel("hidden size H")
        ax.set_title(label, fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, note)
