"""benchmarks/workbench.py still runs against the engine it measures.

The workbench calls the engine's kernels directly (fused_lstm.forward_step with its full
argument list), so a change of their signature breaks it without breaking anything else;
it had, unnoticed, until this test. Its own checks do the rest: every gate-pass version
is compared with the float64 NumPy reference (max error < 1e-5) before it is timed.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_workbench_runs_and_its_kernels_match_the_reference():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "workbench.py"), "--B", "3", "--H", "16",
                           "--T", "2", "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for row in ("4 numba own exp, rows (shipped, training: gates kept)", "4 the same, inference (no gate stores)",
                "numba, W packed once, AVX2 6x16 kernel (shipped)", "| numba |"):
        assert row in done.stdout, f"workbench output lacks {row!r}:\n{done.stdout}"
