"""imagefair dashboard: the router (st.navigation) and the shared sidebar (the audit picker).

    streamlit run app.py                          # opens reports/sample (computed once when missing)
    streamlit run app.py -- --audit reports/NAME  # opens a given audit folder
    streamlit run app.py -- --allow-torchscript-upload   # also accept uploaded TorchScript models (code)

The app never computes statistics: pages read the audit folder (``contract.md``) and filter, sort and draw.
A new audit is started on its own page (``app_pages/new_audit.py``).
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from app_pages import _state

st.set_page_config(page_title="imagefair", page_icon=":material/balance:", layout="wide")

PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/summarize:", default=True),
    st.Page("app_pages/classes.py", title="Classes", icon=":material/bar_chart:"),
    st.Page("app_pages/attributes.py", title="Attributes", icon=":material/groups:"),
    st.Page("app_pages/labels.py", title="Label quality", icon=":material/label:"),
    st.Page("app_pages/fairness.py", title="Fairness", icon=":material/balance:"),
    st.Page("app_pages/quality.py", title="Data quality", icon=":material/image_search:"),
    st.Page("app_pages/annotators.py", title="Annotators", icon=":material/how_to_reg:"),
    st.Page("app_pages/export.py", title="Export", icon=":material/download:"),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("app_pages/new_audit.py", title="New audit", icon=":material/add_circle:"),
]
#: Pages that work without an open audit (by url path).
NO_AUDIT_NEEDED = {"new_audit", "compare"}


def _picked() -> None:
    """The picker changed: its value becomes the open audit (``audit_dir`` is the one source of truth)."""
    st.session_state["audit_dir"] = st.session_state["audit_picker"]


def _pick_audit() -> None:
    """The sidebar's audit picker: the session's audit, else --audit, else the sample."""
    if "audit_dir" not in st.session_state:
        try:
            st.session_state["audit_dir"] = str(_state.default_audit_folder(_state.parse_args()))
        except Exception as error:  # noqa: BLE001 - shown as a message, the app stays usable
            st.session_state["audit_dir"] = None
            st.session_state["startup_error"] = str(error)
    known = [str(p) for p in _state.list_audits()]
    current = st.session_state.get("audit_dir")
    if current and current not in known:
        known.insert(0, current)
    if not known:
        st.sidebar.info("No audit yet: start one on the New audit page.")
        return
    # The widget shows the open audit, whatever the browser last sent: a new audit (set by the New audit page)
    # stays open on the next click instead of the picker's old value taking over again.
    st.session_state["audit_picker"] = current if current in known else known[0]
    st.sidebar.selectbox("Audit", known, format_func=lambda p: Path(p).name, key="audit_picker",
                         on_change=_picked)


def main() -> None:
    st.sidebar.title("imagefair")
    _pick_audit()
    page = st.navigation(PAGES)
    if st.session_state.get("startup_error"):
        st.error(st.session_state.pop("startup_error"))
    if page.url_path in NO_AUDIT_NEEDED:
        page.run()
        return
    if not st.session_state.get("audit_dir"):
        st.info("Open an audit: pick one in the sidebar or start one on the New audit page.")
        return
    try:
        _state.load_audit(st.session_state["audit_dir"])
    except Exception as error:  # noqa: BLE001 - one line, never a traceback
        st.error(str(error))
        return
    page.run()


main()
