"""Real-browser test: Debian chromium + Playwright's Python client against ``streamlit run app.py``.

Visits every page, records a review decision, reloads and sees it persisted; starts a new audit and sees it
stay open. Screenshots go to the test's temporary folder only (the README's ``docs/screenshots/`` are made by
``python docs/make_screenshots.py``). Skips cleanly when chromium or Playwright is absent; never runs
``playwright install``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.app.app_server import CHROMIUM, REPO, browser, open_page, running_app, switch_page, wait_ready

pytest.importorskip("playwright.sync_api", reason="Playwright's Python client is not installed")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)")

PAGES = [("Overview", "overview"), ("Classes", "classes"), ("Attributes", "attributes"),
         ("Label quality", "labels"), ("Fairness", "fairness"), ("Data quality", "quality"), ("Export", "export")]


def _audit_copy(tmp_path: Path) -> Path:
    """A private copy of the sample audit (reviews written by the test never touch reports/sample).

    Uses reports/sample when it exists, else computes the sample audit from sample_data/, else a synthetic one.
    """
    reports = tmp_path / "reports"
    target = reports / "sample"
    sample = REPO / "reports" / "sample"
    if (sample / "audit.json").exists():
        shutil.copytree(sample, target, ignore=shutil.ignore_patterns("reviews.sqlite*", "report.*"))
        return target
    if (REPO / "sample_data" / "manifest.csv").exists() and (REPO / "sample_data" / "model.onnx").exists():
        from audit.config import AuditConfig
        from audit.pipeline import run_audit
        from audit.folder import write_audit_folder

        result = run_audit(AuditConfig(data=str(REPO / "sample_data" / "manifest.csv"),
                                       model=str(REPO / "sample_data" / "model.onnx"), use_cache=False))
        return write_audit_folder(target, audit=result.audit, images=result.images,
                                  group_metrics=result.group_metrics, probabilities=result.probabilities)
    from tests.app.synthetic_audit import build_audit

    return build_audit(tmp_path / "data", target)


def _no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
        '[data-testid="stException"]').first.inner_text()


def _legend_clear_of_title_and_toolbar(page) -> None:
    """Issue 12: on the drawn chart, the legend box does not overlap the title box, no plotly toolbar is
    drawn (it covered legends) and no text label sits at the foot of the reference lines (they overlapped)."""
    chart = page.get_by_test_id("stPlotlyChart").first
    title, legend = chart.locator(".gtitle").bounding_box(), chart.locator(".legend").bounding_box()
    assert title and legend
    apart = (title["x"] + title["width"] <= legend["x"] or legend["x"] + legend["width"] <= title["x"]
             or title["y"] + title["height"] <= legend["y"] or legend["y"] + legend["height"] <= title["y"])
    assert apart, (title, legend)
    assert chart.locator(".modebar").count() == 0
    assert chart.locator(".annotation").count() == 0


def test_every_page_review_persists_and_screenshots(tmp_path):
    folder = _audit_copy(tmp_path)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with running_app("--audit", str(folder), env={"IMAGEFAIR_REPORTS": str(folder.parent)}) as url, \
            browser(height=1200) as page:
        open_page(page, url)
        _no_exception(page)
        for title, name in PAGES:
            if title != "Overview":
                switch_page(page, title)
            _no_exception(page)
            if name == "fairness":
                _legend_clear_of_title_and_toolbar(page)
            page.screenshot(path=str(shots / f"{name}.png"))
        # Markup in user data is shown as text: no element was created from it.
        assert page.locator("script:has-text('alert')").count() == 0

        switch_page(page, "Label quality")
        images = pd.read_parquet(folder / "images.parquet")
        first = images[images.is_label_issue].sort_values("label_score", kind="stable").iloc[0]
        name_box = page.get_by_label("Your name (recorded with each decision)")
        name_box.fill("ann")
        name_box.press("Enter")
        wait_ready(page)
        form = page.get_by_test_id("stMain").locator('[data-testid="stForm"]').first
        form.get_by_text("label correct", exact=True).click()
        form.get_by_label("Note").fill("checked in the browser")
        form.get_by_role("button", name="Save decision").click()
        page.get_by_text("reviewed: ann: label correct").first.wait_for(timeout=60_000)
        wait_ready(page)

        from audit import reviews

        decisions = reviews.list_decisions(folder)
        assert decisions[["id", "content_hash", "reviewer", "decision", "note"]].values.tolist() == [
            [str(first.id), first.content_hash, "ann", "label_correct", "checked in the browser"]]

        page.reload()
        wait_ready(page)
        if page.locator('[data-testid="stMain"] h1').inner_text().strip() != "Label quality":
            switch_page(page, "Label quality")
        page.get_by_text("reviewed: ann: label correct").first.wait_for(timeout=60_000)
        metric = page.get_by_test_id("stMetric").filter(has_text="Suspects reviewed").first
        assert f"1 / {int(images.is_label_issue.sum())}" in metric.inner_text()
        page.get_by_role("heading", name="Suspect images").evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / "gallery.png"))
        _no_exception(page)
    assert sorted(p.name for p in shots.iterdir()) == sorted([f"{name}.png" for _, name in PAGES] + ["gallery.png"])
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in shots.iterdir())


def test_app_starts_with_no_audit_folder_and_shows_a_message(tmp_path):
    """--audit pointing at a folder without audit.json: an error message, no traceback, sidebar usable."""
    (tmp_path / "empty").mkdir()
    with running_app("--audit", str(tmp_path / "empty"), env={"IMAGEFAIR_REPORTS": str(tmp_path)}) as url, \
            browser() as page:
        page.goto(url)
        page.get_by_test_id("stAlertContentError").first.wait_for(timeout=60_000)
        assert "holds no audit.json" in page.get_by_test_id("stAlertContentError").first.inner_text()
        _no_exception(page)
        assert page.get_by_test_id("stSidebarNav").get_by_role("link", name="New audit", exact=True).count() == 1


def _upload_and_run(page, name: str, files: dict) -> str:
    """Fill the New audit page's upload form (files: label -> path), run it and return the error shown."""
    sidebar = page.get_by_test_id("stMain")
    box = sidebar.get_by_label("Audit name (folder under reports/)")
    box.fill(name)
    inputs = sidebar.locator('[data-testid="stFileUploaderDropzoneInput"]')
    labels = ["zip", "predictions", "model", "sidecar", "class_map", "policy"]
    for label, path in files.items():
        inputs.nth(labels.index(label)).set_input_files(str(path))
    for path in files.values():  # wait until every upload is listed (it has reached the server)
        sidebar.get_by_text(Path(path).name, exact=True).first.wait_for(timeout=60_000)
    sidebar.get_by_role("button", name="Run audit").click()
    error = sidebar.get_by_test_id("stAlertContentError").first
    error.wait_for(timeout=120_000)
    return error.inner_text()


def test_bad_uploads_show_the_reason_and_the_app_stays_usable(tmp_path):
    import io
    import zipfile

    from audit.io import archives

    folder = _audit_copy(tmp_path)
    not_zip = tmp_path / "photos.zip"
    not_zip.write_bytes(b"this is not a zip archive")
    traversal = tmp_path / "evil.zip"
    with zipfile.ZipFile(traversal, "w") as archive:
        archive.writestr("../escape.txt", "x")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.png", b"\0" * (8 << 20))
    cases = [({"zip": not_zip}, "is not a valid zip archive"),
             ({"zip": traversal}, "holds the entry '../escape.txt'"),
             ({"zip": bomb}, "compression ratio")]
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        from tests.app.synthetic_audit import build_dataset

        build_dataset(tmp_path / "small", n_images=30)
        good = tmp_path / "small.zip"
        with zipfile.ZipFile(good, "w") as archive:
            for path in sorted((tmp_path / "small").rglob("*")):
                if path.is_file() and path.name != "predictions.csv":
                    archive.write(path, path.relative_to(tmp_path / "small").as_posix())
        scripted = tmp_path / "model.pt"
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.script(torch.nn.Linear(3, 2)).save(str(scripted))
        cases.append(({"zip": good, "model": scripted}, "is a TorchScript model, which is code"))
    with running_app("--audit", str(folder), env={"IMAGEFAIR_REPORTS": str(folder.parent)}) as url:
        for index, (files, expected) in enumerate(cases):
            with browser() as page:
                open_page(page, url)
                switch_page(page, "New audit")
                page.get_by_test_id("stMain").get_by_text("Upload", exact=True).click()
                message = _upload_and_run(page, f"bad{index}", files)
                assert expected in message, message
                _no_exception(page)
                assert not (folder.parent / f"bad{index}").exists()
                uploads = folder.parent / ".uploads"
                assert not uploads.exists() or list(uploads.iterdir()) == []  # nothing left behind
                assert not (tmp_path / "escape.txt").exists()
                switch_page(page, "Fairness")  # still usable
                _no_exception(page)


def test_upload_zip_and_predictions_runs_an_audit_with_progress_and_opens_it(tmp_path):
    import zipfile

    from tests.app.synthetic_audit import build_dataset

    folder = _audit_copy(tmp_path)
    files = build_dataset(tmp_path / "small", n_images=40, seed=5)
    archive_path = tmp_path / "small.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        for path in sorted((tmp_path / "small").rglob("*")):
            if path.is_file() and path.name != "predictions.csv":
                archive.write(path, path.relative_to(tmp_path / "small").as_posix())
    with running_app("--audit", str(folder), env={"IMAGEFAIR_REPORTS": str(folder.parent)}) as url, \
            browser(height=1200) as page:
        open_page(page, url)
        switch_page(page, "New audit")
        sidebar = page.get_by_test_id("stMain")
        sidebar.get_by_text("Upload", exact=True).click()
        sidebar.get_by_label("Audit name (folder under reports/)").fill("uploaded")
        sidebar.get_by_role("textbox", name="Manifest inside the zip (empty = one folder per class)").fill("manifest.csv")
        inputs = sidebar.locator('[data-testid="stFileUploaderDropzoneInput"]')
        inputs.nth(0).set_input_files(str(archive_path))
        inputs.nth(1).set_input_files(files["predictions"])
        for name in ("small.zip", "predictions.csv"):
            sidebar.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
        sidebar.get_by_role("button", name="Run audit").click()
        page.wait_for_function(
            "() => { const c = document.querySelector('[data-testid=\"stMain\"] [data-testid=\"stCaptionContainer\"]');"
            " return c && c.innerText.startsWith('Audit uploaded of'); }", timeout=120_000)
        wait_ready(page)
        _no_exception(page)
        assert (folder.parent / "uploaded" / "audit.json").exists()
        images = page.get_by_test_id("stMetric").filter(has_text="Images").first.inner_text()
        assert images.split() == ["Images", "40"], images


def test_new_audit_stays_open_on_the_next_two_clicks(tmp_path):
    """Issue 12 item 1: start a new audit, click two pages: the new audit is still the one shown, and the
    sidebar's picker names it (it used to fall back to the sample on the next click)."""
    from tests.app.synthetic_audit import build_dataset

    folder = _audit_copy(tmp_path)
    files = build_dataset(tmp_path / "local", n_images=40, seed=7)
    # the local-path fields read only under IMAGEFAIR_DATA_ROOTS (issue 11): the data live in a temp folder
    environment = {"IMAGEFAIR_REPORTS": str(folder.parent), "IMAGEFAIR_DATA_ROOTS": str(tmp_path / "local")}
    with running_app("--audit", str(folder), env=environment) as url, browser(height=1200) as page:
        open_page(page, url)
        switch_page(page, "New audit")
        main = page.get_by_test_id("stMain")
        main.get_by_label("Audit name (folder under reports/)").fill("newer")
        main.get_by_label("Image folder or manifest (CSV/Parquet)").fill(files["manifest"])
        main.get_by_label("Predictions file - optional").fill(files["predictions"])
        main.get_by_role("button", name="Run audit").click()
        page.wait_for_function(
            "() => { const c = document.querySelector('[data-testid=\"stMain\"] [data-testid=\"stCaptionContainer\"]');"
            " return c && c.innerText.startsWith('Audit newer of'); }", timeout=120_000)
        wait_ready(page)
        picker = page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox")
        for title in ("Classes", "Fairness", "Overview"):
            switch_page(page, title)
            _no_exception(page)
            shown = picker.evaluate("e => e.innerText + ' | ' + Array.from(e.querySelectorAll('input'))"
                                    ".map(i => i.value + ' ' + (i.getAttribute('aria-label') || '')).join(' | ')")
            assert "newer" in shown and "sample" not in shown, (title, shown)
        caption = page.get_by_test_id("stMain").get_by_test_id("stCaptionContainer").first.inner_text()
        assert caption.startswith("Audit newer of"), caption
        images = page.get_by_test_id("stMetric").filter(has_text="Images").first.inner_text()
        assert images.split() == ["Images", "40"], images
