"""The character model's configuration: what `config.json` in a run folder holds.

    {"format": 1, "gatelab_version": ..., "model": ModelConfig, "train": TrainConfig,
     "vocab": [characters, id = position], "corpus": fingerprint (files, sha256, size)}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from gatelab.errors import UsageError
from gatelab.lm.precision import PRECISIONS

FORMAT = 1
CELLS = ("lstm", "gru", "rnn")


@dataclass
class ModelConfig:
    """embedding -> recurrent stack -> linear over the vocabulary."""

    vocab_size: int = 0  # V, set from the corpus
    cell: str = "lstm"  # lstm | gru | rnn (tanh)
    embed_size: int = 64  # E, size of a character's embedding
    hidden_size: int = 256  # H, units per layer
    num_layers: int = 1  # L, stacked layers
    dropout: float = 0.0  # on the embedding, between layers, and before the output layer
    # Keyword-only gatelab.nn options of the recurrent module (the LSTM family of issue 7:
    # layer_norm, zoneout, forget_bias, ...), passed through unchanged.
    cell_options: dict = field(default_factory=dict)

    def check(self) -> None:
        """UsageError for a value no model can be built from."""
        if self.cell not in CELLS:
            raise UsageError(f"--cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        for name in ("embed_size", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TrainConfig:
    """How long and on what the model trains. Batch order is a function of (seed, step)."""

    steps: int = 1500  # optimizer steps; the default length of training (≈ 5 min on 2 quiet cores)
    seq_len: int = 128  # T, characters per window (backpropagation through time length)
    batch_size: int = 32  # B, windows per step (global: shared out over processes)
    lr: float = 4e-3  # peak learning rate (AdamW); cosine decay to lr * min_lr_ratio
    min_lr_ratio: float = 0.1  # the learning rate at the last step, relative to lr
    warmup_steps: int = 50  # linear warm-up from 0
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: off)
    tbptt: bool = False  # carry the state across consecutive windows (truncated BPTT)
    val_fraction: float = 0.05  # the last part of the corpus, held out, contiguous
    log_every: int = 25  # steps between metrics records (training loss, tokens/s)
    eval_every: int = 250  # steps between validation estimates
    eval_chars: int = 32768  # validation characters per estimate during training (0: all)
    checkpoint_every: int = 250  # steps between checkpoints (and one at the end)
    seed: int = 0  # initialisation, batch order and dropout
    precision: str = "float32"  # float32 | float64 | bf16 (autocast, float32 master weights)

    def check(self) -> None:
        """UsageError for a value no run can train with."""
        positive = ("steps", "seq_len", "batch_size", "log_every", "eval_every", "checkpoint_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be > 0, got {self.lr}")
        if not 0.0 < self.val_fraction < 1.0:
            raise UsageError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.grad_clip < 0 or self.warmup_steps < 0 or self.eval_chars < 0:
            raise UsageError("--grad-clip, --warmup-steps and --eval-chars must be ≥ 0")


@dataclass
class RunConfig:
    """Everything a run folder's config.json records."""

    model: ModelConfig
    train: TrainConfig
    vocab: list[str]
    corpus: dict  # the corpus fingerprint: source, files with sha256, n_chars, sha256
    gatelab_version: str = ""

    def to_json(self) -> str:
        obj = {"format": FORMAT, "gatelab_version": self.gatelab_version,
               "model": asdict(self.model), "train": asdict(self.train),
               "vocab": self.vocab, "corpus": self.corpus}
        return json.dumps(obj, indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "config.json") -> "RunConfig":
        """Parse config.json; UsageError naming the problem when it is not one of ours."""
        try:
            obj = json.loads(text)
            if obj.get("format") != FORMAT:
                raise ValueError(f"format {obj.get('format')!r}, expected {FORMAT}")
            model = _dataclass_from(ModelConfig, obj["model"])
            train = _dataclass_from(TrainConfig, obj["train"])
            vocab = list(obj["vocab"])
            if not all(isinstance(ch, str) and len(ch) == 1 for ch in vocab):
                raise ValueError("vocab must be a list of single characters")
            if len(vocab) != model.vocab_size:
                raise ValueError(f"{len(vocab)} characters in vocab, model.vocab_size {model.vocab_size}")
            return cls(model=model, train=train, vocab=vocab, corpus=dict(obj["corpus"]),
                       gatelab_version=str(obj.get("gatelab_version", "")))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise UsageError(f"{where}: not a gatelab run config ({err})") from None


def _dataclass_from(cls, obj: dict):
    """Build a config dataclass from a dict, refusing unknown keys and wrong types."""
    if not isinstance(obj, dict):
        raise TypeError(f"{cls.__name__} must be an object")
    known = {f.name: f for f in fields(cls)}
    unknown = set(obj) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    default = cls()
    for key, value in obj.items():
        expected = type(getattr(default, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise TypeError(f"{cls.__name__}.{key} must be {expected.__name__}, got {value!r}")
    return cls(**obj)
