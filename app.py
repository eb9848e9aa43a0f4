"""imagefair dashboard: router (st.navigation) and the shared sidebar.

    streamlit run app.py                          # opens reports/sample (computed once when missing)
    streamlit run app.py -- --audit reports/NAME  # opens a given audit folder
    streamlit run app.py -- --allow-torchscript-upload   # also accept uploaded TorchScript models (code)

The app never computes statistics: pages read the audit folder (``contract.md``) and filter, sort and draw.
"""
from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import streamlit as st

from app_pages import _state

st.set_page_config(page_title="imagefair", page_icon=":material/balance:", layout="wide")

ARGS = _state.parse_args()


def _pick_audit() -> None:
    """Choose the audit folder: the session's choice, else --audit, else the sample."""
    if "audit_dir" not in st.session_state:
        try:
            st.session_state["audit_dir"] = str(_state.default_audit_folder(ARGS))
        except Exception as error:  # noqa: BLE001 - shown as a message, the sidebar stays usable
            st.session_state["audit_dir"] = None
            st.session_state["startup_error"] = str(error)
    known = [str(p) for p in _state.list_audits()]
    current = st.session_state.get("audit_dir")
    if current and current not in known:
        known.insert(0, current)
    if not known:
        st.sidebar.info("No audit yet: start one below.")
        return
    choice = st.sidebar.selectbox("Audit", known, index=known.index(current) if current in known else 0,
                                  format_func=lambda p: Path(p).name, key="audit_picker")
    if choice != current:
        st.session_state["audit_dir"] = choice


def _save_upload(upload, folder: Path) -> Path:
    # Only the base name is used (never a client-given path), so an upload cannot land outside ``folder``.
    name = Path(upload.name).name or "upload"
    target = folder / name
    target.write_bytes(upload.getbuffer())
    return target


def _new_audit_form() -> None:
    from audit.config import AuditConfig
    from audit.errors import InputError

    with st.sidebar.expander("Start a new audit"):
        source = st.radio("Data", ["Local path", "Upload"], horizontal=True, key="new_source")
        with st.form("new_audit"):
            name = st.text_input("Audit name (folder under reports/)", key="new_name")
            if source == "Local path":
                data = st.text_input("Image folder or manifest (CSV/Parquet)", key="new_data")
                model = st.text_input("Model file (ONNX, TorchScript, state_dict) - optional", key="new_model")
                predictions = st.text_input("Predictions file - optional", key="new_predictions")
                policy = st.text_input("Policy file (TOML) - optional", key="new_policy")
                zip_upload = manifest_name = model_upload = sidecar_upload = predictions_upload = None
                policy_upload = None
            else:
                zip_upload = st.file_uploader("Zip of images + manifest", key="new_zip")
                manifest_name = st.text_input("Manifest inside the zip (empty = folders are classes)",
                                              value="manifest.csv", key="new_manifest_name")
                predictions_upload = st.file_uploader("Predictions file - optional", key="new_pred_upload")
                model_upload = st.file_uploader("Model (ONNX or state_dict) - optional", key="new_model_upload")
                sidecar_upload = st.file_uploader("model.json sidecar - optional", key="new_sidecar_upload")
                policy_upload = st.file_uploader("Policy file (TOML) - optional", key="new_policy_upload")
                data = model = predictions = policy = None
            arch = st.text_input("Architecture (state_dict only, e.g. resnet20) - optional", key="new_arch")
            label_column = st.text_input("Label column", value="label", key="new_label_column")
            group_by = st.text_input("Group attributes (comma separated; empty = automatic)", key="new_group_by")
            min_group_size = st.number_input("Minimum group size", min_value=1, value=30, step=1,
                                             key="new_min_group")
            submitted = st.form_submit_button("Run audit")
        if not submitted:
            return
        progress = st.progress(0.0, text="starting")

        def report(stage: str, done: int, total: int) -> None:
            progress.progress(min(max(done / total if total else 0.0, 0.0), 1.0), text=f"{stage} ({done}/{total})")

        try:
            name = _state.check_audit_name(name)
            out = _state.reports_dir() / name
            if out.exists():
                raise InputError(_state.ERROR_AUDIT_EXISTS.format(name=name))
            if source == "Upload":
                data, model, predictions, policy = _prepare_uploads(zip_upload, manifest_name, model_upload,
                                                                    sidecar_upload, predictions_upload,
                                                                    policy_upload)
            elif model:
                _check_model_kind(Path(model), uploaded=False)
            config = AuditConfig(data=data or "", label_column=label_column or "label",
                                 group_by=tuple(c.strip() for c in group_by.split(",") if c.strip()) or None,
                                 model=model or None, arch=arch or None, predictions=predictions or None,
                                 policy_file=policy or None, min_group_size=int(min_group_size))
            if not config.data:
                raise InputError("give the image folder or manifest of the data set to audit")
            _state.run_new_audit(config, out, progress=report)
        except InputError as error:
            progress.empty()
            st.error(str(error))
            return
        except Exception as error:  # noqa: BLE001 - never a traceback in the app
            progress.empty()
            st.error(f"The audit failed: {type(error).__name__}: {error}")
            return
        progress.progress(1.0, text="done")
        st.session_state["audit_dir"] = str(out.resolve())
        st.session_state.pop("audit_picker", None)
        st.rerun()


def _check_model_kind(path: Path, *, uploaded: bool) -> None:
    from audit.errors import InputError
    from audit.model.inference import KIND_TORCHSCRIPT, detect_model_kind

    if uploaded and detect_model_kind(path) == KIND_TORCHSCRIPT and not ARGS.allow_torchscript_upload:
        raise InputError(_state.ERROR_TORCHSCRIPT_UPLOAD.format(name=path.name))


def _prepare_uploads(zip_upload, manifest_name, model_upload, sidecar_upload, predictions_upload, policy_upload):
    """Save uploads to a fresh folder under reports/.uploads and unpack the zip safely."""
    from audit.errors import InputError
    from audit.io.archives import extract_zip

    if zip_upload is None:
        raise InputError("upload a zip of the images (with a manifest, or one folder per class)")
    folder = _state.uploads_dir() / uuid.uuid4().hex
    folder.mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        archive = _save_upload(zip_upload, Path(scratch))
        extract_zip(archive, folder / "data")
    data = folder / "data"
    manifest_name = (manifest_name or "").strip()
    if manifest_name:
        manifest = (data / manifest_name).resolve()
        if data.resolve() not in manifest.parents or not manifest.is_file():
            raise InputError(f"the zip holds no manifest {manifest_name!r} at its top level: add it, or leave the "
                             "manifest name empty when the zip has one folder per class")
        data = manifest
    model = predictions = None
    if model_upload is not None:
        (folder / "model").mkdir()
        model = _save_upload(model_upload, folder / "model")
        if sidecar_upload is not None:
            (folder / "model" / "model.json").write_bytes(sidecar_upload.getbuffer())
        _check_model_kind(model, uploaded=True)
    if predictions_upload is not None:
        (folder / "predictions").mkdir()
        predictions = _save_upload(predictions_upload, folder / "predictions")
    policy = None
    if policy_upload is not None:
        (folder / "policy").mkdir()
        policy = _save_upload(policy_upload, folder / "policy")
    return (str(data), (str(model) if model else None), (str(predictions) if predictions else None),
            (str(policy) if policy else None))


def main() -> None:
    st.sidebar.title("imagefair")
    _pick_audit()
    _new_audit_form()
    pages = [
        st.Page("app_pages/overview.py", title="Overview", icon=":material/summarize:", default=True),
        st.Page("app_pages/classes.py", title="Classes", icon=":material/bar_chart:"),
        st.Page("app_pages/attributes.py", title="Attributes", icon=":material/groups:"),
        st.Page("app_pages/labels.py", title="Label quality", icon=":material/label:"),
        st.Page("app_pages/fairness.py", title="Fairness", icon=":material/balance:"),
        st.Page("app_pages/quality.py", title="Data quality", icon=":material/image_search:"),
        st.Page("app_pages/annotators.py", title="Annotators", icon=":material/how_to_reg:"),
        st.Page("app_pages/export.py", title="Export", icon=":material/download:"),
        st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    ]
    page = st.navigation(pages)
    if st.session_state.get("startup_error"):
        st.error(st.session_state.pop("startup_error"))
    if not st.session_state.get("audit_dir"):
        st.info("Open an audit: pick one in the sidebar or start a new one.")
        return
    try:
        _state.load_audit(st.session_state["audit_dir"])
    except Exception as error:  # noqa: BLE001
        st.error(str(error))
        return
    page.run()


main()
