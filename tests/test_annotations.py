"""audit.analysis.annotations: consensus, annotator accuracy and verdicts, Krippendorff's alpha (known truth)."""
import itertools

import numpy as np
import pandas as pd
import pytest

from audit.analysis import annotations as A


def simulate(*, n_items=2000, k=4, accuracies=(0.8,) * 8, per_item=3, seed=0, hard_share=0.0,
             hard_accuracy=0.4, hard_only=(), items_per_annotator=None):
    """Synthetic crowd: true class uniform; annotator j right with its accuracy (``hard_accuracy`` for everyone
    on hard images), else a uniformly random other class. ``hard_only`` annotators label only hard images."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n_items)
    hard = rng.random(n_items) < hard_share
    j_count = len(accuracies)
    item, annotator, label = [], [], []
    regular = [j for j in range(j_count) if j not in hard_only]
    for i in range(n_items):
        pool = list(range(j_count)) if hard[i] else regular
        chosen = rng.choice(pool, size=per_item, replace=False)
        for j in chosen:
            p = hard_accuracy if hard[i] else accuracies[j]
            if rng.random() < p:
                given = truth[i]
            else:
                given = (truth[i] + rng.integers(1, k)) % k
            item.append(i), annotator.append(j), label.append(given)
    annotations = A.Annotations(item=np.array(item), annotator=np.array(annotator), label=np.array(label),
                                n_items=n_items, annotators=tuple(f"a{j}" for j in range(j_count)), n_classes=k)
    return annotations, truth, hard


def reference_alpha(units):
    """Krippendorff's alpha (nominal) by its definition: coincidence matrix from every ordered pair."""
    values = sorted({v for unit in units for v in unit})
    index = {v: i for i, v in enumerate(values)}
    o = np.zeros((len(values), len(values)))
    for unit in units:
        if len(unit) < 2:
            continue
        for a, b in itertools.permutations(range(len(unit)), 2):
            o[index[unit[a]], index[unit[b]]] += 1.0 / (len(unit) - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    observed = o.sum() - np.trace(o)
    expected = (n * n - (n_c ** 2).sum()) / (n - 1)
    return 1 - observed / expected


def votes_of(units, k):
    votes = np.zeros((len(units), k))
    for i, unit in enumerate(units):
        for v in unit:
            votes[i, v] += 1
    return votes


def test_alpha_matches_definition_on_random_units():
    rng = np.random.default_rng(1)
    units = [list(rng.integers(0, 4, rng.integers(1, 6))) for _ in range(60)]
    assert A.compute_krippendorff_alpha(votes_of(units, 4)) == pytest.approx(reference_alpha(units), abs=1e-12)


def test_alpha_known_values():
    # perfect agreement on varied classes: 1; Krippendorff's textbook example (nominal, 4 coders, 12 units,
    # missing values) gives 0.743
    assert A.compute_krippendorff_alpha(votes_of([[0, 0], [1, 1, 1], [2, 2]], 3)) == pytest.approx(1.0)
    # Krippendorff (2011) "Computing Krippendorff's alpha-reliability": 4 observers, 12 units, values 1..5
    # (mapped to 0..4), missing values; nominal alpha 0.743
    units = [[0, 0, 0], [1, 1, 2, 1], [2, 2, 2, 2], [2, 2, 2, 2], [1, 1, 1, 1], [0, 1, 2, 3], [3, 3, 3, 3],
             [0, 0, 1, 0], [1, 1, 1, 1], [4, 4, 4], [0, 0], [2]]
    assert A.compute_krippendorff_alpha(votes_of(units, 5)) == pytest.approx(reference_alpha(units), abs=1e-12)
    assert round(A.compute_krippendorff_alpha(votes_of(units, 5)), 3) == 0.743


def test_alpha_bootstrap_interval_covers_and_subset_test():
    annotations, truth, _ = simulate(seed=2)
    votes = A.compute_vote_counts(annotations.item, annotations.label, n_items=annotations.n_items, n_classes=4)
    half = np.arange(annotations.n_items) < 1000
    result = A.bootstrap_alpha(votes, {"all": np.ones(annotations.n_items, bool), "half": half}, n_bootstrap=400,
                               seed=0, confidence_level=0.95)
    assert result["all"]["ci_low"] < result["all"]["value"] < result["all"]["ci_high"]
    assert result["all"]["value"] == pytest.approx(A.compute_krippendorff_alpha(votes))
    assert result["half"]["value"] == pytest.approx(A.compute_krippendorff_alpha(votes[half]))
    assert result["half"]["p_value"] > 0.01  # a random half agrees as well as the rest


def test_majority_vote_ties_recorded_and_broken_by_probabilities():
    votes = np.array([[2, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=float)
    probabilities = np.array([[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    label, tie = A.estimate_majority_vote(votes, probabilities=probabilities)
    assert label.tolist() == [0, 1, -1]
    assert tie.tolist() == [False, True, False]


def test_dawid_skene_beats_majority_with_a_careless_annotator():
    accuracies = (0.85,) * 6 + (0.25, 0.25)  # two annotators guess (k = 4)
    annotations, truth, _ = simulate(accuracies=accuracies, seed=3)
    majority = A.estimate_consensus(annotations, method="majority")
    skene = A.estimate_consensus(annotations, method="dawid_skene")
    assert np.mean(skene.label != truth) < np.mean(majority.label != truth) - 0.01
    assert majority.tie.sum() > 0
    # consensus_score is calibrated: the share right among images scored >= 0.9 is at least 0.9 - noise
    confident = skene.score >= 0.9
    assert np.mean(skene.label[confident] == truth[confident]) > 0.88


def test_crowdlab_uses_a_good_model():
    annotations, truth, _ = simulate(accuracies=(0.6,) * 8, seed=4)
    rng = np.random.default_rng(0)
    probabilities = np.full((annotations.n_items, 4), 0.1)
    right = rng.random(annotations.n_items) < 0.9
    predicted = np.where(right, truth, (truth + 1) % 4)
    probabilities[np.arange(annotations.n_items), predicted] = 0.7
    crowd = A.estimate_consensus(annotations, method="auto", probabilities=probabilities)
    skene = A.estimate_consensus(annotations, method="dawid_skene")
    assert crowd.method == "crowdlab"
    assert np.mean(crowd.label != truth) < np.mean(skene.label != truth) - 0.02
    with pytest.raises(ValueError, match="crowdlab needs model probabilities"):
        A.estimate_consensus(annotations, method="crowdlab")


def test_accuracy_intervals_cover_true_accuracy_in_simulation():
    covered, total = 0, 0
    for seed in range(4):
        accuracies = tuple(np.random.default_rng(seed).uniform(0.6, 0.95, 10))
        annotations, truth, _ = simulate(accuracies=accuracies, seed=10 + seed, n_items=1500)
        consensus = A.estimate_consensus(annotations, method="dawid_skene")
        accuracy, low, high = A.estimate_annotator_accuracy(annotations, consensus.posterior)
        right = np.bincount(annotations.annotator, weights=annotations.label == truth[annotations.item])
        true = right / np.bincount(annotations.annotator)
        covered += int(np.sum((low <= true) & (true <= high)))
        total += len(true)
    assert covered / total >= 0.9


def test_verdicts_find_a_random_annotator_and_spare_one_who_drew_hard_images():
    accuracies = (0.8,) * 9 + (0.25,)
    annotations, truth, hard = simulate(accuracies=accuracies + (0.8,), seed=5, n_items=3000, hard_share=0.1,
                                        hard_only=(10,))
    result = A.find_careless_annotators(annotations)
    verdict = dict(zip(annotations.annotators, result["verdict"]))
    assert verdict["a9"] == A.VERDICT_WORSE
    # a10 only saw hard images, where everybody is 40 % right: plain agreement is far lower than the others'...
    assert result["agreement"][10] < np.nanmedian(result["agreement"][:9]) - 0.2
    # ...but against co-annotators of the same images it is not worse
    assert verdict["a10"] == A.VERDICT_NO_GAP
    assert sum(v == A.VERDICT_WORSE for v in result["verdict"][:9]) == 0


def test_false_alarm_rate_at_nominal_level_under_the_null():
    flagged = 0
    for seed in range(10):
        annotations, _, _ = simulate(accuracies=(0.75,) * 20, seed=100 + seed, n_items=800, hard_share=0.3)
        result = A.find_careless_annotators(annotations)
        flagged += int(np.any(result["verdict"] == A.VERDICT_WORSE))
    assert flagged <= 2  # family-wise 5 %: at most 2 of 10 audits with any false alarm (P(>2) < 0.02)


def test_insufficient_data_for_annotators_with_few_shared_labels():
    annotations, _, _ = simulate(n_items=50, accuracies=(0.8,) * 8, seed=6)
    result = A.find_careless_annotators(annotations, min_labels=30)
    assert set(result["verdict"]) == {A.VERDICT_INSUFFICIENT}


def test_compute_annotation_audit_columns_groups_and_findings():
    annotations, truth, _ = simulate(accuracies=(0.85,) * 7 + (0.25,), seed=7, n_items=1500)
    rng = np.random.default_rng(0)
    groups = pd.DataFrame({"site": rng.choice(["north", "south"], annotations.n_items)})
    # make annotator a0 careless on "south" only
    south = groups["site"].to_numpy()[annotations.item] == "south"
    label = annotations.label.copy()
    target = (annotations.annotator == 0) & south
    label[target] = rng.integers(0, 4, target.sum())
    annotations = A.Annotations(item=annotations.item, annotator=annotations.annotator, label=label,
                                n_items=annotations.n_items, annotators=annotations.annotators, n_classes=4,
                                seconds=rng.uniform(1, 5, len(label)))
    audit = A.compute_annotation_audit(annotations, classes=["a", "b", "c", "d"], groups=groups, n_bootstrap=200)
    image = audit.per_image
    assert list(image.columns[:6]) == ["n_annotations", "consensus_label", "consensus_score", "annotation_agreement",
                                       "is_annotation_disagreement_issue", "annotation_disagreement_score"]
    assert image["n_annotations"].eq(3).all()
    assert image["annotation_disagreement_score"].between(0, 1).all()
    table = audit.annotators
    assert list(table.columns[:6]) == ["annotator", "n", "accuracy", "ci_low", "ci_high", "verdict"]
    assert table.loc[table["annotator"] == "a7", "verdict"].item() == A.VERDICT_WORSE
    assert (table["ci_low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["ci_high"]).all()
    assert table["median_seconds"].between(1, 5).all()
    rows = audit.group_metrics
    assert set(rows["metric"]) == {"annotation_agreement"}
    overall = rows[(rows["attribute"] == "all") & (rows["class"] == "")]
    assert len(overall) == 1 and overall["verdict"].item() == ""
    per_class = rows[(rows["attribute"] == "all") & (rows["class"] != "")]
    assert sorted(per_class["class"]) == ["a", "b", "c", "d"]
    a0_south = rows[(rows["attribute"] == "annotator & site") & (rows["group"] == "a0 & south")]
    a0_north = rows[(rows["attribute"] == "annotator & site") & (rows["group"] == "a0 & north")]
    assert a0_south["verdict"].item() == A.VERDICT_WORSE
    assert a0_north["verdict"].item() == A.VERDICT_NO_GAP
    assert audit.section["method"] == "dawid_skene"
    assert audit.section["annotators_indistinguishable"] is False
    assert any("less than chance" in f["text"] for f in audit.findings)


def test_indistinguishable_finding_when_annotators_are_alike():
    annotations, _, _ = simulate(accuracies=(0.8,) * 8, seed=8, n_items=1200)
    audit = A.compute_annotation_audit(annotations, classes=["a", "b", "c", "d"], n_bootstrap=100)
    assert audit.section["annotators_indistinguishable"] is True
    assert any("indistinguishable" in f["text"] for f in audit.findings)


def test_invalid_codes_and_method_are_rejected():
    with pytest.raises(ValueError, match="label codes must lie in 0..2"):
        A.Annotations(item=np.array([0]), annotator=np.array([0]), label=np.array([3]), n_items=1,
                      annotators=("x",), n_classes=3)
    annotations, _, _ = simulate(n_items=20)
    with pytest.raises(ValueError) as error:
        A.estimate_consensus(annotations, method="vote")
    assert str(error.value) == A.ERROR_METHOD.format(value="vote")
