"""The step cache (issue 14): a re-run on identical inputs loads the expensive steps' outputs and writes the
same audit folder; anything a step reads changes its key; a broken entry is recomputed; ``--no-cache`` never
reads it; an output that would not round-trip exactly is computed, never approximated."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.config import AuditConfig
from audit.folder import write_audit_folder
from audit.pipeline import run_audit
from audit.pipeline import step_cache
from audit.pipeline import steps as registry
from audit.pipeline.step_cache import NotCacheable, encode_output
from audit.pipeline.steps import Step, StepOutput
from tests.helpers import run_cli, write_manifest_dataset
from tests.test_pipeline import _write_torchscript_model

CACHED = ["attribute_distribution", "label_noise", "group_performance", "data_quality"]
#: audit.json fields that say how (and when) a run happened, not what it found.
VOLATILE_PROVENANCE = ("started_at", "finished_at", "duration_s", "stage_durations_s", "steps_from_cache",
                       "per_image_stage", "command")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stepcache-data")
    manifest = write_manifest_dataset(folder, n_per_cell=12)  # 48 images, two sites, two ages
    model = _write_torchscript_model(folder, ["cat", "dog"])
    return manifest, model


def _config(data, cache, **settings):
    manifest, model = data
    return AuditConfig(data=str(manifest), model=str(model), n_bootstrap=50, cache_dir=str(cache), **settings)


def _write(result, out: Path) -> Path:
    return write_audit_folder(out, audit=result.audit, images=result.images, group_metrics=result.group_metrics,
                              probabilities=result.probabilities)


def _stable_audit(folder: Path) -> dict:
    audit = json.loads((folder / "audit.json").read_text("utf-8"))
    audit.pop("run_id")
    for name in VOLATILE_PROVENANCE:
        audit["provenance"].pop(name, None)
    audit["provenance"]["settings"].pop("use_cache")
    if audit.get("model"):
        audit["model"].pop("from_cache")  # the inference cache, not the step cache
    return audit


def _assert_same_folder(folder: Path, reference: Path) -> None:
    assert _stable_audit(folder) == _stable_audit(reference)
    for name in ("images.parquet", "group_metrics.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(folder / name), pd.read_parquet(reference / name),
                                      check_exact=True)


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "steps").glob("*/*/entry.json"))


def test_rerun_loads_the_expensive_steps_and_writes_the_same_folder(data, tmp_path):
    cache = tmp_path / "cache"
    first = run_audit(_config(data, cache))
    assert first.audit["provenance"]["steps_from_cache"] == []
    assert len(_entries(cache)) == len(CACHED)
    again = run_audit(_config(data, cache))
    assert again.audit["provenance"]["steps_from_cache"] == CACHED
    # a cached step's time is the time it took to hash and load, recorded like any other
    assert set(CACHED) <= set(again.audit["provenance"]["stage_durations_s"])
    uncached = run_audit(_config(data, cache, use_cache=False))
    assert uncached.audit["provenance"]["steps_from_cache"] == []
    folders = [_write(result, tmp_path / name) for result, name in ((first, "first"), (again, "again"),
                                                                    (uncached, "uncached"))]
    _assert_same_folder(folders[1], folders[0])
    _assert_same_folder(folders[2], folders[0])
    # the multiplicity pass updated the cached sections in place after loading, as after computing
    assert again.audit["analyses"]["group_performance"] == first.audit["analyses"]["group_performance"]


@pytest.mark.parametrize("change", ["seed", "min_group_size", "group_value"])
def test_a_changed_input_is_a_miss(data, tmp_path, change):
    cache = tmp_path / "cache"
    run_audit(_config(data, cache))
    manifest, model = data
    if change == "seed":
        result = run_audit(_config(data, cache, seed=7))
    elif change == "min_group_size":
        result = run_audit(_config(data, cache, min_group_size=5))
    else:
        table = pd.read_csv(manifest)
        table.loc[0, "age"] = "middle"  # one image's group attribute
        changed = manifest.parent / "manifest_changed.csv"
        table.to_csv(changed, index=False)
        result = run_audit(AuditConfig(data=str(changed), model=str(model), n_bootstrap=50, cache_dir=str(cache)))
    assert result.audit["provenance"]["steps_from_cache"] == []
    assert len(_entries(cache)) == 2 * len(CACHED)


def test_a_setting_that_steps_never_read_keeps_the_entries(data, tmp_path):
    cache = tmp_path / "cache"
    run_audit(_config(data, cache, batch_size=128))
    result = run_audit(_config(data, cache, batch_size=16))
    assert result.audit["provenance"]["steps_from_cache"] == CACHED


@pytest.mark.parametrize("damage", ["truncated_json", "missing_parquet", "garbage_sections"])
def test_a_broken_entry_is_recomputed_without_error(data, tmp_path, damage):
    cache = tmp_path / "cache"
    reference = _write(run_audit(_config(data, cache)), tmp_path / "reference")
    for entry in _entries(cache):
        if damage == "truncated_json":
            text = entry.read_text("utf-8")
            entry.write_text(text[: len(text) // 2], "utf-8")
        elif damage == "missing_parquet":
            for part in entry.parent.glob("*.parquet"):
                part.unlink()
            (entry.parent / "sections.json").write_text("{", "utf-8")
        else:
            (entry.parent / "sections.json").write_bytes(b"\x00\xff not json")
    again = run_audit(_config(data, cache))
    assert again.audit["provenance"]["steps_from_cache"] == []
    assert again.audit["errors"] == []
    _assert_same_folder(_write(again, tmp_path / "again"), reference)
    # the broken entries were replaced by whole ones
    assert run_audit(_config(data, cache)).audit["provenance"]["steps_from_cache"] == CACHED


def test_no_cache_never_reads_or_writes_the_step_cache(data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    run_audit(_config(data, cache))
    before = {path: path.stat().st_mtime_ns for path in (cache / "steps").rglob("*")}

    def no_reading(*args, **kwargs):
        raise AssertionError("the step cache was read")

    monkeypatch.setattr(step_cache.StepCache, "load", no_reading)
    monkeypatch.setattr(step_cache.StepCache, "store", no_reading)
    result = run_audit(_config(data, cache, use_cache=False))
    assert result.audit["provenance"]["steps_from_cache"] == []
    assert {path: path.stat().st_mtime_ns for path in (cache / "steps").rglob("*")} == before


def test_cli_reports_cached_steps_and_no_cache_bypasses_them(data, tmp_path):
    manifest, model = data
    cache = tmp_path / "cache"
    run_audit(_config(data, cache))  # fills the cache with the CLI's default settings but --n-bootstrap
    common = ("run", "--data", str(manifest), "--model", str(model), "--cache-dir", str(cache), "--quiet",
              "--n-bootstrap", "50")
    done = run_cli(*common, "--out", str(tmp_path / "cached"))
    assert done.returncode == 0, done.stderr
    done = run_cli(*common, "--no-cache", "--out", str(tmp_path / "uncached"))
    assert done.returncode == 0, done.stderr
    cached = json.loads((tmp_path / "cached" / "audit.json").read_text("utf-8"))
    uncached = json.loads((tmp_path / "uncached" / "audit.json").read_text("utf-8"))
    assert cached["provenance"]["steps_from_cache"] == CACHED
    assert uncached["provenance"]["steps_from_cache"] == []
    _assert_same_folder(tmp_path / "cached", tmp_path / "uncached")


def _toy_step(context):
    """A cached toy step with a sub-analysis that fails (an ``errors`` entry) and every column kind."""
    context.attempt("toy_part", lambda: 1 / 0)
    n = len(context.images)
    labels = np.array([None if i % 5 == 0 else f"v{i % 3}" for i in range(n)], dtype=object)
    table = pd.DataFrame({"attribute": ["site"], "group": ["a"], "class": [""], "n": [n], "metric": ["toy_rate"],
                          "value": [float("nan")], "ci_low": [0.0], "ci_high": [1.0],
                          "insufficient_evidence": [False], "verdict": [""]})
    return StepOutput(sections={"toy": {"n": np.int64(n), "nan": float("nan"), "inf": float("inf"),
                                        "pair": (1, "a"), "ok": np.bool_(True)}},
                      group_rows=[table],
                      image_columns={"toy_label": labels, "toy_flag": np.arange(n) % 2 == 0,
                                     "toy_rank": pd.array([None if i % 4 else i for i in range(n)], dtype="Int64"),
                                     "toy_score": np.linspace(0, 1, n)},
                      metrics={"toy_rate": {"higher_is_better": False, "description": "toy"}})


def test_a_cached_step_reproduces_its_errors_and_column_types(data, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "STEPS", registry.STEPS + [Step("toy", _toy_step, cache=True)])
    cache = tmp_path / "cache"
    first = run_audit(_config(data, cache))
    again = run_audit(_config(data, cache))
    assert "toy" in again.audit["provenance"]["steps_from_cache"]
    toy_errors = [e for e in again.audit["errors"] if e["analysis"] == "toy_part"]
    assert toy_errors == [e for e in first.audit["errors"] if e["analysis"] == "toy_part"] and len(toy_errors) == 1
    pd.testing.assert_frame_equal(again.images, first.images, check_exact=True)
    assert again.images["toy_label"].isna().tolist() == first.images["toy_label"].isna().tolist()
    pd.testing.assert_frame_equal(again.group_metrics, first.group_metrics, check_exact=True)
    section = again.audit["analyses"]["toy"]
    assert section["n"] == 48 and np.isnan(section["nan"]) and section["inf"] == float("inf")


def _float32_step(context):
    return StepOutput(sections={"toy32": {"value": np.float32(0.1)}})


def test_an_output_that_would_not_round_trip_is_computed_every_time(data, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "STEPS", registry.STEPS + [Step("toy32", _float32_step, cache=True)])
    cache = tmp_path / "cache"
    run_audit(_config(data, cache))
    again = run_audit(_config(data, cache))
    assert "toy32" not in again.audit["provenance"]["steps_from_cache"]
    assert set(CACHED) <= set(again.audit["provenance"]["steps_from_cache"])
    assert type(again.audit["analyses"]["toy32"]["value"]) is np.float32
    assert not again.audit["errors"]


@pytest.mark.parametrize("output", [
    StepOutput(sections={"x": {1: "int key"}}),
    StepOutput(sections={"x": np.zeros(2)}),
    StepOutput(image_columns={"x": np.array(["a", 1], dtype=object)}),  # mixed types: no Parquet column
    StepOutput(image_columns={"x": np.array([np.bool_(True), None], dtype=object)}),  # would come back as bool
    StepOutput(image_columns={"x": pd.Series([1.0, 2.0])}),  # a Series aligns on its index: not stored
    StepOutput(group_rows=[pd.DataFrame({"a": [1.0]}, index=[5])]),
])
def test_encode_refuses_what_would_not_come_back_identical(output):
    with pytest.raises(NotCacheable):
        encode_output(output, [])
