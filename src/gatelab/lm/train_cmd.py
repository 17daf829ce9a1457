"""`gatelab train`: train a character-level language model on text.

    gatelab train                          # the Python standard library, default model
    gatelab train --data book.txt --out runs/book --steps 3000 --cell gru
    gatelab train --out runs/book --resume [--steps 5000]
    gatelab train --nproc 2 ...            # data-parallel on 2 processes (torchrun, gloo/nccl)
    torchrun --nproc-per-node 2 -m gatelab train ...   # the same, started by torchrun itself

A new run needs a new (or empty) --out folder: an existing run is never overwritten; pass
--resume to continue it (from its config.json; only --steps may change, to extend it).
A run may be resumed with another number of processes (the global --batch-size stays).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from gatelab.engines import BACKENDS
from gatelab.errors import UsageError
from gatelab.family_cli import add_family_arguments, check_options, family_argv, family_options
from gatelab.lm.config import CELLS, ModelConfig, RunConfig, TrainConfig
from gatelab.lm.precision import PRECISIONS

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
    "--precision": ("train", "precision", str, "arithmetic: " + " | ".join(PRECISIONS)
                    + " (bf16: autocast, float32 master weights)"),
}
ON_DISK_BYTES = 256 << 20  # --data larger than this is encoded to RUN/corpus and read from disk
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
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="gatelab.nn engine (default: auto: cuDNN on a GPU, the fused CPU engine "
                             "on the CPU, the eager engine for what they cannot run)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to compute (default: auto, a CUDA GPU when there is one)")
    parser.add_argument("--nproc", type=int, default=None, metavar="N",
                        help="train on N processes of this machine (relaunches itself under torchrun)")
    parser.add_argument("--corpus-on-disk", action="store_true",
                        help="encode the corpus into RUN/corpus and read it from disk, for corpora "
                             f"larger than memory (automatic above {ON_DISK_BYTES >> 20} MiB)")
    add_family_arguments(parser)  # --layer-norm --zoneout P ...: ModelConfig.cell_options


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
    model.cell_options = family_options(args)
    model.check()
    check_options(model.cell, model.cell_options)
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
    given = family_options(args)
    if given and given != {k: run.model.cell_options.get(k) for k in given}:
        raise UsageError(f"--resume continues the run as configured; its LSTM-family options are "
                         f"{run.model.cell_options or 'none'} (start a new --out instead)")
    run.train.check()
    return run


def load_corpus_for(run: RunConfig | None, data, *, disk_cache=None, ctx=None):
    """The corpus of --data (or of the run being resumed), checked against its fingerprint.

    Arguments:
        run: the run being resumed, or None for a new run.
        data: --data (None: the run's own data, or the default corpus).
        disk_cache: None to read the corpus into memory; else the folder to encode it into
            and read it from (gatelab.data.memmap_corpus); rank 0 encodes, the others wait.
        ctx: the distributed Context (None: one process).
    """
    from gatelab.data.text import load_corpus

    if run is not None and data is None:
        data = run.corpus.get("data")
    if disk_cache is None:
        corpus = load_corpus(data)
    else:
        from gatelab.data.memmap_corpus import load_disk_corpus
        from gatelab.lm.distributed import Context, on_main

        on_main(ctx or Context(), load_disk_corpus, data, disk_cache)
        corpus = load_disk_corpus(data, disk_cache)  # rank 0's encoding, reused
    if run is not None and corpus.fingerprint["sha256"] != run.corpus.get("sha256"):
        raise UsageError(f"the data ({corpus.source}) differs from the corpus the run was trained on "
                         f"(fingerprint {run.corpus.get('sha256', '?')[:12]}…); resume with the same --data")
    return corpus


def check_fresh_out(out: Path) -> None:
    """UsageError when --out already holds anything (a new run never overwrites)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} already exists and is not empty; pass --resume to continue that run, "
                         f"or choose another --out")


def to_argv(args) -> list[str]:
    """The command-line arguments that give `args` again (without --nproc): what each
    process started by `--nproc N` is given."""
    argv = []
    for flag in OPTIONS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    argv += family_argv(family_options(args))
    for flag in ("--data", "--out"):
        if getattr(args, flag[2:]) is not None:
            argv += [flag, str(getattr(args, flag[2:]))]
    for flag in ("--resume", "--tbptt", "--quiet", "--corpus-on-disk"):
        if getattr(args, flag[2:].replace("-", "_")):
            argv.append(flag)
    return argv + ["--backend", args.backend, "--device", args.device]


def _device(choice: str, processes: int | None = None) -> str:
    """The device of --device `choice` for one of `processes` processes on this machine
    (default: torchrun's LOCAL_WORLD_SIZE, else 1), each of which takes a GPU of its own
    (number LOCAL_RANK, nccl): "auto" takes the GPUs only when there is one for each."""
    import torch

    if processes is None:
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if choice == "auto":
        return "cuda" if gpus >= max(processes, 1) else "cpu"
    if choice == "cuda" and gpus == 0:
        raise UsageError("--device cuda: no CUDA GPU is available to this process")
    if choice == "cuda" and processes > gpus:
        raise UsageError(f"--device cuda: {processes} processes on this machine but {gpus} GPU(s); "
                         f"each process needs a GPU of its own: use --nproc {gpus} or --device cpu")
    return choice


def _on_disk(args, out: Path, data) -> Path | None:
    """RUN/corpus when the corpus is read from disk (asked, or larger than ON_DISK_BYTES)."""
    from gatelab.data.text import corpus_files

    if not args.corpus_on_disk:
        if data is None or sum(p.stat().st_size for p in corpus_files(data)) <= ON_DISK_BYTES:
            return None
    return out / "corpus"


def run(args) -> int:
    if args.nproc is not None:
        from gatelab.lm import distributed

        if args.nproc < 1:
            raise UsageError(f"--nproc must be ≥ 1, got {args.nproc}")
        if args.nproc > 1:
            _device(args.device, args.nproc)  # a UsageError now, not one in each process
            try:
                return distributed.launch(args.nproc, to_argv(args))
            except ValueError as err:
                raise UsageError(str(err)) from None
    from gatelab.lm import distributed

    ctx = distributed.setup(_device(args.device))
    try:
        code = _run(args, ctx)
    finally:
        distributed.teardown(ctx)
    if ctx.distributed:  # a torchrun worker whose work is done and saved
        distributed.exit_process(code)
    return code


def _run(args, ctx) -> int:
    from gatelab.lm import checkpoint as ckpt
    from gatelab.lm.distributed import barrier, on_main
    from gatelab.lm.trainer import train

    out = Path(args.out or DEFAULT_OUT)
    if args.resume:
        config = resumed_run_config(args, ckpt.read_config(out))
        data = args.data if args.data is not None else config.corpus.get("data")
        corpus = load_corpus_for(config, args.data, disk_cache=_on_disk(args, out, data), ctx=ctx)
        _check_fits(corpus, config, ctx, args.backend)
    else:
        check_fresh_out(out)
        barrier(ctx)  # every process has checked --out before rank 0 writes into it
        created = not out.exists()
        try:
            corpus = load_corpus_for(None, args.data, disk_cache=_on_disk(args, out, args.data), ctx=ctx)
            config = new_run_config(args, corpus)
            _check_fits(corpus, config, ctx, args.backend)
        except UsageError:
            if created and ctx.is_main and out.exists():  # only the corpus cache was written: remove it
                shutil.rmtree(out)
            raise
    on_main(ctx, out.mkdir, parents=True, exist_ok=True)
    result = train(config, corpus, out, resume=args.resume, ctx=ctx, backend=args.backend,
                   progress=not args.quiet)
    if ctx.is_main:
        print(f"run folder: {out}  (config.json, model.safetensors, checkpoint.safetensors, "
              f"metrics.jsonl, curve.png); validation bpc {result.val_bpc:.3f}")
    return 0


def _check_fits(corpus, config: RunConfig, ctx, backend: str) -> None:
    """UsageError, before anything is written, when the run cannot train on this corpus
    with this many processes, or with this backend at its precision."""
    from gatelab.lm.precision import engine_backend
    from gatelab.lm.trainer import split

    try:
        engine_backend(backend, config.train.precision, ctx.device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if config.train.batch_size % ctx.world_size:
        raise UsageError(f"--batch-size {config.train.batch_size} is not a multiple of the "
                         f"{ctx.world_size} processes")
    split(len(corpus), config.train)
