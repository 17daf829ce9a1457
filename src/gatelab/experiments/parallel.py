"""Run independent training jobs on several cores: one process per core, one torch thread each.

Small recurrent networks (hidden 32-128) gain little from intra-op threads and lose a lot
when threads oversubscribe a busy machine; training one model per core is the efficient
use of a laptop's cores. Results come back in the order of the jobs, so a seeded run is
reproducible whatever the number of workers.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence

import torch
from tqdm import tqdm


_IN_WORKER = False  # True in a worker process: its own progress bars stay silent


def _init_worker() -> None:
    global _IN_WORKER
    _IN_WORKER = True
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # see gatelab.experiments.cli


def progress(iterable, desc: str, **kwargs):
    """A tqdm bar over `iterable` (shown on a terminal, silent in workers and in logs)."""
    return tqdm(iterable, desc=desc, leave=False, disable=True if _IN_WORKER else None, **kwargs)


def map_jobs(fn: Callable, jobs: Sequence, workers: int = 1, desc: str = "jobs") -> list:
    """[fn(*job) for job in jobs], in `workers` processes when workers > 1.

    `fn` must be a module-level function and jobs picklable tuples. With one worker the jobs
    run in this process (their own progress bars show); with more, a bar counts finished jobs.
    """
    if workers <= 1 or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker) as pool:
        futures = [pool.submit(fn, *job) for job in jobs]
        with tqdm(total=len(futures), desc=desc, leave=False, disable=None) as bar:
            results = []
            for future in futures:
                results.append(future.result())
                bar.update(1)
    return results
