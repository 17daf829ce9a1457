"""The prepared GPU check of issue 8: run it on a machine with a CUDA GPU (≤ 10 minutes).

    .venv/bin/python benchmarks/scaling_gpu_check.py [--out benchmarks/scaling_gpu.json]

1. Runs the CUDA tests (`pytest -m cuda`), which skip on a machine without a GPU.
2. Times training (forward + backward) and inference of gatelab.nn's LSTM and GRU with
   backend="auto" (which should pick the "cudnn" engine: the log line says which) and
   backend="eager" against torch.nn on the GPU: median of 7 runs after 3 warm-up runs,
   torch.cuda.synchronize() around each, float32, TF32 off (so the numbers compare
   the same arithmetic).
3. Trains the character model for 200 steps on the GPU (float32 and bf16) and records
   characters/s and the final validation bpc.
Everything is printed and written as JSON with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = [(128, 64, 256, 256), (256, 32, 512, 512), (100, 1, 128, 256)]  # (T, B, I, H)


def _time(fn, repeats: int = 7, warmup: int = 3) -> float:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_modules() -> list[dict]:
    import torch

    from gatelab import engines
    from gatelab import nn as gnn

    rows = []
    dev = torch.device("cuda")
    for mode, ours, theirs in (("LSTM", gnn.LSTM, torch.nn.LSTM), ("GRU", gnn.GRU, torch.nn.GRU)):
        for T, B, I, H in SHAPES:
            x = torch.randn(T, B, I, device=dev, requires_grad=True)
            ref = theirs(I, H, device=dev)
            row = {"mode": mode, "T": T, "B": B, "I": I, "H": H,
                   "auto_engine": engines.select("auto", engines.CellSpec(mode, I, H), x, False).NAME}
            for name, module in (("torch", ref),
                                 ("gatelab_auto", ours(I, H, device=dev, backend="auto")),
                                 ("gatelab_eager", ours(I, H, device=dev, backend="eager"))):
                if name != "torch":
                    module.load_state_dict(ref.state_dict())

                def train_step(m=module):
                    out, _ = m(x)
                    out.sum().backward()

                def infer(m=module):
                    with torch.inference_mode():
                        m(x)

                row[f"{name}_train_ms"] = 1e3 * _time(train_step)
                row[f"{name}_infer_ms"] = 1e3 * _time(infer)
            for kind in ("train", "infer"):
                row[f"speedup_auto_{kind}"] = row[f"torch_{kind}_ms"] / row[f"gatelab_auto_{kind}_ms"]
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def train_runs() -> list[dict]:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for prec in ("float32", "bf16"):
            out = Path(tmp) / prec
            cmd = [sys.executable, "-m", "gatelab", "train", "--device", "cuda", "--precision", prec,
                   "--steps", "200", "--out", str(out), "--quiet", "--eval-every", "1000"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            final = {}
            if (out / "metrics.jsonl").is_file():
                recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
                final = next((r for r in reversed(recs) if r.get("final")), {})
                speeds = [r["tokens_per_s"] for r in recs if "tokens_per_s" in r]
                final["tokens_per_s_last"] = speeds[-1] if speeds else None
            run = {"precision": prec, "returncode": proc.returncode, "wall_s": wall,
                   "val_bpc": final.get("val_bpc"), "tokens_per_s": final.get("tokens_per_s_last"),
                   "stderr_tail": proc.stderr[-1500:]}
            print(json.dumps(run), flush=True)
            runs.append(run)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/scaling_gpu.json")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here; nothing to check", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    machine = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
               "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
               "python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
    print(json.dumps(machine), flush=True)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"],
                           capture_output=True, text=True)
    print(tests.stdout[-3000:], flush=True)
    result = {"machine": machine, "cuda_tests": {"returncode": tests.returncode, "tail": tests.stdout[-3000:]},
              "modules": time_modules(), "train": train_runs()}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {args.out}")
    return 0 if tests.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
