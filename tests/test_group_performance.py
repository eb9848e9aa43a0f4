"""Tests of audit.analysis.group_performance: point estimates vs fairlearn, coverage, verdicts, summaries."""
from __future__ import annotations

import json
from functools import partial

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (MetricFrame, demographic_parity_difference, equalized_odds_difference)
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, precision_score, recall_score

from audit.analysis import group_performance as gp
from audit.analysis._table import GROUP_METRIC_COLUMNS
from audit.errors import InputError

CLASSES = ("cat", "dog", "fox", "owl", "yak")


def _data(seed=0, n=1500, k=5):
    """Three attributes; group `rare` never holds class 4 in labels, `odd` has class 3 only in predictions."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    predictions = np.where(rng.random(n) < 0.7, labels, rng.integers(0, k, n))
    colour = rng.choice(["red", "green", "blue"], n)
    size = rng.choice(["small", "large"], n, p=[0.3, 0.7])
    region = rng.choice(["north", "south", "rare", "odd"], n, p=[0.45, 0.45, 0.05, 0.05])
    rare = region == "rare"
    labels[rare & (labels == 4)] = 0
    predictions[rare & (predictions == 4)] = 1
    odd = region == "odd"
    labels[odd & (labels == 3)] = 2
    predictions[np.flatnonzero(odd)[:3]] = 3
    groups = pd.DataFrame({"colour": colour, "size": size, "region": region})
    return labels, predictions, groups


def _metric_frame_values(labels, predictions, sensitive):
    metrics = {
        "accuracy": accuracy_score,
        "balanced_accuracy": balanced_accuracy_score,
        "macro_f1": partial(f1_score, average="macro"),
    }
    for c in range(len(CLASSES)):
        metrics[f"recall:{c}"] = partial(recall_score, labels=[c], average="macro", zero_division=0)
        metrics[f"precision:{c}"] = partial(precision_score, labels=[c], average="macro", zero_division=0)
    return MetricFrame(metrics=metrics, y_true=labels, y_pred=predictions, sensitive_features=sensitive)


# sklearn warns about classes absent from a group; those cases are deliberate here.
@pytest.mark.filterwarnings("ignore")
def test_point_estimates_equal_fairlearn_metricframe():
    labels, predictions, groups = _data()
    result = gp.compute_group_performance(labels, predictions, classes=CLASSES, groups=groups, max_depth=2,
                                          n_bootstrap=20)
    table = result.table
    checked = 0
    for attribute in ("colour", "size", "region", "colour & region", "size & region"):
        columns = attribute.split(" & ")
        frame = _metric_frame_values(labels, predictions, groups[columns])
        by_group = frame.by_group
        for key, expected in by_group.iterrows():
            key = key if isinstance(key, tuple) else (key,)
            group = " & ".join(key)
            rows = table[(table["attribute"] == attribute) & (table["group"] == group)]
            for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
                value = rows[(rows["metric"] == metric) & (rows["class"] == "")]["value"]
                assert len(value) == 1
                assert abs(value.iloc[0] - expected[metric]) <= 1e-12, (attribute, group, metric)
                checked += 1
            if len(columns) > 1:
                assert set(rows["metric"]) == {"accuracy", "balanced_accuracy", "macro_f1"}
                continue
            for metric in ("recall", "precision"):
                for c, name in enumerate(CLASSES):
                    value = rows[(rows["metric"] == metric) & (rows["class"] == name)]["value"]
                    if value.empty:  # no images of (recall) / predicted as (precision) the class in the group
                        mask = (groups[columns[0]] == group).to_numpy()
                        denominator = labels[mask] if metric == "recall" else predictions[mask]
                        assert not (denominator == c).any()
                        continue
                    assert abs(value.iloc[0] - expected[f"{metric}:{c}"]) <= 1e-12, (attribute, group, metric, c)
                    checked += 1
    # The overall row equals the metric on the whole data.
    overall = table[(table["attribute"] == "all") & (table["class"] == "")].set_index("metric")["value"]
    assert abs(overall["balanced_accuracy"] - balanced_accuracy_score(labels, predictions)) <= 1e-12
    assert abs(overall["macro_f1"] - f1_score(labels, predictions, average="macro")) <= 1e-12
    assert checked > 150


@pytest.mark.filterwarnings("ignore")
def test_rare_group_class_conventions_follow_sklearn():
    # Group "rare" has no label 4 but may predict it: balanced accuracy ignores class 4, macro F1 counts it.
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    predictions = np.array([0, 1, 1, 1, 2, 4, 0, 3])
    groups = pd.DataFrame({"g": ["a"] * 6 + ["b"] * 2})
    result = gp.compute_group_performance(labels, predictions, classes=CLASSES, groups=groups, max_depth=1,
                                          n_bootstrap=10)
    rows = result.table[(result.table["attribute"] == "g") & (result.table["group"] == "a")].set_index("metric")
    assert rows.loc["balanced_accuracy", "value"] == pytest.approx(
        balanced_accuracy_score(labels[:6], predictions[:6]), abs=1e-12)
    assert rows.loc["macro_f1", "value"] == pytest.approx(
        f1_score(labels[:6], predictions[:6], average="macro"), abs=1e-12)


def test_table_has_contract_columns_rows_and_verdict_rules():
    labels, predictions, groups = _data(seed=3)
    result = gp.compute_group_performance(labels, predictions, classes=CLASSES, groups=groups, max_depth=2,
                                          n_bootstrap=50)
    table = result.table
    assert tuple(table.columns) == GROUP_METRIC_COLUMNS
    assert list(table["attribute"].unique()) == ["all", "colour", "size", "region", "colour & size",
                                                 "colour & region", "size & region"]
    all_rows = table[table["attribute"] == "all"]
    assert (all_rows["verdict"] == "").all() and (all_rows["group"] == "all").all()
    tested = table[table["attribute"] != "all"]
    assert ((tested["verdict"] == "insufficient_data") == tested["insufficient_evidence"]).all()
    assert set(tested["verdict"]) <= {"insufficient_data", "worse_than_rest", "no_evidence_of_gap"}
    assert (table["ci_low"] <= table["value"]).all() and (table["value"] <= table["ci_high"]).all()
    # insufficient_evidence depends on n only (Wilson width at 0.5 above 0.3 <=> n < 39), never on the value
    assert (table["insufficient_evidence"] == (table["n"] < 39)).all()
    # Per-class rows only for `all` and single attributes.
    per_class = table[table["class"] != ""]
    assert set(per_class["metric"]) == {"recall", "precision"}
    assert " & " not in "".join(per_class["attribute"].unique())
    # No probabilities: neither top-k nor calibration.
    assert not table["metric"].isin(["top_k_accuracy", "expected_calibration_error"]).any()


def test_planted_weak_group_is_worse_than_rest_and_null_groups_are_not():
    rng = np.random.default_rng(7)
    n = 6000
    region = rng.choice(["a", "b", "c", "d"], n)
    shade = rng.choice(["x", "y"], n)
    labels = rng.integers(0, 4, n)
    accuracy = np.where(region == "c", 0.6, 0.8)
    predictions = np.where(rng.random(n) < accuracy, labels, (labels + rng.integers(1, 4, n)) % 4)
    groups = pd.DataFrame({"region": region, "shade": shade})
    result = gp.compute_group_performance(labels, predictions, classes=CLASSES[:4], groups=groups, max_depth=1,
                                          n_bootstrap=300)
    table = result.table
    worse = table[table["verdict"] == "worse_than_rest"]
    for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert set(worse[worse["metric"] == metric]["group"]) == {"c"}, metric
    assert not (worse["attribute"] == "shade").any()
    summary = {s["attribute"]: s for s in result.summaries}["region"]
    assert summary["metrics"]["accuracy"]["worst_group"] == "c"
    assert {"group": "c", "metric": "accuracy"}.items() <= summary["worse_than_rest"][0].items()
    accuracy_rows = table[(table["attribute"] == "region") & (table["metric"] == "accuracy")]
    assert summary["metrics"]["accuracy"]["difference"] == pytest.approx(
        accuracy_rows["value"].max() - accuracy_rows["value"].min())
    assert summary["metrics"]["accuracy"]["ratio"] == pytest.approx(
        accuracy_rows["value"].min() / accuracy_rows["value"].max())
    # The equalized-odds gap is the largest per-class TPR/FPR range over groups.
    gap = summary["equalized_odds_gap"]
    assert gap["rate"] in ("tpr", "fpr") and gap["value"] > 0.1
    recall = table[(table["attribute"] == "region") & (table["metric"] == "recall")]
    tpr_gap = recall.groupby("class")["value"].agg(lambda v: v.max() - v.min()).max()
    assert gap["value"] >= tpr_gap - 1e-12


def test_small_group_gets_insufficient_data_and_is_left_out_of_summaries():
    rng = np.random.default_rng(1)
    n = 1000
    labels = rng.integers(0, 3, n)
    predictions = labels.copy()
    region = np.where(np.arange(n) < 10, "tiny", np.where(np.arange(n) % 2, "p", "q"))
    predictions[:10] = (labels[:10] + 1) % 3  # the tiny group is always wrong
    result = gp.compute_group_performance(labels, predictions, classes=CLASSES[:3],
                                          groups=pd.DataFrame({"region": region}), max_depth=1, n_bootstrap=50)
    rows = result.table[(result.table["group"] == "tiny") & (result.table["class"] == "")]
    assert (rows["verdict"] == "insufficient_data").all() and rows["insufficient_evidence"].all()
    summary = result.summaries[0]
    assert summary["metrics"]["accuracy"]["worst_group"] in ("p", "q")
    assert summary["metrics"]["accuracy"]["n_groups_compared"] == 2


def test_wilson_interval_coverage_in_500_simulated_data_sets():
    """95 % intervals of group accuracy (Wilson) and balanced accuracy (bootstrap) cover the truth 93-97 %."""
    rng = np.random.default_rng(2024)
    sizes = np.array([80, 150, 400])
    recall = np.array([[0.6, 0.8, 0.9], [0.7, 0.7, 0.75], [0.85, 0.5, 0.9]])  # group x class
    prior = np.array([0.5, 0.3, 0.2])
    true_accuracy = (recall * prior).sum(axis=1)
    true_balanced = recall.mean(axis=1)
    names = np.array(["a", "b", "c"])
    group = np.repeat(np.arange(3), sizes)
    frame = pd.DataFrame({"g": names[group]})
    covered_accuracy, covered_balanced = [], []
    for seed in range(500):
        labels = rng.choice(3, size=group.size, p=prior)
        right = rng.random(group.size) < recall[group, labels]
        predictions = np.where(right, labels, (labels + rng.integers(1, 3, group.size)) % 3)
        table = gp.compute_group_performance(labels, predictions, classes=CLASSES[:3], groups=frame, max_depth=1,
                                             n_bootstrap=1000, seed=seed).table
        rows = table[table["attribute"] == "g"].set_index(["metric", "group"]).sort_index()
        accuracy = rows.loc["accuracy"].loc[list(names)]
        balanced = rows.loc["balanced_accuracy"].loc[list(names)]
        covered_accuracy.append((accuracy["ci_low"].to_numpy() <= true_accuracy)
                                & (true_accuracy <= accuracy["ci_high"].to_numpy()))
        covered_balanced.append((balanced["ci_low"].to_numpy() <= true_balanced)
                                & (true_balanced <= balanced["ci_high"].to_numpy()))
    coverage_accuracy = float(np.mean(covered_accuracy))
    coverage_balanced = float(np.mean(covered_balanced))
    print(f"coverage: accuracy {coverage_accuracy:.4f}, balanced accuracy {coverage_balanced:.4f}")
    assert 0.93 <= coverage_accuracy <= 0.97
    assert 0.93 <= coverage_balanced <= 0.97


def test_null_data_rarely_flags_groups():
    flagged = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n = 2000
        labels = rng.integers(0, 3, n)
        predictions = np.where(rng.random(n) < 0.75, labels, (labels + 1) % 3)
        groups = pd.DataFrame({"g": rng.choice(list("abcde"), n)})
        table = gp.compute_group_performance(labels, predictions, classes=CLASSES[:3], groups=groups, max_depth=1,
                                             n_bootstrap=200, seed=seed).table
        flagged += bool((table[table["class"] == ""]["verdict"] == "worse_than_rest").any())
    # Three families (accuracy, balanced accuracy, macro-F1), each at FWER 0.05.
    assert flagged <= 40 * 0.15


def test_probabilities_give_top_k_and_calibration_with_known_values():
    # Four images per group; class count 7 > top_k 2.
    k = 7
    probabilities = np.full((8, k), 0.05)
    probabilities[:, 0] = 0.4
    probabilities[:, 1] = 0.3
    labels = np.array([0, 1, 2, 0, 0, 1, 2, 3])
    predictions = np.zeros(8, dtype=int)
    classes = tuple(f"c{i}" for i in range(k))
    groups = pd.DataFrame({"g": ["a"] * 4 + ["b"] * 4})
    result = gp.compute_group_performance(labels, predictions, classes=classes, groups=groups,
                                          probabilities=probabilities,
                                          max_depth=1, top_k=2, n_bootstrap=50, min_group_size=1)
    rows = result.table[(result.table["class"] == "")].set_index(["attribute", "group", "metric"])["value"]
    assert rows[("g", "a", "top_k_accuracy")] == pytest.approx(3 / 4)
    assert rows[("g", "b", "top_k_accuracy")] == pytest.approx(2 / 4)
    # Every confidence is 0.4 (one bin): ECE = |accuracy - 0.4|.
    assert rows[("g", "a", "expected_calibration_error")] == pytest.approx(abs(2 / 4 - 0.4))
    assert rows[("g", "b", "expected_calibration_error")] == pytest.approx(abs(1 / 4 - 0.4))
    assert rows[("all", "all", "expected_calibration_error")] == pytest.approx(abs(3 / 8 - 0.4))
    info = result.to_dict()["metrics"]
    assert info["expected_calibration_error"]["higher_is_better"] is False
    assert info["top_k_accuracy"]["higher_is_better"] is True


def test_calibration_error_matches_a_direct_computation_and_flags_a_miscalibrated_group():
    rng = np.random.default_rng(5)
    n, k = 4000, 4
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += 1.5
    group = rng.choice(["a", "b", "c"], n)
    logits[group == "c"] *= 3.0  # overconfident group
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predictions = probabilities.argmax(axis=1)
    result = gp.compute_group_performance(labels, predictions, classes=CLASSES[:k], groups=pd.DataFrame({"g": group}),
                                          probabilities=probabilities, max_depth=1, n_bootstrap=300)
    rows = result.table[result.table["metric"] == "expected_calibration_error"].set_index("group")
    for name in ("a", "b", "c"):
        mask = group == name
        confidence = probabilities[mask].max(axis=1)
        correct = labels[mask] == predictions[mask]
        edges = np.linspace(0, 1, 16)
        expected = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            in_bin = (confidence > lo) & (confidence <= hi)
            if in_bin.any():
                expected += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
        assert rows.loc[name, "value"] == pytest.approx(expected, abs=1e-12)
    assert rows.loc["c", "verdict"] == "worse_than_rest"
    assert "top_k_accuracy" not in set(result.table["metric"])  # 4 classes, top_k 5
    assert any("top_k_accuracy not computed" in note for note in result.settings["notes"])


def test_binary_task_reports_fairlearn_disparities():
    rng = np.random.default_rng(11)
    n = 3000
    labels = rng.integers(0, 2, n)
    group = rng.choice(["u", "v", "w"], n)
    predictions = np.where(rng.random(n) < np.where(group == "w", 0.6, 0.85), labels, 1 - labels)
    result = gp.compute_group_performance(labels, predictions, classes=("no", "yes"), groups=pd.DataFrame({"g": group}),
                                          max_depth=1, n_bootstrap=50)
    binary = result.summaries[0]["binary"]
    assert binary["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(labels, predictions, sensitive_features=group), abs=1e-12)
    assert binary["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(labels, predictions, sensitive_features=group), abs=1e-12)


def test_to_dict_is_json_safe_and_deterministic():
    labels, predictions, groups = _data(seed=9)
    first = gp.compute_group_performance(labels, predictions, classes=CLASSES, groups=groups, n_bootstrap=60, seed=4)
    second = gp.compute_group_performance(labels, predictions, classes=CLASSES, groups=groups, n_bootstrap=60, seed=4)
    pd.testing.assert_frame_equal(first.table, second.table)
    text = json.dumps(first.to_dict(), allow_nan=False)
    payload = json.loads(text)
    assert set(payload) == {"settings", "metrics", "overall", "attributes", "worse_than_rest"}
    assert payload["settings"]["n_bootstrap"] == 60 and payload["settings"]["correction"] == "holm"
    assert set(payload["metrics"]) == {"accuracy", "balanced_accuracy", "macro_f1", "recall", "precision"}
    assert [a["attribute"] for a in payload["attributes"]][:3] == ["colour", "size", "region"]
    # A different seed changes bootstrap intervals but not Wilson ones.
    other = gp.compute_group_performance(labels, predictions, classes=CLASSES, groups=groups, n_bootstrap=60, seed=5)
    accuracy = first.table["metric"] == "accuracy"
    assert np.allclose(first.table.loc[accuracy, "ci_low"], other.table.loc[accuracy, "ci_low"])
    assert not np.allclose(first.table["ci_low"], other.table["ci_low"])


def test_bh_correction_flags_at_least_as_many_as_holm():
    labels, predictions, groups = _data(seed=2)
    predictions = predictions.copy()
    weak = (groups["colour"] == "red").to_numpy() & (np.arange(len(labels)) % 3 == 0)
    predictions[weak] = (labels[weak] + 1) % 5
    holm = gp.compute_group_performance(labels, predictions, classes=CLASSES, groups=groups, n_bootstrap=50)
    bh = gp.compute_group_performance(labels, predictions, classes=CLASSES, groups=groups, n_bootstrap=50,
                                      correction="bh")
    assert (bh.table["verdict"] == "worse_than_rest").sum() >= (holm.table["verdict"] == "worse_than_rest").sum() > 0


def test_groups_without_columns_give_only_overall_rows_and_missing_values_form_a_group():
    labels = np.array([0, 1, 1, 0] * 10)
    predictions = np.array([0, 1, 0, 0] * 10)
    result = gp.compute_group_performance(labels, predictions, classes=("a", "b"), groups=pd.DataFrame(index=range(40)),
                                          n_bootstrap=20)
    assert set(result.table["attribute"]) == {"all"} and result.summaries == ()
    groups = pd.DataFrame({"g": ["x", None, "<missing>", "y"] * 10})
    result = gp.compute_group_performance(labels, predictions, classes=("a", "b"), groups=groups, n_bootstrap=20)
    assert set(result.table.loc[result.table["attribute"] == "g", "group"]) == {"x", "y", "<missing>"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(labels=np.zeros((3, 2), dtype=int)), gp.ERROR_LABELS_SHAPE.format(shape=(3, 2))),
    (dict(predictions=np.zeros(4, dtype=int)), gp.ERROR_PREDICTIONS_SHAPE.format(shape=(4,), n=3)),
    (dict(labels=np.array([0.0, 1.0, 1.0])), gp.ERROR_NOT_INTEGER.format(name="labels", dtype="float64")),
    (dict(predictions=np.array([0, 5, 1])), gp.ERROR_CLASS_RANGE.format(name="predictions", value=5, last=1, k=2)),
    (dict(groups=pd.DataFrame({"g": ["a", "b"]})), gp.ERROR_GROUPS_LENGTH.format(rows=2, n=3)),
    (dict(probabilities=np.ones((3, 3)) / 3), gp.ERROR_PROBABILITIES_SHAPE.format(shape=(3, 3), n=3, k=2)),
    (dict(probabilities=np.array([[0.5, 0.5], [2.0, -1.0], [1.0, 0.0]])), gp.ERROR_PROBABILITIES_VALUES.format(row=1)),
    (dict(correction="bonferroni"), gp.ERROR_SETTING.format(name="correction", what="'holm' or 'bh'",
                                                             value="bonferroni")),
    (dict(confidence_level=95), gp.ERROR_SETTING.format(name="confidence_level",
                                                         what="a number strictly between 0 and 1", value=95)),
    (dict(n_jobs=0), gp.ERROR_N_JOBS.format(value=0)),
    (dict(n_jobs=-2), gp.ERROR_N_JOBS.format(value=-2)),
    (dict(n_jobs=1.5), gp.ERROR_N_JOBS.format(value=1.5)),
    (dict(n_jobs=True), gp.ERROR_N_JOBS.format(value=True)),
])
def test_input_errors_are_named_constants(kwargs, message):
    arguments = dict(labels=np.array([0, 1, 1]), predictions=np.array([0, 1, 0]), classes=("a", "b"),
                     groups=pd.DataFrame({"g": ["x", "y", "x"]}))
    arguments.update(kwargs)
    labels = arguments.pop("labels")
    predictions = arguments.pop("predictions")
    with pytest.raises(InputError) as raised:
        gp.compute_group_performance(labels, predictions, **arguments)
    assert str(raised.value) == message


def test_metrics_from_counts_are_bitwise_the_plain_formulas():
    # The bootstrap calls these on (replicates, groups, classes) arrays; they divide only where a class is
    # present but must give exactly the numbers of the plain masked formulas (the tests' reference).
    from audit.analysis.group_performance import balanced_accuracy_from_counts, macro_f1_from_counts

    rng = np.random.default_rng(3)
    n_true = rng.poisson(0.7, size=(40, 3, 57)).astype(float)
    n_pred = rng.poisson(0.7, size=n_true.shape).astype(float)
    tp = np.minimum(n_true, n_pred) * (rng.random(n_true.shape) < 0.6)
    n_true[0, 0] = n_pred[0, 0] = tp[0, 0] = 0  # a group with no class present: NaN
    with np.errstate(invalid="ignore", divide="ignore"):
        present = n_true > 0
        recall = np.where(present, tp / np.where(present, n_true, 1), 0.0)
        balanced = recall.sum(axis=-1) / present.sum(axis=-1)
        support = n_true + n_pred
        present = support > 0
        f1 = np.where(present, 2.0 * tp / np.where(present, support, 1), 0.0)
        macro = f1.sum(axis=-1) / present.sum(axis=-1)
    assert np.array_equal(balanced_accuracy_from_counts(tp, n_true), balanced, equal_nan=True)
    assert np.array_equal(macro_f1_from_counts(tp, n_true, n_pred), macro, equal_nan=True)
    assert np.isnan(balanced[0, 0]) and np.isnan(macro[0, 0])


def _reference_ece_permutation_moments(codes, ece_bin, correct, confidence, g_count, n_permutations, rng, chunk):
    """The permutation loop of _ece_permutation_p_value as first written (keys and weights rebuilt per chunk)."""
    n = codes.size
    gap_image = correct.astype(float) - confidence
    total_gap = np.bincount(ece_bin, weights=gap_image, minlength=gp.ECE_BINS)
    size_of_group = np.bincount(codes, minlength=g_count)
    moments = np.zeros((3, g_count))
    done = 0
    while done < n_permutations:
        size = min(chunk, n_permutations - done)
        permuted = rng.permuted(np.broadcast_to(codes, (size, n)), axis=1)
        key = ((np.arange(size)[:, None] * g_count + permuted) * gp.ECE_BINS + ece_bin[None, :]).ravel()
        gap = np.bincount(key, weights=np.broadcast_to(gap_image, (size, n)).ravel(),
                          minlength=size * g_count * gp.ECE_BINS).reshape(size, g_count, gp.ECE_BINS)
        difference = (np.abs(gap).sum(axis=2) / size_of_group
                      - np.abs(total_gap - gap).sum(axis=2) / (n - size_of_group))
        moments += np.stack([difference.sum(axis=0), (difference ** 2).sum(axis=0), (difference ** 3).sum(axis=0)])
        done += size
    return moments


def test_ece_permutation_p_value_keeps_its_numbers(monkeypatch):
    # The permutation loop reuses each chunk size's key offsets and weights; its p-values must be the bits
    # of the loop that rebuilt them every chunk (same permutations, same sums in the same order).
    from scipy import stats

    rng = np.random.default_rng(9)
    n, g_count = 700, 4
    codes = rng.integers(0, g_count, n)
    confidence = rng.uniform(0.3, 1.0, n)
    correct = rng.random(n) < confidence
    ece_bin = np.clip(np.ceil(confidence * gp.ECE_BINS).astype(np.int64) - 1, 0, gp.ECE_BINS - 1)
    observed = rng.normal(0, 0.02, g_count)
    monkeypatch.setattr(gp, "_PERMUTATION_CHUNK_ELEMENTS", 30 * n)  # several chunks, the last one shorter
    ours = gp._ece_permutation_p_value(observed, codes, ece_bin, correct, confidence, g_count, n_permutations=100,
                                       rng=np.random.default_rng(4))
    moments = _reference_ece_permutation_moments(codes, ece_bin, correct, confidence, g_count, 100,
                                                 np.random.default_rng(4), chunk=30)
    mean = moments[0] / 100
    variance = np.maximum(moments[1] / 100 - mean ** 2, 0.0)
    third = moments[2] / 100 - 3 * mean * moments[1] / 100 + 2 * mean ** 3
    sd = np.sqrt(variance)
    skew = third / sd ** 3
    z = (observed - mean) / sd
    shape = 4.0 / np.maximum(skew ** 2, 1e-12)
    upper = np.where(skew > 1e-3, stats.gamma.sf(shape + z * np.sqrt(shape), shape),
                     np.where(skew < -1e-3, stats.gamma.cdf(shape - z * np.sqrt(shape), shape), stats.norm.sf(z)))
    assert np.array_equal(ours, np.clip(upper, 0.0, 1.0))


def test_families_in_worker_processes_give_the_same_result_bit_for_bit(monkeypatch):
    # float32 probabilities over 7 classes (> top_k): the workers get the confidence and label rank, not the
    # matrix, with the same values and dtype; every family draws from its own stream, so n_jobs cannot matter.
    rng = np.random.default_rng(7)
    n, k = 900, 7
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[labels]
    probabilities = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    predictions = probabilities.argmax(axis=1)
    groups = pd.DataFrame({"colour": rng.choice(["red", "green", "blue"], n),
                           "size": rng.choice(["small", "large"], n), "region": rng.choice(["n", "s"], n)})
    classes = tuple(f"c{i}" for i in range(k))
    run = partial(gp.compute_group_performance, labels, predictions, classes=classes, groups=groups,
                  probabilities=probabilities, n_bootstrap=60, top_k=2)
    alone = run(n_jobs=1)
    monkeypatch.setattr(gp, "PARALLEL_MIN_WORK", 0)
    spread = run(n_jobs=2)
    pd.testing.assert_frame_equal(alone.table, spread.table, check_exact=True)
    assert json.dumps(alone.to_dict(), sort_keys=True) == json.dumps(spread.to_dict(), sort_keys=True)
    assert {"top_k_accuracy", "expected_calibration_error"} <= set(spread.table["metric"])
    # the light copy the workers get holds no matrix and the same per-image values
    data = gp._Data(labels=labels, predictions=predictions, k=k, classes=classes, probabilities=probabilities,
                    top_k=2)
    light = data.without_matrix()
    assert light.probabilities is None
    assert light.confidence().dtype == np.float32
    np.testing.assert_array_equal(light.confidence(), data.confidence())
    np.testing.assert_array_equal(light.label_rank(), data.label_rank())


def test_confidence_columns_give_the_calibration_bins_of_the_matrix():
    # Confidences of exactly 0.2, 0.4, ... in float32 fall on a bin edge: times 15 they are whole numbers in
    # float32 arithmetic but not in float64. The matrix is read as float64, so the per-image columns (float32,
    # from the pipeline's chunked pass) must be too, or their bins would differ.
    rng = np.random.default_rng(3)
    n, k = 600, 7
    top = rng.choice(np.array([0.2, 0.4, 0.6, 0.8], dtype=np.float32), n)
    probabilities = np.empty((n, k), dtype=np.float32)
    probabilities[:] = ((1 - top) / (k - 1))[:, None]
    probabilities[np.arange(n), rng.integers(0, k, n)] = top
    predictions = probabilities.argmax(axis=1)
    labels = np.where(rng.random(n) < 0.5, predictions, rng.integers(0, k, n))
    groups = pd.DataFrame({"g": rng.choice(["a", "b"], n)})
    classes = tuple(f"c{i}" for i in range(k))
    label_probability = probabilities[np.arange(n), labels]
    label_rank = (probabilities > label_probability[:, None]).sum(axis=1)
    run = partial(gp.compute_group_performance, labels, predictions, classes=classes, groups=groups,
                  n_bootstrap=40, top_k=2)
    from_matrix = run(probabilities=probabilities)
    from_columns = run(confidence=probabilities.max(axis=1), label_rank=label_rank)
    pd.testing.assert_frame_equal(from_matrix.table, from_columns.table, check_exact=True)
