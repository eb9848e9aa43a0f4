"""Tests of audit.analysis.slices: planted weak slices are found, null data reports none."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from audit.analysis import slices as sl
from audit.errors import InputError


def _data(seed, *, n, weak=True, weak_accuracy=0.55):
    """Three attributes; accuracy 0.85 except in the planted depth-2 slice a = a1 & b = b2."""
    rng = np.random.default_rng(seed)
    groups = pd.DataFrame({"a": rng.choice(["a0", "a1", "a2", "a3"], n), "b": rng.choice(["b0", "b1", "b2", "b3"], n),
                           "c": rng.choice(["c0", "c1", "c2"], n)})
    accuracy = np.full(n, 0.85)
    if weak:
        accuracy[((groups["a"] == "a1") & (groups["b"] == "b2")).to_numpy()] = weak_accuracy
    return rng.random(n) < accuracy, groups


def test_planted_depth_two_slice_is_found_and_explains_its_parents_and_children():
    correct, groups = _data(0, n=4000)
    result = sl.find_weak_slices(correct, groups=groups)
    assert len(result.slices) == 1
    top = result.slices[0]
    assert (top["attributes"], top["group"], top["depth"]) == (["a", "b"], "a1 & b2", 2)
    inside = ((groups["a"] == "a1") & (groups["b"] == "b2")).to_numpy()
    assert top["n"] == inside.sum()
    assert top["accuracy"] == pytest.approx(correct[inside].mean())
    assert top["rest_accuracy"] == pytest.approx(correct[~inside].mean())
    assert top["effect"] == pytest.approx(top["rest_accuracy"] - top["accuracy"])
    assert top["score"] == pytest.approx(top["effect"] * top["n"])
    assert top["ci_low"] <= top["accuracy"] <= top["ci_high"]
    assert top["p_value"] <= top["p_value_adjusted"] < 0.05
    explained = {(e["attribute"], e["group"]): e for e in result.explained}
    # The diluted parents are explained by the planted slice, its depth-3 children by it as their parent.
    assert explained[("a", "a1")]["reason"] == "children"
    assert explained[("a", "a1")]["by"] == ["a & b = a1 & b2"]
    assert explained[("b", "b2")]["reason"] == "children"
    assert all(e["reason"] == "parent" for e in result.explained if e["attribute"] == "a & b & c")
    # 4 + 4 + 3 single values, 16 + 12 + 12 pairs, 48 triples, minus those under 30 images.
    assert result.n_tried <= 99 and result.n_significant >= 3
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert payload["slices"][0]["group"] == "a1 & b2" and payload["n_tried"] == result.n_tried


def test_planted_slice_is_found_across_seeds():
    found_first = exactly = unrelated = 0
    for seed in range(30):
        correct, groups = _data(100 + seed, n=3000)
        result = sl.find_weak_slices(correct, groups=groups)
        groups_reported = [s["group"] for s in result.slices]
        found_first += bool(groups_reported) and groups_reported[0] == "a1 & b2"
        exactly += groups_reported == ["a1 & b2"]
        # Anything reported that is not the planted slice, a parent or a child of it is a false discovery.
        unrelated += any(not {"a1", "b2"} & set(g.split(" & ")) for g in groups_reported)
    print(f"planted slice ranked first in {found_first}/30, alone in {exactly}/30, unrelated slices in {unrelated}/30")
    assert found_first >= 27 and exactly >= 24
    assert unrelated <= 3


def test_null_data_false_positive_rate_is_under_alpha():
    """No weak slice planted: reporting any slice happens in at most alpha of the data sets (FWER, Holm)."""
    seeds = 300
    reported = 0
    tried = []
    for seed in range(seeds):
        correct, groups = _data(5000 + seed, n=1500, weak=False)
        result = sl.find_weak_slices(correct, groups=groups, alpha=0.05)
        reported += bool(result.slices)
        tried.append(result.n_tried)
    print(f"null false-positive rate {reported / seeds:.3f} over {seeds} seeds, ~{np.mean(tried):.0f} slices tried")
    assert reported / seeds <= 0.05
    assert min(tried) > 50


def test_genuinely_worse_child_of_a_weak_parent_is_kept():
    rng = np.random.default_rng(3)
    n = 6000
    groups = pd.DataFrame({"a": rng.choice(["x", "y"], n), "b": rng.choice(["p", "q", "r"], n)})
    accuracy = np.where(groups["a"] == "x", 0.75, 0.9)
    accuracy[((groups["a"] == "x") & (groups["b"] == "r")).to_numpy()] = 0.4
    correct = rng.random(n) < accuracy
    result = sl.find_weak_slices(correct, groups=groups, max_depth=2)
    reported = {(s["attribute"], s["group"]) for s in result.slices}
    assert ("a & b", "x & r") in reported
    assert ("a", "x") in reported  # still weak without its weak child
    assert ("a & b", "x & p") not in reported  # explained by its parent


def test_slices_under_min_size_are_not_tried_and_bh_is_accepted():
    correct, groups = _data(1, n=600)
    strict = sl.find_weak_slices(correct, groups=groups, min_slice_size=100, correction="bh")
    loose = sl.find_weak_slices(correct, groups=groups, min_slice_size=10)
    assert strict.n_tried < loose.n_tried
    assert all(s["n"] >= 100 for s in strict.slices)
    assert strict.settings["correction"] == "bh"


@pytest.mark.parametrize("kwargs, message", [
    (dict(correct=np.zeros((2, 2), dtype=bool)), sl.ERROR_CORRECT_SHAPE.format(shape=(2, 2))),
    (dict(correct=np.array([0, 2, 1, 1])), sl.ERROR_CORRECT_VALUES.format(value=2)),
    (dict(groups=pd.DataFrame({"g": ["a"]})), sl.ERROR_GROUPS_LENGTH.format(rows=1, n=4)),
    (dict(alpha=5), sl.ERROR_SETTING.format(name="alpha", what="a number strictly between 0 and 1", value=5)),
    (dict(max_depth=0), sl.ERROR_SETTING.format(name="max_depth", what="an integer >= 1", value=0)),
])
def test_input_errors_are_named_constants(kwargs, message):
    arguments = dict(correct=np.array([True, False, True, True]), groups=pd.DataFrame({"g": ["a", "b", "a", "b"]}))
    arguments.update(kwargs)
    correct = arguments.pop("correct")
    with pytest.raises(InputError) as raised:
        sl.find_weak_slices(correct, **arguments)
    assert str(raised.value) == message
