"""`gatelab experiment NAME [--out DIR] [--quick] [--seed N]`: reproduce one claim.

Each experiment module provides `run(out, quick=False, seed=0, ...) -> dict`; it writes
`results.json` and its PNG figures into `out` (default `runs/experiments/NAME`, or
`runs/experiments/NAME--TAG` with `--lstm-option` / `--gru-option`, TAG naming the options).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from pathlib import Path

from gatelab.errors import UsageError
from gatelab.family_cli import check_names, check_options, parse_key_value

# name -> (module, one-line description)
EXPERIMENTS = {
    "gradient-flow": (
        "gatelab.experiments.gradient_flow", "‖∂ŷ_T/∂h_t‖ against distance, at init and after training"
    ),
    "adding": ("gatelab.experiments.adding", "the adding problem at T = 50, 100, 200"),
    "copy": ("gatelab.experiments.copy_memory", "recall 10 symbols after a delay of 50 and 100 steps"),
    "noise": ("gatelab.experiments.noise", "remember a flagged symbol among distractors; input-gate means"),
    "cost": ("gatelab.experiments.cost", "parameters, FLOPs, time and memory per step across hidden sizes"),
    "ablation": (
        "gatelab.experiments.ablation", "LSTM variants and ablations (Greff et al. 2017) on adding and text"
    ),
}

# the options each experiment takes beyond --out, --quick, --seed, --jobs, --threads
CELL_OPTIONS = ("lstm_options", "gru_options")
EXTRA = {
    "gradient-flow": ("T", *CELL_OPTIONS),
    "adding": ("lengths", *CELL_OPTIONS),
    "copy": ("delays", *CELL_OPTIONS),
    "noise": CELL_OPTIONS,
    "cost": CELL_OPTIONS,
    "ablation": (),  # it sweeps the LSTM's options itself and trains no GRU
}
FLAGS = {"lengths": "--lengths", "delays": "--delays", "T": "--T", "lstm_options": "--lstm-option",
         "gru_options": "--gru-option"}
WHY_NOT = {("ablation", "lstm_options"): " (it sweeps the LSTM's options itself)",
           ("ablation", "gru_options"): " (it trains no GRU)"}


def _positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 50,100,200, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `gatelab experiment`."""
    lines = "\n".join(f"  {name:14s} {desc}" for name, (_, desc) in EXPERIMENTS.items())
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "experiments:\n" + lines
    parser.add_argument("name", metavar="NAME", help="one of: " + ", ".join(EXPERIMENTS))
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default runs/experiments/NAME, or NAME--OPTIONS with "
                        "--lstm-option / --gru-option)")
    parser.add_argument("--quick", action="store_true", help="a small version that runs in under 30 s")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="models trained at once, each in its own process with one torch thread "
                        "(default: the number of cores; --quick: 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of this process, used by the cost timings (default 1)")
    parser.add_argument("--lengths", type=_positive_ints, default=None,
                        help="adding: sequence lengths, e.g. 50,100,200,400 (default 50,100,200)")
    parser.add_argument("--delays", type=_positive_ints, default=None,
                        help="copy: delays, e.g. 50,100 (default 50,100)")
    parser.add_argument("--T", dest="T", type=int, default=None,
                        help="gradient-flow: sequence length (default 100)")
    parser.add_argument("--lstm-option", dest="lstm_options", metavar="KEY=VALUE", action="append", default=None,
                        help="gradient-flow, adding, copy, noise, cost: a gatelab.nn option of every LSTM "
                        "trained or timed (docs/variants.md), repeatable, e.g. layer_norm=true, zoneout=0.1, "
                        "forget_bias=2, remove=output_gate,input_gate; recorded in results.json "
                        "(lstm_options) and in the default output folder's name. Not ablation: it "
                        "sweeps the LSTM's options itself")
    parser.add_argument("--gru-option", dest="gru_options", metavar="KEY=VALUE", action="append", default=None,
                        help="the same for every GRU: layer_norm, gate_activation, cell_activation, zoneout, "
                        "recurrent_dropout, weight_drop, reset_after, e.g. layer_norm=true, reset_after=false")


def _cell_options(texts: list[str], cell: str, flag: str) -> dict:
    """{option: value} from repeated `flag KEY=VALUE`, checked by gatelab.nn (UsageError, one line)."""
    options = {}
    for text in texts:
        try:
            key, value = parse_key_value(text)
        except argparse.ArgumentTypeError as err:
            raise UsageError(f"{flag}: {err}") from None
        options[key] = value
    check_names(options, flag)
    check_options(cell, options, flag)
    return options


def run(args: argparse.Namespace) -> int:
    """Run the named experiment and print where its results went and its summary."""
    if args.name not in EXPERIMENTS:
        raise UsageError(f"unknown experiment {args.name!r}; choose from {', '.join(EXPERIMENTS)}")
    extra = EXTRA[args.name]
    for option, flag in FLAGS.items():
        if getattr(args, option) is not None and option not in extra:
            raise UsageError(f"{flag} does not apply to the {args.name} experiment"
                             + WHY_NOT.get((args.name, option), ""))
    if args.T is not None and args.T < 2:
        raise UsageError(f"--T must be at least 2, got {args.T}")
    for option in ("jobs", "threads"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            raise UsageError(f"--{option} must be at least 1, got {getattr(args, option)}")
    # The fused engine's matrix products run in NumPy's OpenBLAS pool, which torch's thread
    # setting does not reach. Its idle threads spin, so a second pool per training process
    # doubles the CPU used and, on a busy machine, slows every step several-fold. Set
    # before torch (and NumPy) load, which checking the cell options below does; worker
    # processes inherit it.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    for option, cell in zip(CELL_OPTIONS, ("lstm", "gru")):
        if getattr(args, option) is not None:
            setattr(args, option, _cell_options(getattr(args, option), cell, FLAGS[option]))
    import torch

    from gatelab.experiments.output import default_out

    workers = args.jobs or (1 if args.quick else os.cpu_count() or 1)
    out = args.out or default_out(args.name, args.lstm_options, args.gru_options)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    module = importlib.import_module(EXPERIMENTS[args.name][0])
    options = {k: getattr(args, k) for k in extra if getattr(args, k) is not None}

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    # Vanishing gradients are, literally, tiny numbers: subnormal floats make a saturated
    # RNN's backward pass several times slower. Flushing them to zero changes no result
    # beyond 1e-38 and keeps every cell's time per step honest.
    torch.set_flush_denormal(True)
    start = time.perf_counter()
    try:
        results = module.run(out, quick=args.quick, seed=args.seed, workers=workers, **options)
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)
    seconds = time.perf_counter() - start
    summary = results.get("summary") or {"all_params_match_formula": results.get("all_params_match_formula")}
    print(json.dumps(summary, indent=1))
    print(f"{args.name}: wrote {out / 'results.json'} and {', '.join(results['figures'])} in {seconds:.0f} s")
    return 0
