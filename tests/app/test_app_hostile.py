"""Issue 11, item 2 in the app: code only from the operator. "Local path" fields read only under
IMAGEFAIR_DATA_ROOTS (default: the current directory and reports/); a model is never taken from the uploads
area, whichever way it is given; error messages never echo a server file's content."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from app_pages import _state  # noqa: E402
from tests.app.synthetic_audit import build_audit, build_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "app.py")


@pytest.fixture()
def reports(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "reports"
    build_audit(tmp_path / "data", folder / "synthetic")
    monkeypatch.setenv("IMAGEFAIR_REPORTS", str(folder))
    monkeypatch.delenv("IMAGEFAIR_DATA_ROOTS", raising=False)
    monkeypatch.chdir(tmp_path / "data")
    return folder


def _torchscript(path: Path) -> Path:
    import torch

    class Tiny(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Tiny()), str(path))
    return path


def _new_audit(reports: Path, **fields) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["audit_dir"] = str(reports / "synthetic")
    app.switch_page("app_pages/new_audit.py")
    app.run()
    app.text_input(key="new_name").input("attempt")
    for key, value in fields.items():
        app.text_input(key=key).input(str(value))
    [b for b in app.button if b.label == "Run audit"][0].click().run()
    assert not app.exception
    return app


def test_default_roots_are_cwd_and_reports(reports, tmp_path):
    assert _state.data_roots() == [Path(os.path.realpath(tmp_path / "data")), Path(os.path.realpath(reports))]


def test_env_roots(monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGEFAIR_DATA_ROOTS", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    assert _state.data_roots() == [Path(os.path.realpath(tmp_path / "a")), Path(os.path.realpath(tmp_path / "b"))]


def test_local_path_outside_the_roots_is_refused_without_reading_it(reports, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("path,label\nTOP-SECRET-LINE,cat\n")
    app = _new_audit(reports, new_data=secret)
    expected = _state.ERROR_PATH_OUTSIDE_ROOTS.format(
        field="Image folder or manifest", path=secret,
        roots=", ".join(str(r) for r in _state.data_roots()), sep=os.pathsep)
    assert [e.value for e in app.error] == [expected]
    assert "TOP-SECRET" not in expected


def test_symlink_out_of_the_roots_is_refused(reports, tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "m.csv").write_text("path,label\na.png,cat\n")
    link = tmp_path / "data" / "link.csv"
    link.symlink_to(tmp_path / "outside" / "m.csv")
    with pytest.raises(Exception) as info:
        _state.confine_local_path(str(link), field="Image folder or manifest")
    assert str(info.value).startswith("Image folder or manifest: ")
    assert "outside the folders this app may read" in str(info.value)


def test_torchscript_inside_the_uploads_area_is_refused_as_a_local_model(reports, tmp_path, capsys):
    """The bypass of issue 11: TorchScript shipped inside the data zip, then given by its extracted path."""
    files = build_dataset(tmp_path / "data" / "d", n_images=30, seed=1)
    extracted = _state.uploads_dir() / "0123abcd" / "data"
    extracted.mkdir(parents=True)
    model = _torchscript(extracted / "model.pt")
    app = _new_audit(reports, new_data=files["manifest"], new_model=model)
    assert [e.value for e in app.error] == [_state.ERROR_MODEL_FROM_UPLOADS.format(
        field="Model file", path=model, uploads=_state.uploads_dir())]
    assert not (reports / "attempt").exists()
    # a symlink from the data root into the uploads area is the same file
    link = tmp_path / "data" / "innocent.pt"
    link.symlink_to(model)
    app = _new_audit(reports, new_data=files["manifest"], new_model=link)
    assert [e.value for e in app.error] == [_state.ERROR_MODEL_FROM_UPLOADS.format(
        field="Model file", path=link, uploads=_state.uploads_dir())]


def test_unexpected_failure_does_not_echo_file_content(reports, tmp_path, monkeypatch):
    files = build_dataset(tmp_path / "data" / "d", n_images=30, seed=1)

    def boom(*args, **kwargs):
        raise RuntimeError("line from /etc/shadow: root:$6$secret")

    monkeypatch.setattr(_state, "run_new_audit", boom)
    app = _new_audit(reports, new_data=files["manifest"])
    assert [e.value for e in app.error] == [_state.ERROR_AUDIT_FAILED.format(kind="RuntimeError")]
