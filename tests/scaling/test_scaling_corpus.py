"""Corpora larger than memory (issue 8): the streaming encoder and the on-disk reader.

The bounded-memory test runs a subprocess (tests/scaling/scaling_rss_probe.py) that
trains a small character model, encodes a generated corpus at least 10 times the
model's working set, reads every token of it and trains on windows drawn from all of it,
and asserts that its peak resident memory grew by less than the corpus's own size.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gatelab.data import memmap_corpus as mc
from gatelab.errors import UsageError

PROBE = Path(__file__).with_name("scaling_rss_probe.py")
ALPHABET = list("abcdefghijklmnopqrstuvwxyz ABC\n\t(){}[]=+-_.,:;'\"#") + ["é", "ü", "→", "😀", "ß"]


def _text(n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return "".join(np.array(ALPHABET)[rng.integers(0, len(ALPHABET), size=n)].tolist())


def test_round_trip_with_characters_split_between_chunks(tmp_path):
    a, b = _text(5000, 1), _text(3000, 2)
    (tmp_path / "a.txt").write_text(a, encoding="utf-8")
    (tmp_path / "b.txt").write_text(b, encoding="utf-8")
    for chunk in (1, 3, 7, 4096):  # 1 byte: every multi-byte character is split
        corpus = mc.encode([tmp_path / "a.txt", tmp_path / "b.txt"], tmp_path / f"enc{chunk}",
                           separator="\n", chunk_bytes=chunk)
        text = a + "\n" + b
        assert corpus.vocab == sorted(set(text))  # ids in code-point order, like sorted(set(text))
        assert corpus.decode(corpus.read(0, len(corpus))) == text
        starts = [0, 17, len(text) - 9]
        windows = corpus.windows(starts, 9)
        assert windows.dtype == np.int64 and windows.shape == (3, 9)
        assert [corpus.decode(w) for w in windows] == [text[s:s + 9] for s in starts]


def test_same_tokens_vocabulary_and_fingerprint_as_the_in_memory_corpus(tmp_path):
    from gatelab.data.text import load_corpus

    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.py").write_text(_text(3000, 4), encoding="utf-8")
    (folder / "sub" / "b.txt").write_text(_text(2000, 5), encoding="utf-8")
    for data in (folder, folder / "a.py"):
        mem = load_corpus(data)
        disk = mc.load_disk_corpus(data, tmp_path / "cache" / data.name, chunk_bytes=64)
        assert disk.vocab == mem.vocab
        assert disk.fingerprint == mem.fingerprint
        assert np.array_equal(disk.read(0, len(disk)), mem.read(0, len(mem)))
        starts = [0, 5, len(mem) - 40]
        assert np.array_equal(disk.windows(starts, 40), mem.windows(starts, 40))
    again = mc.load_disk_corpus(folder, tmp_path / "cache" / folder.name)
    assert again.fingerprint == load_corpus(folder).fingerprint  # reused, still equal


def test_token_dtype_is_the_smallest_that_fits(tmp_path):
    (tmp_path / "small.txt").write_text("abcab", encoding="utf-8")
    assert mc.encode([tmp_path / "small.txt"], tmp_path / "s").meta.dtype == np.uint8
    wide = "".join(chr(0x4E00 + k) for k in range(300))  # 300 distinct characters
    (tmp_path / "wide.txt").write_text(wide, encoding="utf-8")
    corpus = mc.encode([tmp_path / "wide.txt"], tmp_path / "w")
    assert corpus.meta.dtype == np.uint16 and corpus.decode(corpus.read(0, 300)) == wide


@pytest.mark.parametrize("chunk", [1, 2, 5, 1 << 20])
def test_invalid_utf8_names_the_absolute_byte_offset(tmp_path, chunk):
    data = "abcé".encode() + b"\xff" + b"tail"  # 0xff at byte 5
    (tmp_path / "bad.txt").write_bytes(data)
    with pytest.raises(UsageError, match=r"bad.txt: not UTF-8 text \(invalid byte 0xff at offset 5\)"):
        mc.encode([tmp_path / "bad.txt"], tmp_path / "enc", chunk_bytes=chunk)
    assert not (tmp_path / "enc" / mc.TOKENS).exists()
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == []  # no scratch left behind


def test_truncated_character_binary_and_empty_are_refused(tmp_path):
    (tmp_path / "cut.txt").write_bytes("abé".encode()[:-1])
    with pytest.raises(UsageError, match="invalid byte 0xc3 at offset 2"):
        mc.encode([tmp_path / "cut.txt"], tmp_path / "e1")
    (tmp_path / "bin.txt").write_bytes(b"ab\x00cd")
    with pytest.raises(UsageError, match=r"looks binary \(NUL byte at offset 2\)"):
        mc.encode([tmp_path / "bin.txt"], tmp_path / "e2")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(UsageError, match="empty"):
        mc.encode([tmp_path / "empty.txt"], tmp_path / "e3")


def test_a_failed_encoding_keeps_the_previous_one(tmp_path):
    (tmp_path / "good.txt").write_text("hello", encoding="utf-8")
    mc.encode([tmp_path / "good.txt"], tmp_path / "enc")
    (tmp_path / "good.txt").write_bytes(b"hel\xfflo")
    with pytest.raises(UsageError):
        mc.encode([tmp_path / "good.txt"], tmp_path / "enc")
    assert mc.DiskCorpus(tmp_path / "enc").decode(mc.DiskCorpus(tmp_path / "enc").read(0, 5)) == "hello"


def test_reuse_only_when_the_sources_are_unchanged(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("some text", encoding="utf-8")
    mc.encode([src], tmp_path / "enc")
    assert mc.is_current(tmp_path / "enc", [src])
    assert not mc.is_current(tmp_path / "enc", [src], separator="\n")
    src.write_text("other text!", encoding="utf-8")
    assert not mc.is_current(tmp_path / "enc", [src])
    corpus = mc.open_or_encode([src], tmp_path / "enc")
    assert corpus.decode(corpus.read(0, len(corpus))) == "other text!"


def test_a_truncated_token_file_is_reported(tmp_path):
    (tmp_path / "t.txt").write_text("0123456789", encoding="utf-8")
    mc.encode([tmp_path / "t.txt"], tmp_path / "enc")
    tokens = tmp_path / "enc" / mc.TOKENS
    tokens.write_bytes(tokens.read_bytes()[:-1])
    with pytest.raises(UsageError, match="corrupt"):
        mc.DiskCorpus(tmp_path / "enc")


def test_windows_outside_the_corpus_are_refused(tmp_path):
    (tmp_path / "t.txt").write_text("0123456789", encoding="utf-8")
    corpus = mc.encode([tmp_path / "t.txt"], tmp_path / "enc")
    with pytest.raises(IndexError):
        corpus.windows([6], 5)
    with pytest.raises(IndexError):
        corpus.read(3, 11)


@pytest.mark.parametrize("n", [0, 1, 7, 10, 1001])
def test_rank_shards_partition_the_range(n):
    for world in (1, 2, 3, 4):
        bounds = [mc.shard_bounds(5, 5 + n, r, world) for r in range(world)]
        assert bounds[0][0] == 5 and bounds[-1][1] == 5 + n
        assert all(bounds[r][1] == bounds[r + 1][0] for r in range(world - 1))
        sizes = [hi - lo for lo, hi in bounds]
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        mc.shard_bounds(0, 10, 2, 2)


def _write_corpus(path: Path, n_bytes: int) -> None:
    """A generated UTF-8 corpus of about n_bytes, written block by block."""
    block = _text(1 << 16, 3)
    with open(path, "w", encoding="utf-8") as f:
        written, k = 0, 0
        while written < n_bytes:
            part = block[k % 997:] + block[:k % 997]  # vary the text from block to block
            f.write(part)
            written += len(part.encode("utf-8"))
            k += 1


@pytest.mark.slow
def test_resident_memory_stays_bounded_on_a_corpus_larger_than_it(tmp_path):
    corpus_path = tmp_path / "big.txt"
    _write_corpus(corpus_path, 48 << 20)
    corpus_bytes = corpus_path.stat().st_size
    proc = subprocess.run([sys.executable, str(PROBE), str(corpus_path), str(tmp_path / "enc")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert corpus_bytes >= 10 * report["working_set_bytes"]
    tokens_bytes = (tmp_path / "enc" / mc.TOKENS).stat().st_size
    assert report["n_tokens"] == tokens_bytes > 40 << 20  # uint8 tokens: one byte per character
    growth = (report["peak_kib"] - report["baseline_kib"]) * 1024
    # Holding the text, its code points or its tokens would grow it by > 40 MB (by 200 MB
    # for the code points); the encoder's chunks and tables need about 20 MB.
    assert growth < 32 << 20, report
    assert growth < tokens_bytes / 1.25, report


def test_the_default_corpus_on_disk_equals_the_in_memory_one(tmp_path):
    from gatelab.data.text import load_corpus

    mem = load_corpus(None)
    disk = mc.load_disk_corpus(None, tmp_path / "cache")
    assert disk.fingerprint == mem.fingerprint and disk.vocab == mem.vocab
    assert np.array_equal(disk.read(0, len(disk)), mem.read(0, len(mem)))
