"""The sample audited twice, the second time with the review-corrected labels of the first: the images
the comparison calls relabelled are exactly the applied corrections, and the model did not change."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.cli import main
from audit.compare.folder import load_comparison_folder
from audit.folder import load_audit_folder
from audit.reviews import corrected_labels, list_decisions, record_decision

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample_relabel")
    shutil.copytree(REPO / "sample_data" / "images", root / "images")
    shutil.copy(REPO / "sample_data" / "manifest.csv", root / "manifest.csv")
    old = root / "old"
    assert main(["run", "--data", str(root / "manifest.csv"), "--model", str(REPO / "sample_data" / "model.onnx"),
                 "--out", str(old), "--quiet", "--cache-dir", str(root / "cache")]) == 0
    images = load_audit_folder(old).images
    flagged = images[images["is_label_issue"]].head(20)
    for row in flagged.itertuples():
        record_decision(old, image_id=row.id, content_hash=row.content_hash, reviewer="ada", decision="label_wrong",
                        new_label=row.suggested_label, classes=["female", "male"])
    for row in images[~images["is_label_issue"]].head(8).itertuples():
        record_decision(old, image_id=row.id, content_hash=row.content_hash, reviewer="ada",
                        decision="label_correct")
    corrections = corrected_labels(images, list_decisions(old))
    applied = corrections[corrections["decision"] == "label_wrong"]
    manifest = pd.read_csv(root / "manifest.csv")
    new_label = dict(zip(applied["id"], applied["corrected_label"]))
    manifest["label"] = [new_label.get(p, label) for p, label in zip(manifest["path"], manifest["label"])]
    manifest.to_csv(root / "manifest_corrected.csv", index=False)
    new = root / "new"
    assert main(["run", "--data", str(root / "manifest_corrected.csv"), "--predictions",
                 str(old / "probabilities.npy"), "--out", str(new), "--quiet", "--no-cache"]) == 0
    out = root / "comparison"
    assert main(["compare", str(old), str(new), "--out", str(out), "--n-bootstrap", "100"]) == 0
    return load_comparison_folder(out), set(applied["id"])


def test_relabelled_images_are_exactly_the_applied_corrections(pair):
    folder, applied = pair
    changes = folder.image_changes
    relabelled = set(changes.loc[changes["change"] == "relabelled", "id_new"])
    assert len(applied) == 20 and relabelled == applied
    assert set(changes.loc[changes["correction_applied"], "id_new"]) == applied
    reviews = folder.comparison["data"]["reviews"]
    assert reviews == {**reviews, "has_reviews": True, "n_label_wrong": 20, "corrections_applied": 20,
                       "corrections_not_applied": 0, "relabels_without_review": 0, "relabels_against_review": 0}
    counts = folder.comparison["matching"]["counts"]
    assert counts == {"added": 0, "removed": 0, "unchanged": 520, "relabelled": 20, "replaced": 0}
    assert folder.comparison["matching"]["method"] == "content_hash+id"


def test_the_model_did_not_change(pair):
    folder, _ = pair
    # same predictions, labels held at NEW's: every paired difference is exactly zero
    rows = pd.DataFrame(folder.comparison["model"]["rows"])
    assert folder.comparison["model"]["method"] == "paired"
    # (calibration error to 1e-6: OLD's confidence came from the model, NEW's from the float32 probabilities file)
    assert np.allclose(rows["difference"].to_numpy(dtype=float), 0.0, atol=1e-6)
    assert "expected_calibration_error" in set(rows["metric"])
    assert set(rows["verdict"]) <= {"no_evidence_of_change", "insufficient_data"}
