"""New audit: the form (local paths or uploads), safe upload handling, progress, then the new audit opens.

Uploads are saved under ``reports/.uploads/<random>/`` (base names only; zips unpacked by
:func:`audit.io.archives.extract_zip`, which refuses traversal and bombs) and are always confined to that
folder. A failed audit removes its upload folder again.
"""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import streamlit as st

from app_pages import _state
from audit.config import AuditConfig
from audit.errors import InputError
from audit.io.archives import extract_zip
from audit.model.architectures import ARCHITECTURES
from audit.model.inference import KIND_TORCHSCRIPT, detect_model_kind

ERROR_NO_DATA = "give the image folder or manifest of the data set to audit (field 'Image folder or manifest')"
ERROR_NO_ZIP = "upload a zip of the images (with a manifest, or one folder per class)"
ERROR_NO_MANIFEST = ("the zip holds no manifest {name!r} at its top level: add it, or leave 'Manifest inside the "
                     "zip' empty when the zip has one folder per class")
ERROR_FAILED = "The audit failed: {kind}: {message}"

#: CLI options named in engine messages -> the field of this form that sets the same thing.
FORM_FIELDS = {
    "--data-root": None,  # uploads are always confined to their own folder; there is nothing to allow
    "--data": "Image folder or manifest", "--label-column": "Label column", "--group-by": "Group attributes",
    "--model": "Model file", "--arch": "Architecture", "--preprocess": "Preprocessing file (model.json)",
    "--class-map": "Class map (CSV model_class,dataset_class)", "--predictions": "Predictions file",
    "--policy": "Policy file", "--min-group-size": "Minimum group size", "--out": "Audit name",
}
_OPTION = re.compile(r"--[a-z][a-z-]*")
#: Local-path keys of the form -> the CLI option (for the field name in messages).
LOCAL_OPTIONS = {"data": "--data", "model": "--model", "preprocess_file": "--preprocess",
                 "class_map_file": "--class-map", "predictions": "--predictions", "policy_file": "--policy"}


def form_message(message: str) -> str:
    """An engine message with the CLI options it names replaced by the names of this form's fields."""
    # uploads are confined to their own folder (the app's --data-root): say so in the form's words
    message = str(message).replace("files outside --data-root, when given, are refused",
                                   "files outside the uploaded zip are refused")
    message = message.replace("outside --data-root", "outside the uploaded zip")

    def field(match: re.Match) -> str:
        name = FORM_FIELDS.get(match.group(0), "")
        return f"the field '{name}'" if name else match.group(0)

    return _OPTION.sub(field, str(message))


def _save_upload(upload, folder: Path) -> Path:
    # Only the base name is used (never a client-given path), so an upload cannot land outside ``folder``.
    name = Path(upload.name).name or "upload"
    target = folder / name
    target.write_bytes(upload.getbuffer())
    return target


def _check_model_kind(path: Path, *, uploaded: bool) -> None:
    if uploaded and detect_model_kind(path) == KIND_TORCHSCRIPT and not _state.parse_args().allow_torchscript_upload:
        raise InputError(_state.ERROR_TORCHSCRIPT_UPLOAD.format(name=path.name))


def _prepare_uploads(folder: Path, *, zip_upload, manifest_name, model_upload, sidecar_upload, class_map_upload,
                     predictions_upload, policy_upload) -> dict:
    """Save the uploads into ``folder`` and unpack the zip safely; return the AuditConfig paths."""
    if zip_upload is None:
        raise InputError(ERROR_NO_ZIP)
    folder.mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        archive = _save_upload(zip_upload, Path(scratch))
        extract_zip(archive, folder / "data")
    data = folder / "data"
    manifest_name = (manifest_name or "").strip()
    if manifest_name:
        manifest = (data / manifest_name).resolve()
        if data.resolve() not in manifest.parents or not manifest.is_file():
            raise InputError(ERROR_NO_MANIFEST.format(name=manifest_name))
        data = manifest
    paths = {"data": str(data)}
    for key, upload in (("model", model_upload), ("class_map_file", class_map_upload),
                        ("predictions", predictions_upload), ("policy_file", policy_upload)):
        if upload is not None:
            (folder / key).mkdir()
            paths[key] = str(_save_upload(upload, folder / key))
    if "model" in paths:
        if sidecar_upload is not None:
            (folder / "model" / "model.json").write_bytes(sidecar_upload.getbuffer())
        _check_model_kind(Path(paths["model"]), uploaded=True)
    return paths


st.title("New audit")
st.caption("Audits a data set (and optionally a model or its predictions) and opens the result. The audit is "
           "written to reports/NAME; the same audit from the command line: `imagefair run --data ... --out "
           "reports/NAME`.")
source = st.radio("Data", ["Local path", "Upload"], horizontal=True, key="new_source")
with st.form("new_audit"):
    name = st.text_input("Audit name (folder under reports/)", key="new_name")
    uploads = {}
    if source == "Local path":
        data = st.text_input("Image folder or manifest (CSV/Parquet)", key="new_data")
        model = st.text_input("Model file (ONNX, TorchScript, state_dict) - optional", key="new_model")
        preprocess = st.text_input("Preprocessing file (model.json) - optional", key="new_preprocess",
                                   help="Default: a model.json beside the model file, else the architecture's.")
        class_map = st.text_input("Class map (CSV model_class,dataset_class) - optional", key="new_class_map")
        predictions = st.text_input("Predictions file - optional", key="new_predictions")
        policy = st.text_input("Policy file (TOML) - optional", key="new_policy")
    else:
        uploads["zip_upload"] = st.file_uploader("Zip of images + manifest", key="new_zip")
        uploads["manifest_name"] = st.text_input(
            "Manifest inside the zip (empty = one folder per class)", value="", key="new_manifest_name",
            help="For example manifest.csv. Leave empty when the zip holds one folder of images per class.")
        uploads["predictions_upload"] = st.file_uploader("Predictions file - optional", key="new_pred_upload")
        uploads["model_upload"] = st.file_uploader("Model (ONNX or state_dict) - optional", key="new_model_upload")
        uploads["sidecar_upload"] = st.file_uploader("model.json sidecar - optional", key="new_sidecar_upload")
        uploads["class_map_upload"] = st.file_uploader("Class map (CSV model_class,dataset_class) - optional",
                                                       key="new_class_map_upload")
        uploads["policy_upload"] = st.file_uploader("Policy file (TOML) - optional", key="new_policy_upload")
        data = model = preprocess = class_map = predictions = policy = None
    architectures = sorted(ARCHITECTURES)
    arch = st.selectbox("Architecture (state_dict models only) - optional", architectures, index=None,
                        placeholder="none", key="new_arch",
                        help="The registered network a state_dict checkpoint belongs to: "
                             + ", ".join(architectures) + ".")
    label_column = st.text_input("Label column", value="label", key="new_label_column")
    group_by = st.text_input("Group attributes (comma separated; empty = automatic)", key="new_group_by")
    min_group_size = st.number_input("Minimum group size", min_value=1, value=30, step=1, key="new_min_group")
    submitted = st.form_submit_button("Run audit", type="primary")

if submitted:
    progress = st.progress(0.0, text="starting")

    def report(stage: str, done: int, total: int) -> None:
        progress.progress(min(max(done / total if total else 0.0, 0.0), 1.0), text=f"{stage} ({done}/{total})")

    upload_folder = _state.uploads_dir() / uuid.uuid4().hex
    out = None
    try:
        name = _state.check_audit_name(name)
        out = _state.reports_dir() / name
        if out.exists():
            raise InputError(_state.ERROR_AUDIT_EXISTS.format(name=name))
        if source == "Upload":
            paths = _prepare_uploads(upload_folder, **uploads)
        else:
            paths = {"data": (data or "").strip(), "model": model, "preprocess_file": preprocess,
                     "class_map_file": class_map, "predictions": predictions, "policy_file": policy}
            # local paths are confined to IMAGEFAIR_DATA_ROOTS; a model never comes from the uploads area
            paths = {k: _state.confine_local_path(v.strip(), field=FORM_FIELDS[LOCAL_OPTIONS[k]], model=k == "model")
                     for k, v in paths.items() if v and v.strip()}
        if not paths.get("data"):
            raise InputError(ERROR_NO_DATA)
        if source == "Upload":  # uploads are read only from their own folder (symlinks in the zip included)
            paths["data_root"] = str(upload_folder / "data")
        config = AuditConfig(label_column=label_column or "label",
                             group_by=tuple(c.strip() for c in group_by.split(",") if c.strip()) or None,
                             arch=arch or None, min_group_size=int(min_group_size), **paths)
        _state.run_new_audit(config, out, progress=report)
    except Exception as error:  # noqa: BLE001 - one line in the app, never a traceback
        progress.empty()
        shutil.rmtree(upload_folder, ignore_errors=True)  # a failed audit leaves no upload behind
        if isinstance(error, InputError):
            st.error(form_message(error))
        else:
            # never the exception's text: it may quote a server file (a line of a manifest, a config...)
            logging.getLogger("imagefair.app").exception("new audit failed")
            st.error(_state.ERROR_AUDIT_FAILED.format(kind=type(error).__name__))
    else:
        progress.progress(1.0, text="done")
        st.session_state["audit_dir"] = str(out.resolve())
        st.switch_page("app_pages/overview.py")
