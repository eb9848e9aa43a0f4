"""audit.io.annotations: long and wide layouts, joins, and every bad-input message exactly."""
import numpy as np
import pandas as pd
import pytest

from audit.errors import InputError
from audit.io import annotations as io

CLASSES = ("cat", "dog", "fox")
IDS = ["a", "b", "c", "d"]


def write(tmp_path, frame, name="ann.csv"):
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return str(path)


def test_long_layout_with_seconds(tmp_path):
    path = write(tmp_path, pd.DataFrame({"id": ["a", "a", "b", "c"], "annotator": ["x", "y", "x", "y"],
                                         "label": ["cat", "dog", "fox", "1"], "seconds": ["2", "", "3.5", "1"]}))
    loaded = io.load_annotations(path, ids=IDS, classes=CLASSES)
    assert loaded.layout == "long"
    assert loaded.item.tolist() == [0, 0, 1, 2]
    assert [loaded.annotators[j] for j in loaded.annotator] == ["x", "y", "x", "y"]
    assert loaded.label.tolist() == [0, 1, 2, 1]  # "1" is a class index
    assert np.isnan(loaded.seconds[1]) and loaded.seconds[2] == 3.5
    assert loaded.n_items == 4 and loaded.skipped == ()


def test_wide_layout_parquet(tmp_path):
    frame = pd.DataFrame({"id": ["a", "b", "d"], "ann1": ["cat", None, "dog"], "ann2": ["cat", "fox", None]})
    loaded = io.load_annotations(write(tmp_path, frame, "w.parquet"), ids=IDS, classes=CLASSES)
    assert loaded.layout == "wide"
    assert sorted(zip(loaded.item.tolist(), [loaded.annotators[j] for j in loaded.annotator],
                      loaded.label.tolist())) == [(0, "ann1", 0), (0, "ann2", 0), (1, "ann2", 2), (3, "ann1", 1)]
    assert loaded.seconds is None


def test_join_by_path(tmp_path):
    images = [str(tmp_path / "img" / f"{i}.png") for i in IDS]
    frame = pd.DataFrame({"path": ["img/a.png", str(tmp_path / "img" / "b.png")], "annotator": ["x", "x"],
                          "label": ["cat", "dog"]})
    loaded = io.load_annotations(write(tmp_path, frame), ids=IDS, paths=images, classes=CLASSES)
    assert loaded.item.tolist() == [0, 1]


def test_unknown_id_empty_annotator_and_repeat_are_counted_skips(tmp_path):
    frame = pd.DataFrame({"id": ["a", "zzz", "b", "a", "c"], "annotator": ["x", "x", "", "x", "y"],
                          "label": ["cat", "cat", "dog", "cat", "fox"]})
    loaded = io.load_annotations(write(tmp_path, frame), ids=IDS, classes=CLASSES)
    assert loaded.item.tolist() == [0, 2]
    reasons = {entry.row: entry.reason for entry in loaded.skipped}
    assert reasons == {1: io.REASON_UNKNOWN_ID.format(key="id", value="zzz"),
                       2: io.REASON_EMPTY_ANNOTATOR,
                       3: io.REASON_REPEAT.format(annotator="x", image="a", first="row 0 (line 2)")}
    assert all(entry.path.endswith("ann.csv") for entry in loaded.skipped)


def test_label_outside_classes_is_an_error_naming_the_row(tmp_path):
    path = write(tmp_path, pd.DataFrame({"id": ["a", "b"], "annotator": ["x", "x"], "label": ["cat", "wolf"]}))
    with pytest.raises(InputError) as error:
        io.load_annotations(path, ids=IDS, classes=CLASSES)
    assert str(error.value) == io.ERROR_UNKNOWN_LABEL.format(path=path, where="row 1 (line 3)", label="wolf",
                                                             classes="cat, dog, fox")
    assert error.value.row == 1


def test_two_different_labels_from_one_annotator_is_an_error(tmp_path):
    path = write(tmp_path, pd.DataFrame({"id": ["a", "b", "a"], "annotator": ["x", "x", "x"],
                                         "label": ["cat", "dog", "fox"]}))
    with pytest.raises(InputError) as error:
        io.load_annotations(path, ids=IDS, classes=CLASSES)
    assert str(error.value) == io.ERROR_CONFLICT.format(path=path, annotator="x", image="a", first_label="cat",
                                                        first="row 0 (line 2)", second_label="fox",
                                                        second="row 2 (line 4)")


@pytest.mark.parametrize("columns, message", [
    ({"image": ["a"], "annotator": ["x"], "label": ["cat"]}, "no_key"),
    ({"id": ["a"], "annotator": ["x"]}, "partial"),
    ({"id": ["a"]}, "no_annotators"),
])
def test_layout_errors(tmp_path, columns, message):
    path = write(tmp_path, pd.DataFrame(columns))
    with pytest.raises(InputError) as error:
        io.load_annotations(path, ids=IDS, classes=CLASSES)
    expected = {
        "no_key": io.ERROR_NO_KEY.format(path=path, columns="'image', 'annotator', 'label'"),
        "partial": io.ERROR_PARTIAL_LONG.format(path=path, present="annotator", missing="label"),
        "no_annotators": io.ERROR_NO_ANNOTATORS.format(path=path, columns="'id'"),
    }[message]
    assert str(error.value) == expected


def test_bad_seconds_missing_file_and_nothing_usable(tmp_path):
    path = write(tmp_path, pd.DataFrame({"id": ["a"], "annotator": ["x"], "label": ["cat"], "seconds": ["slow"]}))
    with pytest.raises(InputError) as error:
        io.load_annotations(path, ids=IDS, classes=CLASSES)
    assert str(error.value) == io.ERROR_BAD_SECONDS.format(path=path, where="row 0 (line 2)", value="slow")
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(InputError) as error:
        io.load_annotations(missing, ids=IDS, classes=CLASSES)
    assert str(error.value) == io.ERROR_FILE_MISSING.format(path=missing)
    path = write(tmp_path, pd.DataFrame({"id": ["q"], "annotator": ["x"], "label": ["cat"]}), "none.csv")
    with pytest.raises(InputError) as error:
        io.load_annotations(path, ids=IDS, classes=CLASSES)
    first = io.REASON_UNKNOWN_ID.format(key="id", value="q") + " at row 0 (line 2)"
    assert str(error.value) == io.ERROR_NO_ROWS.format(path=path, n_skipped=1, first=first)
