"""Opening an app page on an audit folder with Streamlit's AppTest: one helper for the AppTest modules."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def open_app_page(folder, page: str = "overview", monkeypatch=None, *, check: bool = False) -> AppTest:
    """Run the app with ``folder`` as the open audit on ``page`` (a name under ``app_pages/``).

    ``monkeypatch`` given: ``IMAGEFAIR_REPORTS`` is set to the folder's parent (where the app lists audits).
    ``check``: assert that the run raised no exception (its messages in the failure).
    """
    if monkeypatch is not None:
        monkeypatch.setenv("IMAGEFAIR_REPORTS", str(Path(folder).parent))
    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["audit_dir"] = str(folder)
    if page != "overview":
        app.switch_page(f"app_pages/{page}.py")
    app.run()
    if check:
        assert not app.exception, [e.value for e in app.exception]
    return app
