"""`gatelab inspect RUN (--text TEXT | --file F) --out report.html`: what the gates do on a text.

Writes one self-contained HTML file (open it in any browser, offline) and the training
curve beside it as a PNG.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gatelab.errors import UsageError

MAX_CHARS = 2000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run folder written by `gatelab train`")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="the text to read")
    src.add_argument("--file", metavar="F", help="a UTF-8 file with the text to read")
    parser.add_argument("--out", metavar="HTML", default=None, help="the report (default: RUN/report.html)")
    parser.add_argument("--max-chars", type=int, default=MAX_CHARS,
                        help=f"read at most this many characters (default: {MAX_CHARS}; the page "
                             "holds every unit's values at every character)")


def read_text(args) -> str:
    """The text to inspect, from --text or --file, cut to --max-chars; UsageError when unusable."""
    from gatelab.data.text import decode_file

    if args.max_chars < 1:
        raise UsageError(f"--max-chars must be ≥ 1, got {args.max_chars}")
    if args.file is not None:
        path = Path(args.file)
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        text = decode_file(path, path.read_bytes())
    else:
        text = args.text
    if not text:
        raise UsageError("the text to inspect is empty")
    return text[: args.max_chars]


def inspect_run(run_dir, text: str, out) -> tuple[Path, Path | None]:
    """Write the report for `text` read by the model of `run_dir`; return (html, png or None)."""
    from gatelab.lm import checkpoint as ckpt
    from gatelab.viz.activations import record
    from gatelab.viz.curve import plot_curve
    from gatelab.viz.report import write_report

    run, model = ckpt.load_run(run_dir)
    acts = record(model, run.vocab, text)  # UsageError for characters outside the vocabulary
    records = ckpt.read_metrics(run_dir)
    out = Path(out)
    png = None
    if records:
        unigram = next((r["unigram_bits"] for r in reversed(records) if "unigram_bits" in r), None)
        png = plot_curve(records, out.with_name(out.stem + "-curve.png"), unigram_bits=unigram)
    final = next((r for r in reversed(records) if r.get("final")), None)
    m = run.model
    subtitle = (f"{m.cell.upper()} {m.num_layers}×{m.hidden_size} trained {run.train.steps} steps on "
                f"{run.corpus.get('source', '?')}"
                + (f"; validation {final['val_bpc']:.3f} bits/char" if final else "")
                + f"; {len(text)} characters read")
    write_report(out, acts, title=f"gatelab: what the gates of {Path(run_dir).name} do",
                 subtitle=subtitle, curve_png=png.read_bytes() if png else None)
    return out, png


def run(args) -> int:
    text = read_text(args)
    out = Path(args.out) if args.out else Path(args.run) / "report.html"
    if out.parent and not out.parent.is_dir():
        raise UsageError(f"{out.parent}: no such folder for --out")
    html, png = inspect_run(args.run, text, out)
    print(f"report: {html} ({html.stat().st_size / 1e6:.1f} MB, open it in a browser)")
    if png:
        print(f"training curve: {png}")
    return 0
