"""Corpus loading: encoding, fingerprint, and every bad input as a one-line UsageError."""

import hashlib

import numpy as np
import pytest

from gatelab.data.text import (
    corpus_files, default_corpus_files, encode, load_corpus, unigram_entropy,
)
from gatelab.errors import UsageError


def test_file_round_trip_and_fingerprint(corpus_file, python_text):
    corpus = load_corpus(corpus_file)
    assert len(corpus) == len(python_text)
    assert corpus.vocab == sorted(set(python_text))
    assert corpus.decode(corpus.tokens) == python_text
    assert corpus.tokens.dtype == np.uint8
    fp = corpus.fingerprint
    assert fp["files"] == [{"path": "corpus.py", "bytes": len(python_text.encode()),
                            "sha256": hashlib.sha256(corpus_file.read_bytes()).hexdigest()}]
    assert fp["n_chars"] == len(python_text)
    np.testing.assert_array_equal(corpus.windows([0, 5], 4)[1], corpus.tokens[5:9])
    np.testing.assert_array_equal(corpus.read(3, 7), corpus.tokens[3:7])


def test_folder_is_sorted_and_skips_caches(tmp_path):
    (tmp_path / "b.txt").write_text("bb", encoding="utf-8")
    (tmp_path / "a.txt").write_text("aé", encoding="utf-8")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"\x00\x01")
    (tmp_path / ".hidden").write_text("zz", encoding="utf-8")
    corpus = load_corpus(tmp_path)
    assert corpus.decode(corpus.tokens) == "aébb"
    assert [f["path"] for f in corpus.files] == ["a.txt", "b.txt"]
    assert corpus.vocab == ["a", "b", "é"]


def test_fingerprint_changes_with_content(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("hello", encoding="utf-8")
    first = load_corpus(path).fingerprint["sha256"]
    path.write_text("hellp", encoding="utf-8")
    assert load_corpus(path).fingerprint["sha256"] != first


def test_default_corpus_is_the_standard_library():
    files = default_corpus_files()
    names = {f.name for f in files}
    assert {"os.py", "textwrap.py", "tokenize.py"} <= names
    assert files == sorted(files) and all(f.suffix == ".py" for f in files)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"abc\x00def", "binary"),
    (b"abc\xff\xfedef", "not UTF-8"),
])
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message) as err:
        load_corpus(path)
    assert "\n" not in str(err.value) and "bad.txt" in str(err.value)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_corpus(tmp_path / "nope.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no files"):
        corpus_files(tmp_path / "empty")


def test_encode_refuses_unknown_characters():
    vocab = ["\n", " ", "a", "b"]
    np.testing.assert_array_equal(encode("ab a\n", vocab), [2, 3, 1, 2, 0])
    with pytest.raises(UsageError, match="'xé'"):
        encode("axé", vocab)


def test_unigram_entropy():
    assert unigram_entropy(np.array([0, 1, 0, 1]), 4) == pytest.approx(1.0)
    assert unigram_entropy(np.array([2, 2, 2]), 3) == pytest.approx(0.0)
