"""The reduce side of ``run`` reads the (N, K) probabilities in chunks (issue 14): an on-disk matrix, read a
few rows at a time, gives exactly the outputs of the in-memory matrix, and those are the numbers of the
whole-matrix computations (screening choice, confident learning, top-k accuracy, calibration error)."""
import numpy as np
import pandas as pd
import pytest

from audit.analysis import label_noise as label_noise_module
from audit.analysis import screening
from audit.analysis.group_performance import compute_group_performance
from audit.analysis.label_noise import estimate_label_noise
from audit.config import AuditConfig
from audit.folder import write_npy_chunks_atomic
from audit.io import arrays
from audit.io.arrays import NpyChunkSource, chunk_source_of
from audit.pipeline.step_cache import _array_digest
from audit.pipeline import steps as steps_module
from audit.pipeline.steps import run_steps
from audit.types import Dataset

N, K, D = 420, 6, 5


@pytest.fixture()
def case(tmp_path):
    rng = np.random.default_rng(7)
    labels = rng.integers(0, K, N)
    centres = rng.normal(size=(K, D)) * 2.0
    embeddings = (centres[labels] + rng.normal(size=(N, D))).astype(np.float32)
    logits = rng.normal(size=(N, K)) + 2.5 * np.eye(K)[labels]
    flipped = rng.random(N) < 0.15  # some images the model gets confidently wrong
    logits[flipped] += 4.0 * np.eye(K)[rng.integers(0, K, flipped.sum())]
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = (probabilities / probabilities.sum(axis=1, keepdims=True)).astype(np.float32)
    classes = tuple(f"class_{i}" for i in range(K))
    table = pd.DataFrame({"row": np.arange(N), "id": [f"{i}.png" for i in range(N)],
                          "path": [f"/data/{i}.png" for i in range(N)],
                          "label": np.array(classes, dtype=object)[labels],
                          "site": np.array(["a", "b", "c"], dtype=object)[rng.integers(0, 3, N)],
                          "camera": np.array(["x", "y"], dtype=object)[rng.integers(0, 2, N)]})
    dataset = Dataset(table=table, classes=classes, group_attributes=("site", "camera"), metadata_columns=(),
                      root=tmp_path, source="x", kind="csv")
    path = tmp_path / "probabilities.npy"
    np.save(path, probabilities)
    return {"table": table, "dataset": dataset, "classes": classes, "labels": labels, "embeddings": embeddings,
            "probabilities": probabilities, "path": path}


def _run(case, probabilities, source="auto"):
    config = AuditConfig(data="x", model="m", n_bootstrap=20, min_group_size=10, label_noise_source=source,
                         use_cache=False)
    return run_steps(case["table"], classes=case["classes"], dataset=case["dataset"], probabilities=probabilities,
                     embeddings=case["embeddings"], config=config, progress=lambda *a: None)


def _small_chunks(monkeypatch):
    """Chunks of a few rows everywhere (file reads, array blocks, label-noise passes, combination blocks), and
    the probe's and combined probabilities kept in temporary files as for a large matrix."""
    monkeypatch.setattr(steps_module, "SCREENING_IN_MEMORY_VALUES", 0)
    monkeypatch.setattr(arrays, "default_chunk_rows", lambda n_columns, itemsize=4, **_: 7)
    monkeypatch.setattr(label_noise_module, "default_chunk_rows", lambda n_classes: 13)
    monkeypatch.setattr(screening, "COMBINE_CHUNK_ROWS", 5)


@pytest.mark.parametrize("source", ["auto", "model", "probe", "combined"])
def test_on_disk_matrix_read_in_small_chunks_gives_the_in_memory_outputs(monkeypatch, tmp_path, case, source):
    in_memory = _run(case, case["probabilities"], source)
    _small_chunks(monkeypatch)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    saved = []
    save = arrays.save_npy_chunks
    monkeypatch.setattr(arrays, "save_npy_chunks", lambda *a, **k: saved.append(a[0]) or save(*a, **k))
    on_disk = np.load(case["path"], mmap_mode="r")
    assert isinstance(chunk_source_of(on_disk), NpyChunkSource)  # read with file reads, not through the map
    streamed = _run(case, on_disk, source)
    assert not in_memory.errors and not streamed.errors
    assert streamed.sections == in_memory.sections
    assert len(saved) == 2  # the probe's and the combined probabilities went to working files...
    assert not list(tmp_path.glob("imagefair-screening-*"))  # ... which are gone
    pd.testing.assert_frame_equal(streamed.images, in_memory.images, check_exact=True)
    pd.testing.assert_frame_equal(streamed.group_metrics, in_memory.group_metrics, check_exact=True)
    assert "top_k_accuracy" in set(streamed.group_metrics["metric"])
    assert "expected_calibration_error" in set(streamed.group_metrics["metric"])


def test_label_noise_uses_the_numbers_of_the_whole_matrices(case):
    labels, probabilities = case["labels"], case["probabilities"]
    bundle = _run(case, np.load(case["path"], mmap_mode="r"))
    probe = screening.compute_probe_probabilities(case["embeddings"], labels, n_classes=K, seed=0)
    choice = screening.choose_screening_probabilities(probabilities, labels, source="auto",
                                                      probe_probabilities=probe)
    assert choice.source == "combined"
    expected = estimate_label_noise(labels, choice.probabilities, n_classes=K)
    section = bundle.sections["label_noise"]
    assert section["source_choice"] == choice.to_dict()
    assert section["label_disagreement_rate"] == expected.to_dict(case["classes"])["label_disagreement_rate"]
    np.testing.assert_array_equal(bundle.images["label_score"].to_numpy(), expected.label_score)
    np.testing.assert_array_equal(bundle.images["is_label_issue"].to_numpy(), expected.is_label_issue)
    for name, values in choice.alternatives.items():
        other = estimate_label_noise(labels, values, n_classes=K)
        assert section["alternatives"][name]["label_disagreement_rate"] == float(other.label_disagreement_rate)


def test_group_performance_from_columns_equals_the_matrix():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, K, N)
    probabilities = rng.dirichlet(np.ones(K), N).astype(np.float32)
    predicted = probabilities.argmax(axis=1)
    groups = pd.DataFrame({"site": np.array(["a", "b"], dtype=object)[rng.integers(0, 2, N)]})
    label_probability = probabilities[np.arange(N), labels]
    common = dict(classes=tuple(f"c{i}" for i in range(K)), groups=groups, n_bootstrap=30, min_group_size=10)
    whole = compute_group_performance(labels, predicted, probabilities=probabilities, **common)
    columns = compute_group_performance(labels, predicted, confidence=probabilities.max(axis=1),
                                        label_rank=(probabilities > label_probability[:, None]).sum(axis=1),
                                        **common)
    pd.testing.assert_frame_equal(columns.table, whole.table, check_exact=True)
    assert columns.to_dict() == whole.to_dict()


def test_the_writer_and_the_step_cache_read_an_on_disk_matrix_in_chunks(tmp_path, case):
    on_disk = np.load(case["path"], mmap_mode="r")
    source = chunk_source_of(on_disk, chunk_rows=11)
    assert source.shape == (N, K)
    write_npy_chunks_atomic(tmp_path / "written.npy", source)
    assert (tmp_path / "written.npy").read_bytes() == case["path"].read_bytes()
    assert _array_digest(on_disk) == _array_digest(np.array(on_disk))


def test_chunk_source_of_an_in_memory_array_gives_its_rows():
    values = np.arange(30, dtype=np.float32).reshape(10, 3)
    chunks = list(chunk_source_of(values, chunk_rows=4)())
    assert [c.shape[0] for c in chunks] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(chunks), values)


def test_reblock_gives_blocks_of_the_requested_rows():
    values = np.arange(46, dtype=np.float32).reshape(23, 2)
    source = lambda: (values[i:i + 5] for i in range(0, 23, 5))  # noqa: E731
    blocks = list(screening.reblock(source, n_rows=23, chunk_rows=7)())
    assert [b.shape[0] for b in blocks] == [7, 7, 7, 2]
    np.testing.assert_array_equal(np.concatenate(blocks), values)


def test_run_with_an_on_disk_matrix_gives_the_in_memory_audit_folder(monkeypatch, tmp_path):
    import audit.pipeline.perimage as perimage
    from audit.folder import write_audit_folder
    from audit.pipeline import run_audit
    from tests.helpers import write_manifest_dataset
    from tests.test_pipeline import _write_torchscript_model

    manifest = write_manifest_dataset(tmp_path, n_per_cell=10)  # 40 images
    model = _write_torchscript_model(tmp_path, ["dog", "cat"])
    config = AuditConfig(data=str(manifest), model=str(model), n_bootstrap=20, use_cache=False, workers=1)
    monkeypatch.setattr(perimage, "SHARD_IMAGES", 7)
    reference = run_audit(config)
    monkeypatch.setattr(perimage, "IN_MEMORY_PROBABILITIES", 0)  # the per-image stage assembles them on disk
    _small_chunks(monkeypatch)
    result = run_audit(config)
    assert isinstance(result.probabilities, NpyChunkSource)  # handed to the writer as a chunk stream
    assert result.audit["analyses"] == reference.audit["analyses"]
    pd.testing.assert_frame_equal(result.images, reference.images, check_exact=True)
    pd.testing.assert_frame_equal(result.group_metrics, reference.group_metrics, check_exact=True)
    for name, outcome in (("memory", reference), ("disk", result)):
        write_audit_folder(tmp_path / name, audit=outcome.audit, images=outcome.images,
                           group_metrics=outcome.group_metrics, probabilities=outcome.probabilities)
    assert (tmp_path / "disk" / "probabilities.npy").read_bytes() == \
        (tmp_path / "memory" / "probabilities.npy").read_bytes()
