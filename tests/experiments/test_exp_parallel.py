"""Training in worker processes gives the same numbers, in the same order, as in-process."""

import torch

from gatelab.experiments.adding import _job
from gatelab.experiments.adding_train import AddingRecipe
from gatelab.experiments.parallel import map_jobs


def test_workers_reproduce_the_in_process_run():
    """Bit for bit, at the same thread count: workers run one torch thread, and so does
    `gatelab experiment` in process by default (--threads 1). (With more threads the fused
    engine splits the batch into row blocks, whose weight gradients are summed: equal to
    rounding, not bitwise.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _compare()
    finally:
        torch.set_num_threads(threads)


def _compare():
    recipe = AddingRecipe(hidden=4, batch=8, steps=6, eval_every=3, test_size=16, stop_mse=0.0)
    jobs = [(cell, 10, recipe, seed) for seed, cell in enumerate(("lstm", "rnn", "gru"))]
    here = map_jobs(_job, jobs, workers=1)
    there = map_jobs(_job, jobs, workers=2)
    assert [r["cell"] for r in there] == ["lstm", "rnn", "gru"]
    assert [r["test_mse"] for r in there] == [r["test_mse"] for r in here]
