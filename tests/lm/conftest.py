"""Tiny corpora and tiny runs for the character-model tests (seconds, one core)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

# A tiny model and short steps: every option of `gatelab train` that sizes the work.
TINY = ["--embed-size", "8", "--hidden-size", "24", "--seq-len", "16", "--batch-size", "8",
        "--log-every", "5", "--eval-every", "10", "--eval-chars", "2000", "--quiet"]


@pytest.fixture
def tiny() -> list[str]:
    """Options of a tiny, fast run."""
    return list(TINY)


@pytest.fixture
def python_text() -> str:
    """About 19 000 characters of real Python (the standard library's textwrap.py)."""
    return Path(textwrap.__file__).read_text(encoding="utf-8")


@pytest.fixture
def corpus_file(tmp_path, python_text) -> Path:
    path = tmp_path / "corpus.py"
    path.write_text(python_text, encoding="utf-8")
    return path
