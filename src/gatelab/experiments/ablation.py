"""`gatelab experiment ablation`: which parts of the LSTM matter, in miniature.

Greff et al. 2017 ("LSTM: A Search Space Odyssey") trained the LSTM with one part removed or
changed at a time. Here each variant (gatelab.nn options, docs/variants.md) trains with the
same seed, initial weights where the shapes agree, data and recipe as the plain LSTM on

(a) the adding problem (`adding_train`, the adding experiment's recipe, forget bias 1), scored
    by the final test MSE (mean predictor 1/6), and
(b) the character model (`gatelab.lm.CharLM`) on a slice of the default corpus (the Python
    standard library), scored by validation bits per character,

one model per core. The figure shows each variant relative to the plain LSTM: the ratio of
its test MSE and the difference of its validation bpc. One seed per variant: differences of a
few percent are within seed-to-seed noise; what Greff et al. found large (no forget gate, no
output activation) should stand out.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gatelab.experiments.adding_train import AddingRecipe, train_adding
from gatelab.experiments.models import module_options
from gatelab.experiments.output import pyplot, save_figure, write_results
from gatelab.experiments.parallel import map_jobs, progress

NAME = "ablation"

# variant -> keyword-only options of gatelab.nn.LSTM
VARIANTS: dict[str, dict] = {
    "plain": {},
    "no_forget_gate": {"no_forget_gate": True},
    "no_input_gate": {"no_input_gate": True},
    "no_output_gate": {"no_output_gate": True},
    "no_output_activation": {"no_output_activation": True},
    "no_candidate_activation": {"no_candidate_activation": True},
    "coupled_gates": {"coupled_gates": True},
    "peephole": {"peephole": True},
    "hard_sigmoid": {"gate_activation": "hard_sigmoid"},
    "layer_norm": {"layer_norm": True},
}


@dataclass(frozen=True)
class TextRecipe:
    """How one variant of the character model is trained on a slice of the corpus."""

    train_chars: int = 500_000  # the first characters of the default corpus
    val_chars: int = 50_000  # the characters right after them
    embed: int = 16
    hidden: int = 64
    seq_len: int = 64
    batch: int = 32
    steps: int = 2000
    lr: float = 4e-3  # Adam
    clip: float = 1.0


ADDING_T = 50
ADDING = AddingRecipe(hidden=32, batch=64, steps=1500, eval_every=100, test_size=500, stop_mse=0.0)
TEXT = TextRecipe()
QUICK_ADDING_T = 10
QUICK_ADDING = AddingRecipe(hidden=8, batch=16, steps=12, eval_every=6, test_size=100, stop_mse=0.0)
QUICK_TEXT = TextRecipe(train_chars=6000, val_chars=1500, embed=8, hidden=16, seq_len=16, batch=8, steps=8)


def _adding_job(variant: str, T: int, recipe: AddingRecipe, seed: int) -> dict:
    pairs = tuple(sorted(VARIANTS[variant].items()))
    model, rec = train_adding("lstm", T, replace(recipe, lstm_options=pairs), seed=seed, desc=f"adding {variant}")
    return {"task": "adding", "variant": variant, "options": VARIANTS[variant],
            "module_options": module_options(model.rnn), "T": T, "steps": rec["steps"],
            "test_mse": rec["test_mse"], "final_mse": rec["final_mse"], "best_mse": rec["best_mse"],
            "final_frac_close": rec["final_frac_close"], "seconds": rec["seconds"]}


@functools.lru_cache(maxsize=1)
def _corpus():
    from gatelab.data.text import load_corpus

    return load_corpus(None)


def _text_job(variant: str, recipe: TextRecipe, seed: int) -> dict:
    """Train the character model with one variant; validation bpc on the held-out slice."""
    from gatelab.lm.config import ModelConfig
    from gatelab.lm.evaluate import validation_bpc
    from gatelab.lm.batches import make_batch
    from gatelab.lm.model import CharLM

    corpus = _corpus()
    n_train = min(recipe.train_chars, len(corpus) - recipe.val_chars)
    config = ModelConfig(vocab_size=len(corpus.vocab), cell="lstm", embed_size=recipe.embed,
                         hidden_size=recipe.hidden, cell_options=dict(VARIANTS[variant]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CharLM(config)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    rng = np.random.default_rng(seed + 3_000_017)
    start = time.perf_counter()
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)  # masks of stochastic options, if any
        for _ in progress(range(recipe.steps), desc=f"text {variant}"):
            starts = rng.integers(0, n_train - recipe.seq_len - 1, size=recipe.batch)  # (B,)
            x, y = make_batch(corpus, starts, recipe.seq_len)  # (T, B), (T, B)
            logits, _ = model(x)  # (T, B, V)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
            opt.step()
            losses.append(float(loss.detach()) / math.log(2.0))
    bpc = validation_bpc(model, corpus, n_train, n_train + recipe.val_chars, seq_len=recipe.seq_len)
    tail = losses[-max(1, len(losses) // 10):]
    return {"task": "text", "variant": variant, "options": VARIANTS[variant],
            "module_options": module_options(model.rnn), "val_bpc": bpc,
            "final_train_bpc": float(np.mean(tail)), "steps": recipe.steps,
            "seconds": time.perf_counter() - start}


def run(out: Path, quick: bool = False, seed: int = 0, workers: int = 1) -> dict:
    """Train every variant on both tasks; write results.json and ablation.png."""
    T = QUICK_ADDING_T if quick else ADDING_T
    adding, text = (QUICK_ADDING, QUICK_TEXT) if quick else (ADDING, TEXT)
    jobs = [(_text_job, (v, text, seed)) for v in VARIANTS] + [(_adding_job, (v, T, adding, seed)) for v in VARIANTS]
    runs = map_jobs(_call, jobs, workers, desc="ablation")
    plain = {r["task"]: r for r in runs if r["variant"] == "plain"}
    summary = {}
    for v in VARIANTS:
        a = next(r for r in runs if r["task"] == "adding" and r["variant"] == v)
        t = next(r for r in runs if r["task"] == "text" and r["variant"] == v)
        summary[v] = {
            "adding_test_mse": a["final_mse"],
            "adding_mse_vs_plain": a["final_mse"] / plain["adding"]["final_mse"],
            "text_val_bpc": t["val_bpc"],
            "text_bpc_minus_plain": t["val_bpc"] - plain["text"]["val_bpc"],
        }
    results = {
        "experiment": NAME,
        "quick": quick,
        "seed": seed,
        "variants": VARIANTS,
        "adding": {"T": T, "recipe": asdict(adding) | {"lstm_options": None}, "mean_predictor_mse": 1 / 6},
        "text": {"recipe": asdict(text), "corpus": _corpus().source},
        "summary": summary,
        "runs": runs,
        "figures": ["ablation.png"],
    }
    write_results(out, results)
    draw(summary, T, quick, out / "ablation.png")
    return results


def _call(fn, args):
    """map_jobs needs one module-level function: run `fn(*args)`."""
    return fn(*args)


def draw(summary: dict, T: int, quick: bool, path: Path) -> Path:
    """Two bar panels: adding test MSE / plain (log), validation bpc − plain."""
    plt = pyplot()
    names = list(summary)
    y = np.arange(len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.4 * len(names) + 1.6), sharey=True)
    ratios = [summary[n]["adding_mse_vs_plain"] for n in names]
    deltas = [summary[n]["text_bpc_minus_plain"] for n in names]
    left.barh(y, [math.log10(r) for r in ratios], color=["tab:red" if r > 1 else "tab:green" for r in ratios])
    left.axvline(0, color="black", lw=1)
    left.set_xlabel("log10(test MSE / plain LSTM)")
    left.set_title(f"adding problem, T = {T}")
    for k, n in enumerate(names):
        left.annotate(f"{summary[n]['adding_test_mse']:.3g}", (0, k), fontsize=7, va="center",
                      xytext=(3, 0), textcoords="offset points")
    right.barh(y, deltas, color=["tab:red" if d > 0 else "tab:green" for d in deltas])
    right.axvline(0, color="black", lw=1)
    right.set_xlabel("validation bpc − plain LSTM")
    right.set_title("character model, stdlib slice")
    for k, n in enumerate(names):
        right.annotate(f"{summary[n]['text_val_bpc']:.3f}", (0, k), fontsize=7, va="center",
                       xytext=(3, 0), textcoords="offset points")
    left.set_yticks(y, names)
    left.invert_yaxis()
    fig.suptitle("LSTM ablations (Greff et al. 2017, in miniature)" + (" — --quick, not a result" if quick else ""))
    fig.tight_layout()
    return save_figure(fig, path)
