"""Writing an experiment's results: `results.json` and PNG figures (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import platform
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


def write_results(out: Path, results: dict) -> Path:
    """Write `results` (plus the environment) to out/results.json and return its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    payload = {**results, "environment": environment()}
    path.write_text(json.dumps(payload, indent=1, allow_nan=True) + "\n")
    return path


def save_figure(fig, path: Path) -> Path:
    """Save a figure as a small PNG (96 dpi) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=96, bbox_inches="tight")
    pyplot().close(fig)
    return path
