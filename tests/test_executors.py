"""The per-image stage: one decode per image in shards, the same results on every executor, the feature
cache, and bad input (worker death, missing Ray, unreachable cluster)."""
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import audit.pipeline.perimage as perimage
from audit.config import AuditConfig
from audit.errors import InputError
from audit.pipeline import run_audit
from audit.pipeline.executors import (ERROR_RAY_MISSING, ERROR_RAY_UNREACHABLE, ERROR_WORKERS, RayExecutor,
                                      make_executor)
from audit.pipeline.perimage import SKIP_WORKER_DIED
from tests.helpers import write_manifest_dataset
from tests.test_pipeline import _write_torchscript_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    manifest = write_manifest_dataset(folder, n_per_cell=10)  # 40 images
    model = _write_torchscript_model(folder, ["dog", "cat"])
    return manifest, model


@pytest.fixture()
def small_shards(monkeypatch):
    monkeypatch.setattr(perimage, "SHARD_IMAGES", 7)  # 40 images -> 6 shards


def _config(data, **settings):
    manifest, model = data
    settings.setdefault("use_cache", False)
    return AuditConfig(data=str(manifest), model=str(model), n_bootstrap=50, **settings)


def _same(result, reference):
    pd.testing.assert_frame_equal(result.images, reference.images, check_exact=True)
    np.testing.assert_allclose(result.probabilities, reference.probabilities, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def reference(data):
    return run_audit(_config(data, workers=1))  # one shard, in this process


def test_worker_processes_give_the_same_images_table_and_probabilities(data, reference, small_shards):
    result = run_audit(_config(data, workers=2))
    stage = result.audit["provenance"]["per_image_stage"]
    assert {k: stage[k] for k in ("executor", "workers", "shards", "images_decoded", "images_from_cache")} == {
        "executor": "local", "workers": 2, "shards": 6, "images_decoded": 40, "images_from_cache": 0}
    _same(result, reference)


def test_cached_rerun_decodes_nothing_even_with_other_attributes(data, reference, tmp_path, small_shards):
    manifest, _ = data
    first = run_audit(_config(data, workers=1, use_cache=True, cache_dir=str(tmp_path)))
    assert first.audit["provenance"]["per_image_stage"]["images_decoded"] == 40
    _same(first, reference)
    # a re-run that changes only the groups and the attributes reads every per-image result from the cache
    table = pd.read_csv(manifest)
    attributes = tmp_path / "attributes.csv"
    pd.DataFrame({"id": table["id"], "camera": np.where(np.arange(len(table)) % 2, "x", "y")}).to_csv(attributes,
                                                                                                      index=False)
    again = run_audit(_config(data, workers=2, use_cache=True, cache_dir=str(tmp_path), group_by=("site",),
                              attributes_file=str(attributes)))
    stage = again.audit["provenance"]["per_image_stage"]
    assert stage["images_decoded"] == 0 and stage["images_from_cache"] == 40
    assert again.audit["model"]["from_cache"]
    per_image = ["id", "content_hash", "image_brightness", "image_sharpness", "image_phash_nw", "prediction",
                 "confidence"]
    pd.testing.assert_frame_equal(again.images[per_image], reference.images[per_image], check_exact=True)
    np.testing.assert_allclose(again.probabilities, reference.probabilities, rtol=0, atol=1e-6)


def test_a_worker_that_dies_on_an_image_is_a_counted_skip(data, reference, monkeypatch, small_shards):
    monkeypatch.setenv("IMAGEFAIR_TEST_CRASH_ON", "img_0009.png")
    result = run_audit(_config(data, workers=2))
    assert result.audit["skipped"] == [{"row": 9, "path": str(Path(data[0]).parent / "images" / "img_0009.png"),
                                        "reason": SKIP_WORKER_DIED}]
    assert len(result.images) == 39
    expected = reference.images[reference.images["id"] != reference.images["id"].iloc[9]].reset_index(drop=True)
    pd.testing.assert_frame_equal(result.images[["id", "content_hash", "image_phash"]],
                                  expected[["id", "content_hash", "image_phash"]])


def test_workers_must_be_positive():
    with pytest.raises(InputError) as caught:
        make_executor("local", workers=0)
    assert str(caught.value) == ERROR_WORKERS.format(value=0)


def test_missing_ray_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError) as caught:
        make_executor("ray")
    assert str(caught.value) == ERROR_RAY_MISSING


def test_unreachable_cluster_is_one_line_and_exit_2(data, tmp_path, capsys):
    pytest.importorskip("ray")
    from audit.cli import main

    manifest, _ = data
    code = main(["run", "--data", str(manifest), "--out", str(tmp_path / "out"), "--executor", "ray",
                 "--ray-address", "127.0.0.1:9", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: " + ERROR_RAY_UNREACHABLE.split("{")[0])
    assert "127.0.0.1:9" in err[0]
    assert not (tmp_path / "out").exists()


def test_ray_local_instance_gives_the_same_results(data, reference, small_shards):
    pytest.importorskip("ray")
    import ray

    result = run_audit(_config(data, executor="ray", workers=2))
    assert not ray.is_initialized()  # the instance it started is stopped
    assert result.audit["provenance"]["per_image_stage"]["executor"] == "ray"
    _same(result, reference)


def test_ray_two_node_cluster_gives_the_same_results(data, reference, small_shards, monkeypatch):
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    # the nodes' workers import the imagefair under test
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        address = cluster.address
        result = run_audit(_config(data, executor="ray", workers=2, ray_address=address))
    finally:
        cluster.shutdown()  # stops the processes this test started
    assert result.audit["provenance"]["per_image_stage"]["ray_address"] == address
    _same(result, reference)


def test_ray_executor_reports_itself():
    pytest.importorskip("ray")
    assert RayExecutor(workers=3, address="auto").describe() == {"executor": "ray", "workers": 3,
                                                                  "ray_address": "auto", "startup_s": 0.0}


def test_known_hashes_file_answers_membership_and_pickles_as_its_path(tmp_path):
    import pickle

    from audit.pipeline.perimage import KnownHashes

    hashes = {f"{i:064x}" for i in range(0, 2000, 3)}
    known = KnownHashes.write(hashes, tmp_path)
    assert len(known) == len(hashes) and known
    assert all(h in known for h in hashes)
    assert not any(f"{i:064x}" in known for i in range(1, 2000, 3))
    assert f"{10 ** 70:x}"[:64] not in known  # after the last value
    copy = pickle.loads(pickle.dumps(known))
    assert copy._values is None and copy.path == known.path and "0" * 64 in copy
    assert len(pickle.dumps(known)) < 500


def test_workers_started_early_are_stopped_when_the_input_is_refused(data, tmp_path, small_shards):
    import multiprocessing

    manifest, _ = data
    bad = tmp_path / "manifest.csv"
    bad.write_text(Path(manifest).read_text().replace("label", "labels", 1))
    with pytest.raises(InputError):
        run_audit(_config((bad, data[1]), workers=2))
    assert multiprocessing.active_children() == []


def test_early_start_overlaps_the_manifest_and_gives_the_same_results(data, reference, small_shards):
    from audit.pipeline.core import _has_at_least, start_executor

    manifest, _ = data
    assert _has_at_least(manifest, 14) and not _has_at_least(manifest, 10_000)
    assert _has_at_least(Path(manifest).parent, 14) and not _has_at_least(Path(manifest).parent / "nothing", 1)
    fifo = Path(manifest).parent / "pipe.csv"
    os.mkfifo(fifo)
    try:
        assert not _has_at_least(fifo, 1)  # returns at once: a FIFO is never opened here
    finally:
        fifo.unlink()
    executor = start_executor(_config(data, workers=2))
    assert executor._started is not None  # 40 rows >= 2 shards of 7: workers are starting
    executor.close()
    result = run_audit(_config(data, workers=2))
    assert result.audit["provenance"]["per_image_stage"]["workers"] == 2
    _same(result, reference)


def test_store_reads_every_part_once_with_repeats_and_broken_parts(tmp_path):
    from audit.pipeline.perimage import FeatureStore, ShardOutput

    store = FeatureStore(tmp_path, feature_key="f", output_key="o")
    rng = np.random.default_rng(0)
    for part in range(5):
        hashes = [f"{part * 10 + i:064x}" for i in range(7)] + ([f"{0:064x}"] if part == 3 else [])
        probabilities = rng.random((len(hashes), 4)).astype(np.float32)
        store.write(ShardOutput(shard=part, positions=np.arange(len(hashes)), content_hashes=hashes,
                                skip_reasons=[None] * len(hashes),
                                features={"content_hash": np.array(hashes, dtype=object),
                                          "image_width": np.full(len(hashes), part)},
                                probabilities=probabilities, embeddings=probabilities[:, :2]))
    parts = sorted(store.output_dir.glob("*.parquet"))
    parts[1].with_suffix(".probabilities.npy").write_bytes(b"not an array")
    # reference: the first readable part (in name order) holding a hash gives its row
    expected = {}
    for part in parts[:1] + parts[2:]:
        rows = np.load(part.with_suffix(".probabilities.npy"))
        for h, row in zip(pd.read_parquet(part)["content_hash"], rows):
            expected.setdefault(h, row)
    wanted = np.array([f"{i:064x}" for i in (0, 41, 13, 13, 99, 22, 0, 31)], dtype=object)
    out = np.zeros((len(wanted), 4), dtype=np.float32)
    embeddings = np.zeros((len(wanted), 2), dtype=np.float32)
    found = store.read_outputs(wanted, out=out, embeddings_out=embeddings)
    assert found.tolist() == [h in expected for h in wanted]
    for i, h in enumerate(wanted):
        if h in expected:
            np.testing.assert_array_equal(out[i], expected[h])
            np.testing.assert_array_equal(embeddings[i], expected[h][:2])
    features = store.read_features(wanted)
    assert list(features["content_hash"]) == list(wanted)
    assert features["image_width"].isna().tolist() == [int(h, 16) >= 50 or int(h, 16) % 10 >= 7 for h in wanted]


def test_features_in_order_gathers_computed_and_stored_rows_once():
    """The per-image table's features: rows computed in this run win over stored copies, cache hits come
    from the store, repeats and order follow the wanted hashes, exact dtypes survive (uint64 hashes), and
    hashes found nowhere are counted (their rows are missing values)."""
    import tempfile

    from audit.pipeline.perimage import FeatureStore, ShardOutput, _features_in_order

    def columns(hashes, width):
        return {"content_hash": np.array(hashes, dtype=object), "image_width": np.full(len(hashes), width),
                "image_phash": np.array([2**63 + int(h, 16) for h in hashes], dtype=np.uint64)}

    with tempfile.TemporaryDirectory() as folder:
        store = FeatureStore(folder, feature_key="f", output_key=None)
        stored = [f"{i:064x}" for i in range(10, 16)]
        store.write(ShardOutput(shard=0, positions=np.arange(6), content_hashes=stored, skip_reasons=[None] * 6,
                                features=columns(stored, 7)))
        computed = [columns([f"{i:064x}" for i in range(0, 4)], 1),
                    columns([f"{i:064x}" for i in (4, 5, 10)], 2)]  # 10 is stored too (width 7)
        wanted = np.array([f"{i:064x}" for i in (12, 0, 5, 10, 12, 3)], dtype=object)
        frame, n_missing = _features_in_order(store, computed, wanted)
        assert computed == []  # handed over: the caller keeps no second copy
        assert n_missing == 0
        assert list(frame.columns) == ["content_hash", "image_width", "image_phash"]
        assert list(frame["content_hash"]) == list(wanted)
        assert frame["image_width"].tolist() == [7, 1, 2, 2, 7, 1]
        assert frame["image_phash"].dtype == np.uint64
        assert frame["image_phash"].tolist() == [2**63 + int(h, 16) for h in wanted]

        wanted = np.array([f"{i:064x}" for i in (11, 99, 1)], dtype=object)
        frame, n_missing = _features_in_order(store, [columns([f"{1:064x}"], 3)], wanted)
        assert n_missing == 1
        assert list(frame["content_hash"]) == list(wanted)
        assert frame["image_width"].isna().tolist() == [False, True, False]
        assert frame["image_width"].iloc[[0, 2]].tolist() == [7, 3]

        frame, n_missing = _features_in_order(FeatureStore(Path(folder) / "empty", feature_key="f", output_key=None),
                                              [], wanted)
        assert n_missing == 3 and list(frame["content_hash"]) == list(wanted)
