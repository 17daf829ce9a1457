"""Character corpora held in memory: the default corpus (the Python standard library's own
source) or any UTF-8 text file or folder, encoded as one flat integer array.

`TextCorpus` has the reading interface of `gatelab.data.memmap_corpus.DiskCorpus`
(`len`, `vocab`, `fingerprint`, `read(start, stop)`, `windows(starts, length)`), so the
trainer takes either: this one for corpora that fit in memory, the memory-mapped one for
corpora that do not. Token ids are positions in the vocabulary, sorted by code point.

Every problem the user can fix (a missing path, an empty, binary or non-UTF-8 file) is a
`UsageError` naming the file. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gatelab.errors import UsageError

SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn"}


def default_corpus_files() -> list[Path]:
    """The top-level `Lib/*.py` files of the running interpreter, sorted by name."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py") if p.is_file())
    if not files:
        raise UsageError(f"no Python files in the standard library folder {stdlib}; pass --data PATH")
    return files


def corpus_files(path) -> list[Path]:
    """The text files of a `--data` path: the file itself, or every file under a folder
    (sorted, hidden entries and __pycache__ skipped).

    Arguments:
        path: a file or a folder.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    files = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        files.extend(Path(root) / n for n in sorted(names) if not n.startswith("."))
    if not files:
        raise UsageError(f"{path}: folder holds no files")
    return files


def decode_file(path: Path, data: bytes) -> str:
    """The text of a file's bytes; UsageError when it is binary or not UTF-8.

    Arguments:
        path: the file's name, for the message.
        data: its bytes.
    """
    nul = data.find(b"\x00")
    if nul >= 0:
        raise UsageError(f"{path}: looks binary (NUL byte at offset {nul}), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"{path}: not UTF-8 text (invalid byte 0x{data[err.start]:02x} "
                         f"at offset {err.start})") from None


def encode(text: str, vocab: list[str]) -> np.ndarray:
    """(len(text),) token ids of `text` in `vocab`; UsageError naming unknown characters.

    Arguments:
        text: the characters to encode.
        vocab: characters sorted by code point, id = position.
    """
    cps = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")  # (N,) code points
    table = np.array([ord(ch) for ch in vocab], dtype=np.uint32)  # (V,) sorted
    ids = np.searchsorted(table, cps)  # (N,)
    ids = np.minimum(ids, len(table) - 1)
    bad = table[ids] != cps
    if bad.any():
        unknown = sorted(set(text[i] for i in np.flatnonzero(bad)[:50]))
        raise UsageError(f"characters not in the model's vocabulary: {''.join(unknown)!r}")
    return ids.astype(_dtype_for(len(vocab)))


def _dtype_for(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type holding ids 0 .. vocab_size - 1."""
    for dtype in (np.uint8, np.uint16):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.uint32)


@dataclass
class TextCorpus:
    """A corpus as one flat array of token ids (could as well be a np.memmap).

    Arguments:
        tokens: (N,) unsigned integer token ids.
        vocab: the characters, id = position, sorted by code point.
        source: a one-line description ("Python 3.11.7 standard library", a path).
        files: one record per file: {"path", "bytes", "sha256"} (path relative to `root`).
        root: the folder the file paths are relative to.
    """

    tokens: np.ndarray
    vocab: list[str]
    source: str
    files: list[dict] = field(default_factory=list)
    root: str = ""

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def fingerprint(self) -> dict:
        """What the run's config records: the files, their sha256, and one digest of all."""
        listing = "".join(f"{f['path']}\t{f['sha256']}\n" for f in self.files)
        return {"source": self.source, "root": self.root, "n_chars": len(self),
                "sha256": hashlib.sha256(listing.encode("utf-8")).hexdigest(), "files": self.files}

    def read(self, start: int, stop: int) -> np.ndarray:
        """Token ids [start, stop) as a new int64 array."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"[{start}, {stop}) is outside the corpus [0, {len(self)})")
        return self.tokens[start:stop].astype(np.int64)

    def windows(self, starts, length: int) -> np.ndarray:
        """(len(starts), length) int64: row b is tokens[starts[b] : starts[b] + length]."""
        starts = np.asarray(starts, dtype=np.int64)  # (B,)
        if len(starts) and (starts.min() < 0 or starts.max() + length > len(self)):
            raise IndexError(f"a window of length {length} leaves the corpus [0, {len(self)})")
        index = starts[:, None] + np.arange(length, dtype=np.int64)  # (B, length)
        return self.tokens[index].astype(np.int64)

    def decode(self, ids) -> str:
        """The text of some token ids."""
        return "".join(self.vocab[int(i)] for i in ids)


def corpus_source(path):
    """(files, root, source description) of a corpus: `path` (a file or folder), or the
    default corpus, the top-level `Lib/*.py` of the running interpreter, when None."""
    if path is None:
        files = default_corpus_files()
        root = files[0].parent
        v = sys.version_info
        return files, root, f"Python {v.major}.{v.minor}.{v.micro} standard library ({root}/*.py)"
    root = Path(path) if Path(path).is_dir() else Path(path).parent
    return corpus_files(path), root, str(path)


def load_corpus(path=None) -> TextCorpus:
    """Read a corpus into memory and encode it.

    Arguments:
        path: a UTF-8 text file or a folder of them; None for the default corpus, the top-level
            `Lib/*.py` of the running interpreter.
    """
    files, root, source = corpus_source(path)
    texts, records = [], []
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as err:
            raise UsageError(f"{f}: cannot read ({err.strerror})") from None
        texts.append(decode_file(f, data))
        records.append({"path": str(f.relative_to(root)), "bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()})
    text = "".join(texts)
    if not text:
        raise UsageError(f"{path if path is not None else 'the default corpus'}: empty, no text to train on")
    cps = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")  # (N,)
    uniq, ids = np.unique(cps, return_inverse=True)  # vocab sorted by code point
    vocab = [chr(c) for c in uniq.tolist()]
    tokens = ids.reshape(-1).astype(_dtype_for(len(vocab)))  # (N,)
    return TextCorpus(tokens=tokens, vocab=vocab, source=source, files=records, root=str(root))


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
    """The entropy of the character frequencies, in bits per character.

    Arguments:
        tokens: (N,) token ids.
        vocab_size: V.
    """
    counts = np.bincount(np.asarray(tokens, dtype=np.int64), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())
