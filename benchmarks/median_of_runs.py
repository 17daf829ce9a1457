"""Median of several `gatelab bench --json` invocations, as the README's speed table.

    .venv/bin/python benchmarks/median_of_runs.py benchmarks/results/bench_2threads_run*.json

Prints, per cell and kind, the median over the invocations of each invocation's speed-up
over torch.nn (torch time / gatelab time, both medians of that invocation's repeats), with
the range across invocations; the return_gates overhead in training; the training
GFLOP/s as a fraction of the large-GEMM rate measured in the same invocation; and each
number against issue 4's targets.
"""

from __future__ import annotations

import json
import statistics
import sys

# issue 4: (cell, kind) -> (target for B >= 16, target for B = 1); speed-up = torch / gatelab
TARGETS = {("LSTM", "training"): (1.25, 1.0), ("LSTM", "inference"): (0.9, 0.9),
           ("GRU", "training"): (1.5, 1.0), ("GRU", "inference"): (1.5, 1.0)}
GATES_MAX, PEAK_MIN = 0.15, 0.75


def load(paths):
    runs = [json.load(open(p)) for p in paths]
    rows = {}
    for run in runs:
        for r in run["results"]:
            rows.setdefault((r["cell"], r["kind"], tuple(r["shape"])), []).append(r)
    return runs, rows


def main(paths) -> int:
    runs, rows = load(paths)
    shapes = list(dict.fromkeys(s for (_, _, s) in rows))
    header = " | ".join(",".join(map(str, s)) for s in shapes)
    print(f"{len(runs)} invocations; load average at start: "
          + ", ".join(f"{run['machine'].get('load_average', ['?'])[0]:.2f}" for run in runs))
    print(f"\n| speed-up over torch.nn (median of {len(runs)}; range) | {header} |")
    print("|---" * (len(shapes) + 1) + "|")
    misses = []
    for cell, kind in TARGETS:
        cells = []
        for s in shapes:
            got = [r["speedup"] for r in rows.get((cell, kind, s), [])]
            if not got:
                cells.append("—")
                continue
            med = statistics.median(got)
            target = TARGETS[(cell, kind)][1 if s[1] == 1 else 0]
            mark = "" if med >= target else " ✗"
            if mark:
                misses.append(f"{cell} {kind} {s}: {med:.2f} < {target}")
            cells.append(f"{med:.2f}{mark} ({min(got):.2f}–{max(got):.2f})")
        print(f"| {cell} {kind} | " + " | ".join(cells) + " |")
    for cell in ("LSTM", "GRU"):
        cells = []
        for s in shapes:
            got = [r["gates_overhead"] for r in rows.get((cell, "training", s), [])
                   if r.get("gates_overhead") is not None]
            med = statistics.median(got) if got else None
            if med is not None and med > GATES_MAX:
                misses.append(f"{cell} return_gates {s}: +{med:.0%}")
            cells.append("—" if med is None else f"{med:+.0%}")
        print(f"| `return_gates=True` in training, {cell} | " + " | ".join(cells) + " |")
    cells = []
    for s in shapes:
        got = [r["fraction_of_peak"] for r in rows.get(("LSTM", "training", s), [])]
        med = statistics.median(got) if got else None
        if med is not None and s[1] >= 16 and med < PEAK_MIN:
            misses.append(f"LSTM training GEMM fraction {s}: {med:.0%}")
        cells.append("—" if med is None else f"{med:.0%}")
    print("| LSTM training GFLOP/s ÷ large-GEMM GFLOP/s | " + " | ".join(cells) + " |")
    print("\ntargets missed (✗):" if misses else "\nevery target met")
    for m in misses:
        print("  " + m)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
