"""The training loop of the character model.

One step: the window starts of (seed, step) -> one fancy index into the flat token array
-> forward, cross-entropy, backward -> clip -> AdamW. No per-character Python work, so
the loop's own cost is small next to the model's forward + backward; the trainer measures
both and reports the overhead.

Exact resume: the batch order and the dropout masks are functions of (seed, step), the
learning rate a function of the step, and the checkpoint holds the model, the optimizer
and the carried state; so a run resumed from its checkpoint at step k computes exactly
what the uninterrupted run computed from step k on.

Processes: `ctx` (gatelab.lm.distributed.Context) says which share of each global batch
this process computes and whether it is the one that writes (rank 0); with one process
everything reduces to the plain loop. With several (torchrun), the model is wrapped in
DistributedDataParallel: each process computes the mean loss over its rows of the global
batch and DDP averages the gradients, so every step computes the one-process gradient of
the global batch (to rounding); the carried state is gathered to the global batch before
a checkpoint, so a run resumes with any number of processes that divides the batch.
(With dropout > 0 the masks are drawn per process, so a resume with a different number
of processes is exact only with --dropout 0.)

Precision (`run.train.precision`, see gatelab.lm.precision): float32, float64, or bf16
(the forward under autocast; parameters, gradients and AdamW's state stay float32).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gatelab.errors import UsageError
from gatelab.lm import checkpoint as ckpt
from gatelab.lm.batches import DROPOUT, INIT, BatchSampler, derived_seed, make_batch, seeded_rng
from gatelab.lm.config import RunConfig, TrainConfig
from gatelab.lm import precision as prec
from gatelab.lm.distributed import Context, all_reduce_sums, gather_rows, on_main
from gatelab.lm.evaluate import validation_bpc
from gatelab.lm.model import CharLM, count_parameters, detach_state


@dataclass
class TrainResult:
    """What a finished run reports."""

    step: int  # optimizer steps completed
    val_bpc: float  # bits per character over the whole validation part
    unigram_bits: float  # the training text's character entropy, for context
    wall_s: float  # training wall time over all sessions of the run
    tokens_per_s: float  # training characters per second in this session (0 if none ran)
    loop_overhead: float  # (step time - model forward/backward time) / model time, this session


def split(n_chars: int, cfg: TrainConfig) -> int:
    """The number of training characters; the rest, contiguous at the end, is validation.

    UsageError when either part is shorter than one window of seq_len + 1 characters.
    """
    n_val = int(round(n_chars * cfg.val_fraction))
    n_train = n_chars - n_val
    need = cfg.seq_len + 1
    if n_train < need or n_val < 2:
        raise UsageError(f"the corpus has {n_chars} characters: too short for one training window of "
                         f"--seq-len {cfg.seq_len} + 1 and a {cfg.val_fraction:.0%} validation part "
                         f"(needs at least {math.ceil(max(need / (1 - cfg.val_fraction), 2 / cfg.val_fraction))})")
    return n_train


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The learning rate of a step: linear warm-up, then cosine decay to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_model(run: RunConfig, backend: str = "auto") -> CharLM:
    """The model with its initial parameters, a function of the run's seed only."""
    with seeded_rng(derived_seed(run.train.seed, INIT)):
        return CharLM(run.model, backend=backend)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over every parameter (fused kernel where torch has one)."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99),
                             weight_decay=cfg.weight_decay, fused=True)


class _Clock:
    """Seconds spent in the model's forward + backward, and in whole training steps."""

    def __init__(self):
        self.model_s = 0.0
        self.step_s = 0.0
        self.steps = 0

    @property
    def overhead(self) -> float:
        return self.step_s / self.model_s - 1.0 if self.model_s > 0 else float("nan")


def train(run: RunConfig, corpus, run_dir, *, resume: bool = False, ctx: Context | None = None,
          backend: str = "auto", progress: bool = True, echo=print, on_step=None) -> TrainResult:
    """Train (or continue training) the run in `run_dir` to run.train.steps steps.

    Arguments:
        run: the configuration (for a resumed run, the one in its config.json, steps possibly raised).
        corpus: a TextCorpus or DiskCorpus whose fingerprint the config records.
        run_dir: the run folder; created by the caller, empty unless resuming.
        resume: continue from checkpoint.safetensors.
        ctx: this process's place in a distributed job (None: one process).
        backend: gatelab.nn's engine.
        progress: show a progress bar (on rank 0).
        echo: where the few summary lines go (rank 0 only).
        on_step: called as on_step(step) after each completed step (tests use it to kill a run).
    """
    ctx = ctx or Context()
    cfg = run.train
    run_dir = Path(run_dir)
    say = echo if ctx.is_main else (lambda *a, **k: None)
    n_train = split(len(corpus), cfg)
    n = len(corpus)
    sampler = BatchSampler(n_train, cfg.seq_len, cfg.batch_size, cfg.seed, tbptt=cfg.tbptt,
                           rank=ctx.rank, world_size=ctx.world_size)
    try:
        backend = prec.engine_backend(backend, cfg.precision, ctx.device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    master = prec.param_dtype(cfg.precision)
    model = build_model(run, backend).to(device=ctx.device, dtype=master)
    model.train()
    net = _data_parallel(model, ctx)  # what the training forward calls (DDP or the model)
    optimizer = make_optimizer(model, cfg)
    V = run.model.vocab_size
    unigram = _unigram_bits(corpus, min(n_train, 1 << 24), V)

    start, carry, counters, records = 0, None, {"wall_s": 0.0}, []
    if resume and not (run_dir / ckpt.CHECKPOINT).exists():
        say(f"{run_dir}: no checkpoint yet (stopped before its first); starting from step 0")
    elif resume:
        start, carry, counters = ckpt.load_checkpoint(run_dir, model, optimizer)
        carry = _rows_of(carry, sampler.rows, ctx.device)  # the global batch's state -> this process's rows
        records = [r for r in ckpt.read_metrics(run_dir) if r["step"] <= start and not r.get("final")]
        if start > cfg.steps:
            raise UsageError(f"the run is at step {start}, past --steps {cfg.steps}")
    if not resume or ckpt.read_config(run_dir).to_json() != run.to_json():
        on_main(ctx, ckpt.write_config, run_dir, run)  # a resume may raise --steps: record it

    say(f"corpus: {run.corpus.get('source')}: {n:,} characters ({n_train:,} train, {n - n_train:,} "
        f"validation), vocabulary {V}, unigram entropy {unigram:.3f} bits/char")
    say(f"model: {run.model.cell.upper()} {run.model.num_layers}x{run.model.hidden_size}, "
        f"{count_parameters(model):,} parameters; {cfg.steps} steps of {cfg.batch_size}x{cfg.seq_len} "
        f"characters" + (f", resuming at step {start}" if resume else ""))

    clock = _Clock()
    wall0, wall_before = time.perf_counter(), float(counters.get("wall_s", 0.0))
    eval_stop = n_train + (min(cfg.eval_chars, n - n_train) if cfg.eval_chars else n - n_train)
    window_bits, window_steps, window_t0 = 0.0, 0, time.perf_counter()
    val_bpc = records[-1].get("val_bpc") if records else None
    bar = tqdm(total=cfg.steps, initial=start, unit="step", disable=not (progress and ctx.is_main),
               dynamic_ncols=True, mininterval=1.0)

    def save(step):
        counters["wall_s"] = wall_before + time.perf_counter() - wall0
        full_carry = _gathered(carry, ctx)  # every process takes part; rank 0 writes
        on_main(ctx, ckpt.save_checkpoint, run_dir, model, optimizer, step, full_carry, dict(counters))
        on_main(ctx, ckpt.write_metrics, run_dir, records)

    tokens_per_step = cfg.batch_size * cfg.seq_len
    try:
        for step in range(start, cfg.steps):
            t_step = time.perf_counter()
            starts = sampler.starts(step)
            x, y = make_batch(corpus, starts, cfg.seq_len)  # (T, B_r) each
            x, y = x.to(ctx.device), y.to(ctx.device)
            if sampler.resets_state(step):
                carry = None
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            with seeded_rng(derived_seed(cfg.seed, DROPOUT, step, ctx.rank), ctx.device):
                t_model = time.perf_counter()
                with prec.autocast(cfg.precision, ctx.device):
                    logits, state = net(x, carry)  # (T, B_r, V)
                    loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))  # float32 under autocast
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                clock.model_s += time.perf_counter() - t_model
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            carry = _as_dtype(detach_state(state), master) if cfg.tbptt else None
            done = step + 1
            window_bits += float(loss.detach()) / math.log(2.0)
            window_steps += 1
            clock.step_s += time.perf_counter() - t_step
            clock.steps += 1

            if done % cfg.log_every == 0 or done % cfg.eval_every == 0 or done == cfg.steps:
                (window_bits,) = all_reduce_sums(ctx, window_bits)  # the global batch's loss:
                window_bits /= ctx.world_size  # the mean of the processes' equal shares
                now = time.perf_counter()
                tok_s = window_steps * tokens_per_step / max(now - window_t0, 1e-9)
                record = {"step": done, "train_bpc": window_bits / window_steps, "lr": lr_at(step, cfg),
                          "tokens_per_s": tok_s, "wall_s": wall_before + now - wall0}
                if done % cfg.eval_every == 0 and done != cfg.steps:
                    with prec.autocast(cfg.precision, ctx.device):
                        val_bpc = validation_bpc(model, corpus, n_train, eval_stop, seq_len=cfg.seq_len, ctx=ctx)
                    record["val_bpc"] = val_bpc
                records.append(record)
                bar.set_postfix_str(f"bpc {record['train_bpc']:.3f}"
                                    + (f" val {val_bpc:.3f}" if val_bpc is not None else "")
                                    + f" {tok_s:,.0f} tok/s", refresh=False)
                window_bits, window_steps, window_t0 = 0.0, 0, time.perf_counter()
            if done % cfg.checkpoint_every == 0 and done != cfg.steps:
                save(done)
            bar.update(1)
            if on_step is not None:
                on_step(done)
    finally:
        bar.close()

    train_s = clock.step_s
    with prec.autocast(cfg.precision, ctx.device):
        val_bpc = validation_bpc(model, corpus, n_train, n, seq_len=cfg.seq_len, ctx=ctx)
    records.append({"step": cfg.steps, "val_bpc": val_bpc, "final": True, "val_chars": n - n_train,
                    "unigram_bits": unigram, "loop_overhead": clock.overhead if clock.steps else None,
                    "wall_s": wall_before + time.perf_counter() - wall0})
    save(cfg.steps)
    tok_s = clock.steps * tokens_per_step / train_s if train_s > 0 else 0.0
    wall = wall_before + time.perf_counter() - wall0
    if clock.steps:
        say(f"trained {clock.steps} steps in {train_s:.0f} s: {tok_s:,.0f} characters/s; the loop adds "
            f"{100 * clock.overhead:.1f}% to the model's forward+backward")
    say(f"validation: {val_bpc:.3f} bits per character (unigram entropy {unigram:.3f}) at step {cfg.steps}")
    if ctx.is_main:
        _plot(run_dir, records, unigram)
    return TrainResult(step=cfg.steps, val_bpc=val_bpc, unigram_bits=unigram, wall_s=wall,
                       tokens_per_s=tok_s, loop_overhead=clock.overhead)


def _data_parallel(model: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """The model wrapped in DistributedDataParallel when there are several processes."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _map_state(state, fn):
    """fn applied to each tensor of a recurrent state (a tensor, a tuple, or None)."""
    if state is None:
        return None
    return tuple(fn(s) for s in state) if isinstance(state, tuple) else fn(state)


def _as_dtype(state, dtype):
    """The carried state in the master dtype (under autocast parts of it come out bf16)."""
    return _map_state(state, lambda s: s.to(dtype))


def _gathered(carry, ctx: Context):
    """The carried state of the global batch (L*D, B, H), from every process's rows."""
    return _map_state(carry, lambda s: gather_rows(ctx, s, dim=1))


def _rows_of(carry, rows: slice, device):
    """This process's rows (dim 1) of a checkpoint's global-batch carried state."""
    return _map_state(carry, lambda s: s[:, rows].contiguous().to(device))


def _unigram_bits(corpus, stop: int, vocab_size: int) -> float:
    """The character entropy (bits) of corpus[0:stop], as data.text.unigram_entropy, but
    counted 1 Mi characters at a time so that memory stays bounded on a large corpus."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for lo in range(0, stop, 1 << 20):
        counts += np.bincount(corpus.read(lo, min(stop, lo + (1 << 20))), minlength=vocab_size)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _plot(run_dir: Path, records: list[dict], unigram: float) -> None:
    """curve.png beside the metrics (matplotlib loads only here)."""
    from gatelab.viz.curve import plot_curve

    plot_curve(records, run_dir / ckpt.CURVE, unigram_bits=unigram)
