"""`gatelab demo`: the main job. Train the character model on the Python standard library with
the default settings, print a sample, write the gate report, and say where everything is.

Run twice, it continues the run in --out (a finished run is reused: sample and report again).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gatelab.errors import UsageError

DEFAULT_OUT = "runs/demo"
SAMPLE_PRIME = "def "
SAMPLE_LENGTH = 600
REPORT_CHARS = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="RUN", default=DEFAULT_OUT,
                        help=f"the run folder (default: {DEFAULT_OUT}); an existing demo run is continued")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps (default: the trainer's default)")
    parser.add_argument("--backend", default="auto", choices=("auto", "fused", "eager"),
                        help="gatelab.nn engine (default: auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def report_text(corpus, n_train: int, n_chars: int = REPORT_CHARS) -> str:
    """A piece of the validation text (never trained on) that starts at a function definition."""
    start = n_train
    head = corpus.decode(corpus.read(start, min(len(corpus), start + 200_000)))
    k = head.find("\ndef ")
    k = head.find("\n    def ") if k < 0 else k
    piece = head[k + 1:] if k >= 0 else head
    piece = piece[:n_chars]
    cut = piece.rfind("\n")
    return piece[: cut + 1] if cut > 0 else piece


def run(args) -> int:
    from gatelab.data.text import load_corpus
    from gatelab.lm import checkpoint as ckpt
    from gatelab.lm.config import ModelConfig, RunConfig, TrainConfig
    from gatelab.lm.sample import generate
    from gatelab.lm.trainer import split, train
    from gatelab.viz.inspect_cmd import inspect_run

    out = Path(args.out)
    resume = (out / ckpt.CONFIG).exists()
    if resume:
        config = ckpt.read_config(out)
        if args.steps is not None:
            config.train.steps = args.steps
            config.train.check()
        if config.corpus.get("data") is not None:
            raise UsageError(f"{out} holds a run on other data ({config.corpus['data']}); "
                             f"choose another --out for the demo")
        corpus = load_corpus(None)
        if corpus.fingerprint["sha256"] != config.corpus.get("sha256"):
            raise UsageError(f"{out} was trained on another Python's standard library; "
                             f"choose another --out")
    else:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"{out} exists and is not a gatelab run; choose another --out")
        corpus = load_corpus(None)
        train_cfg = TrainConfig() if args.steps is None else TrainConfig(steps=args.steps)
        train_cfg.check()
        fingerprint = dict(corpus.fingerprint, data=None)
        config = RunConfig(model=ModelConfig(vocab_size=len(corpus.vocab)), train=train_cfg,
                           vocab=list(corpus.vocab), corpus=fingerprint)
        split(len(corpus), config.train)
        out.mkdir(parents=True, exist_ok=True)

    print(f"gatelab demo: a character-level {config.model.cell.upper()} learns Python from the "
          f"standard library ({'continuing' if resume else 'new run in'} {out})")
    result = train(config, corpus, out, resume=resume, backend=args.backend, progress=not args.quiet)

    run_cfg, model = ckpt.load_run(out, backend=args.backend)
    sample = SAMPLE_PRIME + generate(model, run_cfg.vocab, SAMPLE_PRIME, SAMPLE_LENGTH,
                                     temperature=0.8, seed=0)
    ckpt.atomic_write(out / "sample.txt", sample)
    print("\n--- sample (temperature 0.8, seed 0) " + "-" * 40)
    print(sample)
    print("-" * 78)

    n_train = split(len(corpus), config.train)
    html, png = inspect_run(out, report_text(corpus, n_train), out / "report.html")
    minutes = result.wall_s / 60
    print(f"\nvalidation bits per character: {result.val_bpc:.3f} (unigram entropy "
          f"{result.unigram_bits:.3f}); training time {minutes:.1f} min")
    print(f"run folder     {out}/  (config.json, model.safetensors, checkpoint.safetensors, metrics.jsonl)")
    print(f"sample         {out / 'sample.txt'}   (more: gatelab sample {out} --prime 'import ')")
    print(f"gate report    {html}   (open in a browser)")
    print(f"training curve {out / ckpt.CURVE}")
    return 0
