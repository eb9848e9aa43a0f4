"""``label-noise`` in bounded memory: the streamed reader gives the same audit as the in-memory one."""
import json

import numpy as np
import pandas as pd
import pytest

from audit.pipeline.steps import NOTE_STREAMED_SCORES, PROBABILITY_METRICS, PredictionColumns
from audit.errors import InputError
import audit.model.predictions as pr
from audit.pipeline.labels_input import (ERROR_CLASSES_COUNT, ERROR_ROWS_DIFFER,
                                         PredictionsStream, run_label_noise_audit, to_probabilities)
from audit.model.predictions import (ERROR_PREDICTIONS_N_COLUMNS, ERROR_PREDICTIONS_NOT_FINITE,
                                     ERROR_PREDICTIONS_NOT_PROBABILITIES, load_predictions)
from audit.folder import ERROR_STREAM_ROWS, write_audit_folder, write_npy_chunks_atomic
from tests.helpers import check_folder, run_cli


def _case(folder, *, n=1200, k=7, noise=0.12, seed=0, logits=False):
    """Labels (NPY indices), predictions (NPY float32), classes and attributes with known flips."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    scores = rng.normal(0, 1.2, (n, k))
    scores[np.arange(n), true] += 3.0
    given = true.copy()
    flip = rng.random(n) < noise
    given[flip] = (true[flip] + rng.integers(1, k, flip.sum())) % k
    values = scores if logits else np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
    np.save(folder / "labels.npy", given)
    np.save(folder / "predictions.npy", values.astype(np.float32))
    names = [f"class_{i}" for i in range(k)]
    (folder / "classes.txt").write_text("\n".join(names) + "\n")
    pd.DataFrame({"id": [str(i) for i in range(n)], "camera": rng.choice(["c1", "c2", "c3"], n),
                  "site": rng.choice(["north", "south", None], n)}).to_csv(folder / "attributes.csv", index=False)
    return {"labels_file": str(folder / "labels.npy"), "predictions_file": str(folder / "predictions.npy"),
            "classes_file": str(folder / "classes.txt"), "attributes_file": str(folder / "attributes.csv")}


def _shuffled_parquet(folder, files, seed=1):
    """The same float32 values as a Parquet file keyed by id, rows shuffled: read whole by load_predictions."""
    values = np.load(files["predictions_file"])
    names = (folder / "classes.txt").read_text().split()
    frame = pd.DataFrame(values, columns=names)
    frame.insert(0, "id", [str(i) for i in range(len(values))])
    frame = frame.iloc[np.random.default_rng(seed).permutation(len(frame))]
    path = folder / "shuffled.parquet"
    frame.to_parquet(path, index=False)
    return str(path)


@pytest.mark.parametrize("logits", [False, True])
def test_streamed_npy_reader_matches_the_in_memory_reader(tmp_path, logits):
    files = _case(tmp_path, logits=logits)
    # Reference: the same values through load_predictions (a shuffled Parquet file is read whole, as before).
    reference = run_label_noise_audit(**dict(files, predictions_file=_shuffled_parquet(tmp_path, files)))
    assert isinstance(reference.probabilities, np.ndarray)
    kept = run_label_noise_audit(**files)  # small: streamed scan, matrix kept
    streamed = run_label_noise_audit(**files, max_in_memory_cells=0, chunk_rows=97)  # never held whole
    assert isinstance(kept.probabilities, np.ndarray)
    assert isinstance(streamed.probabilities, PredictionsStream)
    assert kept.audit["model"]["predictions_kind"] == ("logits" if logits else "probabilities")

    np.testing.assert_array_equal(kept.probabilities, reference.probabilities)
    pd.testing.assert_frame_equal(kept.images, reference.images, check_exact=True)
    pd.testing.assert_frame_equal(kept.group_metrics, reference.group_metrics, check_exact=True)
    assert kept.audit["analyses"] == reference.audit["analyses"]
    assert kept.audit["findings"] == reference.audit["findings"]
    assert set(reference.group_metrics["metric"]) >= set(PROBABILITY_METRICS)

    pd.testing.assert_frame_equal(streamed.images, reference.images, check_exact=True)
    # Streamed, top-k accuracy and calibration error come from per-image confidence and label rank computed
    # chunk by chunk: the same table as from the whole matrix.
    pd.testing.assert_frame_equal(streamed.group_metrics.reset_index(drop=True),
                                  reference.group_metrics.reset_index(drop=True), check_exact=True)
    for name, section in reference.audit["analyses"].items():
        if name != "group_performance":
            assert streamed.audit["analyses"][name] == section, name
    performance = streamed.audit["analyses"]["group_performance"]
    assert "skipped_metrics" not in performance
    assert performance["settings"]["notes"] == [NOTE_STREAMED_SCORES]
    assert set(PROBABILITY_METRICS) <= set(streamed.audit["metrics"])
    assert streamed.audit["errors"] == []

    # The streamed probabilities.npy is byte-identical to the one written from the array.
    write_audit_folder(tmp_path / "kept", audit=kept.audit, images=kept.images, group_metrics=kept.group_metrics,
                       probabilities=kept.probabilities)
    write_audit_folder(tmp_path / "streamed", audit=streamed.audit, images=streamed.images,
                       group_metrics=streamed.group_metrics, probabilities=streamed.probabilities)
    assert (tmp_path / "kept" / "probabilities.npy").read_bytes() == \
        (tmp_path / "streamed" / "probabilities.npy").read_bytes()
    for name in ("kept", "streamed"):
        code, output = check_folder(tmp_path / name)
        assert code == 0, output


def test_aligned_parquet_is_streamed_and_matches(tmp_path):
    files = _case(tmp_path, n=900, k=5)
    values = np.load(files["predictions_file"])
    names = (tmp_path / "classes.txt").read_text().split()
    frame = pd.DataFrame(values, columns=names)
    frame.insert(0, "id", [str(i) for i in range(len(values))])
    frame.to_parquet(tmp_path / "aligned.parquet", index=False, row_group_size=250)
    aligned = dict(files, predictions_file=str(tmp_path / "aligned.parquet"))
    reference = run_label_noise_audit(**dict(files, predictions_file=_shuffled_parquet(tmp_path, files)))
    streamed = run_label_noise_audit(**aligned, max_in_memory_cells=0, chunk_rows=100)
    assert isinstance(streamed.probabilities, PredictionsStream)
    chunks = list(streamed.probabilities())
    assert max(len(c) for c in chunks) == 100 and sum(len(c) for c in chunks) == 900
    np.testing.assert_array_equal(np.concatenate(chunks), reference.probabilities)
    pd.testing.assert_frame_equal(streamed.images, reference.images, check_exact=True)
    assert streamed.audit["analyses"]["label_noise"] == reference.audit["analyses"]["label_noise"]


def test_cli_on_small_npy_writes_a_valid_folder(tmp_path):
    files = _case(tmp_path, n=600, k=4)
    done = run_cli("label-noise", "--labels", files["labels_file"], "--predictions", files["predictions_file"],
                   "--classes", files["classes_file"], "--attributes", files["attributes_file"],
                   "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    code, output = check_folder(tmp_path / "out")
    assert code == 0, output
    audit = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert "skipped_metrics" not in audit["analyses"]["group_performance"]  # small: everything computed
    assert np.load(tmp_path / "out" / "probabilities.npy").shape == (600, 4)


def test_rows_differing_from_labels_fail_before_any_pass(tmp_path):
    files = _case(tmp_path, n=50, k=3)
    np.save(tmp_path / "more.npy", np.full((51, 3), 1 / 3, dtype=np.float32))
    with pytest.raises(InputError) as error:
        run_label_noise_audit(**dict(files, predictions_file=str(tmp_path / "more.npy")))
    assert str(error.value) == ERROR_ROWS_DIFFER.format(predictions=str(tmp_path / "more.npy"), n_predictions=51,
                                                        labels=files["labels_file"], n_labels=50)
    np.save(tmp_path / "wide.npy", np.full((50, 4), 0.25, dtype=np.float32))
    with pytest.raises(InputError) as error:
        run_label_noise_audit(**dict(files, predictions_file=str(tmp_path / "wide.npy")))
    # both files are named, the classes file first: it is the usual culprit (issue 12 item 10)
    assert str(error.value) == ERROR_CLASSES_COUNT.format(path=files["classes_file"], n=3,
                                                          predictions=str(tmp_path / "wide.npy"), k=4)


def test_auto_kind_refuses_a_mix_whatever_the_chunks(tmp_path):
    """Issue 11: --predictions-kind auto decides per file and refuses a mix, naming the first odd row, with
    the same rule as ``run`` (audit.model.predictions.KindDecider), whatever the chunk size."""
    files = _case(tmp_path, n=40, k=3)
    values = np.load(files["predictions_file"]).astype(np.float64)
    values[25] = [2.0, -1.0, 0.5]  # a logit row among probabilities
    np.save(tmp_path / "mixed.npy", values)
    path = str(tmp_path / "mixed.npy")
    for chunk_rows in (20, 40):
        with pytest.raises(InputError) as error:
            run_label_noise_audit(**dict(files, predictions_file=path), chunk_rows=chunk_rows)
        assert str(error.value) == pr.ERROR_PREDICTIONS_MIXED.format(
            file=path, row=25, where="", this=pr._LOOKS_LOGITS.format(total=1.5, low=-1.0, high=2.0), n_other=39,
            that="look like probabilities", tolerance=1e-4, dtype="float64")
        assert error.value.row == 25

    logits = np.random.default_rng(3).normal(0, 2, (40, 3))
    logits[20:] = np.load(files["predictions_file"])[20:]  # probabilities from row 20 on
    np.save(tmp_path / "flipped.npy", logits)
    path = str(tmp_path / "flipped.npy")
    with pytest.raises(InputError) as error:
        run_label_noise_audit(**dict(files, predictions_file=path), chunk_rows=20)
    assert str(error.value) == pr.ERROR_PREDICTIONS_MIXED.format(
        file=path, row=20, where="", this=pr._LOOKS_PROBABILITY, n_other=20, that="do not (logits)",
        tolerance=1e-4, dtype="float64")


def test_value_errors_name_file_row_and_column(tmp_path):
    files = _case(tmp_path, n=30, k=3)
    values = np.load(files["predictions_file"])
    broken = values.copy()
    broken[17, 2] = np.nan
    np.save(tmp_path / "nan.npy", broken)
    path = str(tmp_path / "nan.npy")
    with pytest.raises(InputError) as error:
        run_label_noise_audit(**dict(files, predictions_file=path), chunk_rows=8)
    assert str(error.value) == ERROR_PREDICTIONS_NOT_FINITE.format(file=path, row=17, where="", column="class_2",
                                                                   value="missing or NaN")
    off = values.astype(np.float64)
    off[11] = [0.5, 0.5, 0.5]
    np.save(tmp_path / "off.npy", off)
    path = str(tmp_path / "off.npy")
    with pytest.raises(InputError) as error:
        run_label_noise_audit(**dict(files, predictions_file=path), predictions_kind="probabilities", chunk_rows=8)
    assert str(error.value) == ERROR_PREDICTIONS_NOT_PROBABILITIES.format(file=path, row=11, where="", total=1.5,
                                                                          low=0.5, high=0.5)


def test_to_probabilities_does_not_depend_on_chunking():
    rng = np.random.default_rng(5)
    values = rng.normal(0, 3, (500, 11))
    whole = to_probabilities(values, "logits")
    pieces = np.concatenate([to_probabilities(values[i:i + 37], "logits") for i in range(0, 500, 37)])
    np.testing.assert_array_equal(whole, pieces)
    probabilities = whole.astype(np.float64)
    np.testing.assert_array_equal(to_probabilities(probabilities, "probabilities"),
                                  np.concatenate([to_probabilities(probabilities[i:i + 64], "probabilities")
                                                  for i in range(0, 500, 64)]))


def test_prediction_columns_from_chunks():
    rng = np.random.default_rng(2)
    probabilities = rng.dirichlet(np.ones(6), 301).astype(np.float32)
    labels = rng.integers(0, 6, 301)
    columns = PredictionColumns.from_chunks(lambda: (probabilities[i:i + 50] for i in range(0, 301, 50)), labels)
    np.testing.assert_array_equal(columns.predicted, probabilities.argmax(1))
    np.testing.assert_array_equal(columns.confidence, probabilities.max(1))
    np.testing.assert_array_equal(columns.label_probability, probabilities[np.arange(301), labels])
    with pytest.raises(ValueError):
        PredictionColumns.from_chunks(lambda: iter([probabilities[:10]]), labels)


class _Stream:
    def __init__(self, array, shape=None, step=7):
        self.array, self.shape, self.step = array, shape or array.shape, step

    def __call__(self):
        return (self.array[i:i + self.step] for i in range(0, len(self.array), self.step))


def test_writer_streams_npy_atomically(tmp_path):
    array = np.random.default_rng(0).random((50, 4))
    write_npy_chunks_atomic(tmp_path / "p.npy", _Stream(array))
    np.save(tmp_path / "reference.npy", array.astype(np.float32))
    assert (tmp_path / "p.npy").read_bytes() == (tmp_path / "reference.npy").read_bytes()
    before = (tmp_path / "p.npy").read_bytes()
    with pytest.raises(ValueError) as error:
        write_npy_chunks_atomic(tmp_path / "p.npy", _Stream(array[:45], shape=(50, 4)))
    assert str(error.value) == ERROR_STREAM_ROWS.format(found=45, expected=50)
    assert (tmp_path / "p.npy").read_bytes() == before  # the previous file is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npy", "reference.npy"]  # no temporary left


def test_run_steps_computes_columns_for_a_bare_chunk_source(tmp_path):
    files = _case(tmp_path, n=300, k=4)
    from audit.config import AuditConfig
    from audit.pipeline.steps import run_steps
    from audit.types import Dataset

    probabilities = load_predictions(files["predictions_file"], table=pd.DataFrame({"id": range(300)}),
                                     classes=tuple(f"class_{i}" for i in range(4))).probabilities
    labels = np.load(files["labels_file"])
    table = pd.DataFrame({"row": np.arange(300), "id": [str(i) for i in range(300)],
                          "label": [f"class_{i}" for i in labels], "path": ""})
    dataset = Dataset(table=table, classes=tuple(f"class_{i}" for i in range(4)), group_attributes=(),
                      metadata_columns=(), root=tmp_path, source="x", kind="labels",
                      class_order_source="classes file")
    config = AuditConfig(data="x", predictions="p", min_group_size=30)
    common = dict(classes=dataset.classes, dataset=dataset, embeddings=None, config=config,
                  progress=lambda *a: None)
    in_memory = run_steps(table, probabilities=probabilities, **common)
    streamed = run_steps(table, probabilities=lambda: (probabilities[i:i + 64] for i in range(0, 300, 64)),
                         **common)
    pd.testing.assert_frame_equal(streamed.images, in_memory.images, check_exact=True)
    assert streamed.sections["label_noise"] == in_memory.sections["label_noise"]
    pd.testing.assert_frame_equal(streamed.group_metrics.reset_index(drop=True),
                                  in_memory.group_metrics.reset_index(drop=True), check_exact=True)
