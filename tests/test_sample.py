"""The built-in sample (FairFace faces + the gender-v1 ONNX model) audits end to end, and every analysis
finds something to show."""
import json

import pandas as pd
import pytest

from tests.helpers import REPO, check_folder, run_cli

SAMPLE = REPO / "sample_data"


@pytest.fixture(scope="module")
def sample_audit(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    done = run_cli("run", "--data", str(SAMPLE / "manifest.csv"), "--model", str(SAMPLE / "model.onnx"), "--out",
                   str(out), "--quiet", "--cache-dir", str(out / "cache"))
    assert done.returncode == 0, done.stderr
    return out, json.loads((out / "audit.json").read_text()), done.stdout


def test_sample_folder_follows_contract(sample_audit):
    out, audit, _ = sample_audit
    code, output = check_folder(out)
    assert code == 0, output
    assert audit["errors"] == []
    assert audit["dataset"]["n_images"] == 540 and audit["classes"] == ["female", "male"]
    assert set(audit["dataset"]["group_attributes"]) == {"age", "race", "service_test"}


def test_sample_every_analysis_has_something_to_show(sample_audit):
    out, audit, stdout = sample_audit
    sections = audit["analyses"]
    for name in ("class_distribution", "attribute_distribution", "associations", "label_noise",
                 "group_performance", "weak_slices"):
        assert name in sections, name
    assert 0 < sections["label_noise"]["n_label_issues"] < 540
    groups = pd.read_parquet(out / "group_metrics.parquet")
    race = groups[(groups.attribute == "race") & (groups.metric == "accuracy")].set_index("group")
    # The gap the sample exists to show: computed, not asserted to a constant beyond its direction.
    assert race.loc["Black", "value"] < race.loc["White", "value"]
    assert (groups.verdict == "worse_than_rest").any()
    # The run's summary lists the headline findings (the first six) as written to audit.json.
    assert audit["findings"]
    for finding in audit["findings"][:6]:
        assert f"  - {finding}" in stdout.splitlines()


def test_second_run_uses_the_inference_cache(sample_audit, tmp_path):
    out, first, _ = sample_audit
    done = run_cli("run", "--data", str(SAMPLE / "manifest.csv"), "--model", str(SAMPLE / "model.onnx"), "--out",
                   str(tmp_path), "--quiet", "--cache-dir", str(out / "cache"))
    assert done.returncode == 0, done.stderr
    second = json.loads((tmp_path / "audit.json").read_text())
    assert first["model"]["from_cache"] is False and second["model"]["from_cache"] is True
    assert second["analyses"]["label_noise"]["label_disagreement_rate"] == first["analyses"]["label_noise"]["label_disagreement_rate"]
