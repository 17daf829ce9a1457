"""`gatelab experiment gradient-flow`: how far back a gradient reaches.

Claim: through the plain tanh RNN the gradient of a late output with respect to an early
hidden state falls by orders of magnitude within 100 steps (it vanishes), while the LSTM's
additive cell update lets it survive — once the forget gate stays open (forget-gate bias 1,
or training).

Measured quantity: g(d) = mean over sequences of ||∂ŷ_T / ∂h_t||, d = T − 1 − t, where ŷ_T is
the model's linear readout of the last hidden state, on adding-problem inputs of length T.
For the LSTM the derivative is the total one with respect to h_t (its cell c_t held as the
separate state it is); paths through c_{t+1}, ..., c_T are included. Models: each cell at
torch.nn's default initialisation, the LSTM with forget-gate bias 1, and each cell after
training on the adding problem of the same length. Options of the LSTM and the GRU
(`--lstm-option`, `--gru-option`) apply to every model of that cell, at init and trained
("lstm fb=1" keeps forget bias 1 whatever forget_bias the options give).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, replace
from pathlib import Path

import torch

from gatelab.data.synthetic import adding_batch, generator
from gatelab.experiments.adding_train import AddingRecipe, train_adding
from gatelab.experiments.parallel import map_jobs, progress
from gatelab.experiments.models import CELLS, SequenceModel, build, cell_options, module_options, option_pairs
from gatelab.experiments.output import COLORS, options_note, pyplot, save_figure, write_results

NAME = "gradient-flow"
T_DEFAULT = 100
RECIPE = AddingRecipe()
QUICK_T = 20
QUICK_RECIPE = AddingRecipe(hidden=16, batch=32, steps=40, eval_every=20, test_size=200, stop_mse=0.0)


def hidden_gradients(model: SequenceModel, x: torch.Tensor) -> torch.Tensor:
    """(T,) mean over the batch of ||∂ŷ_T/∂h_t||, by running the layer one step at a time.

    Arguments:
        model: a one-layer `SequenceModel` with a scalar readout.
        x: (T, B, I) inputs.
    """
    T, B, _ = x.shape
    H = model.rnn.hidden_size
    h = x.new_zeros(1, B, H)  # (1, B, H) initial state
    state = (h, x.new_zeros(1, B, H)) if model.cell == "lstm" else h
    hs = []
    for t in range(T):
        _, state = model.rnn(x[t : t + 1], state)  # state h: (1, B, H)
        h_t = state[0] if model.cell == "lstm" else state
        h_t.retain_grad()
        hs.append(h_t)
    model.head(hs[-1][0]).sum().backward()  # Σ_b ŷ_T: each sequence's own gradient
    grads = torch.stack([h_t.grad[0] for h_t in hs])  # (T, B, H)
    return grads.norm(dim=-1).mean(dim=1)  # (T,)


def profile(model: SequenceModel, x: torch.Tensor) -> list[float]:
    """g(d) for d = 0 .. T-1 (distance from the last step), computed in float64.

    Float64 keeps gradients that vanish to 1e-40 and below representable (float32 would
    end in subnormals, then zero); the model itself is left unchanged. The copy runs in
    evaluation mode, so stochastic options (zoneout, dropout) use their expectation.
    """
    probe = copy.deepcopy(model).double().eval()
    g = hidden_gradients(probe, x.double()).detach()  # (T,) indexed by t
    return g.flip(0).tolist()  # indexed by d = T - 1 - t


def decay_orders(g: list[float], d: int) -> float:
    """log10 g(0) / g(d): how many orders of magnitude the gradient lost over d steps."""
    d = min(d, len(g) - 1)
    if g[d] <= 0:
        return math.inf
    return math.log10(g[0] / g[d])


def _trained_job(cell: str, T: int, recipe: AddingRecipe, seed: int, x: torch.Tensor) -> tuple[list[float], dict]:
    """Train `cell` on the adding problem, then measure its profile on the probe inputs x."""
    model, record = train_adding(cell, T, recipe, seed=seed, desc=f"train {cell} T={T}")
    info = {key: record[key] for key in ("final_mse", "first_solved_step", "steps_run", "seconds", "module_options")}
    return profile(model, x), info


def run(
    out: Path, quick: bool = False, seed: int = 0, workers: int = 1, T: int | None = None,
    lstm_options: dict | None = None, gru_options: dict | None = None,
) -> dict:
    """Measure g(d) for every model, write results.json and gradient_flow.png; return the results.

    `lstm_options` and `gru_options` are gatelab.nn options of the LSTM and the GRU
    (`--lstm-option`, `--gru-option`), for the models at init and trained; the RNN takes none.
    """
    T = int(T or (QUICK_T if quick else T_DEFAULT))
    recipe = QUICK_RECIPE if quick else RECIPE
    recipe = replace(recipe, lstm_options=option_pairs(lstm_options), gru_options=option_pairs(gru_options))
    x, _ = adding_batch(T, 64, generator(seed + 7))  # (T, 64, 2) probe inputs
    hidden = recipe.hidden
    options = {cell: cell_options(cell, recipe.lstm_options, recipe.gru_options) for cell in CELLS}
    init_models = {cell: build(cell, 2, hidden, 1, seed=seed + 10 * k, options=options[cell])
                   for k, cell in enumerate(CELLS)}
    fb1 = {k: v for k, v in options["lstm"].items() if k != "forget_bias"}
    init_models["lstm fb=1"] = build("lstm", 2, hidden, 1, seed=seed + 20, forget_bias=1.0, options=fb1)
    profiles: dict[str, dict[str, list[float]]] = {"init": {}, "trained": {}}
    for name, model in progress(init_models.items(), desc="gradients at init"):
        profiles["init"][name] = profile(model, x)
    jobs = [(cell, T, recipe, seed + 10 * k, x) for k, cell in enumerate(CELLS)]
    trained = map_jobs(_trained_job, jobs, workers, desc="train on adding")
    training = {}
    built = {f"init {name}": module_options(model.rnn) for name, model in init_models.items()}
    for cell, (g, info) in zip(CELLS, trained):
        profiles["trained"][cell] = g
        built[f"trained {cell}"] = info.pop("module_options")
        training[cell] = info
    far = T - 1
    summary = {
        f"{stage} {name}": {"g0": g[0], f"g{far}": g[far], f"orders_lost_over_{far}": decay_orders(g, far)}
        for stage, group in profiles.items()
        for name, g in group.items()
    }
    results = {
        "experiment": NAME,
        "quick": quick,
        "seed": seed,
        "T": T,
        "quantity": "mean over 64 sequences of ||d yhat_T / d h_t|| against d = T-1-t",
        "recipe": asdict(recipe),
        "lstm_options": dict(lstm_options or {}),
        "gru_options": dict(gru_options or {}),
        "module_options": built,
        "training": training,
        "summary": summary,
        "profiles": profiles,
        "figures": ["gradient_flow.png"],
    }
    write_results(out, results)
    draw(profiles, out / "gradient_flow.png", options_note(lstm_options, gru_options))
    return results


def draw(profiles: dict, path: Path, note: str = "") -> Path:
    """Two panels, at initialisation and after training: g(d) on a log scale."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    titles = {"init": "at initialisation", "trained": "after training (adding problem)"}
    for ax, (stage, group) in zip(axes, profiles.items()):
        for name, g in group.items():
            ax.semilogy(range(len(g)), g, color=COLORS[name], label=name)
        ax.set_title(titles[stage])
        ax.set_xlabel("distance T − t (steps back from the output)")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes:
        ax.set_ylabel("‖∂ŷ_T / ∂h_t‖")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, note)
