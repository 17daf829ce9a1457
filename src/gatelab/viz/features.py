"""Interpretable features of Python text, per character, from the standard `tokenize` module,
and the units whose values follow them most closely (Pearson correlation).

    in_string      1 inside a string literal (quotes included), else 0
    in_comment     1 inside a # comment
    bracket_depth  open ( [ { around the character (brackets in strings and comments ignored)
    indentation    leading whitespace of the character's line, in columns
    column         the character's position in its line (what a line-length unit tracks)

Text that stops being valid Python (a fragment cut mid-string) is tokenized as far as it
goes; after that string and comment are 0 and brackets are counted naively.
"""

from __future__ import annotations

import io
import tokenize

import numpy as np

FEATURES = ("in_string", "in_comment", "bracket_depth", "indentation", "column")
OPEN, CLOSE = "([{", ")]}"


def python_features(text: str) -> dict[str, np.ndarray]:
    """name -> (T,) float64 feature values of each character of `text`."""
    T = len(text)
    line_starts = [0]
    for k, ch in enumerate(text):
        if ch == "\n":
            line_starts.append(k + 1)
    offsets = np.array(line_starts)

    def at(row, col):  # tokenize's (row from 1, col) -> character offset
        return int(offsets[row - 1]) + col if row - 1 < len(offsets) else T

    in_string, in_comment = np.zeros(T), np.zeros(T)
    delta = np.zeros(T + 1)  # bracket depth changes, cumulated below
    parsed_to = 0
    string_types = {tokenize.STRING} | {getattr(tokenize, n) for n in
                                        ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END") if hasattr(tokenize, n)}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            a, b = at(*tok.start), at(*tok.end)
            if tok.type in string_types:
                in_string[a:b] = 1
            elif tok.type == tokenize.COMMENT:
                in_comment[a:b] = 1
            elif tok.type == tokenize.OP and tok.string in OPEN:
                delta[a] += 1
            elif tok.type == tokenize.OP and tok.string in CLOSE:
                delta[b] -= 1  # the closing bracket itself is still inside
            parsed_to = max(parsed_to, b)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        for k in range(parsed_to, T):  # naive counting for the rest
            if text[k] in OPEN:
                delta[k] += 1
            elif text[k] in CLOSE:
                delta[k + 1] -= 1
    depth = np.maximum(np.cumsum(delta)[:T], 0)

    column, indentation = np.zeros(T), np.zeros(T)
    for k, start in enumerate(line_starts):
        stop = line_starts[k + 1] if k + 1 < len(line_starts) else T
        line = text[start:stop]
        column[start:stop] = np.arange(stop - start)
        body = line.rstrip("\n")
        if body.strip():
            indentation[start:stop] = len(body.expandtabs(8)) - len(body.expandtabs(8).lstrip())
    return {"in_string": in_string, "in_comment": in_comment, "bracket_depth": depth,
            "indentation": indentation, "column": column}


def correlations(values: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of `values` (T, N) with `feature` (T,): (N,).

    Columns (or a feature) that do not vary get 0.
    """
    v = values.astype(np.float64)
    v = v - v.mean(0)
    f = feature.astype(np.float64) - feature.mean()
    denom = np.sqrt((v * v).sum(0) * (f * f).sum())
    num = f @ v  # (N,)
    return np.divide(num, denom, out=np.zeros_like(num), where=denom > 1e-12)


def top_units(activations, features: dict[str, np.ndarray], k: int = 8) -> list[dict]:
    """The k units (quantity, layer, unit) with the largest |r| per varying feature.

    Returns one dict per (feature, rank): {"feature", "rank", "q", "layer", "unit", "r"}.
    """
    matrix, labels = activations.matrix()  # (T, N)
    ranked = []
    for name, feature in features.items():
        if np.ptp(feature) == 0:
            continue
        r = correlations(matrix, feature)  # (N,)
        for rank, j in enumerate(np.argsort(-np.abs(r), kind="stable")[:k]):
            q, layer, unit = labels[j]
            ranked.append({"feature": name, "rank": rank + 1, "q": q, "layer": layer, "unit": unit,
                           "r": float(r[j])})
    return ranked
