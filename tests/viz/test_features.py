"""Interpretable features from tokenize, and the correlation ranking."""

import numpy as np

from gatelab.viz.activations import Activations
from gatelab.viz.features import correlations, python_features, top_units


def test_features_of_a_known_snippet():
    text = 'f(a, "x(")  # (\n    g([1])\n'
    feats = python_features(text)
    at = {name: dict(enumerate(values)) for name, values in feats.items()}
    s = text.index('"x(')
    assert [at["in_string"][k] for k in range(s - 1, s + 5)] == [0, 1, 1, 1, 1, 0]
    c = text.index("#")
    assert all(at["in_comment"][k] == 1 for k in range(c, c + 3)) and at["in_comment"][c - 1] == 0
    # the "(" inside the string and the comment do not count; the brackets themselves are inside
    assert [at["bracket_depth"][k] for k in range(0, 11)] == [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]
    g = text.index("g([")
    assert [at["bracket_depth"][k] for k in range(g, g + 7)] == [0, 1, 2, 2, 2, 1, 0]
    assert at["indentation"][g] == 4 and at["indentation"][0] == 0
    assert at["column"][g] == 4 and at["column"][text.index("\n") + 1] == 0


def test_fragment_that_is_not_valid_python_still_gets_brackets():
    feats = python_features('x = """never closed (\n')
    assert feats["bracket_depth"].max() == 1  # counted naively once tokenize gives up


def test_correlations_match_numpy(rng):
    values = rng.normal(size=(50, 4))
    feature = rng.normal(size=50)
    expected = [np.corrcoef(values[:, j], feature)[0, 1] for j in range(4)]
    np.testing.assert_allclose(correlations(values, feature), expected, rtol=1e-12)
    assert correlations(np.ones((5, 2)), np.arange(5.0)).tolist() == [0.0, 0.0]


def test_top_units_finds_a_planted_unit(rng):
    text = 'x = "abc" + (y)\n' * 4
    feats = python_features(text)
    T, L, H = len(text), 2, 5
    c = rng.normal(scale=0.1, size=(L, T, H)).astype(np.float32)
    c[1, :, 3] += feats["in_string"]  # layer 1 unit 3 follows the strings
    acts = Activations(text=text, quantities=("c",), values={"c": c}, probs=np.zeros(T, np.float32))
    top = [r for r in top_units(acts, feats, k=3) if r["feature"] == "in_string"]
    assert (top[0]["q"], top[0]["layer"], top[0]["unit"]) == ("c", 1, 3) and top[0]["r"] > 0.9
    assert [r["rank"] for r in top] == [1, 2, 3]
    assert not [r for r in top_units(acts, feats) if r["feature"] == "in_comment"]  # constant: not ranked
