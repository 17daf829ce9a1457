"""Character corpora larger than memory: encoded once into a token file, read window by window.

`encode()` reads the text files in one streaming pass of fixed-size chunks. Each chunk is
checked as UTF-8 by an incremental decoder (so a multi-byte character split between two
chunks is fine, and a bad byte is reported with its absolute offset), its characters are
added to the vocabulary, and their code points are appended to a scratch file. A second
pass over that scratch file (not over the text) maps code points to token ids in the
vocabulary's sorted order and writes the token file. Memory use is a few chunks plus two
tables over the Unicode code space (≈ 1 MB + ≈ 1–4 MB), whatever the corpus size; the
disk holds 4 bytes per character for the scratch file while encoding.

On disk (a folder):
    tokens.bin   the token ids, uint8 / uint16 / uint32 (the smallest that fits the vocabulary)
    corpus.json  {"format", "n_tokens", "dtype", "vocab" (list of characters, sorted by
                 code point, id = position), "separator", "source", "root",
                 "sources": [{path, bytes, mtime_ns, sha256}]}

`DiskCorpus` streams what training asks for from tokens.bin with positional reads
(`os.pread`, one per window): the bytes go through the page cache into a fresh array and
the process's resident memory holds only that array. A memory map was measured first and
rejected: its file pages count in the resident set, and on this machine (ext4, large
page-cache folios) each random 129-token window mapped about 256 KiB, so 200 batches of 64
windows grew the resident set by 40 MB; positional reads grew it by nothing and cost
0.29 ms per batch of 64 windows (the map 0.09 ms), noise next to a training step.
Resident memory thus stays bounded over a run of any length on a corpus of any size.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gatelab.errors import UsageError

FORMAT = 1
TOKENS = "tokens.bin"
META = "corpus.json"
CODE_SPACE = 0x110000  # every Unicode code point is below this
CHUNK_BYTES = 1 << 20  # 1 MiB of text (or 256 Ki code points) per read


def _token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids 0 .. vocab_size - 1."""
    for dtype in (np.uint8, np.uint16):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.uint32)


def _code_points(text: str) -> np.ndarray:
    """(len(text),) uint32 code points, without a per-character Python loop."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _stream_code_points(path: Path, scratch, seen: np.ndarray, chunk_bytes: int) -> dict:
    """Append the code points of one file to `scratch`, mark its characters in `seen`.

    Returns the file's record for corpus.json. Raises UsageError for a binary (NUL byte)
    or non-UTF-8 file, naming the byte offset, with the messages of `gatelab.data.text`.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    digest = hashlib.sha256()
    offset = 0  # bytes of this file before the current chunk
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_bytes)
            final = not chunk
            digest.update(chunk)
            nul = chunk.find(b"\x00")
            if nul >= 0:
                raise UsageError(f"{path}: looks binary (NUL byte at offset {offset + nul}), not text")
            pending = decoder.getstate()[0]  # bytes of a character split at the last chunk's end
            try:
                text = decoder.decode(chunk, final=final)
            except UnicodeDecodeError as err:  # err.start counts from the pending bytes
                bad = (pending + chunk)[err.start]
                raise UsageError(f"{path}: not UTF-8 text (invalid byte 0x{bad:02x} at offset "
                                 f"{offset - len(pending) + err.start})") from None
            if text:
                cps = _code_points(text)  # (n,)
                seen[cps] = True
                cps.tofile(scratch)
            if final:
                break
            offset += len(chunk)
    stat = path.stat()
    return {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sha256": digest.hexdigest()}


def encode(sources, out_dir, *, separator: str = "", chunk_bytes: int = CHUNK_BYTES,
           source: str = "", root=None) -> "DiskCorpus":
    """Encode text files into a token folder in one streaming pass; return it opened.

    Arguments:
        sources: the text files, in the order their texts are concatenated.
        out_dir: the folder to write tokens.bin and corpus.json into (created if absent).
            Existing files there are replaced only once the new ones are complete.
        separator: text put between two consecutive files (e.g. "\\n").
        chunk_bytes: bytes read at a time; bounds the memory used.
        source: a one-line description of the corpus, for the fingerprint.
        root: the folder the fingerprint's file paths are relative to (default: the
            first file's folder).
    """
    sources = [Path(p) for p in sources]
    if not sources:
        raise UsageError("no text files to encode")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seen = np.zeros(CODE_SPACE, dtype=bool)  # (0x110000,) characters met so far
    sep = _code_points(separator)
    seen[sep] = True
    scratch_path = out_dir / "codepoints.u32.tmp"
    tokens_tmp = out_dir / (TOKENS + ".tmp")
    try:
        records = []
        with open(scratch_path, "wb") as scratch:
            for k, path in enumerate(sources):
                if k and len(sep):
                    sep.tofile(scratch)
                records.append(_stream_code_points(path, scratch, seen, chunk_bytes))
        n_tokens = scratch_path.stat().st_size // 4
        if n_tokens == 0:
            raise UsageError(f"{sources[0] if len(sources) == 1 else 'the corpus'}: empty, no text to train on")
        vocab_cps = np.flatnonzero(seen)  # (V,) sorted code points
        dtype = _token_dtype(len(vocab_cps))
        table = np.zeros(CODE_SPACE, dtype=dtype)  # code point -> token id
        table[vocab_cps] = np.arange(len(vocab_cps), dtype=dtype)
        per_read = max(1, chunk_bytes // 4)
        with open(scratch_path, "rb") as src, open(tokens_tmp, "wb") as dst:
            while True:
                cps = np.fromfile(src, dtype="<u4", count=per_read)
                if not len(cps):
                    break
                table[cps].tofile(dst)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tokens_tmp, out_dir / TOKENS)
        root = Path(root) if root is not None else sources[0].parent
        meta = {"format": FORMAT, "n_tokens": int(n_tokens), "dtype": dtype.name,
                "vocab": [chr(c) for c in vocab_cps.tolist()], "separator": separator,
                "source": source or str(sources[0] if len(sources) == 1 else root),
                "root": str(root), "sources": records}
        _write_json_atomic(out_dir / META, meta)
    finally:
        for tmp in (scratch_path, tokens_tmp):
            if tmp.exists():
                tmp.unlink()
    return DiskCorpus(out_dir)


def is_current(out_dir, sources, *, separator: str = "") -> bool:
    """True when out_dir holds an encoding of exactly these files as they are now
    (same paths, order, sizes and modification times, same separator)."""
    meta_path = Path(out_dir) / META
    if not meta_path.is_file() or not (Path(out_dir) / TOKENS).is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if meta.get("format") != FORMAT or meta.get("separator") != separator:
        return False
    recorded = [(r["path"], r["bytes"], r["mtime_ns"]) for r in meta.get("sources", [])]
    current = []
    for p in map(Path, sources):
        if not p.is_file():
            return False
        st = p.stat()
        current.append((str(p), st.st_size, st.st_mtime_ns))
    return recorded == current


def open_or_encode(sources, out_dir, *, separator: str = "", chunk_bytes: int = CHUNK_BYTES) -> "DiskCorpus":
    """The token folder for these sources: reused when current, else (re-)encoded."""
    if is_current(out_dir, sources, separator=separator):
        return DiskCorpus(out_dir)
    return encode(sources, out_dir, separator=separator, chunk_bytes=chunk_bytes)


def load_disk_corpus(path, cache_dir, *, chunk_bytes: int = CHUNK_BYTES) -> "DiskCorpus":
    """A `--data` path as a DiskCorpus: the same files, order, vocabulary, token ids and
    fingerprint as `gatelab.data.text.load_corpus(path)`, but encoded into `cache_dir`
    (reused while the files are unchanged) instead of held in memory.

    Arguments:
        path: a UTF-8 text file or a folder of them; None for the default corpus.
        cache_dir: the folder for tokens.bin and corpus.json.
        chunk_bytes: bytes read at a time.
    """
    from gatelab.data.text import corpus_source

    files, root, source = corpus_source(path)
    if is_current(cache_dir, files):
        corpus = DiskCorpus(cache_dir)
        if corpus.meta.source == source and corpus.meta.root == str(root):
            return corpus
    return encode(files, cache_dir, chunk_bytes=chunk_bytes, source=source, root=root)


def shard_bounds(start: int, stop: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous part [lo, hi) of [start, stop) that process `rank` of `world_size` owns.

    The parts are disjoint, cover [start, stop) in rank order and differ in length by at
    most one, so a sum over every rank's part equals the sum over the whole range.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    n = stop - start
    lo = start + (n * rank) // world_size
    hi = start + (n * (rank + 1)) // world_size
    return lo, hi


@dataclass(frozen=True)
class _Meta:
    n_tokens: int
    dtype: np.dtype
    vocab: tuple[str, ...]
    separator: str
    source: str
    root: str
    sources: tuple[dict, ...]


class DiskCorpus:
    """Read-only token ids of an encoded corpus, read by positional reads.

    Arguments:
        folder: a folder written by `encode()`.
    """

    def __init__(self, folder):
        self._file = None  # the token file's descriptor, opened on the first read
        self.folder = Path(folder)
        try:
            raw = json.loads((self.folder / META).read_text(encoding="utf-8"))
            meta = _Meta(int(raw["n_tokens"]), np.dtype(raw["dtype"]), tuple(raw["vocab"]),
                         raw["separator"], raw["source"], raw["root"], tuple(raw["sources"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UsageError(f"{self.folder}: not an encoded corpus ({err})") from None
        expected = meta.n_tokens * meta.dtype.itemsize
        actual = (self.folder / TOKENS).stat().st_size if (self.folder / TOKENS).is_file() else -1
        if actual != expected:
            raise UsageError(f"{self.folder / TOKENS}: {actual} bytes, expected {expected} (corrupt)")
        self.meta = meta

    # -- description -------------------------------------------------------------
    def __len__(self) -> int:
        return self.meta.n_tokens

    @property
    def vocab(self) -> list[str]:
        """The characters, id = position, sorted by code point."""
        return list(self.meta.vocab)

    @property
    def fingerprint(self) -> dict:
        """What a run's config records, in the form of `gatelab.data.text.TextCorpus`
        (the same files give the same fingerprint either way): source, root, n_chars, the
        files (path relative to root, bytes, sha256) and one sha256 over the listing."""
        root = Path(self.meta.root)
        files = [{"path": os.path.relpath(s["path"], root), "bytes": s["bytes"], "sha256": s["sha256"]}
                 for s in self.meta.sources]
        listing = "".join(f"{f['path']}\t{f['sha256']}\n" for f in files)
        return {"source": self.meta.source, "root": str(root), "n_chars": len(self),
                "sha256": hashlib.sha256(listing.encode("utf-8")).hexdigest(), "files": files}

    # -- reading -----------------------------------------------------------------
    def _fd(self) -> int:
        if self._file is None:
            self._file = os.open(self.folder / TOKENS, os.O_RDONLY)
        return self._file

    def read(self, start: int, stop: int) -> np.ndarray:
        """Token ids [start, stop) as a new int64 array (one positional read)."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"[{start}, {stop}) is outside the corpus [0, {len(self)})")
        size = self.meta.dtype.itemsize
        raw = os.pread(self._fd(), (stop - start) * size, start * size)
        return np.frombuffer(raw, dtype=self.meta.dtype).astype(np.int64)  # (stop - start,)

    def windows(self, starts, length: int) -> np.ndarray:
        """(len(starts), length) int64: row b is tokens[starts[b] : starts[b] + length]."""
        starts = np.asarray(starts, dtype=np.int64)  # (B,)
        if len(starts) and (starts.min() < 0 or starts.max() + length > len(self)):
            raise IndexError(f"a window of length {length} leaves the corpus [0, {len(self)})")
        size, fd = self.meta.dtype.itemsize, self._fd()
        raw = b"".join(os.pread(fd, length * size, int(s) * size) for s in starts.tolist())
        return np.frombuffer(raw, dtype=self.meta.dtype).reshape(len(starts), length).astype(np.int64)

    def close(self) -> None:
        """Close the token file (it is opened again by the next read)."""
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def __del__(self):
        self.close()

    def decode(self, ids) -> str:
        """The text of some token ids."""
        vocab = self.meta.vocab
        return "".join(vocab[int(i)] for i in ids)
