"""Issue 13, item 1: two names for two things. A 1.x audit folder (metric ``estimated_noise_rate``, ``noise_rate``
in audit.json, "X % of labels are wrong") opens through the one reader with the current names; the label
sentence is the same everywhere and never says labels are wrong."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from audit.findings import (FINDING_DISAGREEMENT, FINDING_DISAGREEMENT_ERROR, FINDING_DISAGREEMENT_NO_ERROR,
                            disagreement_sentence)
from audit.folder import load_audit_folder, load_audit_json, load_group_metrics
from audit.migrate import migrate_audit, migrate_group_metrics
from audit.schema import SCHEMA_VERSION, validate_audit
from tests.audit_builder import build_audit_folder

WRONG_LABELS = re.compile(r"%\s+of\s+(the\s+)?labels\s+are\s+wrong")


@pytest.fixture(scope="module")
def old_folder(tmp_path_factory):
    return build_audit_folder(tmp_path_factory.mktemp("migrate") / "old", schema="1.0")


def test_old_folder_opens_with_the_new_names(old_folder):
    raw = json.loads((old_folder / "audit.json").read_text())
    assert raw["schema_version"] == "1.0" and "noise_rate" in raw["analyses"]["label_noise"]
    data = load_audit_folder(old_folder)
    audit, gm = data.audit, data.group_metrics
    assert audit["schema_version"] == SCHEMA_VERSION == "2.0" and audit["migrated_from"] == "1.0"
    validate_audit(audit)
    assert "estimated_noise_rate" not in set(gm["metric"]) and "estimated_noise_rate" not in audit["metrics"]
    assert {"label_disagreement_rate", "model_error_rate"} <= set(audit["metrics"])
    section = audit["analyses"]["label_noise"]
    assert "noise_rate" not in section
    images = data.images
    assert section["label_disagreement_rate"] == pytest.approx(images["is_label_issue"].mean())
    correct = (images["label"] == images["prediction"]).mean()
    assert section["model_error_rate"] == pytest.approx(1 - correct)
    for row in section["per_class"]:
        mine = images[images["label"] == row["class"]]
        assert row["label_disagreement_rate"] == pytest.approx(mine["is_label_issue"].mean())
        assert row["ci_low"] <= row["label_disagreement_rate"] <= row["ci_high"]
    # the file on disk is never rewritten
    assert json.loads((old_folder / "audit.json").read_text()) == raw


def test_old_table_gets_model_error_rows_beside_every_rate_it_can(old_folder):
    gm = load_group_metrics(old_folder)
    key = ["attribute", "group", "class"]
    rates = gm[gm["metric"] == "label_disagreement_rate"].set_index(key)
    errors = gm[gm["metric"] == "model_error_rate"].set_index(key)
    accuracy = gm[gm["metric"] == "accuracy"].set_index(key)
    recall = gm[gm["metric"] == "recall"].set_index(key)
    assert len(errors) == len(rates)  # the builder writes accuracy/recall for every rate row
    for index, row in errors.iterrows():
        source = accuracy.loc[index] if index[2] == "" else recall.loc[index]
        assert row["value"] == pytest.approx(1 - source["value"])
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((1 - source["ci_high"], 1 - source["ci_low"]))
        assert row["n"] == rates.loc[index, "n"] and row["verdict"] in ("", "insufficient_data")
        assert row["scope"] == "" and np.isnan(row["p_value"])


def test_old_label_finding_is_said_in_the_new_words(old_folder):
    audit = load_audit_json(old_folder)
    texts = audit["findings"] + [d["text"] for d in audit["finding_details"]]
    assert not any(WRONG_LABELS.search(t) for t in texts)
    sentence = disagreement_sentence(audit["analyses"]["label_noise"])
    assert audit["findings"][0] == sentence
    assert "a screening figure, not a label-error rate" in sentence


def test_migration_is_idempotent_and_leaves_current_audits_alone(old_folder):
    audit = load_audit_json(old_folder)
    assert migrate_audit(audit) is audit
    gm = load_group_metrics(old_folder)
    assert migrate_group_metrics(gm) is gm


def test_gate_and_report_read_an_old_folder(old_folder, tmp_path):
    from audit.cli import main
    from audit.report.render import render_report

    policy = tmp_path / "policy.toml"
    policy.write_text("[label_noise]\nbasis = \"model\"\nmax_rate = 0.9\nmax_class_rate = 0.9\n")
    assert main(["gate", str(old_folder), "--policy", str(policy), "--json", str(tmp_path / "v.json")]) == 0
    checks = json.loads((tmp_path / "v.json").read_text())["checks"]
    assert [c["name"] for c in checks] == ["label_noise.max_rate", "label_noise.max_class_rate"]
    assert all(c["status"] == "PASS" for c in checks)
    text = render_report(old_folder, format="md", out=tmp_path / "r.md").read_text()
    assert "Label disagreement rate" in text and not WRONG_LABELS.search(text)


def test_disagreement_sentence_exact_text():
    section = {"label_disagreement_rate": 0.126, "label_disagreement_rate_ci": [0.119, 0.132],
               "n_label_issues": 1260, "model_error_rate": 0.19, "source": "model"}
    assert disagreement_sentence(section) == (
        "The model confidently disagrees with the given label on 12.6 % of images (a screening figure, not a "
        "label-error rate; 95 % CI 11.9 %-13.2 %; 1,260 images flagged). The model's error rate on the same "
        "images is 19.0 %: where it is wrong the label is flagged too, so only a review of a random sample can "
        "tell how many labels are wrong.")
    probe = dict(section, source="probe", model_error_rate=None, label_disagreement_rate_ci=None)
    assert disagreement_sentence(probe) == (
        FINDING_DISAGREEMENT.format(subject="A probe on the model's embeddings", rate="12.6 %", interval="",
                                    n_flagged="1,260")
        + FINDING_DISAGREEMENT_NO_ERROR.format(possessive="The probe's"))
    combined = dict(section, source="combined")
    assert disagreement_sentence(combined).endswith(
        FINDING_DISAGREEMENT_ERROR.format(possessive="The combination's", error_rate="19.0 %", pronoun="it"))
    assert disagreement_sentence({"n_label_issues": 3}) is None


def test_newer_major_version_is_not_migrated():
    future = {"schema_version": "3.0", "metrics": {"estimated_noise_rate": {}}}
    assert migrate_audit(future) is future


def test_table_without_old_rows_is_unchanged():
    frame = pd.DataFrame({"attribute": ["all"], "group": ["all"], "class": [""], "n": [3], "metric": ["accuracy"],
                          "value": [1.0], "ci_low": [0.4], "ci_high": [1.0], "insufficient_evidence": [True],
                          "verdict": ["insufficient_data"]})
    assert migrate_group_metrics(frame) is frame


def test_a_disagreement_lead_says_the_error_rate_beside_it():
    from audit.findings import LEAD_DISAGREEMENT_ERROR, _lead_findings

    base = {"attribute": "site", "group": "b", "class": "", "n": 400, "ci_low": 0.1, "ci_high": 0.2,
            "insufficient_evidence": False}
    frame = pd.DataFrame([
        dict(base, metric="label_disagreement_rate", value=0.15, verdict="worse_than_rest", scope="exploratory",
             rest_value=0.05, p_value=0.0001, p_adjusted=0.001),
        dict(base, metric="model_error_rate", value=0.3, verdict="", scope="", rest_value=np.nan, p_value=np.nan,
             p_adjusted=np.nan)])
    leads = _lead_findings(frame, {"families": {"exploratory": {"n_tests": 7}}})
    assert [lead["text"] for lead in leads] == [
        "Lead (exploratory): the model-label disagreement rate is 15.0 % for site = b (n = 400) against 5.0 % for "
        "the rest of the data (higher)" + LEAD_DISAGREEMENT_ERROR.format(error_rate="30.0 %") + "; adjusted p = "
        "0.001 (false discovery rate over 7 exploratory tests). Check it on new data before acting on it."]


def test_compare_reads_an_old_and_a_new_audit_with_the_same_names(old_folder, tmp_path):
    from audit.compare.folder import compare_folders

    new = build_audit_folder(tmp_path / "new", seed=1)
    comparison = compare_folders(old_folder, new, n_bootstrap=50).comparison
    label_rows = comparison["labels"]["rows"]
    assert label_rows and {row["metric"] for row in label_rows} <= {"label_disagreement_rate"}
    assert comparison["old"]["schema_version"] == "2.0"
