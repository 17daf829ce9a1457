"""A run folder on disk: atomic writes, the exact-resume checkpoint, loading a trained model.

    RUN/config.json             RunConfig (hyper-parameters, vocabulary, corpus fingerprint)
    RUN/model.safetensors       the model's state_dict (what `sample` and `inspect` load)
    RUN/checkpoint.safetensors  everything `--resume` needs, in ONE file so that it is
                                replaced atomically as a whole: "model.*" the state_dict,
                                "optim.*" the optimizer's tensors, "carry.*" the carried
                                recurrent state (truncated BPTT); metadata: the step, the
                                optimizer's non-tensor state, the trainer's counters.
    RUN/metrics.jsonl           one JSON object per record (step, losses, bpc, tokens/s, time)
    RUN/curve.png               the training curve

Every file is written to a temporary name in the same folder, flushed to disk and renamed
over the old one (os.replace), so a process killed at any moment leaves either the old or
the new file, never a torn one. Batch order and dropout masks are functions of (seed, step)
(see batches.py), so the step is all the random state a resume needs. Never pickle.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from gatelab import __version__
from gatelab.errors import UsageError
from gatelab.lm.config import RunConfig
from gatelab.lm.model import CharLM

CONFIG = "config.json"
MODEL = "model.safetensors"
CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
CURVE = "curve.png"
CHECKPOINT_FORMAT = "gatelab-checkpoint-1"


def atomic_write(path, data: bytes | str) -> None:
    """Write a whole file so that readers see the old or the new content, nothing between.

    Arguments:
        path: the file to (re)place.
        data: its new content (str is written as UTF-8).
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the string metadata of a safetensors file; UsageError when corrupt."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: missing") from None
    try:
        tensors = st_load(raw)
        (n,) = struct.unpack("<Q", raw[:8])
        meta = json.loads(raw[8:8 + n]).get("__metadata__") or {}
    except (SafetensorError, ValueError, struct.error) as err:
        raise UsageError(f"{path}: corrupt safetensors file ({str(err).splitlines()[0]})") from None
    return tensors, meta


def _check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """UsageError unless `state` has exactly the model's names, shapes and dtypes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UsageError(f"{where}: does not match the run's config (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    for name, ref in expected.items():
        got = state[name]
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise UsageError(f"{where}: does not match the run's config ({name} is "
                             f"{tuple(got.shape)} {got.dtype}, the model needs "
                             f"{tuple(ref.shape)} {ref.dtype})")


# -- the run's files --------------------------------------------------------------------


def write_config(run_dir, run: RunConfig) -> None:
    """config.json, with this gatelab's version."""
    run.gatelab_version = __version__
    atomic_write(Path(run_dir) / CONFIG, run.to_json())


def read_config(run_dir) -> RunConfig:
    """The RunConfig of a run folder; UsageError when there is none or it is not ours."""
    path = Path(run_dir) / CONFIG
    if not Path(run_dir).is_dir():
        raise UsageError(f"{run_dir}: no such run folder")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{run_dir}: not a run folder (no {CONFIG})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a gatelab run config (not UTF-8)") from None
    return RunConfig.from_json(text, where=str(path))


def write_metrics(run_dir, records: list[dict]) -> None:
    """metrics.jsonl, rewritten whole (a few hundred lines) so that it stays atomic."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(Path(run_dir) / METRICS, text)


def read_metrics(run_dir) -> list[dict]:
    """The records of metrics.jsonl ([] when absent); UsageError when a line is not JSON."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    records = []
    for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            raise UsageError(f"{path}:{k}: not JSON (corrupt metrics)") from None
    return records


# -- the exact-resume checkpoint ---------------------------------------------------------


def _optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizer's state_dict as tensors (for safetensors) and the rest (for JSON)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """The inverse of _optimizer_split: a state_dict for optimizer.load_state_dict."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}  # JSON made the betas tuple a list


def save_checkpoint(run_dir, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    step: int, carry=None, counters: dict | None = None) -> None:
    """Write checkpoint.safetensors, then model.safetensors (each atomically).

    Arguments:
        run_dir: the run folder.
        model: the model (its state_dict).
        optimizer: the optimizer (its state_dict, tensors and the rest).
        step: optimizer steps completed.
        carry: the carried recurrent state (a tensor or tuple of tensors) or None.
        counters: JSON-able trainer counters (wall time so far, ...).
    """
    run_dir = Path(run_dir)
    model_sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors = {f"model.{k}": v for k, v in model_sd.items()}
    opt_tensors, opt_meta = _optimizer_split(optimizer)
    tensors.update(opt_tensors)
    if carry is not None:
        for k, s in enumerate(carry if isinstance(carry, tuple) else (carry,)):
            tensors[f"carry.{k}"] = s.detach().contiguous()
    meta = {"format": CHECKPOINT_FORMAT, "step": str(int(step)),
            "carry": "none" if carry is None else ("tuple" if isinstance(carry, tuple) else "tensor"),
            "optimizer": json.dumps(opt_meta), "counters": json.dumps(counters or {})}
    atomic_write(run_dir / CHECKPOINT, st_save(tensors, metadata=meta))
    atomic_write(run_dir / MODEL, st_save(model_sd, metadata={"step": str(int(step))}))


def load_checkpoint(run_dir, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """Restore model and optimizer from checkpoint.safetensors.

    Returns (step, carry or None, counters). UsageError when the file is corrupt or does
    not match the model (another configuration).
    """
    path = Path(run_dir) / CHECKPOINT
    tensors, meta = _read_safetensors(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"{path}: not a gatelab checkpoint")
    try:
        step = int(meta["step"])
        opt_meta = json.loads(meta["optimizer"])
        counters = json.loads(meta["counters"])
    except (KeyError, ValueError) as err:
        raise UsageError(f"{path}: corrupt checkpoint metadata ({err})") from None
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    _check_state_dict(model, model_sd, path)
    opt_tensors = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    try:
        optimizer.load_state_dict(_optimizer_join(opt_tensors, opt_meta))
    except (ValueError, KeyError, RuntimeError) as err:
        raise UsageError(f"{path}: optimizer state does not match the model ({err})") from None
    model.load_state_dict(model_sd)
    carry_parts, k = [], 0
    while f"carry.{k}" in tensors:
        carry_parts.append(tensors[f"carry.{k}"])
        k += 1
    kind = meta.get("carry", "none")
    carry = None if kind == "none" else (tuple(carry_parts) if kind == "tuple" else carry_parts[0])
    return step, carry, counters


# -- a trained model, for sample and inspect ---------------------------------------------


def load_run(run_dir, *, backend: str = "auto") -> tuple[RunConfig, CharLM]:
    """The config and the trained model (in eval mode) of a run folder.

    UsageError when the folder, its config or its model file is missing, corrupt or the
    two do not match.
    """
    from gatelab.lm.precision import param_dtype

    run = read_config(run_dir)
    model = CharLM(run.model, backend=backend).to(param_dtype(run.train.precision))  # float64 runs stay float64
    path = Path(run_dir) / MODEL
    if not path.exists():
        raise UsageError(f"{run_dir}: no trained model yet ({MODEL} missing)")
    state, _ = _read_safetensors(path)
    _check_state_dict(model, state, path)
    model.load_state_dict(state)
    model.eval()
    return run, model
