"""Median of several `gatelab bench --json` invocations, as the README's speed table.

    .venv/bin/python benchmarks/median_of_runs.py benchmarks/results/bench_2threads_run*.json
    .venv/bin/python benchmarks/median_of_runs.py benchmarks/results/bench_variants_2threads*.json

Prints, per cell and kind, the median over the invocations of each invocation's speed-up
over torch.nn (torch time / gatelab time, both medians of that invocation's repeats), with
the range across invocations; the return_gates overhead in training; the training
GFLOP/s as a fraction of the large-GEMM rate measured in the same invocation; and each
number against issue 4's targets; then, for runs that time each call after one of its own
(`"settled"`, since the fifteenth pass), the speed-up of the calls that follow the other
library's (`speedup_alternating`, no target). For `gatelab bench --variants` runs: per variant and
shape, the median of each invocation's ratio to the plain fused cell and speed-up over
the PyTorch loop, against issue 7's targets (the thresholds the runs recorded). Either way
it names the invocations during which the engine fell back to one thread (its threads waited
at their barriers, a busy host: `one_thread_fallbacks` in the JSON), whose times are not an
idle machine's.
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
            if "kind" in r:  # a speed run (a variants run's rows have no kind)
                rows.setdefault((r["cell"], r["kind"], tuple(r["shape"])), []).append(r)
    return runs, rows


def disturbed(paths, runs) -> str:
    """A line naming the invocations during which the engine ran on one thread for a while."""
    hit = [f"{p} ({run['one_thread_fallbacks']}×)" for p, run in zip(paths, runs)
           if run.get("one_thread_fallbacks")]
    if not hit:
        return ""
    return ("note: the fused engine fell back to one thread during " + ", ".join(hit)
            + "; its threads waited at their barriers (a busy host), so these are not an idle machine's times\n")


def main_variants(runs) -> int:
    rows = {}
    for run in runs:
        for r in run["results"]:
            rows.setdefault((r["variant"], tuple(r["shape"])), []).append(r)
    shapes = list(dict.fromkeys(s for (_, s) in rows))
    variants = list(dict.fromkeys(v for (v, _) in rows))
    names = " | ".join(f"× plain fused, {','.join(map(str, s))}" for s in shapes)
    loops = " | ".join(f"faster than the loop, {','.join(map(str, s))}" for s in shapes)
    print(f"{len(runs)} invocations; median (range)\n\n| variant | {names} | {loops} |")
    print("|---" * (2 * len(shapes) + 1) + "|")
    misses = []
    for v in variants:
        plain_cells, loop_cells = [], []
        for s in shapes:
            got = rows.get((v, s), [])
            vs_plain = statistics.median(r["vs_plain"] for r in got)
            vs_loop = statistics.median(r["vs_loop"] for r in got)
            bad_plain, bad_loop = vs_plain > got[0]["target_vs_plain"], vs_loop < got[0]["target_vs_loop"]
            if bad_plain:
                misses.append(f"{v} {s}: {vs_plain:.2f}x the plain cell > {got[0]['target_vs_plain']}")
            if bad_loop:
                misses.append(f"{v} {s}: {vs_loop:.2f}x the loop < {got[0]['target_vs_loop']}")
            lo_p, hi_p = min(r["vs_plain"] for r in got), max(r["vs_plain"] for r in got)
            lo_l, hi_l = min(r["vs_loop"] for r in got), max(r["vs_loop"] for r in got)
            plain_cells.append(f"{vs_plain:.2f}{' ✗' if bad_plain else ''} ({lo_p:.2f}–{hi_p:.2f})")
            loop_cells.append(f"{vs_loop:.2f}×{' ✗' if bad_loop else ''} ({lo_l:.2f}–{hi_l:.2f})")
        print(f"| {v} | " + " | ".join(plain_cells + loop_cells) + " |")
    print("\ntargets missed (✗):" if misses else "\nevery target met")
    for m in misses:
        print("  " + m)
    return 0


def main(paths) -> int:
    runs, rows = load(paths)
    print(disturbed(paths, runs), end="")
    if all(run.get("mode") == "variants" for run in runs):
        return main_variants(runs)
    if len({bool(run.get("settled")) for run in runs}) > 1:
        raise SystemExit("these runs mix two timing orders (some settled, some not): combine like with like")
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
    if all(run.get("settled") for run in runs):
        print(f"\n| speed-up, the calls that follow the other library's (median of {len(runs)}) | {header} |")
        print("|---" * (len(shapes) + 1) + "|")
        for cell, kind in TARGETS:
            cells = []
            for s in shapes:
                got = [r["speedup_alternating"] for r in rows.get((cell, kind, s), [])]
                cells.append(f"{statistics.median(got):.2f}" if got else "—")
            print(f"| {cell} {kind} | " + " | ".join(cells) + " |")
    print("\ntargets missed (✗):" if misses else "\nevery target met")
    for m in misses:
        print("  " + m)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
