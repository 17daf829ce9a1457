"""The training curve of a run as a PNG (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import io
from pathlib import Path


def plot_curve(records: list[dict], out_png, *, unigram_bits: float | None = None) -> Path:
    """Draw training and validation bits per character against the step; write a PNG.

    Arguments:
        records: metrics.jsonl records ("step", "train_bpc", "val_bpc", "final").
        out_png: where to write (atomically).
        unigram_bits: the corpus's character entropy, drawn as a reference line.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    from gatelab.lm.checkpoint import atomic_write

    train = [(r["step"], r["train_bpc"]) for r in records if "train_bpc" in r]
    val = [(r["step"], r["val_bpc"]) for r in records if "val_bpc" in r and not r.get("final")]
    final = [(r["step"], r["val_bpc"]) for r in records if r.get("final")]
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train), color="#4c72b0", lw=1.2, label="training (mean over the last steps)")
    if val:
        ax.plot(*zip(*val), "o-", color="#dd8452", ms=4, label="validation (sample)")
    if final:
        ax.plot(*zip(*final[-1:]), "*", color="#c44e52", ms=12,
                label=f"validation, whole part: {final[-1][1]:.3f}")
    if unigram_bits is not None:
        ax.axhline(unigram_bits, color="grey", ls="--", lw=1, label=f"unigram entropy {unigram_bits:.2f}")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per character")
    ax.set_title("character model: training curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    out_png = Path(out_png)
    atomic_write(out_png, buf.getvalue())
    return out_png
