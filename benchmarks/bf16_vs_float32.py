"""bf16 mixed precision against float32 for the character model, on this machine.

    .venv/bin/python benchmarks/bf16_vs_float32.py [--steps 150] [--repeats 2] [--model "..."]
        [--out benchmarks/bf16_vs_float32.json]

Trains the same run (default corpus, the --model options, same seed) with `--precision
float32` (backend auto and backend eager) and `--precision bf16` (under autocast `auto`
runs the eager engine), round-robin `--repeats` times, each in a fresh process, and
records for each: training characters/s (from metrics.jsonl, the last logging window of
the run, i.e. after warm-up), wall time, and the final validation bpc over the whole
validation part. Prints a table and writes JSON with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = [("float32", "auto"), ("float32", "eager"), ("bf16", "auto")]


MODEL = "--hidden-size 64 --embed-size 32 --batch-size 16 --seq-len 64 --val-fraction 0.01"


def one_run(precision: str, backend: str, steps: int, model: str, tmp: Path, k: int) -> dict:
    out = tmp / f"{precision}-{backend}-{k}"
    cmd = [sys.executable, "-m", "gatelab", "train", *model.split(), "--precision", precision, "--backend", backend,
           "--steps", str(steps), "--eval-every", str(10 * steps), "--log-every", str(max(1, steps // 5)),
           "--checkpoint-every", str(10 * steps), "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    final = next(r for r in recs if r.get("final"))
    speeds = [r["tokens_per_s"] for r in recs if "tokens_per_s" in r and not r.get("final")]
    return {"precision": precision, "backend": backend, "repeat": k, "wall_s": wall,
            "tokens_per_s": speeds[-1], "val_bpc": final["val_bpc"], "command": " ".join(cmd[1:])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default=MODEL, help=f"gatelab train options (default: {MODEL})")
    parser.add_argument("--out", default="benchmarks/bf16_vs_float32.json")
    args = parser.parse_args()
    import torch

    flags = ""
    if Path("/proc/cpuinfo").is_file():
        line = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
        flags = " ".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in line.split())
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "cpu_flags": flags, "torch": torch.__version__, "python": platform.python_version(),
               "threads": torch.get_num_threads(), "load_average_before": os.getloadavg()}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            for precision, backend in CONFIGS:
                run = one_run(precision, backend, args.steps, args.model, Path(tmp), k)
                print(json.dumps(run), flush=True)
                runs.append(run)
    summary = []
    for precision, backend in CONFIGS:
        mine = [r for r in runs if r["precision"] == precision and r["backend"] == backend]
        summary.append({"precision": precision, "backend": backend,
                        "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in mine),
                        "val_bpc": [r["val_bpc"] for r in mine]})
    base = summary[0]["tokens_per_s_median"]
    print(f"\n{'precision':10} {'backend':8} {'chars/s':>10} {'vs float32 auto':>16} {'final val bpc':>14}")
    for s in summary:
        print(f"{s['precision']:10} {s['backend']:8} {s['tokens_per_s_median']:10,.0f} "
              f"{s['tokens_per_s_median'] / base:16.2f} {statistics.median(s['val_bpc']):14.4f}")
    machine["load_average_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps({"machine": machine, "steps": args.steps, "model": args.model, "runs": runs,
                                          "summary": summary}, indent=1) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
