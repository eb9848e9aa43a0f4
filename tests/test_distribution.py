import numpy as np
import pandas as pd
import pytest

from audit.analysis.distribution import (ERROR_REFERENCE_COLUMNS, compute_attribute_distribution,
                                         compute_class_distribution, load_reference_proportions)
from audit.errors import InputError


def test_class_counts_equal_pandas_value_counts():
    rng = np.random.default_rng(1)
    labels = pd.Series(rng.choice(["a", "b", "c"], size=997, p=[0.6, 0.3, 0.1]))
    result = compute_class_distribution(labels, classes=("a", "b", "c", "d"))
    expected = labels.value_counts()
    assert result.counts[:3] == tuple(int(expected[c]) for c in "abc")
    assert result.counts[3] == 0 and result.empty_classes == ("d",)
    assert result.imbalance_ratio == pytest.approx(expected.max() / expected.min())
    shares = expected.to_numpy() / len(labels)
    assert result.normalised_entropy == pytest.approx(-(shares * np.log(shares)).sum() / np.log(4))


def test_balanced_classes_have_entropy_one_and_ratio_one():
    labels = pd.Series(["x", "y"] * 50)
    result = compute_class_distribution(labels, classes=("x", "y"))
    assert result.imbalance_ratio == 1.0
    assert result.normalised_entropy == pytest.approx(1.0)
    assert result.split_shift is None


def test_split_shift_detected_only_when_class_mix_differs():
    same = pd.Series(["a", "b"] * 200)
    splits = pd.Series(["train"] * 200 + ["test"] * 200)
    assert compute_class_distribution(same, classes=("a", "b"), splits=splits).split_shift["p_value"] > 0.5
    shifted = pd.Series(["a"] * 160 + ["b"] * 40 + ["a"] * 40 + ["b"] * 160)
    shift = compute_class_distribution(shifted, classes=("a", "b"), splits=splits).split_shift
    assert shift["p_value"] < 1e-10 and shift["cramers_v"] == pytest.approx(0.6)


def test_attribute_shares_missing_group_and_small_flags():
    table = pd.DataFrame({"region": ["north"] * 60 + ["south"] * 25 + [None] * 10 + [""] * 5,
                          "device": ["phone", "camera"] * 50})
    result = compute_attribute_distribution(table, attributes=["region", "device"], min_group_size=30)
    region = result.attributes["region"]
    by_group = {g["group"]: g for g in region["groups"]}
    assert by_group["<missing>"]["n"] == 15 and region["missing_rate"] == pytest.approx(0.15)
    assert by_group["south"]["is_small"] and not by_group["north"]["is_small"]
    assert by_group["north"]["ci_low"] <= 0.6 <= by_group["north"]["ci_high"]
    pair = result.intersections["region & device"]
    assert sum(g["n"] for g in pair["groups"]) == 100
    rows = result.table
    assert set(rows["metric"]) == {"share"}
    small = rows[(rows["attribute"] == "region") & (rows["group"] == "south")].iloc[0]
    assert small["insufficient_evidence"] and small["verdict"] == "insufficient_data"


def test_reference_comparison_flags_under_representation():
    table = pd.DataFrame({"sex": ["f"] * 200 + ["m"] * 800})
    reference = pd.DataFrame({"attribute": ["sex", "sex"], "group": ["f", "m"], "expected_share": [0.5, 0.5]})
    result = compute_attribute_distribution(table, attributes=["sex"], reference=reference)
    comparison = result.attributes["sex"]["reference"]
    assert comparison["p_value"] < 1e-20
    assert {r["group"]: r["outside_interval"] for r in comparison["rows"]} == {"f": True, "m": True}


def test_reference_file_without_columns_names_them():
    with pytest.raises(InputError) as caught:
        load_reference_proportions(pd.DataFrame({"a": [1]}), path="ref.csv")
    assert str(caught.value) == ERROR_REFERENCE_COLUMNS.format(path="ref.csv", columns="a")
