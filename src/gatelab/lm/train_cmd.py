"""`gatelab train`: train a character-level language model on text.

    gatelab train                          # the Python standard library, default model
    gatelab train --data book.txt --out runs/book --steps 3000 --cell gru
    gatelab train --out runs/book --resume [--steps 5000]

A new run needs a new (or empty) --out folder: an existing run is never overwritten; pass
--resume to continue it (from its config.json; only --steps may change, to extend it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gatelab.errors import UsageError
from gatelab.lm.config import CELLS, ModelConfig, RunConfig, TrainConfig

DEFAULT_OUT = "runs/char"

# option -> (config section, field, type, help). Defaults come from the dataclasses.
OPTIONS = {
    "--cell": ("model", "cell", str, "recurrent cell: " + " | ".join(CELLS)),
    "--embed-size": ("model", "embed_size", int, "size of a character's embedding"),
    "--hidden-size": ("model", "hidden_size", int, "units per layer"),
    "--layers": ("model", "num_layers", int, "stacked recurrent layers"),
    "--dropout": ("model", "dropout", float, "dropout on the embedding, between layers, before the output"),
    "--steps": ("train", "steps", int, "optimizer steps (the length of training)"),
    "--seq-len": ("train", "seq_len", int, "characters per window (BPTT length)"),
    "--batch-size": ("train", "batch_size", int, "windows per step"),
    "--lr": ("train", "lr", float, "peak learning rate (AdamW, warm-up then cosine decay)"),
    "--warmup-steps": ("train", "warmup_steps", int, "steps of linear learning-rate warm-up"),
    "--min-lr-ratio": ("train", "min_lr_ratio", float, "final learning rate / peak learning rate"),
    "--weight-decay": ("train", "weight_decay", float, "AdamW weight decay"),
    "--grad-clip": ("train", "grad_clip", float, "clip the gradient norm (0: off)"),
    "--val-fraction": ("train", "val_fraction", float, "held-out fraction at the end of the corpus"),
    "--log-every": ("train", "log_every", int, "steps between metrics records"),
    "--eval-every": ("train", "eval_every", int, "steps between validation estimates"),
    "--eval-chars": ("train", "eval_chars", int, "validation characters per estimate (0: all)"),
    "--checkpoint-every": ("train", "checkpoint_every", int, "steps between checkpoints"),
    "--seed": ("train", "seed", int, "seed of initialisation, batch order and dropout"),
}
# Options that may differ when resuming (they do not change what step k computes...
# except the learning-rate schedule's length, which --steps sets on purpose).
RESUMABLE = {"steps", "log_every", "eval_every", "eval_chars", "checkpoint_every"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="PATH",
                        help="a UTF-8 text file or a folder of them (default: the Python standard "
                             "library's own source, Lib/*.py)")
    parser.add_argument("--out", metavar="RUN", default=None,
                        help=f"the run folder (default: {DEFAULT_OUT})")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    defaults = {"model": ModelConfig(), "train": TrainConfig()}
    for flag, (section, name, typ, help_text) in OPTIONS.items():
        parser.add_argument(flag, type=typ, default=None,
                            help=f"{help_text} (default: {getattr(defaults[section], name)})")
    parser.add_argument("--tbptt", action="store_true", default=None,
                        help="truncated BPTT: carry the state across consecutive windows")
    parser.add_argument("--backend", default="auto", choices=("auto", "fused", "eager"),
                        help="gatelab.nn engine (default: auto, the fused CPU engine when it can)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _given(args) -> dict[tuple[str, str], object]:
    """(section, field) -> value for every option given on the command line."""
    given = {(s, n): getattr(args, flag[2:].replace("-", "_"))
             for flag, (s, n, _, _) in OPTIONS.items()}
    given[("train", "tbptt")] = args.tbptt
    return {k: v for k, v in given.items() if v is not None}


def new_run_config(args, corpus) -> RunConfig:
    """The RunConfig of a new run from the options given (dataclass defaults for the rest)."""
    model, train = ModelConfig(vocab_size=len(corpus.vocab)), TrainConfig()
    for (section, name), value in _given(args).items():
        setattr(model if section == "model" else train, name, value)
    model.check()
    train.check()
    fingerprint = dict(corpus.fingerprint)
    fingerprint["data"] = None if args.data is None else str(Path(args.data).resolve())
    return RunConfig(model=model, train=train, vocab=list(corpus.vocab), corpus=fingerprint)


def resumed_run_config(args, run: RunConfig) -> RunConfig:
    """The run's own config, with the options allowed to change on resume applied."""
    for (section, name), value in _given(args).items():
        current = getattr(run.model if section == "model" else run.train, name)
        if value == current:
            continue
        if name not in RESUMABLE:
            raise UsageError(f"--resume continues the run as configured; --{name.replace('_', '-')} "
                             f"{value} differs from its {current} (start a new --out instead)")
        setattr(run.train, name, value)
    run.train.check()
    return run


def load_corpus_for(run: RunConfig | None, data):
    """The corpus of --data (or of the run being resumed), checked against its fingerprint."""
    from gatelab.data.text import load_corpus

    if run is not None and data is None:
        data = run.corpus.get("data")
    corpus = load_corpus(data)
    if run is not None and corpus.fingerprint["sha256"] != run.corpus.get("sha256"):
        raise UsageError(f"the data ({corpus.source}) differs from the corpus the run was trained on "
                         f"(fingerprint {run.corpus.get('sha256', '?')[:12]}…); resume with the same --data")
    return corpus


def check_fresh_out(out: Path) -> None:
    """UsageError when --out already holds anything (a new run never overwrites)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} already exists and is not empty; pass --resume to continue that run, "
                         f"or choose another --out")


def run(args) -> int:
    from gatelab.lm import checkpoint as ckpt
    from gatelab.lm.trainer import train

    out = Path(args.out or DEFAULT_OUT)
    if args.resume:
        config = resumed_run_config(args, ckpt.read_config(out))
        corpus = load_corpus_for(config, args.data)
    else:
        check_fresh_out(out)
        corpus = load_corpus_for(None, args.data)
        config = new_run_config(args, corpus)
    from gatelab.lm.trainer import split

    split(len(corpus), config.train)  # too short a corpus fails before anything is written
    out.mkdir(parents=True, exist_ok=True)
    result = train(config, corpus, out, resume=args.resume, backend=args.backend,
                   progress=not args.quiet)
    print(f"run folder: {out}  (config.json, model.safetensors, checkpoint.safetensors, "
          f"metrics.jsonl, curve.png); validation bpc {result.val_bpc:.3f}")
    return 0

