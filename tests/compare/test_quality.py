"""Copies across versions: NEW's test split holding OLD's training images (exact copies under new ids, and
images moved from train to test) is found and reported first."""
from __future__ import annotations

import numpy as np

from audit.compare.core import compare_audits
from audit.compare.folder import load_pair
from tests.compare.builders import probabilities_for, write_audit


def test_new_test_split_holding_old_training_images(tmp_path):
    rng = np.random.default_rng(9)
    n = 200
    ids = [f"i{i}" for i in range(n)]
    labels = rng.integers(0, 2, n)
    split = np.where(np.arange(n) < 150, "train", "test")
    correct = rng.random(n) < 0.8
    write_audit(tmp_path / "old", ids=ids, labels=labels, probabilities=probabilities_for(labels, correct, 2, rng),
                classes=["a", "b"], attributes={}, content=ids, split=split)
    # NEW: the same images, plus 7 copies of training images i0..i6 added to test under new ids, and i10..i12
    # moved from train to test
    new_ids = ids + [f"copy{i}" for i in range(7)]
    new_content = ids + [f"i{i}" for i in range(7)]
    new_labels = np.concatenate([labels, labels[:7]])
    new_split = np.concatenate([split, ["test"] * 7])
    new_split[10:13] = "test"
    write_audit(tmp_path / "new", ids=new_ids, labels=new_labels,
                probabilities=probabilities_for(new_labels, np.concatenate([correct, correct[:7]]), 2, rng),
                classes=["a", "b"], attributes={}, content=new_content, split=new_split)
    result = compare_audits(*load_pair(tmp_path / "old", tmp_path / "new"), n_bootstrap=50)
    dup = result.comparison["quality"]["cross_version_duplicates"]
    assert dup["n_exact"] == 7 and dup["n_held_out_copies_of_train"] == 7 and dup["n_moved_train_to_held_out"] == 3
    assert result.comparison["matching"]["counts"]["added"] == 7
    changes = result.image_changes
    copies = changes[changes["cross_duplicate_kind"] == "exact"]
    assert sorted(copies["id_new"]) == [f"copy{i}" for i in range(7)]
    assert sorted(copies["cross_duplicate_of"]) == [f"i{i}" for i in range(7)]
    assert result.comparison["findings"][0].startswith("7 image(s) in NEW's held-out splits are copies of OLD")
