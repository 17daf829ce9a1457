"""Writing an experiment's results: `results.json` and PNG figures (matplotlib, Agg backend)."""

from __future__ import annotations

import hashlib
import json
import platform
import re
from pathlib import Path

import torch

from gatelab import __version__

COLORS = {"rnn": "tab:red", "gru": "tab:blue", "lstm": "tab:green", "lstm fb=1": "tab:olive"}


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported only when drawing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def environment() -> dict:
    """What the numbers were measured on."""
    return {
        "gatelab": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }


def _text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple, set, frozenset)):
        return "+".join(_text(v) for v in (sorted(value) if isinstance(value, (set, frozenset)) else value))
    return str(value)


def options_tag(lstm_options: dict | None = None, gru_options: dict | None = None) -> str:
    """A file-name-safe tag of the cell options, "" without any.

    E.g. "lstm-layer_norm=true,zoneout=0.1--gru-reset_after=false": the default output folder
    of an experiment run with options is NAME--TAG, so that runs with different options do not
    write over each other (or over the run without options). A tag over 120 characters is
    cut to 111 and ends in 8 hex digits of its hash.
    """
    parts = []
    for cell, options in (("lstm", lstm_options), ("gru", gru_options)):
        if options:
            parts.append(cell + "-" + ",".join(f"{k}={_text(v)}" for k, v in sorted(options.items())))
    tag = re.sub(r"[^A-Za-z0-9_.,=+-]", "_", "--".join(parts))
    if len(tag) > 120:
        tag = tag[:111] + "-" + hashlib.sha1(tag.encode()).hexdigest()[:8]
    return tag


def options_note(lstm_options: dict | None = None, gru_options: dict | None = None) -> str:
    """The cell options in words for a figure's title, "" without any."""
    parts = []
    for cell, options in (("LSTM", lstm_options), ("GRU", gru_options)):
        if options:
            parts.append(cell + " " + ", ".join(f"{k}={_text(v)}" for k, v in sorted(options.items())))
    return "; ".join(parts)


def default_out(name: str, lstm_options: dict | None = None, gru_options: dict | None = None) -> Path:
    """runs/experiments/NAME, or runs/experiments/NAME--TAG with cell options (`options_tag`)."""
    tag = options_tag(lstm_options, gru_options)
    return Path("runs") / "experiments" / (f"{name}--{tag}" if tag else name)


def write_results(out: Path, results: dict) -> Path:
    """Write `results` (plus the environment) to out/results.json and return its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    payload = {**results, "environment": environment()}
    path.write_text(json.dumps(payload, indent=1, allow_nan=True) + "\n")
    return path


def save_figure(fig, path: Path, note: str = "") -> Path:
    """Save a figure as a small PNG (96 dpi) and close it; a `note` (the cell options,
    `options_note`) goes under the figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if note:
        fig.text(0.5, 0.0, "options: " + note, ha="center", va="top", fontsize=8)
    fig.savefig(path, dpi=96, bbox_inches="tight")
    pyplot().close(fig)
    return path
