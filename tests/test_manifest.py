"""Tests of audit.io.manifest: ImageFolder / CSV / Parquet manifests, attribute tables, every bad input."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from audit.errors import InputError
from audit.io import manifest as m
from audit.io.manifest import load_dataset

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR_JPEG = SHARED_DATA / "cifar10-test-jpeg" / "test"


def _image(path: Path, colour=(120, 30, 200), size=(8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP",
           ".tif": "TIFF", ".tiff": "TIFF"}[path.suffix.lower()]
    Image.new("RGB", size, colour).save(path, format=fmt)
    return path


def _csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _images(root: Path, names) -> None:
    for name in names:
        _image(root / name)


def _raises(message: str, *args, **kwargs) -> InputError:
    with pytest.raises(InputError) as caught:
        load_dataset(*args, **kwargs)
    assert str(caught.value) == message
    return caught.value


# ---------------------------------------------------------------------------------------------------------
# ImageFolder
# ---------------------------------------------------------------------------------------------------------

def test_imagefolder_class_layout(tmp_path):
    _images(tmp_path, ["cat/a.jpg", "cat/B.PNG", "cat/nested/c.webp", "dog/d.bmp", "dog/e.TIFF", "dog/f.gif"])
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "cat" / ".DS_Store").write_text("hidden")
    (tmp_path / ".hidden_dir").mkdir()
    _image(tmp_path / ".hidden_dir" / "x.png")
    _image(tmp_path / "__MACOSX" / "cat" / "y.png")
    (tmp_path / "README.md").write_text("readme")

    dataset = load_dataset(tmp_path)

    assert dataset.kind == "imagefolder"
    assert dataset.classes == ("cat", "dog")
    assert dataset.class_order_source == "sorted"
    table = dataset.table
    assert list(table.columns) == ["row", "id", "path", "label"]
    assert table["id"].tolist() == ["cat/B.PNG", "cat/a.jpg", "cat/nested/c.webp", "dog/d.bmp", "dog/e.TIFF",
                                    "dog/f.gif"]
    assert table["label"].tolist() == ["cat"] * 3 + ["dog"] * 3
    assert table["row"].tolist() == list(range(6))
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in table["path"])
    reasons = sorted((s.path, s.reason) for s in dataset.skipped)
    assert reasons == [
        ("README.md", m.SKIP_OUTSIDE_CLASS_FOLDER),
        ("cat/notes.txt", m.SKIP_NOT_IMAGE_EXTENSION.format(extension=".txt",
                                                            extensions=" ".join(m.IMAGE_EXTENSIONS))),
    ]
    assert dataset.group_attributes == () and dataset.metadata_columns == ()


def test_imagefolder_split_layout(tmp_path):
    _images(tmp_path, ["train/cat/1.png", "train/dog/2.png", "test/cat/3.png", "test/dog/4.png"])
    dataset = load_dataset(tmp_path)
    assert list(dataset.table.columns) == ["row", "id", "path", "label", "split"]
    assert dataset.table["id"].tolist() == ["test/cat/3.png", "test/dog/4.png", "train/cat/1.png",
                                            "train/dog/2.png"]
    assert dataset.table["split"].tolist() == ["test", "test", "train", "train"]
    assert dataset.table["label"].tolist() == ["cat", "dog", "cat", "dog"]


def test_imagefolder_images_directly_in_a_top_folder_mean_class_layout(tmp_path):
    # 'dog' holds an image directly, so the top folders are classes; 'cat/sub/' is a nested folder of 'cat'
    _images(tmp_path, ["cat/sub/1.png", "dog/2.png"])
    dataset = load_dataset(tmp_path)
    assert "split" not in dataset.table.columns
    assert dataset.table["label"].tolist() == ["cat", "dog"]


def test_imagefolder_symlink_outside_root_is_read_unless_data_root_confines(tmp_path):
    root = tmp_path / "data"
    _images(root, ["cat/1.png", "dog/2.png"])
    outside = _image(tmp_path / "elsewhere" / "secret.png")
    os.symlink(outside, root / "cat" / "link.png")
    dataset = load_dataset(root)  # a store of symlinks (DVC, git-annex, HF cache) is read
    assert dataset.table["id"].tolist() == ["cat/1.png", "cat/link.png", "dog/2.png"]
    assert list(dataset.skipped) == []
    dataset = load_dataset(root, data_root=root)
    assert dataset.table["id"].tolist() == ["cat/1.png", "dog/2.png"]
    assert [(s.path, s.reason) for s in dataset.skipped] == [("cat/link.png", m.SKIP_OUTSIDE_DATA_ROOT)]
    assert "--data-root" in m.SKIP_OUTSIDE_DATA_ROOT


def test_imagefolder_without_class_folders(tmp_path):
    _image(tmp_path / "a.png")
    _raises(m.ERROR_NO_CLASS_FOLDERS.format(path=str(tmp_path)), tmp_path)


def test_imagefolder_single_class(tmp_path):
    _images(tmp_path, ["cat/1.png", "cat/2.png"])
    _raises(m.ERROR_SINGLE_CLASS.format(path=str(tmp_path), label="cat"), tmp_path)


def test_imagefolder_without_images_is_an_empty_dataset(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.txt").write_text("x")
    (tmp_path / "dog").mkdir()
    _raises(m.ERROR_EMPTY_DATASET.format(path=str(tmp_path), n_skipped=1, reasons="1 not an image file"),
            tmp_path)


# ---------------------------------------------------------------------------------------------------------
# CSV / Parquet manifests
# ---------------------------------------------------------------------------------------------------------

def test_csv_manifest_values_groups_and_metadata(tmp_path):
    _images(tmp_path, [f"img/{i}.png" for i in range(6)])
    manifest = _csv(tmp_path / "manifest.csv",
                    "path,label,split,age,race,note,score\n"
                    "img/0.png,b,train,3,White,n0,0.5\n"
                    "img/1.png,a,train,30, Black ,n1,1.5\n"
                    "img/2.png,b,test,,White,n2,2.5\n"
                    "img/3.png,a,test,NaN,Asian,n3,3.5\n"
                    "img/4.png,b,train,3,,n4,4.5\n"
                    "img/5.png,a,test,30,White,n5,5.5\n")
    dataset = load_dataset(manifest)
    table = dataset.table
    assert dataset.kind == "csv"
    assert dataset.root == tmp_path.resolve()
    assert dataset.classes == ("a", "b")
    assert list(table.columns) == ["row", "id", "path", "label", "split", "age", "race", "note", "score"]
    assert table["id"].tolist() == [f"img/{i}.png" for i in range(6)]
    assert table["path"].tolist() == [str(tmp_path.resolve() / "img" / f"{i}.png") for i in range(6)]
    assert table["age"].tolist() == ["3", "30", None, None, "3", "30"]  # ints stay '3', NaN/empty -> None
    assert table["race"].tolist() == ["White", "Black", "White", "Asian", None, "White"]
    assert table["split"].tolist() == ["train", "train", "test", "test", "train", "test"]
    assert dataset.group_attributes == ("age", "race", "note", "score")
    assert dataset.metadata_columns == ()
    limited = load_dataset(manifest, max_group_values=3)  # age 2, race 3, note and score 6 distinct values
    assert limited.group_attributes == ("age", "race")
    assert limited.metadata_columns == ("note", "score")


def test_id_like_and_empty_columns_are_metadata(tmp_path):
    n = m.ID_LIKE_MIN_VALUES
    _images(tmp_path, [f"{i}.png" for i in range(n)])
    rows = "".join(f"{i}.png,{'ab'[i % 2]},file{i},{'' if i else 'only'},,{i % 3}\n" for i in range(n))
    manifest = _csv(tmp_path / "m.csv", "path,label,original_name,rare,blank,bucket\n" + rows)
    dataset = load_dataset(manifest)
    # original_name: a different value on each of n images (id-like); blank: no value at all
    assert dataset.group_attributes == ("rare", "bucket")
    assert dataset.metadata_columns == ("original_name", "blank")


def test_group_by_orders_and_validates(tmp_path):
    _images(tmp_path, ["a.png", "b.png"])
    manifest = _csv(tmp_path / "m.csv", "path,label,race,age\na.png,x,W,1\nb.png,y,B,2\n")
    dataset = load_dataset(manifest, group_by=["age", "race"])
    assert dataset.group_attributes == ("age", "race")
    assert dataset.metadata_columns == ()
    _raises(m.ERROR_UNKNOWN_GROUP_COLUMN.format(column="gender", path=str(manifest),
                                                available="'race', 'age'"), manifest, group_by=["gender"])
    _raises(m.ERROR_GROUP_BY_RESERVED.format(column="split", available="'race', 'age'"), manifest,
            group_by=["split"])


def test_label_column_and_manifest_id(tmp_path):
    _images(tmp_path, ["sub/a.png", "sub/b.png"])
    manifest = _csv(tmp_path / "meta" / "m.csv", "id,path,gender\nA1,../sub/a.png,female\nB2,../sub/b.png,male\n")
    # paths are relative to the manifest's folder; '../sub' leaves it: read, unless --data-root confines reads
    assert load_dataset(manifest, label_column="gender").table["id"].tolist() == ["A1", "B2"]
    _raises(m.ERROR_EMPTY_DATASET.format(path=str(manifest), n_skipped=2, reasons="2 outside --data-root"),
            manifest, label_column="gender", data_root=tmp_path / "meta")
    manifest = _csv(tmp_path / "m.csv", "id,path,gender\nA1,sub/a.png,female\nB2,sub/b.png,male\n")
    dataset = load_dataset(manifest, label_column="gender")
    assert dataset.table["id"].tolist() == ["A1", "B2"]
    assert dataset.table["label"].tolist() == ["female", "male"]
    assert "gender" not in dataset.table.columns


def test_parquet_manifest_keeps_integers_and_booleans(tmp_path):
    _images(tmp_path, ["a.png", "b.png", "c.png"])
    frame = pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": [1, 2, 1],
                          "age": [3.0, None, 30.0],  # an int column upcast to float by a null
                          "flag": [True, False, True], "ratio": [0.5, 0.25, 0.5]})
    frame.to_parquet(tmp_path / "m.parquet")
    dataset = load_dataset(tmp_path / "m.parquet")
    assert dataset.kind == "parquet"
    assert dataset.classes == ("1", "2")
    assert dataset.table["age"].tolist() == ["3", None, "30"]
    assert dataset.table["flag"].tolist() == ["True", "False", "True"]
    assert dataset.table["ratio"].tolist() == ["0.5", "0.25", "0.5"]


def test_classes_given_fix_the_order(tmp_path):
    _images(tmp_path, ["a.png", "b.png", "c.png"])
    manifest = _csv(tmp_path / "m.csv", "path,label\na.png,dog\nb.png,cat\nc.png,bird\n")
    dataset = load_dataset(manifest, classes=["dog", "cat", "bird", "fish"], classes_source="model")
    assert dataset.classes == ("dog", "cat", "bird", "fish")
    assert dataset.class_order_source == "model"
    _raises(m.ERROR_LABEL_NOT_IN_CLASSES.format(path=str(manifest), where="row 2 (line 4)", label="bird",
                                                classes="'dog', 'cat'"), manifest, classes=["dog", "cat"])
    _raises(m.ERROR_DUPLICATE_CLASSES.format(label="dog"), manifest, classes=["dog", "cat", "dog"])


def test_manifest_paths_escaping_or_missing_are_counted_skips(tmp_path):
    root = tmp_path / "data"
    _images(root, ["a.png", "b.png", "c.png"])
    outside = _image(tmp_path / "outside.png")
    os.symlink(outside, root / "link.png")
    manifest = _csv(root / "m.csv",
                    "path,label\n"
                    "a.png,x\n"
                    f"{outside},y\n"               # absolute, outside the root
                    "../outside.png,y\n"          # '..' traversal
                    "link.png,y\n"                # symlink resolving outside
                    "missing.png,y\n"             # file not found
                    f"{root / 'b.png'},y\n"       # absolute inside the root: fine
                    "sub/../c.png,x\n")           # '..' that stays inside: fine
    dataset = load_dataset(manifest, data_root=root)
    assert dataset.table["row"].tolist() == [0, 5, 6]
    assert dataset.table["id"].tolist() == ["a.png", "b.png", "c.png"]
    assert [(s.row, s.reason) for s in dataset.skipped] == [
        (1, m.SKIP_OUTSIDE_DATA_ROOT), (2, m.SKIP_OUTSIDE_DATA_ROOT), (3, m.SKIP_OUTSIDE_DATA_ROOT),
        (4, m.SKIP_NOT_FOUND)]
    assert dataset.skipped[1].path == "../outside.png"
    # Without --data-root the local user's manifest is read as written: absolute paths, '..' and symlinks
    # pointing outside the manifest's folder (ids of files outside it are their absolute paths).
    other = _image(tmp_path / "store" / "other.png")
    manifest = _csv(root / "m2.csv", f"path,label\na.png,x\n{outside},y\n../store/other.png,y\nlink.png,x\n")
    dataset = load_dataset(manifest)
    assert dataset.table["row"].tolist() == [0, 1, 2, 3]
    assert dataset.table["id"].tolist() == ["a.png", outside.as_posix(), other.as_posix(), "link.png"]
    assert dataset.table["path"].tolist() == [str(root / "a.png"), str(outside), str(other), str(root / "link.png")]
    assert list(dataset.skipped) == []
    # two rows naming one file (an absolute path and a '..' path) are still caught
    manifest = _csv(root / "m3.csv", f"path,label\na.png,x\n{outside},y\n../outside.png,y\n")
    _raises(m.ERROR_DUPLICATE_ID.format(path=str(manifest), first=m._where(1, "csv"), second=m._where(2, "csv"),
                                        id=outside.as_posix()), manifest)


# ---------------------------------------------------------------------------------------------------------
# bad manifests
# ---------------------------------------------------------------------------------------------------------

def test_data_path_missing_or_unsupported(tmp_path):
    _raises(m.ERROR_DATA_NOT_FOUND.format(path=str(tmp_path / "nope.csv")), tmp_path / "nope.csv")
    other = _csv(tmp_path / "data.json", "{}")
    _raises(m.ERROR_UNSUPPORTED_DATA.format(path=str(other)), other)


def test_unreadable_csv(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"path,label\n\xff\xfe\xfa,\x81\n")
    with pytest.raises(InputError) as caught:
        load_dataset(bad)
    message = str(caught.value)
    assert message.startswith(f"Cannot read {bad} as CSV: ")
    assert message.endswith(". Save it as a valid CSV file (UTF-8, with a header row).")
    empty = _csv(tmp_path / "empty.csv", "")
    assert str(_raises_any(empty)).startswith(f"Cannot read {empty} as CSV: ")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really parquet")
    assert str(_raises_any(broken)).startswith(f"Cannot read {broken} as Parquet: ")


def _raises_any(*args, **kwargs) -> InputError:
    with pytest.raises(InputError) as caught:
        load_dataset(*args, **kwargs)
    return caught.value


def test_manifest_without_path_or_label_column(tmp_path):
    manifest = _csv(tmp_path / "m.csv", "file,label\na.png,x\n")
    error = _raises(m.ERROR_NO_PATH_COLUMN.format(path=str(manifest), columns="'file', 'label'"), manifest)
    assert error.column == "path"
    manifest = _csv(tmp_path / "m2.csv", "path,class\na.png,x\n")
    _raises(m.ERROR_NO_LABEL_COLUMN.format(path=str(manifest), column="label", columns="'path', 'class'"),
            manifest)
    _raises(m.ERROR_NO_LABEL_COLUMN.format(path=str(manifest), column="gender", columns="'path', 'class'"),
            manifest, label_column="gender")


def test_reserved_and_clashing_columns(tmp_path):
    manifest = _csv(tmp_path / "m.csv", "path,label,gender\na.png,x,f\n")
    _raises(m.ERROR_LABEL_COLUMN_CLASH.format(path=str(manifest), column="gender"), manifest,
            label_column="gender")
    manifest = _csv(tmp_path / "m2.csv", "path,label,content_hash\na.png,x,abc\n")
    _raises(m.ERROR_RESERVED_COLUMN.format(path=str(manifest), column="content_hash"), manifest)
    manifest = _csv(tmp_path / "m3.csv", "path,label,image_brightness\na.png,x,1\n")
    _raises(m.ERROR_RESERVED_COLUMN.format(path=str(manifest), column="image_brightness"), manifest)
    manifest = _csv(tmp_path / "m4.csv", "path,label,age,age\na.png,x,1,2\n")
    _raises(m.ERROR_DUPLICATE_COLUMN.format(path=str(manifest), column="age"), manifest)


def test_duplicate_ids(tmp_path):
    _images(tmp_path, ["a.png", "b.png"])
    manifest = _csv(tmp_path / "m.csv", "id,path,label\nk1,a.png,x\nk2,b.png,y\nk1,b.png,y\n")
    error = _raises(m.ERROR_DUPLICATE_ID.format(path=str(manifest), first="row 0 (line 2)",
                                                second="row 2 (line 4)", id="k1"), manifest)
    assert (error.row, error.column) == (2, "id")
    manifest = _csv(tmp_path / "m2.csv", "path,label\na.png,x\nb.png,y\n./a.png,y\n")
    _raises(m.ERROR_DUPLICATE_ID.format(path=str(manifest), first="row 0 (line 2)", second="row 2 (line 4)",
                                        id="a.png"), manifest)


def test_empty_label_path_or_id(tmp_path):
    _images(tmp_path, ["a.png", "b.png"])
    manifest = _csv(tmp_path / "m.csv", "path,label\na.png,x\nb.png,  \n")
    error = _raises(m.ERROR_EMPTY_LABEL.format(path=str(manifest), where="row 1 (line 3)", column="label"),
                    manifest)
    assert (error.row, error.column, error.source) == (1, "label", str(manifest))
    manifest = _csv(tmp_path / "m2.csv", "path,label\n,x\nb.png,y\n")
    _raises(m.ERROR_EMPTY_PATH.format(path=str(manifest), where="row 0 (line 2)"), manifest)
    manifest = _csv(tmp_path / "m3.csv", "id,path,label\n1,a.png,x\n,b.png,y\n")
    _raises(m.ERROR_EMPTY_ID.format(path=str(manifest), where="row 1 (line 3)"), manifest)


def test_line_numbers_count_quoted_newlines_and_blank_lines(tmp_path):
    """Issue 11 item 8: a quoted field holding newlines (and a blank line, skipped) shift the physical line of
    every later row; the message names the line an editor shows."""
    _images(tmp_path, ["a.png", "b.png", "c.png"])
    manifest = _csv(tmp_path / "m.csv", 'path,label,note\na.png,x,"two\nlines"\n\nb.png,y,ok\nc.png,,ok\n')
    _raises(m.ERROR_EMPTY_LABEL.format(path=str(manifest), where="row 2 (line 6)", column="label"), manifest)


def test_empty_and_single_class_manifest(tmp_path):
    _images(tmp_path, ["a.png", "b.png"])
    manifest = _csv(tmp_path / "m.csv", "path,label\nmissing1.png,x\nmissing2.png,y\n")
    _raises(m.ERROR_EMPTY_DATASET.format(path=str(manifest), n_skipped=2, reasons="2 file not found"), manifest)
    manifest = _csv(tmp_path / "m2.csv", "path,label\n")
    _raises(m.ERROR_EMPTY_DATASET.format(path=str(manifest), n_skipped=0, reasons="no image files found"),
            manifest)
    manifest = _csv(tmp_path / "m3.csv", "path,label\na.png,x\nb.png,x\nmissing.png,y\n")
    _raises(m.ERROR_SINGLE_CLASS.format(path=str(manifest), label="x"), manifest)


# ---------------------------------------------------------------------------------------------------------
# attribute tables
# ---------------------------------------------------------------------------------------------------------

def test_attributes_joined_by_id(tmp_path):
    _images(tmp_path, ["a.png", "b.png", "c.png"])
    manifest = _csv(tmp_path / "m.csv", "id,path,label\n1,a.png,x\n2,b.png,y\n3,c.png,y\n")
    attributes = _csv(tmp_path / "attrs.csv", "id,skin,age\n3,dark,7\n1,light,\n99,dark,1\n")
    dataset = load_dataset(manifest, attributes_file=attributes)
    assert dataset.table["skin"].tolist() == ["light", None, "dark"]  # image 2 has no row: missing, kept
    assert dataset.table["age"].tolist() == [None, None, "7"]
    assert dataset.group_attributes == ("skin", "age")
    assert dataset.table.attrs["notes"] == (m.NOTE_UNMATCHED_ATTRIBUTE_ROWS.format(
        n=1, path=str(attributes), column="id", value="99"),)


def test_attributes_joined_by_path(tmp_path):
    _images(tmp_path, ["cat/a.png", "cat/b.png", "dog/c.png"])
    attributes = _csv(tmp_path / "attrs.csv", "path,light\ncat/a.png,day\ndog/c.png,night\ncat/b.png,day\n")
    dataset = load_dataset(tmp_path, attributes_file=attributes)
    assert dataset.table["light"].tolist() == ["day", "day", "night"]
    assert dataset.group_attributes == ("light",)
    assert dataset.table.attrs["notes"] == ()


def test_bad_attribute_tables(tmp_path):
    _images(tmp_path, ["a.png", "b.png"])
    manifest = _csv(tmp_path / "m.csv", "path,label,race\na.png,x,W\nb.png,y,B\n")
    missing = tmp_path / "nope.csv"
    _raises(m.ERROR_ATTRIBUTES_NOT_FOUND.format(path=str(missing)), manifest, attributes_file=missing)
    no_key = _csv(tmp_path / "a1.csv", "name,skin\na,light\n")
    _raises(m.ERROR_ATTRIBUTES_NO_KEY.format(path=str(no_key), columns="'name', 'skin'"), manifest,
            attributes_file=no_key)
    duplicate = _csv(tmp_path / "a2.csv", "path,skin\na.png,light\n./a.png,dark\n")
    _raises(m.ERROR_ATTRIBUTES_DUPLICATE_KEY.format(path=str(duplicate), first="row 0 (line 2)",
                                                    second="row 1 (line 3)", column="path", value="./a.png"),
            manifest, attributes_file=duplicate)
    clash = _csv(tmp_path / "a3.csv", "path,race\na.png,W\n")
    _raises(m.ERROR_ATTRIBUTES_COLUMN_CLASH.format(path=str(clash), column="race", data=str(manifest)), manifest,
            attributes_file=clash)
    empty_key = _csv(tmp_path / "a4.csv", "path,skin\n,light\n")
    _raises(m.ERROR_ATTRIBUTES_EMPTY_KEY.format(path=str(empty_key), where="row 0 (line 2)", column="path"),
            manifest, attributes_file=empty_key)


# ---------------------------------------------------------------------------------------------------------
# real data
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not CIFAR_JPEG.is_dir(), reason="../shared/data/cifar10-test-jpeg is absent")
def test_cifar10_test_jpeg_imagefolder():
    start = time.perf_counter()
    dataset = load_dataset(CIFAR_JPEG)
    print(f"load_dataset on 10,000 CIFAR-10 JPEGs: {time.perf_counter() - start:.2f} s")
    assert dataset.n_images == 10_000
    assert len(dataset.classes) == 10
    assert dataset.table["label"].value_counts().tolist() == [1000] * 10
    assert dataset.skipped == ()
    assert dataset.table["id"].is_unique


def test_csv_with_bom_crlf_backslashes_and_header_spaces(tmp_path):
    _images(tmp_path, ["img/a.png", "img/b.png"])
    manifest = tmp_path / "m.csv"
    manifest.write_bytes("\ufeffpath , label,Age\r\nimg\\a.png,x,1\r\nimg/b.png,y,2\r\n".encode("utf-8"))
    dataset = load_dataset(manifest)
    assert dataset.table["id"].tolist() == ["img/a.png", "img/b.png"]
    assert dataset.table["Age"].tolist() == ["1", "2"]


def test_windows_drive_path_escapes_the_root(tmp_path):
    _images(tmp_path, ["a.png", "b.png", "c.png"])
    manifest = _csv(tmp_path / "m.csv", "path,label\na.png,x\nb.png,y\nC:\\data\\c.png,y\n")
    dataset = load_dataset(manifest)
    assert [(s.row, s.path, s.reason) for s in dataset.skipped] == [(2, "C:\\data\\c.png", m.SKIP_PATH_ESCAPES)]


def test_imagefolder_labels_checked_against_given_classes(tmp_path):
    _images(tmp_path, ["cat/1.png", "dog/2.png", "eel/3.png"])
    dataset = load_dataset(tmp_path, classes=["dog", "cat", "eel"])
    assert dataset.classes == ("dog", "cat", "eel") and dataset.class_order_source == "classes file"
    _raises(m.ERROR_LABEL_NOT_IN_CLASSES.format(path=str(tmp_path), where="image eel/3.png", label="eel",
                                                classes="'dog', 'cat'"), tmp_path, classes=["dog", "cat"])


def test_table_types(tmp_path):
    _images(tmp_path, ["cat/1.png", "dog/2.png"])
    table = load_dataset(tmp_path).table
    assert table["row"].dtype == "int64"
    assert all(table[c].dtype == object for c in ("id", "path", "label"))
