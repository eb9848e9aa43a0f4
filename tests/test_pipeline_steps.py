"""The step registry: a step added in one place contributes its section, group rows and image columns to
both adapters (``run`` and ``label-noise``), is timed once, and fails alone."""
import numpy as np
import pandas as pd
import pytest

from audit.config import AuditConfig
from audit.pipeline import run_audit, run_label_noise_audit
from audit.pipeline import steps as registry
from audit.pipeline.steps import GroupRowPass, Step, StepOutput
from tests.helpers import write_manifest_dataset, write_predictions_csv


def _site_share_step(context):
    """A toy step: the share of images with label equal to the first class, per site (known answer)."""
    first = context.label_codes == 0
    rows = []
    for group, values in pd.Series(first).groupby(context.groups["site"].to_numpy()):
        rows.append({"attribute": "site", "group": group, "class": "", "n": len(values), "metric": "toy_share",
                     "value": float(values.mean()), "ci_low": 0.0, "ci_high": 1.0,
                     "insufficient_evidence": False, "verdict": ""})
    return StepOutput(sections={"toy": {"n_first": int(first.sum())}}, group_rows=[pd.DataFrame(rows)],
                      image_columns={"toy_is_first": first},
                      metrics={"toy_share": {"higher_is_better": None, "description": "toy"}})


@pytest.fixture()
def data(tmp_path):
    manifest = write_manifest_dataset(tmp_path, n_per_cell=5)
    predictions = write_predictions_csv(manifest, tmp_path / "p.csv", accuracy_by_group={"a": 0.9, "b": 0.6})
    return manifest, predictions


def test_a_registered_step_contributes_section_rows_columns_and_metric(monkeypatch, data):
    manifest, predictions = data
    monkeypatch.setattr(registry, "STEPS", registry.STEPS + [Step("toy", _site_share_step, needs=("probabilities",))])
    result = run_audit(AuditConfig(data=str(manifest), predictions=str(predictions), n_bootstrap=50))
    images, table = result.images, result.group_metrics
    assert result.audit["analyses"]["toy"]["n_first"] == int((images["label"] == result.audit["classes"][0]).sum())
    np.testing.assert_array_equal(images["toy_is_first"].to_numpy(dtype=bool),
                                  (images["label"] == result.audit["classes"][0]).to_numpy())
    toy = table[table["metric"] == "toy_share"].set_index("group")
    for site in ("a", "b"):
        expected = (images.loc[images["site"] == site, "label"] == result.audit["classes"][0]).mean()
        assert toy.loc[site, "value"] == pytest.approx(expected)
    assert result.audit["metrics"]["toy_share"]["description"] == "toy"
    assert "toy" in result.audit["provenance"]["stage_durations_s"]


def test_a_step_whose_needs_are_missing_is_left_out(monkeypatch, data):
    manifest, _ = data
    monkeypatch.setattr(registry, "STEPS", registry.STEPS + [Step("toy", _site_share_step, needs=("probabilities",))])
    result = run_audit(AuditConfig(data=str(manifest)))  # no model, no predictions
    assert "toy" not in result.audit["analyses"]
    assert "toy" not in result.audit["provenance"]["stage_durations_s"]
    assert not result.audit["errors"]


def test_a_failing_step_and_a_failing_group_pass_are_error_entries(monkeypatch, data):
    manifest, predictions = data

    def broken(*args):
        raise RuntimeError("boom")

    def flag_all(table, context):
        return table.assign(extra=True)

    monkeypatch.setattr(registry, "STEPS", registry.STEPS + [Step("toy", broken)])
    monkeypatch.setattr(registry, "GROUP_ROW_PASSES", [GroupRowPass("bad_pass", broken),
                                                       GroupRowPass("flag", flag_all)])
    result = run_audit(AuditConfig(data=str(manifest), predictions=str(predictions), n_bootstrap=50))
    assert {"analysis": "toy", "message": "RuntimeError: boom"} in result.audit["errors"]
    assert {"analysis": "bad_pass", "message": "RuntimeError: boom"} in result.audit["errors"]
    assert result.group_metrics["extra"].all()  # the pass after the failing one still ran
    assert "group_performance" in result.audit["analyses"]


def test_stage_durations_count_each_stage_once(data):
    manifest, predictions = data
    result = run_audit(AuditConfig(data=str(manifest), predictions=str(predictions), n_bootstrap=50))
    provenance = result.audit["provenance"]
    stages = provenance["stage_durations_s"]
    assert {"load_dataset", "read_images", "model", "label_noise", "group_performance", "weak_slices"} <= set(stages)
    # stages do not overlap: their sum is at most the run's wall time (3 ms rounding per stage)
    assert sum(stages.values()) <= provenance["duration_s"] + 0.003 * len(stages)


def test_label_noise_adapter_runs_the_same_steps(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)
    probabilities = rng.dirichlet(np.ones(3), 120).astype(np.float32)
    np.save(tmp_path / "labels.npy", labels)
    np.save(tmp_path / "p.npy", probabilities)
    (tmp_path / "a.csv").write_text("id,site\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(120)))
    monkeypatch.setattr(registry, "STEPS", registry.STEPS + [Step("toy", _site_share_step, needs=("probabilities",))])
    result = run_label_noise_audit(labels_file=str(tmp_path / "labels.npy"), predictions_file=str(tmp_path / "p.npy"),
                                   attributes_file=str(tmp_path / "a.csv"))
    assert result.audit["kind"] == "label-noise"
    assert result.audit["analyses"]["toy"]["n_first"] == int((labels == 0).sum())
    assert set(result.group_metrics["metric"]) >= {"toy_share", "accuracy"}
    assert "data_quality" not in result.audit["analyses"]  # needs pixels
    assert result.audit["dataset"]["notes"] == []
    assert "stage_durations_s" in result.audit["provenance"]
    assert result.audit["analyses"]["label_noise"]["source"] == "predictions"
