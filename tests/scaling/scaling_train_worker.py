"""`gatelab train` under torchrun, killed with SIGKILL after a given step (for the
kill-and-resume test in test_scaling_train.py).

    python -m torch.distributed.run --standalone --nproc-per-node 2 scaling_train_worker.py \\
        KILL_AFTER_STEP TRAIN_ARGS...

Rank 0 kills itself right after completing step KILL_AFTER_STEP (torchrun then stops the
other processes), as a machine failure would: nothing after that step is written.
"""

import os
import signal
import sys


def main(kill_after: int, train_args: list[str]) -> int:
    from gatelab import cli
    from gatelab.lm import trainer

    real_train = trainer.train

    def train_then_die(*args, **kwargs):
        def on_step(step):
            if step == kill_after and os.environ.get("RANK") == "0":
                os.kill(os.getpid(), signal.SIGKILL)

        return real_train(*args, **kwargs, on_step=on_step)

    trainer.train = train_then_die
    return cli.main(["train", *train_args])


if __name__ == "__main__":
    raise SystemExit(main(int(sys.argv[1]), sys.argv[2:]))
