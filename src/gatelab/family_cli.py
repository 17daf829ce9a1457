"""The LSTM-family options of `gatelab.nn` on the command line (docs/variants.md).

Shared by `gatelab train` (flags such as `--layer-norm --zoneout 0.1`) and
`gatelab experiment` (`--lstm-option KEY=VALUE`, `--gru-option KEY=VALUE`). Both turn into
the keyword-only options of `gatelab.nn.LSTM` / `GRU` unchanged; `check_options` builds a
tiny module with them so that a wrong value is a one-line UsageError (exit 2) before anything
trains.
"""

from __future__ import annotations

import argparse

from gatelab.errors import UsageError

PARTS = ("forget_gate", "input_gate", "output_gate", "output_activation", "candidate_activation")

# flag -> (option name, argparse keywords, help)
FLAGS = {
    "--forget-bias": ("forget_bias", {"type": float, "metavar": "F"}, "LSTM: initial forget-gate bias"),
    "--peephole": ("peephole", {"action": "store_true"}, "LSTM: gates read the cell (Gers & Schmidhuber 2000)"),
    "--layer-norm": ("layer_norm", {"action": "store_true"}, "layer normalisation (Ba et al. 2016)"),
    "--coupled-gates": ("coupled_gates", {"action": "store_true"}, "LSTM: i = 1 - f (CIFG)"),
    "--remove": ("remove", {"metavar": "PART[,PART]"}, "LSTM ablation, parts: " + ", ".join(PARTS)),
    "--gate-activation": ("gate_activation", {"metavar": "NAME"}, "sigmoid | hard_sigmoid"),
    "--cell-activation": ("cell_activation", {"metavar": "NAME"}, "tanh | softsign"),
    "--zoneout": ("zoneout", {"type": float, "metavar": "P"}, "zoneout probability (Krueger et al. 2016)"),
    "--recurrent-dropout": ("recurrent_dropout", {"type": float, "metavar": "P"},
                            "one dropout mask on h per sequence (Gal & Ghahramani 2016)"),
    "--weight-drop": ("weight_drop", {"type": float, "metavar": "P"}, "DropConnect on weight_hh (AWD-LSTM)"),
    "--reset-before": ("reset_after", {"action": "store_false"}, "GRU: reset gate before W_hn (Cho et al. 2014)"),
}


def add_family_arguments(parser: argparse.ArgumentParser) -> None:
    """The LSTM-family flags (every default None: only what is given is recorded)."""
    group = parser.add_argument_group("LSTM family (gatelab.nn options, docs/variants.md)")
    for flag, (name, kwargs, help_text) in FLAGS.items():
        group.add_argument(flag, dest="family_" + name, default=None, help=help_text, **kwargs)


def _remove_set(text: str, where: str = "--remove") -> list[str]:
    parts = sorted({p.strip().replace("-", "_") for p in text.split(",") if p.strip()})
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise UsageError(f"{where}: expected parts among {', '.join(PARTS)}, got {text!r}")
    return parts


def family_options(args: argparse.Namespace) -> dict:
    """{option: value} of the family flags given (JSON-ready: `remove` is a sorted list)."""
    options = {}
    for name, _, _ in FLAGS.values():
        value = getattr(args, "family_" + name, None)
        if value is not None:
            options[name] = _remove_set(value) if name == "remove" else value
    return options


def family_argv(options: dict) -> list[str]:
    """The flags that give `options` again."""
    argv = []
    for flag, (name, kwargs, _) in FLAGS.items():
        if name not in options:
            continue
        value = options[name]
        if kwargs.get("action") in ("store_true", "store_false"):
            argv.append(flag)
        else:
            argv += [flag, ",".join(value) if name == "remove" else str(value)]
    return argv


def module_options(options: dict) -> dict:
    """The keyword arguments of gatelab.nn for recorded options (`remove` back to a set)."""
    return {k: (set(v) if k == "remove" else v) for k, v in options.items()}


def check_options(cell: str, options: dict, where: str = "option") -> None:
    """UsageError (one line) when gatelab.nn refuses `options` for `cell`."""
    if not options:
        return
    from gatelab import nn as gnn

    modules = {"lstm": gnn.LSTM, "gru": gnn.GRU, "rnn": gnn.RNN}
    try:
        modules[cell](2, 2, **module_options(options))
    except (TypeError, ValueError) as err:
        message = " ".join(str(err).split())
        raise UsageError(f"{where}: {message}" if where.startswith("--") else f"{cell} {where}: {message}") from None


def option_names() -> tuple[str, ...]:
    """The keyword-only LSTM-family options of gatelab.nn (docs/variants.md), sorted."""
    import inspect

    from gatelab.nn import options as nn_options

    params = inspect.signature(nn_options.parse).parameters.values()
    return tuple(sorted(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "bias"))


def check_names(options: dict, where: str = "option") -> None:
    """UsageError (one line) for a key that is not an LSTM-family option of gatelab.nn."""
    known = option_names()
    unknown = [k for k in options if k not in known]
    if unknown:
        raise UsageError(f"{where}: unknown option {unknown[0]!r}; expected one of {', '.join(known)}")


def parse_key_value(text: str) -> tuple[str, object]:
    """`KEY=VALUE` -> (key, value): true/false, numbers, a comma list for `remove` or of numbers
    (a list, e.g. zoneout=0.1,0.05), else text."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE like layer_norm=true, got {text!r}")
    raw = raw.strip()
    if key == "remove":
        try:
            return key, _remove_set(raw, "remove")
        except UsageError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    if raw.lower() in ("true", "false"):
        return key, raw.lower() == "true"
    if "," in raw:  # a pair of numbers, e.g. zoneout=0.1,0.05 (p_h, p_c)
        try:
            return key, [float(v) for v in raw.split(",")]
        except ValueError:
            pass
    for convert in (int, float):
        try:
            return key, convert(raw)
        except ValueError:
            pass
    return key, raw
