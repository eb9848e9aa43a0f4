"""--annotations end to end: label-noise without a model, run auditing the consensus, the folder, gate, report."""
import json

import numpy as np
import pandas as pd
import pytest

from audit.io.annotations import ERROR_UNKNOWN_LABEL
from tests.helpers import check_folder, run_cli, write_manifest_dataset

CLASSES = ("cat", "dog", "fox")


def crowd(ids, truth, *, seed=0, careless="r9", n_annotators=8, per_image=3):
    """Long-form labels: annotators right 85 % of the time, ``careless`` guesses."""
    rng = np.random.default_rng(seed)
    names = [f"a{j}" for j in range(n_annotators)] + [careless]
    rows = []
    for image, label in zip(ids, truth):
        for who in rng.choice(names, size=per_image, replace=False):
            right = rng.random() < (0.34 if who == careless else 0.85)
            given = label if right else rng.choice([c for c in CLASSES if c != label])
            rows.append({"id": image, "annotator": who, "label": given, "seconds": f"{rng.uniform(2, 9):.1f}"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def labels_only(tmp_path_factory):
    folder = tmp_path_factory.mktemp("annotations")
    rng = np.random.default_rng(1)
    n = 600
    ids = [f"x{i}" for i in range(n)]
    truth = rng.choice(CLASSES, n)
    pd.DataFrame({"id": ids, "label": truth}).to_csv(folder / "labels.csv", index=False)
    pd.DataFrame({"id": ids, "region": rng.choice(["east", "west"], n)}).to_csv(folder / "attributes.csv",
                                                                                 index=False)
    annotations = crowd(ids, truth)
    bad = pd.DataFrame([{"id": "nobody", "annotator": "a1", "label": "cat", "seconds": ""},
                        {"id": "x0", "annotator": "", "label": "cat", "seconds": ""}])
    pd.concat([annotations, bad], ignore_index=True).to_csv(folder / "annotations.csv", index=False)
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    out = folder / "audit"
    done = run_cli("label-noise", "--labels", str(folder / "labels.csv"), "--annotations",
                   str(folder / "annotations.csv"), "--classes", str(folder / "classes.txt"), "--attributes",
                   str(folder / "attributes.csv"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return folder, out


def test_label_noise_with_annotations_alone(labels_only):
    folder, out = labels_only
    code, output = check_folder(out)
    assert code == 0, output
    audit = json.loads((out / "audit.json").read_text())
    section = audit["analyses"]["annotations"]
    assert section["method"] == "dawid_skene" and audit["model"] is None
    assert "label_noise" not in audit["analyses"]
    reasons = sorted(entry["reason"] for entry in audit["skipped"])
    assert len(reasons) == 2 and audit["dataset"]["n_skipped"] == 2
    images = pd.read_parquet(out / "images.parquet")
    for column in ("n_annotations", "consensus_label", "consensus_score", "annotation_agreement",
                   "is_annotation_disagreement_issue", "annotation_disagreement_score"):
        assert column in images.columns
    assert (images["n_annotations"] == 3).all()
    annotators = pd.read_parquet(out / "annotators.parquet")
    assert list(annotators.columns[:6]) == ["annotator", "n", "accuracy", "ci_low", "ci_high", "verdict"]
    verdict = dict(zip(annotators["annotator"], annotators["verdict"]))
    assert verdict.pop("r9") == "worse_than_rest"
    assert set(verdict.values()) == {"no_evidence_of_gap"}
    metrics = pd.read_parquet(out / "group_metrics.parquet")
    rows = metrics[metrics["metric"] == "annotation_agreement"]
    assert {"all", "region", "annotator & region"} <= set(rows["attribute"])
    assert any("r9" in finding for finding in audit["findings"])


def test_gate_and_report_on_annotations(labels_only, tmp_path):
    folder, out = labels_only
    policy = tmp_path / "policy.toml"
    policy.write_text("[annotation]\nmin_agreement = 0.2\nmax_annotator_error = 0.4\n")
    done = run_cli("gate", str(out), "--policy", str(policy), "--json", str(tmp_path / "verdict.json"))
    assert done.returncode == 1, done.stdout + done.stderr  # r9 is right a third of the time
    checks = json.loads((tmp_path / "verdict.json").read_text())["checks"]
    error_check = [c for c in checks if c["name"] == "annotation.max_annotator_error"][0]
    assert error_check["status"] == "FAIL" and error_check["group"] == "r9"
    assert [c["status"] for c in checks if c["name"] == "annotation.min_agreement"][0] == "PASS"
    done = run_cli("report", str(out), "--format", "md", "--out", str(tmp_path / "report.md"))
    assert done.returncode == 0, done.stderr
    assert "### Annotators" in (tmp_path / "report.md").read_text()
    done = run_cli("report", str(out), "--format", "html", "--out", str(tmp_path / "report.html"))
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "report.html").read_text()
    assert 'id="annotations"' in html and "r9" in html


def test_run_audits_the_consensus_and_rerun_removes_annotators(tmp_path):
    manifest = write_manifest_dataset(tmp_path / "data", n_per_cell=30, classes=CLASSES)
    table = pd.read_csv(manifest)
    truth = table["label"].to_numpy()
    annotations = crowd(table["id"].tolist()[:-5], truth[:-5], seed=2)  # the last five images unlabelled
    wide = annotations.pivot(index="id", columns="annotator", values="label").reset_index()
    wide.to_parquet(tmp_path / "wide.parquet", index=False)
    out = tmp_path / "audit"
    done = run_cli("run", "--data", str(manifest), "--annotations", str(tmp_path / "wide.parquet"),
                   "--label-column", "consensus", "--consensus", "majority", "--out", str(out), "--quiet",
                   "--no-cache", "--n-bootstrap", "100")
    assert done.returncode == 0, done.stderr
    code, output = check_folder(out)
    assert code == 0, output
    audit = json.loads((out / "audit.json").read_text())
    images = pd.read_parquet(out / "images.parquet")
    assert len(images) == len(table) - 5
    assert (images["label"] == images["consensus_label"]).all()
    assert "given_label" in images.columns
    assert sum("no annotation" in entry["reason"] for entry in audit["skipped"]) == 5
    assert audit["analyses"]["annotations"]["method"] == "majority"
    assert audit["analyses"]["annotations"]["layout"] == "wide"
    assert (out / "annotators.parquet").is_file()
    done = run_cli("run", "--data", str(manifest), "--out", str(out), "--quiet", "--no-cache", "--n-bootstrap",
                   "50")
    assert done.returncode == 0, done.stderr
    assert not (out / "annotators.parquet").exists()


def test_bad_label_is_one_line_naming_the_row(tmp_path):
    pd.DataFrame({"id": ["a", "b"], "label": ["cat", "dog"]}).to_csv(tmp_path / "labels.csv", index=False)
    path = tmp_path / "ann.csv"
    pd.DataFrame({"id": ["a", "b"], "annotator": ["x", "x"], "label": ["cat", "wolf"]}).to_csv(path, index=False)
    done = run_cli("label-noise", "--labels", str(tmp_path / "labels.csv"), "--annotations", str(path), "--out",
                   str(tmp_path / "out"))
    assert done.returncode == 2
    expected = ERROR_UNKNOWN_LABEL.format(path=str(path), where="row 1 (line 3)", label="wolf", classes="cat, dog")
    assert done.stderr.strip() == f"error: {expected}"
    assert not (tmp_path / "out" / "audit.json").exists()
    done = run_cli("label-noise", "--labels", str(tmp_path / "labels.csv"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "--predictions FILE" in done.stderr and "--annotations FILE" in done.stderr
