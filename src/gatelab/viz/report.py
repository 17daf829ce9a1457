"""The gate report: one self-contained HTML file (inline CSS, JS and data, no request).

Data in the page: the text, every quantity of every unit at every character as float32
(base64; the tooltips show these values exactly as the model computed them), the model's
probability of each character, the units that best track interpretable features of
Python text, and the training curve as an inline PNG.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from gatelab.viz.activations import MEANING, Activations
from gatelab.viz.features import FEATURES, python_features, top_units
from gatelab.viz.template import PAGE


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def report_data(acts: Activations, *, title: str, subtitle: str, curve_png: bytes | None = None,
                top_k: int = 8) -> dict:
    """The JSON object the page reads.

    Arguments:
        acts: the recorded activations.
        title, subtitle: the page's heading and the line under it.
        curve_png: the training curve (PNG bytes) or None.
        top_k: units listed per feature.
    """
    L, T, H = acts.shape
    values = np.stack([acts.values[q] for q in acts.quantities])  # (Q, L, T, H)
    features = python_features(acts.text)
    top = top_units(acts, features, k=top_k)
    constant = [f for f in FEATURES if np.ptp(features[f]) == 0]
    note = ("Pearson correlation r between a unit's value and a feature of the text, computed over its "
            f"{T} characters from Python's tokenize module; units ranked by |r|.")
    if constant:
        note += f" Not varying in this text, so not ranked: {', '.join(constant)}."
    first = top[0] if top else {"q": acts.quantities[0], "layer": 0, "unit": 0}
    return {"title": title, "subtitle": subtitle, "text": acts.text, "T": T, "L": L, "H": H,
            "quantities": list(acts.quantities), "meaning": {q: MEANING[q] for q in acts.quantities},
            "values": _b64(values), "probs": _b64(acts.probs), "top": top, "features_note": note,
            "initial": {"q": first["q"], "layer": first["layer"], "unit": first["unit"]},
            "curve": ("data:image/png;base64," + base64.b64encode(curve_png).decode("ascii"))
            if curve_png else None}


def render(data: dict) -> str:
    """The HTML page for report_data's object."""
    payload = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")  # no "</script>" inside
    return PAGE.replace("__DATA__", payload)


def write_report(out, acts: Activations, **kwargs) -> Path:
    """Write the report (atomically). Arguments: as report_data, plus `out`, the HTML path."""
    from gatelab.lm.checkpoint import atomic_write

    out = Path(out)
    atomic_write(out, render(report_data(acts, **kwargs)))
    return out
