"""Tests of the streaming confident-learning engine (audit/analysis/label_noise.py).

Ground truth comes from synthetic probabilities of a model with known accuracy on labels flipped at a
known rate; agreement with the reference (cleanlab 2.9, a dev dependency) is checked bit for bit.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from audit.analysis import label_noise as ln
from audit.analysis.label_noise import estimate_disagreement_rate_by_group, estimate_label_noise
from audit.errors import InputError
from audit.io.arrays import array_chunk_source, npy_chunk_source

cleanlab_filter = pytest.importorskip("cleanlab.filter")
cleanlab_count = pytest.importorskip("cleanlab.count")
cleanlab_rank = pytest.importorskip("cleanlab.rank")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def make_probabilities(n, k, *, seed, boost=3.0, dtype=np.float32):
    """Softmax of N(0, 1) logits with ``boost`` added on the true class; returns (true, probabilities)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(0.0, 1.0, (n, k))
    logits[np.arange(n), true] += boost
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return true, p.astype(dtype)


def flip_symmetric(true, k, rate, *, seed):
    rng = np.random.default_rng(seed + 1000)
    labels = true.copy()
    flip = rng.random(true.size) < rate
    labels[flip] = (true[flip] + rng.integers(1, k, int(flip.sum()))) % k
    return labels


def reference(labels, p):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask = cleanlab_filter.find_label_issues(labels, p, n_jobs=1)
        cj = cleanlab_count.compute_confident_joint(labels, p)
        joint = cleanlab_count.estimate_joint(labels, p)
        py, nm, inv, _ = cleanlab_count.estimate_py_and_noise_matrices_from_probabilities(labels, p)
        thresholds = cleanlab_count.get_confident_thresholds(labels, p)
        ranking = cleanlab_filter.find_label_issues(labels, p, n_jobs=1, return_indices_ranked_by="self_confidence")
    return dict(mask=mask, cj=cj, joint=joint, py=py, nm=nm, inv=inv, thresholds=thresholds, ranking=ranking)


def assert_agrees(result, ref):
    a, b = set(np.flatnonzero(result.is_label_issue)), set(np.flatnonzero(ref["mask"]))
    union = a | b
    jaccard = len(a & b) / len(union) if union else 1.0
    assert jaccard >= 0.99
    np.testing.assert_array_equal(result.is_label_issue, ref["mask"])  # in practice: exactly the same set
    np.testing.assert_array_equal(result.confident_joint, ref["cj"])
    np.testing.assert_allclose(result.joint, ref["joint"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.noise_matrix, ref["nm"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.inverse_noise_matrix, ref["inv"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.true_class_prior, ref["py"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result.thresholds, ref["thresholds"])
    np.testing.assert_array_equal(result.ranking, ref["ranking"])


# ----------------------------------------------------------------------------------- ground truth

def test_symmetric_noise_rate_and_flags_match_ground_truth():
    true, p = make_probabilities(5000, 10, seed=0, boost=3.0)
    labels = flip_symmetric(true, 10, 0.10, seed=0)
    is_wrong = labels != true
    result = estimate_label_noise(labels, p, n_classes=10)
    assert abs(result.noise_rate - is_wrong.mean()) <= 0.03
    precision = is_wrong[result.is_label_issue].mean()
    recall = result.is_label_issue[is_wrong].mean()
    # The model is right ~92 % of the time, so some flags are its own errors: precision and recall ~0.85.
    assert precision >= 0.75
    assert recall >= 0.75
    assert result.noise_rate_ci[0] <= result.noise_rate <= result.noise_rate_ci[1]
    assert result.n_label_issues == result.is_label_issue.sum() == result.ranking.size


def test_class_conditional_noise_is_located_in_the_flipped_classes():
    true, p = make_probabilities(5000, 10, seed=1, boost=3.0)
    rng = np.random.default_rng(7)
    labels = true.copy()
    swap = {3: 5, 5: 3, 1: 9, 9: 1}  # cat <-> dog, automobile <-> truck in CIFAR-10 order
    for source, target in swap.items():
        members = np.flatnonzero((true == source) & (rng.random(true.size) < 0.4))
        labels[members] = target
    is_wrong = labels != true
    result = estimate_label_noise(labels, p, n_classes=10)
    assert abs(result.noise_rate - is_wrong.mean()) <= 0.03
    rates = {row.class_index: row.noise_rate for row in result.per_class}
    for c in range(10):
        truth = is_wrong[labels == c].mean()
        assert abs(rates[c] - truth) <= 0.08, (c, rates[c], truth)
    # The off-diagonal mass sits in the swapped cells.
    assert result.joint[3, 5] > 0.01 and result.joint[5, 3] > 0.01
    assert result.joint[0, 2] < 0.005
    assert is_wrong[result.is_label_issue].mean() >= 0.75


def test_clean_labels_give_small_noise_rate():
    true, p = make_probabilities(3000, 5, seed=2, boost=5.0)
    result = estimate_label_noise(true, p, n_classes=5)
    assert result.noise_rate < 0.01
    assert result.n_label_issues <= 0.01 * true.size


# ----------------------------------------------------------------------------------- exact agreement

CASES = {
    "k10-seed0": dict(n=5000, k=10, seed=0, rate=0.1, boost=3.0),
    "k10-seed1": dict(n=5000, k=10, seed=1, rate=0.2, boost=2.0),
    "k10-seed2": dict(n=4000, k=10, seed=2, rate=0.3, boost=1.5),
    "k50": dict(n=6000, k=50, seed=3, rate=0.1, boost=4.0),
    "k2": dict(n=3000, k=2, seed=4, rate=0.1, boost=1.0),
    "tiny": dict(n=30, k=4, seed=5, rate=0.2, boost=1.0),
    "float64": dict(n=4000, k=8, seed=6, rate=0.1, boost=2.5, dtype=np.float64),
}


@pytest.mark.parametrize("name", list(CASES))
def test_agrees_exactly_with_cleanlab(name):
    case = dict(CASES[name])
    dtype = case.pop("dtype", np.float32)
    true, p = make_probabilities(case["n"], case["k"], seed=case["seed"], boost=case["boost"], dtype=dtype)
    labels = flip_symmetric(true, case["k"], case["rate"], seed=case["seed"])
    result = estimate_label_noise(labels, p, n_classes=case["k"], chunk_rows=997)
    assert_agrees(result, reference(labels, p))


def test_agrees_with_a_class_nobody_is_labelled_as():
    true, p = make_probabilities(4000, 10, seed=10)
    labels = flip_symmetric(true, 10, 0.1, seed=10)
    labels[labels == 3] = 4
    result = estimate_label_noise(labels, p, n_classes=10, chunk_rows=500)
    assert result.thresholds[3] == 2.0
    assert_agrees(result, reference(labels, p))


def test_agrees_with_a_class_without_confident_examples():
    true, p = make_probabilities(4000, 10, seed=11)
    labels = flip_symmetric(true, 10, 0.1, seed=11)
    p[:, 7] = 0.0  # nobody is ever confidently of class 7
    result = estimate_label_noise(labels, p, n_classes=10, chunk_rows=500)
    assert result.uncalibrated_confident_joint[:, 7].sum() == 1  # only the forced diagonal 1
    assert_agrees(result, reference(labels, p))


def test_agrees_with_a_single_image_class():
    true, p = make_probabilities(4000, 10, seed=12)
    labels = flip_symmetric(true, 10, 0.1, seed=12)
    labels[labels == 2] = 1
    labels[5] = 2
    assert_agrees(estimate_label_noise(labels, p, n_classes=10, chunk_rows=300), reference(labels, p))


@pytest.mark.parametrize("path", ["sparse", "dense"])
@pytest.mark.parametrize("name", ["k10-seed1", "k50", "k2"])
def test_agrees_with_tiny_blocks_and_frequent_merges(name, path, monkeypatch):
    # Exercise the streaming candidate merges (normally one merge per million candidates) on both the
    # sparse (gather a row's active cells) and the dense (all K margins) path.
    monkeypatch.setattr(ln, "_BLOCK_ELEMENTS", 64)
    monkeypatch.setattr(ln, "_MERGE_CANDIDATES", 50)
    monkeypatch.setattr(ln, "_SPARSE_FACTOR", 0 if path == "sparse" else 10**9)
    case = dict(CASES[name])
    true, p = make_probabilities(case["n"], case["k"], seed=case["seed"], boost=case["boost"])
    labels = flip_symmetric(true, case["k"], case["rate"], seed=case["seed"])
    result = estimate_label_noise(labels, p, n_classes=case["k"], chunk_rows=500)
    assert_agrees(result, reference(labels, p))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_when_margins_tie_at_the_pruning_boundary(seed, monkeypatch):
    # Coarsely quantised probabilities make many margins equal; ties straddling a cell's cut-off are
    # broken by reproducing the reference's sort (an extra pass), which must then happen.
    true, p = make_probabilities(3000, 4, seed=30 + seed, boost=0.7)
    labels = flip_symmetric(true, 4, 0.3, seed=seed)
    q = (np.round(p * 10) / 10).astype(np.float32)
    calls = []
    monkeypatch.setattr(ln, "_MERGE_CANDIDATES", 100)
    original = ln._resolve_ties
    monkeypatch.setattr(ln, "_resolve_ties", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    result = estimate_label_noise(labels, q, n_classes=4, chunk_rows=250)
    assert calls
    assert_agrees(result, reference(labels, q))


def test_normalized_margin_scores_and_ranking_match_cleanlab():
    true, p = make_probabilities(3000, 6, seed=13, boost=2.0)
    labels = flip_symmetric(true, 6, 0.15, seed=13)
    result = estimate_label_noise(labels, p, n_classes=6, score_method="normalized_margin", chunk_rows=400)
    expected = cleanlab_rank.get_label_quality_scores(labels, p, method="normalized_margin")
    np.testing.assert_array_equal(result.label_score, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranking = cleanlab_filter.find_label_issues(labels, p, n_jobs=1, return_indices_ranked_by="normalized_margin")
    np.testing.assert_array_equal(result.ranking, ranking)
    assert result.label_score.min() >= 0 and result.label_score.max() <= 1


# ----------------------------------------------------------------------------------- streaming

def test_chunked_equals_in_memory(tmp_path):
    true, p = make_probabilities(2500, 7, seed=14, boost=2.0)
    labels = flip_symmetric(true, 7, 0.15, seed=14)
    whole = estimate_label_noise(labels, p, n_classes=7, chunk_rows=10**6)
    path = tmp_path / "probabilities.npy"
    np.save(path, p)
    sources = [array_chunk_source(p, chunk_rows=1), array_chunk_source(p, chunk_rows=333),
               npy_chunk_source(path, chunk_rows=256), lambda: iter([p[:1000], p[1000:1001], p[1001:]])]
    for source in sources:
        streamed = estimate_label_noise(labels, source, n_classes=7)
        np.testing.assert_array_equal(streamed.is_label_issue, whole.is_label_issue)
        np.testing.assert_array_equal(streamed.ranking, whole.ranking)
        np.testing.assert_array_equal(streamed.confident_joint, whole.confident_joint)
        np.testing.assert_array_equal(streamed.label_score, whole.label_score)
        assert streamed.noise_rate == whole.noise_rate


def test_result_fields_are_consistent():
    true, p = make_probabilities(2000, 5, seed=15, boost=2.0)
    labels = flip_symmetric(true, 5, 0.2, seed=15)
    result = estimate_label_noise(labels, p, n_classes=5)
    flagged = result.is_label_issue
    assert np.all(result.suggested_label[flagged] != labels[flagged])
    np.testing.assert_array_equal(result.suggested_label, p.argmax(axis=1))
    assert np.all(np.diff(result.label_score[result.ranking]) >= 0)
    np.testing.assert_array_equal(np.sort(result.ranking), np.flatnonzero(flagged))
    np.testing.assert_allclose(result.joint.sum(), 1.0)
    np.testing.assert_array_equal(result.confident_joint.sum(axis=1), np.bincount(labels, minlength=5))
    assert result.noise_rate == pytest.approx(1 - np.trace(result.joint))
    for row in result.per_class:
        assert row.n == (labels == row.class_index).sum()
        assert row.n_label_issues == flagged[labels == row.class_index].sum()
        assert row.ci_low <= row.noise_rate <= row.ci_high
        assert row.noise_rate == pytest.approx(1 - result.joint[row.class_index, row.class_index]
                                               / result.joint[row.class_index].sum())


def test_to_dict_is_json_safe():
    true, p = make_probabilities(500, 3, seed=16)
    labels = flip_symmetric(true, 3, 0.1, seed=16)
    result = estimate_label_noise(labels, p, n_classes=3)
    summary = result.to_dict(["cat", "dog", "bird"], source="predictions file")
    text = json.dumps(summary, allow_nan=False)
    back = json.loads(text)
    assert back["method"] == "confident_learning"
    assert back["score_method"] == "self_confidence"
    assert back["source"] == "predictions file"
    assert back["label_disagreement_rate_ci_method"] == "wilson"
    assert "noise_rate" not in back  # one name, one number (issue 13)
    assert back["label_disagreement_rate"] == pytest.approx(result.n_label_issues / 500)
    assert [row["class"] for row in back["per_class"]] == ["cat", "dog", "bird"]
    assert np.array(back["joint"]).shape == (3, 3)
    assert back["n_label_issues"] == result.n_label_issues
    with pytest.raises(ValueError):
        result.to_dict(["only-one"])


def test_image_columns():
    true, p = make_probabilities(400, 3, seed=18, boost=1.5)
    labels = flip_symmetric(true, 3, 0.2, seed=18)
    result = estimate_label_noise(labels, p, n_classes=3)
    frame = result.image_columns(["cat", "dog", "bird"])
    assert list(frame.columns) == ["label_score", "is_label_issue", "suggested_label"]
    assert len(frame) == 400 and frame["is_label_issue"].dtype == bool
    np.testing.assert_array_equal(frame["is_label_issue"].to_numpy(), result.is_label_issue)
    assert frame["suggested_label"].iloc[0] == ["cat", "dog", "bird"][p[0].argmax()]
    assert frame["label_score"].between(0, 1).all()


# ----------------------------------------------------------------------------------- bad inputs

def _probabilities():
    return make_probabilities(50, 3, seed=17)


def test_label_out_of_range():
    true, p = _probabilities()
    labels = true.copy()
    labels[12] = 3
    with pytest.raises(InputError) as info:
        estimate_label_noise(labels, p, n_classes=3)
    assert str(info.value) == ln.ERROR_LABEL_RANGE.format(row=12, value=3, max_index=2, n_classes=3)
    assert info.value.row == 12
    labels[12] = -1
    with pytest.raises(InputError, match="row 12 has class index -1"):
        estimate_label_noise(labels, p, n_classes=3)


def test_labels_must_be_integers():
    true, p = _probabilities()
    with pytest.raises(InputError) as info:
        estimate_label_noise(true.astype(float), p, n_classes=3)
    assert str(info.value) == ln.ERROR_LABELS_DTYPE.format(dtype=np.dtype(float))


def test_nan_row():
    true, p = _probabilities()
    p[20, 1] = np.nan
    with pytest.raises(InputError) as info:
        estimate_label_noise(true, p, n_classes=3, chunk_rows=16)
    assert str(info.value) == ln.ERROR_PROBABILITIES_NOT_FINITE.format(row=20)


def test_logits_are_rejected():
    true, p = _probabilities()
    logits = np.log(p) * 3
    with pytest.raises(InputError) as info:
        estimate_label_noise(true, logits, n_classes=3)
    assert "pass probabilities, not logits" in str(info.value)
    assert str(info.value).startswith("probabilities: row 0 has values outside [0, 1]")


def test_row_count_mismatch():
    true, p = _probabilities()
    with pytest.raises(InputError) as info:
        estimate_label_noise(true[:-1], p, n_classes=3)
    assert str(info.value) == ln.ERROR_PROBABILITIES_ROWS.format(found="more than 49", expected=49)
    with pytest.raises(InputError) as info:
        estimate_label_noise(np.concatenate([true, [0]]), p, n_classes=3)
    assert str(info.value) == ln.ERROR_PROBABILITIES_ROWS.format(found=50, expected=51)


def test_column_count_mismatch():
    true, p = _probabilities()
    with pytest.raises(InputError) as info:
        estimate_label_noise(true, p, n_classes=4)
    assert str(info.value) == ln.ERROR_PROBABILITIES_COLUMNS.format(found=3, n_classes=4)


def test_bad_parameters():
    true, p = _probabilities()
    with pytest.raises(InputError) as info:
        estimate_label_noise(true, p, n_classes=1)
    assert str(info.value) == ln.ERROR_N_CLASSES.format(value=1)
    with pytest.raises(InputError) as info:
        estimate_label_noise(true, p, n_classes=3, score_method="entropy")
    assert str(info.value) == ln.ERROR_SCORE_METHOD.format(value="entropy")
    with pytest.raises(InputError) as info:
        estimate_label_noise(true, p, n_classes=3, confidence_level=1.5)
    assert str(info.value) == ln.ERROR_CONFIDENCE_LEVEL.format(value=1.5)
    with pytest.raises(InputError) as info:
        estimate_label_noise(true, [[0.5, 0.5]], n_classes=3)
    assert str(info.value) == ln.ERROR_PROBABILITIES_TYPE.format(kind="list")
    with pytest.raises(InputError) as info:
        estimate_label_noise(true.reshape(5, 10), p, n_classes=3)
    assert str(info.value) == ln.ERROR_LABELS_SHAPE.format(shape=(5, 10))


def test_source_that_changes_between_passes():
    true, p = _probabilities()
    calls = []

    def source():
        calls.append(1)
        return iter([p if len(calls) == 1 else p[::-1].copy()])

    with pytest.raises(InputError) as info:
        estimate_label_noise(true, source, n_classes=3)
    assert str(info.value).startswith(ln.ERROR_PASSES_DIFFER.format(pass_number=2, row=0)[:40])


# ----------------------------------------------------------------------------------- groups

def test_noise_rate_by_group_flags_the_noisy_group():
    rng = np.random.default_rng(20)
    n = 4000
    labels = rng.integers(0, 2, n)
    group = np.where(rng.random(n) < 0.5, "a", "b").astype(object)
    group[:20] = "tiny"
    # Group b: 30 % flagged, group a: 5 %.
    flags = np.where(group == "b", rng.random(n) < 0.30, rng.random(n) < 0.05)
    frame = estimate_disagreement_rate_by_group(flags, labels, {"site": pd.Series(group)}, classes=["x", "y"],
                                                min_group_size=30, max_ci_width=0.5)
    assert list(frame.columns) == ["attribute", "group", "class", "n", "metric", "value", "ci_low", "ci_high",
                                   "insufficient_evidence", "verdict", "scope", "rest_value", "p_value",
                                   "p_adjusted"]
    assert set(frame["metric"]) == {"label_disagreement_rate"}
    overall = frame[(frame["attribute"] == "all") & (frame["class"] == "")].iloc[0]
    assert overall["n"] == n and overall["value"] == pytest.approx(flags.mean()) and overall["verdict"] == ""
    rows = frame[(frame["attribute"] == "site") & (frame["class"] == "")].set_index("group")
    assert rows.loc["b", "verdict"] == "worse_than_rest"
    assert rows.loc["a", "verdict"] == "no_evidence_of_gap"
    assert rows.loc["tiny", "verdict"] == "insufficient_data"
    assert bool(rows.loc["tiny", "insufficient_evidence"])
    assert rows.loc["b", "value"] == pytest.approx(flags[group == "b"].mean())
    assert rows.loc["b", "ci_low"] <= rows.loc["b", "value"] <= rows.loc["b", "ci_high"]
    per_class = frame[(frame["attribute"] == "site") & (frame["class"] == "y")].set_index("group")
    assert per_class.loc["b", "n"] == ((group == "b") & (labels == 1)).sum()
    assert per_class.loc["b", "verdict"] == "worse_than_rest"
    # insufficient_data exactly when insufficient_evidence
    assert ((frame["verdict"] == "insufficient_data") == frame["insufficient_evidence"]).all()


def test_noise_rate_by_group_wide_interval_is_insufficient():
    labels = np.zeros(40, dtype=int)
    flags = np.zeros(40, dtype=bool)
    flags[:5] = True
    group = pd.Series(["a"] * 35 + ["b"] * 5)
    frame = estimate_disagreement_rate_by_group(flags, labels, {"g": group}, classes=["c"], min_group_size=3,
                                                max_ci_width=0.3)
    row = frame[(frame["attribute"] == "g") & (frame["group"] == "b") & (frame["class"] == "")].iloc[0]
    assert row["insufficient_evidence"] and row["verdict"] == "insufficient_data"


def test_noise_rate_by_group_label_out_of_range():
    with pytest.raises(InputError) as info:
        estimate_disagreement_rate_by_group(np.zeros(3, bool), np.array([0, 2, 1]), {"g": pd.Series(["a"] * 3)},
                                              classes=["c", "d"])
    assert str(info.value) == ln.ERROR_LABEL_RANGE.format(row=1, value=2, max_index=1, n_classes=2)


def test_noise_rate_by_group_length_mismatch():
    with pytest.raises(InputError) as info:
        estimate_disagreement_rate_by_group(np.zeros(5, bool), np.zeros(5, int), {"g": pd.Series(["a"] * 4)},
                                              classes=["c"])
    assert str(info.value) == ln.ERROR_GROUP_LENGTH.format(attribute="g", found=4, expected=5)


def test_model_error_rate_rows_stand_beside_every_disagreement_row():
    """Known ground truth: group b's model is wrong on 40 % of images, group a's on 10 %; the error rows carry
    the same attribute/group/class/n as the disagreement rows and are never tested."""
    rng = np.random.default_rng(21)
    n = 2000
    labels = rng.integers(0, 2, n)
    group = np.where(np.arange(n) < n // 2, "a", "b").astype(object)
    wrong = np.where(group == "b", rng.random(n) < 0.40, rng.random(n) < 0.10)
    predicted = np.where(wrong, 1 - labels, labels)
    flags = wrong & (rng.random(n) < 0.5)  # flagged images are a subset of the model's errors
    frame = estimate_disagreement_rate_by_group(flags, labels, {"site": pd.Series(group)}, classes=["x", "y"],
                                                predicted=predicted, min_group_size=30, max_ci_width=0.5)
    assert set(frame["metric"]) == {ln.METRIC_NAME, ln.ERROR_METRIC_NAME}
    key = ["attribute", "group", "class", "n"]
    rates = frame[frame["metric"] == ln.METRIC_NAME][key].reset_index(drop=True)
    errors = frame[frame["metric"] == ln.ERROR_METRIC_NAME]
    assert errors[key].reset_index(drop=True).equals(rates)
    by_group = errors[(errors["attribute"] == "site") & (errors["class"] == "")].set_index("group")
    assert by_group.loc["a", "value"] == pytest.approx(wrong[group == "a"].mean())
    assert by_group.loc["b", "value"] == pytest.approx(wrong[group == "b"].mean())
    overall = errors[(errors["attribute"] == "all") & (errors["class"] == "")].iloc[0]
    assert overall["value"] == pytest.approx(wrong.mean())
    per_class = errors[(errors["attribute"] == "all") & (errors["class"] == "y")].iloc[0]
    assert per_class["value"] == pytest.approx(wrong[labels == 1].mean())
    assert (errors["ci_low"] <= errors["value"]).all() and (errors["value"] <= errors["ci_high"]).all()
    assert errors["p_value"].isna().all() and set(errors["verdict"]) <= {"", "insufficient_data"}


def test_result_rates_have_one_definition():
    true, p = make_probabilities(600, 3, seed=22)
    labels = flip_symmetric(true, 3, 0.1, seed=22)
    result = estimate_label_noise(labels, p, n_classes=3)
    assert result.label_disagreement_rate == result.n_label_issues / 600
    assert result.model_error_rate == pytest.approx((p.argmax(axis=1) != labels).mean())
    summary = result.to_dict(["a", "b", "c"])
    for row, entry in zip(result.per_class, summary["per_class"]):
        assert entry["label_disagreement_rate"] == pytest.approx(row.n_label_issues / row.n)
        assert entry["model_error_rate"] == pytest.approx((p.argmax(axis=1) != labels)[labels == row.class_index].mean())
