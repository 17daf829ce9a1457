"""`gatelab sample RUN --prime TEXT --length N --temperature T --seed S`: text to stdout.

Prints the prime followed by the sampled continuation; the same seed gives the same text.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run folder written by `gatelab train`")
    parser.add_argument("--prime", default=None,
                        help="text to continue (default: a newline); every character must be in "
                             "the model's vocabulary")
    parser.add_argument("--length", type=int, default=500, help="characters to draw (default: 500)")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="< 1 more conservative, > 1 more adventurous (default: 0.8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default: 0)")


def run(args) -> int:
    from gatelab.lm.checkpoint import load_run
    from gatelab.lm.sample import default_prime, generate

    cfg, model = load_run(args.run)
    prime = default_prime(cfg.vocab) if args.prime is None else args.prime
    text = generate(model, cfg.vocab, prime, args.length, temperature=args.temperature, seed=args.seed)
    sys.stdout.write((prime if args.prime is not None else "") + text + "\n")
    return 0
