"""End-to-end: a generated data set with known group accuracies through run_audit and the writer."""
import json

import numpy as np
import pandas as pd
import pytest

from audit.config import AuditConfig
from audit.pipeline import run_audit
from audit.folder import write_audit_folder
from audit.schema import validate_audit
from tests.helpers import check_folder, write_manifest_dataset, write_predictions_csv


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    manifest = write_manifest_dataset(folder, n_per_cell=60)
    predictions = write_predictions_csv(manifest, folder / "predictions.csv", accuracy_by_group={"a": 0.95, "b": 0.6})
    config = AuditConfig(data=str(manifest), predictions=str(predictions), n_bootstrap=200)
    result = run_audit(config)
    out = tmp_path_factory.mktemp("audit")
    write_audit_folder(out, audit=result.audit, images=result.images, group_metrics=result.group_metrics,
                       probabilities=result.probabilities)
    return result, out, manifest


def test_written_folder_follows_the_contract(audited):
    result, out, _ = audited
    code, output = check_folder(out)
    assert code == 0, output
    validate_audit(json.loads((out / "audit.json").read_text()))
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_group_accuracy_matches_the_images_table_and_flags_the_weak_group(audited):
    result, _, _ = audited
    images, table = result.images, result.group_metrics
    correct = images["label"] == images["prediction"]
    rows = table[(table["metric"] == "accuracy") & (table["attribute"] == "site")].set_index("group")
    for group in ("a", "b"):
        assert rows.loc[group, "value"] == pytest.approx(correct[images["site"] == group].mean(), abs=1e-12)
    assert rows.loc["b", "verdict"] == "worse_than_rest"
    assert rows.loc["a", "verdict"] == "no_evidence_of_gap"
    assert any("site = b" in finding for finding in result.audit["findings"])


def test_pixel_attributes_are_groups_and_separate_dark_images(audited):
    result, _, _ = audited
    images = result.images
    assert {"image_brightness", "image_brightness_group", "image_sharpness_group"} <= set(images.columns)
    assert images.loc[images["site"] == "b", "image_brightness"].mean() < images.loc[
        images["site"] == "a", "image_brightness"].mean()
    assert "image_brightness_group" in result.audit["dataset"]["pixel_attributes"]
    # constant pixel attributes (every image is 24 px wide) are described but not compared
    assert "image_width_group" in result.audit["dataset"]["constant_attributes"]


def test_class_counts_in_audit_equal_value_counts(audited):
    result, _, manifest = audited
    expected = pd.read_csv(manifest)["label"].value_counts().to_dict()
    assert result.audit["analyses"]["class_distribution"]["counts"] == expected


def test_rerun_keeps_other_files_and_replaces_contract_files(audited, tmp_path):
    result, _, _ = audited
    (tmp_path / "reviews.sqlite").write_bytes(b"keep me")
    (tmp_path / "probabilities.npy").write_bytes(b"stale")
    write_audit_folder(tmp_path, audit=result.audit, images=result.images, group_metrics=result.group_metrics,
                       probabilities=None)
    assert (tmp_path / "reviews.sqlite").read_bytes() == b"keep me"
    assert not (tmp_path / "probabilities.npy").exists()


def test_corrupt_and_missing_images_are_skipped_and_counted(tmp_path):
    manifest = write_manifest_dataset(tmp_path, n_per_cell=5)
    (tmp_path / "images" / "img_0000.png").write_bytes(b"")  # zero bytes
    (tmp_path / "images" / "img_0001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # truncated
    (tmp_path / "images" / "img_0002.png").unlink()
    result = run_audit(AuditConfig(data=str(manifest)))
    skipped = result.audit["skipped"]
    assert len(skipped) == 3 and result.audit["dataset"]["n_skipped"] == 3
    assert {s["row"] for s in skipped} == {0, 1, 2}
    assert len(result.images) == 17
    assert any("skipped" in f for f in result.audit["findings"])


def test_failing_analysis_becomes_an_error_entry(monkeypatch, tmp_path):
    import audit.analysis.associations as associations

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(associations, "compute_associations", broken)
    manifest = write_manifest_dataset(tmp_path, n_per_cell=5)
    result = run_audit(AuditConfig(data=str(manifest)))
    assert {"analysis": "associations", "message": "RuntimeError: boom"} in result.audit["errors"]
    assert "class_distribution" in result.audit["analyses"]


def _write_torchscript_model(folder, classes):
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self, k: int):
            super().__init__()
            self.linear = torch.nn.Linear(3, k)

        def forward(self, x):
            return self.linear(x.mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = torch.jit.script(Tiny(len(classes)))
    path = folder / "tiny.pt"
    model.save(str(path))
    sidecar = {"classes": list(classes), "input_size": [8, 8], "center_crop": 1.0, "channel_order": "RGB",
               "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "output": "logits"}
    (folder / "tiny.json").write_text(json.dumps(sidecar))
    return path


def test_model_with_more_classes_than_the_data_defines_the_class_order(tmp_path):
    manifest = write_manifest_dataset(tmp_path, n_per_cell=4)
    model = _write_torchscript_model(tmp_path, ["bird", "dog", "cat"])
    result = run_audit(AuditConfig(data=str(manifest), model=str(model), cache_dir=str(tmp_path / "cache")))
    assert result.audit["classes"] == ["bird", "dog", "cat"]
    assert result.audit["dataset"]["class_order_source"] == "model"
    assert result.probabilities.shape == (16, 3)
    assert result.audit["analyses"]["class_distribution"]["empty_classes"] == ["bird"]
    again = run_audit(AuditConfig(data=str(manifest), model=str(model), cache_dir=str(tmp_path / "cache")))
    assert again.audit["model"]["from_cache"] and not result.audit["model"]["from_cache"]
    np.testing.assert_array_equal(again.probabilities, result.probabilities)


def test_group_by_selects_metadata_and_pixel_groups(tmp_path):
    manifest = write_manifest_dataset(tmp_path, n_per_cell=5)
    result = run_audit(AuditConfig(data=str(manifest), group_by=("site", "image_brightness_group")))
    assert result.audit["dataset"]["group_attributes"] == ["site"]
    assert result.audit["dataset"]["pixel_attributes"] == ["image_brightness_group"]
    only_pixel = run_audit(AuditConfig(data=str(manifest), group_by=("image_contrast_group",)))
    assert only_pixel.audit["dataset"]["group_attributes"] == []


def test_group_by_unknown_pixel_group_is_named_before_reading_images(tmp_path):
    from audit.errors import InputError
    from audit.pipeline import ERROR_UNKNOWN_PIXEL_GROUP

    manifest = write_manifest_dataset(tmp_path, n_per_cell=2)
    with pytest.raises(InputError) as caught:
        run_audit(AuditConfig(data=str(manifest), group_by=("image_brightnes_group",)))
    from audit.pipeline.steps import PIXEL_GROUP_BOOLEAN
    from audit.analysis.image_properties import GROUP_COLUMNS

    assert str(caught.value) == ERROR_UNKNOWN_PIXEL_GROUP.format(
        column="image_brightnes_group", available=", ".join(list(GROUP_COLUMNS) + list(PIXEL_GROUP_BOOLEAN)))
