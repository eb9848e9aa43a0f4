"""Predictions files (CSV / Parquet / NPY): alignment to the table, every error message, kind detection."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.errors import InputError
from audit.model import predictions as pr
from audit.model.inference import softmax
from audit.model.predictions import load_predictions

CLASSES = ("cat", "dog")
PROBS = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.3, 0.7]])


@pytest.fixture
def setup(tmp_path):
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    table = pd.DataFrame({
        "row": [0, 1, 2, 3],
        "id": ["a", "b", "c", "d"],
        "path": [str(root / "img" / f"{n}.png") for n in "abcd"],
        "label": ["cat", "dog", "cat", "dog"],
    })
    return tmp_path, root, table


def csv_file(folder, frame: pd.DataFrame, name="preds.csv"):
    path = folder / name
    frame.to_csv(path, index=False)
    return path


def frame_of(ids, values, key="id"):
    frame = pd.DataFrame({key: ids})
    for j, name in enumerate(CLASSES):
        frame[name] = np.asarray(values)[:, j]
    return frame


def expect(path, table, message, **kwargs):
    with pytest.raises(InputError) as info:
        load_predictions(path, table=table, classes=CLASSES, **kwargs)
    assert str(info.value) == message
    return info.value


def test_csv_by_id_any_order(setup):
    folder, root, table = setup
    order = [3, 1, 0, 2]
    path = csv_file(folder, frame_of([table.id[i] for i in order], PROBS[order]))
    result = load_predictions(path, table=table, classes=CLASSES)
    np.testing.assert_allclose(result.probabilities, PROBS, rtol=1e-6)
    assert result.probabilities.dtype == np.float32
    assert result.kind_used == "probabilities"
    assert result.message == pr.MESSAGE_AUTO_PROBABILITIES.format(file=path)
    assert result.to_dict() == {"kind_used": "probabilities", "message": result.message, "n_images": 4,
                                "n_classes": 2}


def test_ids_that_look_numeric_survive(setup):
    folder, root, table = setup
    table = table.assign(id=["001", "002", "003", "004"])
    path = csv_file(folder, frame_of(["004", "003", "002", "001"], PROBS[::-1]))
    np.testing.assert_allclose(load_predictions(path, table=table, classes=CLASSES).probabilities, PROBS, rtol=1e-6)


def test_logits_auto_detected(setup):
    folder, root, table = setup
    logits = np.array([[2.0, -1.0], [0.0, 3.0], [0.1, 0.1], [5.0, 4.0]])
    path = csv_file(folder, frame_of(list(table.id), logits))
    result = load_predictions(path, table=table, classes=CLASSES)
    assert result.kind_used == "logits"
    assert result.message == pr.MESSAGE_AUTO_LOGITS.format(row=0, where=" (id/path 'a')", file=path)
    np.testing.assert_allclose(result.probabilities, softmax(logits), rtol=1e-6)
    # issue 11: one row in [0, 1] not summing to 1 among probabilities is refused, naming it (it used to turn
    # the whole file into logits)
    path = csv_file(folder, frame_of(list(table.id), [[0.9, 0.1], [0.2, 0.8], [0.5, 0.4], [0.3, 0.7]]), "b.csv")
    expect(path, table, pr.ERROR_PREDICTIONS_MIXED.format(
        file=path, row=2, where=" (id/path 'c')", this=pr._LOOKS_LOGITS.format(total=0.9, low=0.4, high=0.5),
        n_other=3, that="look like probabilities", tolerance=1e-4, dtype="float64"))


def test_explicit_kinds(setup):
    folder, root, table = setup
    path = csv_file(folder, frame_of(list(table.id), PROBS))
    result = load_predictions(path, table=table, classes=CLASSES, kind="logits")
    assert result.kind_used == "logits"
    assert result.message == pr.MESSAGE_GIVEN.format(kind="logits", file=path, extra=" (softmax applied)")
    np.testing.assert_allclose(result.probabilities, softmax(PROBS), rtol=1e-6)
    result = load_predictions(path, table=table, classes=CLASSES, kind="probabilities")
    assert result.message == pr.MESSAGE_GIVEN.format(kind="probabilities", file=path, extra="")
    bad = csv_file(folder, frame_of(list(table.id), [[0.9, 0.1], [0.2, 0.8], [0.6, 0.5], [0.3, 0.7]]), "bad.csv")
    error = expect(bad, table, pr.ERROR_PREDICTIONS_NOT_PROBABILITIES.format(
        file=bad, row=2, where=" (id/path 'c')", total=1.1, low=0.5, high=0.6), kind="probabilities")
    assert error.row == 2
    expect(path, table, pr.ERROR_PREDICTIONS_KIND.format(kind="softmax"), kind="softmax")


def test_missing_and_unknown_class_columns(setup):
    folder, root, table = setup
    frame = frame_of(list(table.id), PROBS).drop(columns=["dog"])
    path = csv_file(folder, frame)
    expect(path, table, pr.ERROR_PREDICTIONS_MISSING_CLASS.format(file=path, name="dog", classes="cat, dog"))
    frame = frame_of(list(table.id), PROBS).assign(bird=0.0)
    path = csv_file(folder, frame, "extra.csv")
    error = expect(path, table, pr.ERROR_PREDICTIONS_UNKNOWN_CLASS.format(file=path, column="bird",
                                                                        classes="cat, dog"))
    assert error.column == "bird" and "unknown label/class" in str(error)
    # reserved columns are ignored
    frame = frame_of(list(table.id), PROBS).assign(label=list(table.label), path="x")
    load_predictions(csv_file(folder, frame, "ok.csv"), table=table, classes=CLASSES)


def test_non_finite_and_non_numeric(setup):
    folder, root, table = setup
    values = PROBS.copy()
    values[2, 1] = np.nan
    path = csv_file(folder, frame_of(list(table.id), values))
    error = expect(path, table, pr.ERROR_PREDICTIONS_NOT_FINITE.format(file=path, row=2, where=" (id 'c')",
                                                                     column="dog", value="missing or NaN"))
    assert error.row == 2 and error.column == "dog"
    values = PROBS.copy()
    values[1, 0] = np.inf
    path = csv_file(folder, frame_of(list(table.id), values), "inf.csv")
    expect(path, table, pr.ERROR_PREDICTIONS_NOT_FINITE.format(file=path, row=1, where=" (id 'b')",
                                                             column="cat", value="inf"))
    path = folder / "text.csv"
    path.write_text("id,cat,dog\na,0.5,0.5\nb,high,0.5\nc,0.5,0.5\nd,0.5,0.5\n")
    expect(path, table, pr.ERROR_PREDICTIONS_NOT_NUMERIC.format(file=path, row=1, column="cat", value="high"))
    path = folder / "empty.csv"
    path.write_text("id,cat,dog\na,0.5,0.5\nb,,0.5\nc,0.5,0.5\nd,0.5,0.5\n")
    expect(path, table, pr.ERROR_PREDICTIONS_NOT_FINITE.format(file=path, row=1, where=" (id 'b')", column="cat",
                                                             value="missing or NaN"))


def test_missing_rows_duplicates_and_extra_rows(setup):
    folder, root, table = setup
    path = csv_file(folder, frame_of(["a", "b", "d"], PROBS[[0, 1, 3]]))
    expect(path, table, pr.ERROR_PREDICTIONS_MISSING_ROW.format(file=path, n_missing=1, id="c", path=table.path[2]))
    path = csv_file(folder, frame_of(["a", "b", "c", "d", "b"], np.vstack([PROBS, PROBS[:1]])), "dup.csv")
    error = expect(path, table, pr.ERROR_PREDICTIONS_DUPLICATE.format(file=path, first=1, second=4, column="id",
                                                                    value="b"))
    assert error.row == 4
    path = csv_file(folder, frame_of(["a", "b", "c", "d", "zz"], np.vstack([PROBS, PROBS[:1]])), "more.csv")
    result = load_predictions(path, table=table, classes=CLASSES)
    assert result.message.endswith(" 1 row(s) of the file match no image of the data set and were ignored.")
    path = folder / "nokey.csv"
    pd.DataFrame({"cat": [0.5], "dog": [0.5]}).to_csv(path, index=False)
    expect(path, table, pr.ERROR_PREDICTIONS_NO_KEY.format(file=path))
    path = folder / "blank.csv"
    path.write_text("id,cat,dog\na,0.5,0.5\n,0.5,0.5\n")
    expect(path, table, pr.ERROR_PREDICTIONS_EMPTY_KEY.format(file=path, row=1, column="id"))


def test_match_by_path(setup):
    folder, root, table = setup
    # relative to the data root, relative to the predictions file's folder, absolute, and as the table's id
    keys = ["img/a.png", "data/img/b.png", str(root / "img" / "c.png"), "d"]
    path = csv_file(folder, frame_of(keys, PROBS, key="path"))
    result = load_predictions(path, table=table, classes=CLASSES, root=root)
    np.testing.assert_allclose(result.probabilities, PROBS, rtol=1e-6)
    # the same file without root: "img/a.png" matches nothing, so image a has no prediction
    expect(path, table, pr.ERROR_PREDICTIONS_MISSING_ROW.format(file=path, n_missing=1, id="a", path=table.path[0]))
    # two spellings of one image are duplicates
    path = csv_file(folder, frame_of(["img/a.png", str(root / "img" / "a.png"), "b", "c", "d"],
                                     np.vstack([PROBS[:1], PROBS]), key="path"), "dup.csv")
    expect(path, table, pr.ERROR_PREDICTIONS_DUPLICATE.format(file=path, first=0, second=1, column="path",
                                                            value="img/a.png"), root=root)


def test_parquet(setup):
    folder, root, table = setup
    path = folder / "preds.parquet"
    frame_of(["d", "c", "b", "a"], PROBS[::-1]).astype({"cat": "float32", "dog": "float32"}).to_parquet(path)
    result = load_predictions(path, table=table, classes=CLASSES)
    np.testing.assert_allclose(result.probabilities, PROBS, rtol=1e-6)
    assert result.kind_used == "probabilities"


def test_npy(setup):
    folder, root, table = setup
    path = folder / "p.npy"
    np.save(path, PROBS.astype(np.float32))
    np.testing.assert_allclose(load_predictions(path, table=table, classes=CLASSES).probabilities, PROBS, rtol=1e-6)
    np.save(path, np.ones((4, 3)))
    expect(path, table, pr.ERROR_PREDICTIONS_N_COLUMNS.format(file=path, found=3, n=2, classes="cat, dog"))
    np.save(path, np.ones((3, 2)))
    expect(path, table, pr.ERROR_PREDICTIONS_N_ROWS.format(file=path, found=3, n=4))
    np.save(path, np.ones(4))
    expect(path, table, pr.ERROR_PREDICTIONS_NPY_SHAPE.format(file=path, shape=(4,), dtype="float64"))
    values = PROBS.copy()
    values[3, 0] = np.nan
    np.save(path, values)
    expect(path, table, pr.ERROR_PREDICTIONS_NOT_FINITE.format(file=path, row=3, where="", column="cat",
                                                             value="missing or NaN"))
    # written for the whole manifest (6 rows) while the table left rows 1 and 4 out: taken by `row`
    skipped = table.assign(row=[0, 2, 3, 5])
    full = np.array([[0.9, 0.1], [0, 1], [0.2, 0.8], [0.5, 0.5], [1, 0], [0.3, 0.7]])
    np.save(path, full)
    result = load_predictions(path, table=skipped, classes=CLASSES, n_source_rows=6)
    np.testing.assert_allclose(result.probabilities, PROBS, rtol=1e-6)
    assert "rows were taken by the images' positions in the manifest" in result.message
    # issue 11: any other row count is an error, never a silent cut
    expect(path, skipped, pr.ERROR_PREDICTIONS_N_ROWS.format(file=path, found=6, n=4))
    # a pickled object array is refused
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="^Cannot read the predictions file"):
        load_predictions(path, table=table, classes=CLASSES)


def test_file_errors(setup):
    folder, root, table = setup
    expect(folder / "absent.csv", table, pr.ERROR_PREDICTIONS_NOT_FOUND.format(file=folder / "absent.csv"))
    path = folder / "p.txt"
    path.write_text("x")
    expect(path, table, pr.ERROR_PREDICTIONS_FORMAT.format(file=path, suffix=".txt"))
    path = folder / "broken.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(InputError, match="^Cannot read the predictions file"):
        load_predictions(path, table=table, classes=CLASSES)


def test_table_without_image_paths(setup):
    """label-noise audits have no images: the table's paths are empty and matching is by id."""
    folder, root, table = setup
    no_paths = table.assign(path="")
    path = csv_file(folder, frame_of(["d", "c", "b", "a"], PROBS[::-1], key="path"))
    np.testing.assert_allclose(load_predictions(path, table=no_paths, classes=CLASSES).probabilities, PROBS,
                               rtol=1e-6)
    path = csv_file(folder, frame_of(["a", "b", "c"], PROBS[:3]), "short.csv")
    expect(path, table.drop(columns=["path"]),
           pr.ERROR_PREDICTIONS_MISSING_ROW.format(file=path, n_missing=1, id="d", path="-"))
