"""Hostile and broken inputs through the CLI: each one is either exit code 2 with exactly one line on stderr
(the module's message constant, naming the file/row/column) or a counted skip in ``audit.json`` ``skipped``;
never a traceback, never a silent drop, never a temporary file left behind. Plus the security rules: no
unpickling, escaped report text, neutralised CSV cells, safe zip extraction.

The CLI runs in-process (``audit.cli.main``) to keep the file fast; ``test_subprocess_*`` checks the real
process once.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audit.cli import main
from tests.helpers import REPO, run_cli, write_manifest_dataset, write_predictions_csv

SAMPLE = REPO / "sample_data"


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------

def _regex(template: str, **known) -> str:
    """``template`` as a regex: known fields formatted, unknown ones (exception details) as ``.+``."""
    out = []
    for part in re.split(r"(\{[^{}]*\})", template):
        field = re.fullmatch(r"\{(\w+)(![rsa])?(:[^}]*)?\}", part)
        if field is None:
            out.append(re.escape(part.replace("{{", "{").replace("}}", "}")))
        elif field.group(1) in known:
            out.append(re.escape(part.format(**{field.group(1): known[field.group(1)]})))
        else:
            out.append(".+")
    return "".join(out)


def cli(capsys, *args) -> tuple[int, list[str], str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, [line for line in captured.err.splitlines() if line.strip()], captured.out


def expect_error(result, template: str, **known) -> str:
    """Exit 2, exactly one stderr line, equal to ``error: `` + the formatted constant."""
    code, lines, _ = result
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    message = lines[0][len("error: "):]
    assert re.fullmatch(_regex(template, **known), message), (message, template)
    return message


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in Path(folder).rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name
                or p.name.endswith(".extracting")]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile_base")
    manifest = write_manifest_dataset(folder, n_per_cell=5, size=16)
    write_predictions_csv(manifest, folder / "preds.csv", accuracy_by_group={"a": 0.9, "b": 0.7})
    return folder


@pytest.fixture
def data(base, tmp_path) -> Path:
    """A private copy of the base data set (manifest.csv, images/, preds.csv)."""
    target = tmp_path / "data"
    shutil.copytree(base, target)
    return target


def manifest_frame(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "manifest.csv", dtype=str, keep_default_na=False)


def run_args(folder: Path, *extra) -> tuple:
    return ("run", "--data", folder / "manifest.csv", "--out", folder / "out", "--quiet", "--no-cache",
            "--n-bootstrap", "20", *extra)


@pytest.fixture(scope="module")
def audit_folder(base, tmp_path_factory) -> Path:
    """A finished audit (with predictions) to break for report / gate."""
    out = tmp_path_factory.mktemp("hostile_audit") / "out"
    assert main(["run", "--data", str(base / "manifest.csv"), "--predictions", str(base / "preds.csv"),
                 "--out", str(out), "--quiet", "--no-cache", "--n-bootstrap", "20"]) == 0
    return out


@pytest.fixture
def broken(audit_folder, tmp_path) -> Path:
    target = tmp_path / "audit"
    shutil.copytree(audit_folder, target)
    return target


# ---------------------------------------------------------------------------------------------------------------
# manifests
# ---------------------------------------------------------------------------------------------------------------

def test_manifest_with_semicolons_names_the_delimiter(data, capsys):
    from audit.io.manifest import ERROR_WRONG_DELIMITER

    manifest_frame(data).to_csv(data / "manifest.csv", sep=";", index=False)
    expect_error(cli(capsys, *run_args(data)), ERROR_WRONG_DELIMITER, path=data / "manifest.csv",
                 header="id;path;label;site;age", delimiter="semicolons")


def test_manifest_not_utf8(data, capsys):
    from audit.io.manifest import ERROR_UNREADABLE_TABLE

    frame = manifest_frame(data)
    frame.loc[0, "site"] = "caf\xe9"
    (data / "manifest.csv").write_bytes(frame.to_csv(index=False).encode("latin-1"))
    expect_error(cli(capsys, *run_args(data)), ERROR_UNREADABLE_TABLE, path=data / "manifest.csv", kind="CSV")


def test_manifest_with_bom_is_read(data, capsys):
    (data / "manifest.csv").write_bytes(b"\xef\xbb\xbf" + (data / "manifest.csv").read_bytes())
    code, lines, _ = cli(capsys, *run_args(data))
    assert code == 0 and lines == []
    assert json.loads((data / "out" / "audit.json").read_text())["dataset"]["n_images"] == 20


def test_manifest_duplicate_column(data, capsys):
    from audit.io.manifest import ERROR_DUPLICATE_COLUMN

    text = (data / "manifest.csv").read_text().splitlines()
    text[0] = text[0].replace("age", "site")
    (data / "manifest.csv").write_text("\n".join(text) + "\n")
    expect_error(cli(capsys, *run_args(data)), ERROR_DUPLICATE_COLUMN, path=data / "manifest.csv", column="site")


def test_manifest_empty_file(data, capsys):
    from audit.io.manifest import ERROR_UNREADABLE_TABLE

    (data / "manifest.csv").write_bytes(b"")
    expect_error(cli(capsys, *run_args(data)), ERROR_UNREADABLE_TABLE, path=data / "manifest.csv", kind="CSV")


def test_manifest_header_only(data, capsys):
    from audit.io.manifest import ERROR_EMPTY_DATASET

    (data / "manifest.csv").write_text("id,path,label,site\n")
    expect_error(cli(capsys, *run_args(data)), ERROR_EMPTY_DATASET, path=data / "manifest.csv", n_skipped=0,
                 reasons="no image files found")


def test_manifest_whitespace_label(data, capsys):
    from audit.io.manifest import ERROR_EMPTY_LABEL

    frame = manifest_frame(data)
    frame.loc[3, "label"] = "   "
    frame.to_csv(data / "manifest.csv", index=False)
    expect_error(cli(capsys, *run_args(data)), ERROR_EMPTY_LABEL, path=data / "manifest.csv",
                 where="row 3 (line 5)", column="label")


@pytest.mark.parametrize("token", ["nan", "NaN", "NULL"])
def test_manifest_nan_string_label(data, capsys, token):
    from audit.io.manifest import ERROR_MISSING_LABEL

    frame = manifest_frame(data)
    frame.loc[3, "label"] = token
    frame.to_csv(data / "manifest.csv", index=False)
    expect_error(cli(capsys, *run_args(data)), ERROR_MISSING_LABEL, path=data / "manifest.csv",
                 where="row 3 (line 5)", column="label", value=token)


@pytest.mark.parametrize("column", ["prediction", "is_blurry_issue", "label_score", "duplicate_set"])
def test_manifest_column_named_like_an_engine_column(data, capsys, column):
    from audit.io.manifest import ERROR_RESERVED_COLUMN

    frame = manifest_frame(data)
    frame[column] = "x"
    frame.to_csv(data / "manifest.csv", index=False)
    expect_error(cli(capsys, *run_args(data)), ERROR_RESERVED_COLUMN, path=data / "manifest.csv", column=column)


def test_engine_issue_names_stay_in_sync():
    from audit.analysis.data_quality import ISSUES
    from audit.io.manifest import ENGINE_ISSUES, is_engine_column

    assert tuple(ENGINE_ISSUES) == tuple(ISSUES)
    assert all(is_engine_column(f"{issue}_score") and is_engine_column(f"is_{issue}_issue") for issue in ISSUES)
    assert not is_engine_column("credit_score") and not is_engine_column("age")


def test_manifest_duplicate_ids(data, capsys):
    from audit.io.manifest import ERROR_DUPLICATE_ID

    frame = manifest_frame(data)
    frame.loc[5, "id"] = frame.loc[4, "id"]
    frame.to_csv(data / "manifest.csv", index=False)
    expect_error(cli(capsys, *run_args(data)), ERROR_DUPLICATE_ID, path=data / "manifest.csv",
                 first="row 4 (line 6)", second="row 5 (line 7)", id="i4")


def test_manifest_single_class(data, capsys):
    from audit.io.manifest import ERROR_SINGLE_CLASS

    frame = manifest_frame(data)
    frame["label"] = "cat"
    frame.to_csv(data / "manifest.csv", index=False)
    expect_error(cli(capsys, *run_args(data)), ERROR_SINGLE_CLASS, path=data / "manifest.csv", label="cat")


# ---------------------------------------------------------------------------------------------------------------
# images and paths: counted skips (one run over a manifest holding every hostile file)
# ---------------------------------------------------------------------------------------------------------------

def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _encoded(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def skip_run(base, tmp_path_factory):
    """Run once over the base data plus every hostile file; returns (audit.json, rows by name)."""
    from audit.io.images import MAX_FILE_BYTES

    folder = tmp_path_factory.mktemp("hostile_skips") / "data"
    shutil.copytree(base, folder)
    images = folder / "images"
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    png, jpeg = _encoded(noise, format="PNG"), _encoded(noise, format="JPEG")
    bomb_header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    files = {
        "zero_byte": ("z.png", b""),
        "truncated_png": ("t.png", png[: len(png) // 2]),
        "truncated_jpeg": ("t.jpg", jpeg[: len(jpeg) // 2]),
        "text_as_jpg": ("text.jpg", b"hello, I am not an image\n"),
        "bomb": ("bomb.png", b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", bomb_header)
                 + _png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) + _png_chunk(b"IEND", b"")),
        "gif_animation": ("a.gif", None),
        "png_16bit": ("p16.png", _encoded(Image.fromarray(rng.integers(0, 65535, (20, 20), dtype=np.uint16)),
                                          format="PNG")),
        "cmyk_jpeg": ("c.jpg", _encoded(Image.new("CMYK", (20, 20), (10, 20, 30, 40)), format="JPEG")),
        "palette_transparency": ("pal.png", _encoded(noise.convert("P"), format="PNG", transparency=0)),
    }
    frames = [Image.fromarray(np.full((20, 20, 3), v, np.uint8)) for v in (0, 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    files["gif_animation"] = ("a.gif", buffer.getvalue())
    paths = {}
    for case, (name, payload) in files.items():
        (images / name).write_bytes(payload)
        paths[case] = f"images/{name}"
    with open(images / "huge.png", "wb") as handle:  # sparse: takes no disk space
        handle.write(png)
        handle.truncate(MAX_FILE_BYTES + 1)
    paths["huge_file"] = "images/huge.png"
    os.mkfifo(images / "fifo.png")
    paths["fifo"] = "images/fifo.png"
    outside = folder.parent / "outside.png"
    outside.write_bytes(png)
    os.symlink(outside, images / "link.png")
    paths["symlink_out_of_root"] = "images/link.png"
    paths["dotdot"] = "../outside.png"
    paths["absolute_outside"] = str(outside)
    paths["folder"] = "images"
    paths["missing"] = "images/nope.png"
    paths["nul_byte"] = "images/img_\x000001.png"
    frame = manifest_frame(folder)
    extra = [{"id": f"x_{case}", "path": path, "label": "cat", "site": "a", "age": "young"}
             for case, path in paths.items()]
    frame = pd.concat([frame, pd.DataFrame(extra)], ignore_index=True)
    # the csv module cannot write a NUL byte: write the row by hand
    text = frame.to_csv(index=False).replace("images/img_\x000001.png", "PLACEHOLDER_NUL")
    (folder / "manifest.csv").write_bytes(text.encode().replace(b"PLACEHOLDER_NUL", b"images/img_\x000001.png"))
    assert main(list(map(str, run_args(folder, "--data-root", folder)))) == 0
    audit = json.loads((folder / "out" / "audit.json").read_text())
    rows = {case: len(manifest_frame(base)) + i for i, case in enumerate(paths)}
    return audit, rows, folder


def _skip_reason(skip_run, case):
    audit, rows, _ = skip_run
    reasons = [entry["reason"] for entry in audit["skipped"] if entry["row"] == rows[case]]
    assert len(reasons) == 1, (case, audit["skipped"])
    return reasons[0]


def test_skip_zero_byte_image(skip_run):
    from audit.io.images import SKIP_ZERO_BYTES

    assert _skip_reason(skip_run, "zero_byte") == SKIP_ZERO_BYTES


@pytest.mark.parametrize("case", ["truncated_png", "truncated_jpeg"])
def test_skip_truncated_image(skip_run, case):
    from audit.io.images import SKIP_CORRUPT

    assert re.fullmatch(_regex(SKIP_CORRUPT), _skip_reason(skip_run, case))


def test_skip_text_file_named_jpg(skip_run):
    from audit.io.images import SKIP_NOT_IMAGE

    assert _skip_reason(skip_run, "text_as_jpg") == SKIP_NOT_IMAGE


def test_skip_decompression_bomb(skip_run):
    from audit.io.images import SKIP_BOMB, SKIP_TOO_LARGE

    reason = _skip_reason(skip_run, "bomb")
    assert re.fullmatch(_regex(SKIP_BOMB), reason) or re.fullmatch(_regex(SKIP_TOO_LARGE), reason)


def test_skip_huge_file_before_reading(skip_run):
    from audit.io.images import MAX_FILE_BYTES, SKIP_FILE_TOO_LARGE

    assert _skip_reason(skip_run, "huge_file") == SKIP_FILE_TOO_LARGE.format(n_bytes=MAX_FILE_BYTES + 1,
                                                                             cap=MAX_FILE_BYTES)


@pytest.mark.parametrize("case", ["fifo", "folder"])
def test_skip_path_that_is_not_a_regular_file(skip_run, case):
    from audit.io.manifest import SKIP_NOT_A_FILE

    assert _skip_reason(skip_run, case) == SKIP_NOT_A_FILE


@pytest.mark.parametrize("case", ["symlink_out_of_root", "dotdot", "absolute_outside"])
def test_skip_path_outside_data_root(skip_run, case):
    from audit.io.manifest import SKIP_OUTSIDE_DATA_ROOT

    assert _skip_reason(skip_run, case) == SKIP_OUTSIDE_DATA_ROOT


def test_skip_missing_file(skip_run):
    from audit.io.manifest import SKIP_NOT_FOUND

    assert _skip_reason(skip_run, "missing") == SKIP_NOT_FOUND


def test_skip_nul_byte_in_path(skip_run):
    from audit.io.manifest import SKIP_INVALID_PATH

    assert _skip_reason(skip_run, "nul_byte") == SKIP_INVALID_PATH


@pytest.mark.parametrize("case", ["gif_animation", "png_16bit", "cmyk_jpeg", "palette_transparency"])
def test_unusual_but_valid_images_are_audited(skip_run, case):
    audit, rows, folder = skip_run
    assert rows[case] not in {entry["row"] for entry in audit["skipped"]}
    images = pd.read_parquet(folder / "out" / "images.parquet", columns=["id"])
    assert f"x_{case}" in set(images["id"])


def test_skips_are_counted_not_dropped(skip_run):
    audit, rows, folder = skip_run
    n_rows = len(pd.read_csv(folder / "manifest.csv", dtype=str))
    assert audit["dataset"]["n_images"] + len(audit["skipped"]) == n_rows
    assert audit["dataset"]["n_skipped"] == len(audit["skipped"])
    assert no_temporary_files(folder / "out")


# ---------------------------------------------------------------------------------------------------------------
# predictions
# ---------------------------------------------------------------------------------------------------------------

def _with_predictions(data: Path, edit, *, kind: str = "auto", name: str = "p.csv"):
    frame = pd.read_csv(data / "preds.csv")
    frame = edit(frame)
    frame.to_csv(data / name, index=False)
    return run_args(data, "--predictions", data / name, "--predictions-kind", kind)


def test_predictions_nan(data, capsys):
    from audit.model.predictions import ERROR_PREDICTIONS_NOT_FINITE

    def edit(frame):
        frame.loc[2, "cat"] = np.nan
        return frame
    expect_error(cli(capsys, *_with_predictions(data, edit)), ERROR_PREDICTIONS_NOT_FINITE, file=data / "p.csv",
                 row=2, where=" (id 'i2')", column="cat", value="missing or NaN")


def test_predictions_inf(data, capsys):
    from audit.model.predictions import ERROR_PREDICTIONS_NOT_FINITE

    def edit(frame):
        frame.loc[2, "dog"] = np.inf
        return frame
    expect_error(cli(capsys, *_with_predictions(data, edit)), ERROR_PREDICTIONS_NOT_FINITE, file=data / "p.csv",
                 row=2, where=" (id 'i2')", column="dog", value="inf")


def test_predictions_string_value(data, capsys):
    from audit.model.predictions import ERROR_PREDICTIONS_NOT_NUMERIC

    def edit(frame):
        frame = frame.astype(object)
        frame.loc[2, "cat"] = "abc"
        return frame
    expect_error(cli(capsys, *_with_predictions(data, edit)), ERROR_PREDICTIONS_NOT_NUMERIC, file=data / "p.csv",
                 row=2, column="cat", value="abc")


def test_predictions_negative_probability(data, capsys):
    from audit.model.predictions import ERROR_PREDICTIONS_NOT_PROBABILITIES

    def edit(frame):
        frame.loc[2, "cat"], frame.loc[2, "dog"] = -0.2, 1.2
        return frame
    expect_error(cli(capsys, *_with_predictions(data, edit, kind="probabilities")),
                 ERROR_PREDICTIONS_NOT_PROBABILITIES, file=data / "p.csv", row=2)


def test_predictions_duplicate_ids(data, capsys):
    from audit.model.predictions import ERROR_PREDICTIONS_DUPLICATE

    def edit(frame):
        frame.loc[1, "id"] = frame.loc[0, "id"]
        return frame
    expect_error(cli(capsys, *_with_predictions(data, edit)), ERROR_PREDICTIONS_DUPLICATE, file=data / "p.csv",
                 first=0, second=1, column="id", value="i0")


def test_predictions_missing_id(data, capsys):
    from audit.model.predictions import ERROR_PREDICTIONS_MISSING_ROW

    expect_error(cli(capsys, *_with_predictions(data, lambda f: f.iloc[1:])), ERROR_PREDICTIONS_MISSING_ROW,
                 file=data / "p.csv", n_missing=1, id="i0")


def test_predictions_extra_rows_are_counted_in_the_message(data, capsys):
    def edit(frame):
        return pd.concat([frame, pd.DataFrame([{"id": "ghost", "cat": 0.5, "dog": 0.5}])])
    code, lines, _ = cli(capsys, *_with_predictions(data, edit))
    assert code == 0 and lines == []
    message = json.loads((data / "out" / "audit.json").read_text())["model"]["message"]
    assert "1 row(s) of the file match no image of the data set and were ignored" in message


def test_predictions_unknown_class_column(data, capsys):
    from audit.model.predictions import ERROR_PREDICTIONS_UNKNOWN_CLASS

    expect_error(cli(capsys, *_with_predictions(data, lambda f: f.rename(columns={"dog": "wolf"}))),
                 ERROR_PREDICTIONS_UNKNOWN_CLASS, file=data / "p.csv", column="wolf", classes="cat, dog")


def test_predictions_npy_object_array_is_not_unpickled(data, capsys, tmp_path):
    from audit.model.predictions import ERROR_PREDICTIONS_UNREADABLE

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    np.save(data / "p.npy", np.array([Exploit()], dtype=object), allow_pickle=True)
    expect_error(cli(capsys, *run_args(data, "--predictions", data / "p.npy")), ERROR_PREDICTIONS_UNREADABLE,
                 file=data / "p.npy")
    assert not marker.exists()


def test_predictions_npy_wrong_number_of_columns(data, capsys):
    from audit.model.predictions import ERROR_PREDICTIONS_N_COLUMNS

    np.save(data / "p.npy", np.full((20, 3), 1 / 3, np.float32))
    expect_error(cli(capsys, *run_args(data, "--predictions", data / "p.npy")), ERROR_PREDICTIONS_N_COLUMNS,
                 file=data / "p.npy", found=3, n=2, classes="cat, dog")


# ---------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------

def test_model_with_pickled_code_is_refused(data, capsys, tmp_path):
    import torch

    from audit.model.inference import ERROR_MODEL_PICKLED_CODE

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"weight": Exploit()}, data / "m.pt")
    expect_error(cli(capsys, *run_args(data, "--model", data / "m.pt", "--arch", "cifar_resnet20")),
                 ERROR_MODEL_PICKLED_CODE, file=data / "m.pt")
    assert not marker.exists()


def test_model_random_bytes(data, capsys):
    from audit.model.inference import ERROR_MODEL_UNKNOWN_FORMAT

    (data / "m.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    expect_error(cli(capsys, *run_args(data, "--model", data / "m.pt", "--arch", "cifar_resnet20")),
                 ERROR_MODEL_UNKNOWN_FORMAT, file=data / "m.pt")


def _onnx_with_sidecar(data: Path, **changes) -> Path:
    shutil.copy(SAMPLE / "model.onnx", data / "model.onnx")
    sidecar = json.loads((SAMPLE / "model.json").read_text())
    sidecar["classes"] = ["cat", "dog"]
    sidecar.update(changes)
    (data / "model.json").write_text(json.dumps(sidecar))
    return data / "model.onnx"


def test_model_truncated_onnx(data, capsys):
    from audit.model.inference import ERROR_MODEL_LOAD_FAILED

    model = _onnx_with_sidecar(data)
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    expect_error(cli(capsys, *run_args(data, "--model", model)), ERROR_MODEL_LOAD_FAILED, kind="ONNX", file=model)


def test_model_output_size_differs_from_classes(data, capsys):
    from audit.model.inference import ERROR_MODEL_N_CLASSES

    model = _onnx_with_sidecar(data, classes=["cat", "dog", "bird"])
    expect_error(cli(capsys, *run_args(data, "--model", model)), ERROR_MODEL_N_CLASSES, file=model, k=2, n=3,
                 classes="cat, dog, bird")


def test_class_map_missing_a_class(data, capsys):
    from audit.model.inference import ERROR_MODEL_CLASS_UNMAPPED

    model = _onnx_with_sidecar(data, classes=["female", "male"])
    (data / "map.csv").write_text("model_class,dataset_class\nfemale,cat\n")
    expect_error(cli(capsys, *run_args(data, "--model", model, "--class-map", data / "map.csv")),
                 ERROR_MODEL_CLASS_UNMAPPED, name="male", dataset="cat, dog")


def test_sidecar_unknown_key(data, capsys):
    from audit.model.sidecar import ERROR_SIDECAR_UNKNOWN_KEY

    model = _onnx_with_sidecar(data, foo=1)
    expect_error(cli(capsys, *run_args(data, "--model", model)), ERROR_SIDECAR_UNKNOWN_KEY, key="foo",
                 file=data / "model.json")


def test_sidecar_wrong_type(data, capsys):
    from audit.model.sidecar import ERROR_SIDECAR_TYPE

    model = _onnx_with_sidecar(data, input_size="32x32")
    expect_error(cli(capsys, *run_args(data, "--model", model)), ERROR_SIDECAR_TYPE, key="input_size",
                 file=data / "model.json")


# ---------------------------------------------------------------------------------------------------------------
# policy, reference
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, constant", [
    ("[label_noise]\nmax_rte = 0.1\n", "ERROR_UNKNOWN_KEY"),
    ("[label_noise]\nmax_rate = \"high\"\n", "ERROR_WRONG_TYPE"),
    ("[label_noise\nmax_rate = 0.1\n", "ERROR_POLICY_TOML"),
])
def test_policy_errors(data, capsys, text, constant):
    import audit.policy

    (data / "policy.toml").write_text(text)
    expect_error(cli(capsys, *run_args(data, "--policy", data / "policy.toml")), getattr(audit.policy, constant),
                 path=data / "policy.toml")
    assert not (data / "out").exists()


def test_reference_duplicate_group(data, capsys):
    from audit.analysis.distribution import ERROR_REFERENCE_DUPLICATE

    (data / "ref.csv").write_text("attribute,group,expected_share\nsite,a,0.5\nsite,a,0.4\nsite,b,0.5\n")
    expect_error(cli(capsys, *run_args(data, "--reference", data / "ref.csv")), ERROR_REFERENCE_DUPLICATE,
                 path=data / "ref.csv", first=0, second=1, attribute="site", group="a")


def test_reference_empty_group(data, capsys):
    from audit.analysis.distribution import ERROR_REFERENCE_EMPTY

    (data / "ref.csv").write_text("attribute,group,expected_share\nsite,,0.5\nsite,b,0.5\n")
    expect_error(cli(capsys, *run_args(data, "--reference", data / "ref.csv")), ERROR_REFERENCE_EMPTY,
                 path=data / "ref.csv", row=0, column="group")


def test_reference_unknown_attribute_when_attributes_given():
    from audit.analysis.distribution import ERROR_REFERENCE_UNKNOWN_ATTRIBUTE, load_reference_proportions
    from audit.errors import InputError

    frame = pd.DataFrame({"attribute": ["sitee"], "group": ["a"], "expected_share": ["0.5"]})
    with pytest.raises(InputError) as caught:
        load_reference_proportions(frame, path="ref.csv", attributes=["site", "age"])
    assert str(caught.value) == ERROR_REFERENCE_UNKNOWN_ATTRIBUTE.format(path="ref.csv", row=0, attribute="sitee",
                                                                         available="site, age")


# ---------------------------------------------------------------------------------------------------------------
# label-noise
# ---------------------------------------------------------------------------------------------------------------

def _labels_csv(data: Path) -> Path:
    manifest_frame(data)[["id", "label"]].to_csv(data / "labels.csv", index=False)
    return data / "labels.csv"


def test_label_noise_without_attributes_has_no_failed_analyses(data, capsys):
    code, lines, _ = cli(capsys, "label-noise", "--labels", _labels_csv(data), "--predictions", data / "preds.csv",
                         "--out", data / "out")
    assert code == 0 and lines == []
    assert json.loads((data / "out" / "audit.json").read_text())["errors"] == []


def test_label_noise_attributes_duplicate_id(data, capsys):
    from audit.pipeline.labels_input import ERROR_ATTRIBUTES_DUPLICATE_ID

    (data / "a.csv").write_text("id,site\ni0,a\ni0,b\n")
    expect_error(cli(capsys, "label-noise", "--labels", _labels_csv(data), "--predictions", data / "preds.csv",
                     "--attributes", data / "a.csv", "--out", data / "out"),
                 ERROR_ATTRIBUTES_DUPLICATE_ID, path=data / "a.csv", id="i0", first=0, second=1)


def test_label_noise_attributes_engine_column(data, capsys):
    from audit.pipeline.labels_input import ERROR_ATTRIBUTES_RESERVED

    (data / "a.csv").write_text("id,prediction\ni0,x\n")
    expect_error(cli(capsys, "label-noise", "--labels", _labels_csv(data), "--predictions", data / "preds.csv",
                     "--attributes", data / "a.csv", "--out", data / "out"),
                 ERROR_ATTRIBUTES_RESERVED, path=data / "a.csv", column="prediction")


def test_label_noise_attribute_missing_tokens_form_the_missing_group(data, capsys):
    frame = manifest_frame(data)[["id", "site"]]
    frame.loc[0:3, "site"] = "NaN"
    frame.to_csv(data / "a.csv", index=False)
    code, _, _ = cli(capsys, "label-noise", "--labels", _labels_csv(data), "--predictions", data / "preds.csv",
                     "--attributes", data / "a.csv", "--out", data / "out")
    assert code == 0
    groups = set(pd.read_parquet(data / "out" / "group_metrics.parquet").query("attribute == 'site'")["group"])
    assert groups == {"<missing>", "a", "b"}


def test_label_noise_classes_file_not_utf8(data, capsys):
    from audit.pipeline.labels_input import ERROR_CLASSES_FILE

    (data / "classes.txt").write_bytes(b"caf\xe9\ndog\n")
    expect_error(cli(capsys, "label-noise", "--labels", _labels_csv(data), "--predictions", data / "preds.csv",
                     "--classes", data / "classes.txt", "--out", data / "out"),
                 ERROR_CLASSES_FILE, path=data / "classes.txt")


# ---------------------------------------------------------------------------------------------------------------
# output locations
# ---------------------------------------------------------------------------------------------------------------

def test_out_is_a_file(data, capsys):
    from audit.folder import ERROR_OUT_IS_FILE

    (data / "out").write_text("x")
    expect_error(cli(capsys, *run_args(data)), ERROR_OUT_IS_FILE, path=data / "out")


def test_out_cannot_be_created(data, capsys):
    from audit.folder import ERROR_OUT_NOT_WRITABLE

    (data / "file").write_text("x")
    out = data / "file" / "sub"  # a file where a folder should be: fails for root too
    expect_error(cli(capsys, "run", "--data", data / "manifest.csv", "--out", out, "--quiet", "--no-cache"),
                 ERROR_OUT_NOT_WRITABLE, path=out)
    assert no_temporary_files(data)


def test_report_out_cannot_be_written(broken, capsys):
    from audit.report.render import ERROR_OUT_NOT_WRITABLE

    (broken / "file").write_text("x")
    target = broken / "file" / "report.md"
    expect_error(cli(capsys, "report", broken, "--format", "md", "--out", target), ERROR_OUT_NOT_WRITABLE,
                 path=target)
    assert no_temporary_files(broken)


def test_gate_json_is_a_folder(broken, capsys, tmp_path):
    from audit.gate import ERROR_JSON_IS_DIR

    (tmp_path / "policy.toml").write_text("[label_noise]\nmax_rate = 0.5\n")
    expect_error(cli(capsys, "gate", broken, "--policy", tmp_path / "policy.toml", "--json", tmp_path),
                 ERROR_JSON_IS_DIR, path=tmp_path)


def test_gate_json_cannot_be_written(broken, capsys, tmp_path):
    from audit.gate import ERROR_JSON_NOT_WRITABLE

    (tmp_path / "policy.toml").write_text("[label_noise]\nmax_rate = 0.5\n")
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "verdict.json"
    expect_error(cli(capsys, "gate", broken, "--policy", tmp_path / "policy.toml", "--json", target),
                 ERROR_JSON_NOT_WRITABLE, path=target)


# ---------------------------------------------------------------------------------------------------------------
# broken audit folders for report / gate
# ---------------------------------------------------------------------------------------------------------------

def test_report_corrupt_audit_json(broken, capsys):
    from audit.folder import ERROR_AUDIT_JSON_CORRUPT

    (broken / "audit.json").write_text('{"schema_version": ')
    expect_error(cli(capsys, "report", broken, "--format", "html"), ERROR_AUDIT_JSON_CORRUPT,
                 file=broken / "audit.json")


def test_report_missing_parquet(broken, capsys):
    from audit.folder import ERROR_NO_TABLE

    (broken / "images.parquet").unlink()
    expect_error(cli(capsys, "report", broken, "--format", "md"), ERROR_NO_TABLE, path=broken,
                 name="images.parquet")


def test_report_images_table_from_another_run(broken, capsys):
    from audit.folder import ERROR_MIXED_FOLDER, ERROR_TABLE_ROWS

    run_id = json.loads((broken / "audit.json").read_text())["run_id"]
    pd.read_parquet(broken / "images.parquet").iloc[:5].to_parquet(broken / "images.parquet")
    # the table no longer carries the run's id (issue 11: every contract file records it)
    expect_error(cli(capsys, "report", broken, "--format", "md"), ERROR_MIXED_FOLDER, path=broken,
                 file="images.parquet", found="unknown", expected=run_id)
    # a table with the right id but the wrong row count is still refused
    from audit.folder import PARQUET_RUN_ID_KEY
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(pd.read_parquet(broken / "images.parquet"), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), PARQUET_RUN_ID_KEY: run_id.encode()})
    pq.write_table(table, broken / "images.parquet")
    expect_error(cli(capsys, "report", broken, "--format", "md"), ERROR_TABLE_ROWS,
                 file=broken / "images.parquet", found=5, expected=20)


def test_gate_missing_group_metrics(broken, capsys, tmp_path):
    from audit.folder import ERROR_NO_TABLE

    (broken / "group_metrics.parquet").unlink()
    (tmp_path / "policy.toml").write_text("[label_noise]\nmax_rate = 0.5\n")
    expect_error(cli(capsys, "gate", broken, "--policy", tmp_path / "policy.toml"), ERROR_NO_TABLE, path=broken,
                 name="group_metrics.parquet")


def test_gate_error_verdict_prints_one_stderr_line(broken, capsys, tmp_path):
    from audit.gate import MESSAGE_VERDICT_ERROR

    (tmp_path / "policy.toml").write_text("[representation]\nattributes = [\"nope\"]\nmin_group_images = 5\n")
    code, lines, out = cli(capsys, "gate", broken, "--policy", tmp_path / "policy.toml")
    assert code == 2 and len(lines) == 1 and "verdict: ERROR" in out
    assert re.fullmatch(_regex(MESSAGE_VERDICT_ERROR, folder=broken, n=1, name="representation.min_group_images"),
                        lines[0])


# ---------------------------------------------------------------------------------------------------------------
# escaping: HTML, Markdown, CSV, zip
# ---------------------------------------------------------------------------------------------------------------

HOSTILE = {"cat": "<script>alert(1)</script>", "dog": '"onmouseover=alert(1) x="'}
HOSTILE_GROUPS = {"a": "{{ 7*7 }}", "b": "<img src=x onerror=alert(2)>"}


def test_html_report_escapes_class_and_group_names(data, capsys):
    frame = manifest_frame(data)
    frame["label"] = frame["label"].map(HOSTILE)
    frame["site"] = frame["site"].map(HOSTILE_GROUPS)
    frame.to_csv(data / "manifest.csv", index=False)
    pd.read_csv(data / "preds.csv").rename(columns=HOSTILE).to_csv(data / "p.csv", index=False)
    assert cli(capsys, *run_args(data, "--predictions", data / "p.csv"))[0] == 0
    code, _, _ = cli(capsys, "report", data / "out", "--format", "html", "--no-thumbnails")
    html = (data / "out" / "report.html").read_text()
    assert code == 0
    for raw in ("<script>alert(1)", 'x="onmouseover', "<img src=x"):
        assert raw not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "{{ 7*7 }}" in html  # shown, not evaluated


def test_markdown_neutralises_links_html_and_mentions():
    from audit.report.markdown import code, md

    text = md("[x](javascript:alert(1)) | a\nb <b> @org/team *em*")
    assert "](" not in text.replace("\\](", "") and "<b>" not in text and "\n" not in text
    assert "\\|" in text and "@org" not in text
    assert code("a`b\nc") == "a'b c"


@pytest.mark.parametrize("value", ["=1+1", " =1+1", "\uff1dcmd", "@SUM(A1)", "-2+3", "\t=x"])
def test_csv_export_neutralises_formulas(value):
    from audit.io.csv_export import to_safe_csv

    text = to_safe_csv(pd.DataFrame({"label": [value], "n": [-3]}))
    row = next(iter(pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False).itertuples(index=False)))
    assert row.label == "'" + value and row.n == "-3"


def test_zip_with_a_file_and_a_folder_of_the_same_name(tmp_path):
    from audit.errors import InputError
    from audit.io.archives import ERROR_PATH_CLASH, extract_zip

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("a", b"1")
        handle.writestr("a/b.txt", b"2")
    with pytest.raises(InputError) as caught:
        extract_zip(archive, tmp_path / "out")
    assert str(caught.value) == ERROR_PATH_CLASH.format(path=archive, name="a/b.txt")
    assert not (tmp_path / "out").exists() and no_temporary_files(tmp_path)


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt"])
def test_zip_traversal_is_refused(tmp_path, name):
    from audit.errors import InputError
    from audit.io.archives import extract_zip

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr(name, b"x")
    with pytest.raises(InputError):
        extract_zip(archive, tmp_path / "sub" / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "sub" / "out").exists()


# ---------------------------------------------------------------------------------------------------------------
# the real process: one line, no traceback
# ---------------------------------------------------------------------------------------------------------------

def test_subprocess_nul_byte_path_is_no_internal_error(data):
    frame = manifest_frame(data)
    text = frame.to_csv(index=False).replace("images/img_0001.png", "PLACEHOLDER")
    (data / "manifest.csv").write_bytes(text.encode().replace(b"PLACEHOLDER", b"images/img_\x000001.png"))
    done = run_cli(*map(str, run_args(data)))
    assert done.returncode == 0, done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    skipped = json.loads((data / "out" / "audit.json").read_text())["skipped"]
    assert [entry["row"] for entry in skipped] == [1]


# ---------------------------------------------------------------------------------------------------------------
# byte-order marks (Excel / Windows editors), odd Parquet, extreme logits
# ---------------------------------------------------------------------------------------------------------------

def _bom(path: Path) -> None:
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def test_policy_with_bom_is_read(data, capsys):
    (data / "policy.toml").write_text("[label_noise]\nmax_rate = 0.5\n")
    _bom(data / "policy.toml")
    code, lines, _ = cli(capsys, *run_args(data, "--predictions", data / "preds.csv", "--policy",
                                          data / "policy.toml"))
    assert code == 0 and lines == []
    assert "verdict" in json.loads((data / "out" / "audit.json").read_text())


def test_sidecar_with_bom_is_read(data, capsys):
    model = _onnx_with_sidecar(data)
    _bom(data / "model.json")
    code, lines, _ = cli(capsys, *run_args(data, "--model", model))
    assert code == 0 and lines == []


def test_parquet_manifest_with_repeated_column(data, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from audit.io.manifest import ERROR_DUPLICATE_COLUMN

    frame = manifest_frame(data)
    table = pa.Table.from_arrays([pa.array(frame[c]) for c in ("path", "label", "site", "age")],
                                 names=["path", "label", "site", "site"])
    pq.write_table(table, data / "m.parquet")
    expect_error(cli(capsys, "run", "--data", data / "m.parquet", "--out", data / "out", "--quiet"),
                 ERROR_DUPLICATE_COLUMN, path=data / "m.parquet", column="site")


def test_extreme_logits_give_probabilities_without_warnings(data, capsys):
    def edit(frame):
        frame["cat"], frame["dog"] = 1e308, -1e308
        return frame
    code, lines, _ = cli(capsys, *_with_predictions(data, edit))
    assert code == 0 and lines == []
    probabilities = np.load(data / "out" / "probabilities.npy")
    assert np.isfinite(probabilities).all() and np.allclose(probabilities[:, 0], 1.0)
    import warnings

    from audit.model.inference import softmax

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow warning would reach the user's stderr
        assert softmax(np.array([[1e308, -1e308]])).tolist() == [[1.0, 0.0]]


class _TinyModel:  # built lazily so that importing this file does not import torch
    @staticmethod
    def script(path: Path) -> None:
        import torch

        class Tiny(torch.nn.Module):
            def forward(self, x):
                return torch.softmax(x.mean(dim=(2, 3))[:, :2], 1)

        torch.jit.save(torch.jit.script(Tiny()), str(path))


def test_corrupt_torchscript_gives_one_line(data, capsys):
    from audit.model.inference import ERROR_MODEL_LOAD_FAILED

    _TinyModel.script(data / "good.pt")
    with zipfile.ZipFile(data / "good.pt") as source, zipfile.ZipFile(data / "bad.pt", "w") as target:
        for info in source.infolist():
            payload = source.read(info.filename)
            if info.filename.endswith(".py"):  # TorchScript's parser error spans several lines
                payload = b"def forward(self, x):\n    return foo(\n"
            target.writestr(info, payload)
    (data / "model.json").write_text(json.dumps({
        "classes": ["cat", "dog"], "input_size": [16, 16], "center_crop": 1.0, "channel_order": "RGB",
        "mean": [0, 0, 0], "std": [1, 1, 1], "output": "probabilities"}))
    expect_error(cli(capsys, *run_args(data, "--model", data / "bad.pt", "--preprocess", data / "model.json")),
                 ERROR_MODEL_LOAD_FAILED, kind="TorchScript", file=data / "bad.pt")


def test_pdf_report_keeps_truncated_images_off_and_loads_no_local_file(broken, capsys, monkeypatch, tmp_path):
    from PIL import ImageFile

    import audit.report.pdf as pdf

    secret = tmp_path / "secret.png"
    Image.new("RGB", (40, 40), (255, 0, 0)).save(secret)
    injected = f'<html><body><p>x</p><img src="{secret.as_uri()}"><img src="secret.png"></body></html>'
    monkeypatch.setattr(pdf, "render_pdf_html", lambda report, server=None: injected)
    code, lines, _ = cli(capsys, "report", broken, "--format", "pdf", "--no-thumbnails")
    assert code == 0 and lines == []
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # weasyprint switches it on when imported
    assert b"/Image" not in (broken / "report.pdf").read_bytes()  # neither file:// nor a relative path loaded
