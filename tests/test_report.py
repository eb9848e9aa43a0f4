"""Reports (PDF, HTML, Markdown): numbers identical to the audit folder, escaping, thumbnails, fallbacks."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from audit.cli import main
from audit.errors import InputError
from audit.policy import evaluate_policy, policy_from_dict
from audit.report import figures
from audit.folder import load_audit_json, load_group_metrics
from audit.report.render import (ERROR_FORMAT, build_report, fmt_interval, fmt_number, fmt_percent, render_report)

from tests.audit_builder import build_audit_folder, write_reviews

EVIL_CLASS = "<script>alert(1)</script>"
EVIL_GROUP = "<img src=x onerror=alert(2)>"
POLICY = {"label_noise": {"max_rate": 0.5}, "representation": {"min_group_images": 25},
          "performance": {"min_worst_group": 0.5, "attributes": ["gender"]}}


def add_verdict(folder: Path) -> dict:
    audit = load_audit_json(folder)
    verdict = evaluate_policy(audit, load_group_metrics(folder), policy_from_dict(POLICY)).to_dict()
    audit["verdict"] = verdict
    (folder / "audit.json").write_text(json.dumps(audit, allow_nan=False))
    return verdict


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    path = build_audit_folder(root / "audit", class_names=["cat", EVIL_CLASS, "dog"], n_image_files=600,
                              gender_values=(EVIL_GROUP, "Male"))
    add_verdict(path)
    images = pd.read_parquet(path / "images.parquet")
    flagged = images[images["is_label_issue"]].sort_values("label_score")
    Path(flagged["path"].iloc[0]).write_bytes(b"not a jpeg")  # unreadable -> placeholder
    Path(flagged["path"].iloc[1]).unlink()  # absent -> placeholder
    first, second = flagged.iloc[2], flagged.iloc[3]
    write_reviews(path, [
        {"id": first["id"], "content_hash": first["content_hash"], "reviewer": "ana", "decision": "label_wrong",
         "new_label": "dog", "note": EVIL_CLASS, "decided_at": "2026-11-24T07:00:00"},
        {"id": second["id"], "content_hash": first["content_hash"], "reviewer": "bo", "decision": "label_wrong",
         "new_label": None, "note": "", "decided_at": "2026-11-24T07:00:00"},  # stale hash: ignored
    ])
    return path


@pytest.fixture(scope="module")
def pdf_path(folder, tmp_path_factory):
    return render_report(folder, format="pdf", out=tmp_path_factory.mktemp("pdf") / "report.pdf")


@pytest.fixture(scope="module")
def pdf_text(pdf_path):
    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(pdf_path).pages)


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


# -- PDF ---------------------------------------------------------------------------------------------------------
def test_pdf_holds_the_verdict_and_key_numbers_of_the_json(folder, pdf_text):
    audit = load_audit_json(folder)
    gm = load_group_metrics(folder)
    text = squash(pdf_text)
    assert squash(f"Policy verdict: {audit['verdict']['status']}") in text
    assert str(audit["dataset"]["n_images"]) in pdf_text
    noise = audit["analyses"]["label_noise"]
    assert squash(f"Label disagreement rate: {fmt_percent(noise['label_disagreement_rate'])}") in text
    assert squash(fmt_interval(*noise["label_disagreement_rate_ci"])) in text
    assert squash(f"model error rate on the same images: {fmt_percent(noise['model_error_rate'])}") in text
    assert squash("a screening figure, not a label-error rate") in text
    assert not re.search(r"%\s+of\s+labels\s+are\s+wrong", pdf_text)  # never "X % of labels are wrong"
    assert squash(f"{noise['n_label_issues']} images flagged") in text
    overall = gm[(gm.attribute == "all") & (gm.metric == "accuracy")].iloc[0]
    assert squash(f"accuracy {fmt_percent(overall.value)} {fmt_interval(overall.ci_low, overall.ci_high)} "
                  f"{overall.n}") in text
    for check in audit["verdict"]["checks"]:
        assert squash(f"{check['status']} {check['name']}") in text
        assert squash(f"{fmt_number(check['value'])} {fmt_number(check['threshold'])}") in text
    assert audit["provenance"]["data_hash"] in text
    for heading in ("Executive summary", "Composition", "Label quality", "Model performance by group",
                    "Data quality", "Policy checks", "Inputs skipped and why", "Reproducibility", "Methods"):
        assert heading in pdf_text
    assert "truncated or corrupt image" in pdf_text  # skipped inputs and why


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="pdftoppm (poppler-utils) not installed")
def test_pdf_first_page_is_not_blank(pdf_path, tmp_path):
    from PIL import Image, ImageStat

    subprocess.run(["pdftoppm", "-r", "40", "-png", "-f", "1", "-l", "1", str(pdf_path), str(tmp_path / "page")],
                   check=True)
    page = Image.open(next(tmp_path.glob("page*.png"))).convert("L")
    dark = sum(page.histogram()[:200]) / (page.width * page.height)
    assert dark > 0.01  # text and the verdict box, not an empty page
    assert ImageStat.Stat(page).stddev[0] > 10


def test_pdf_escapes_user_text_and_shows_it_literally(pdf_text):
    assert EVIL_CLASS in pdf_text  # shown as text, not interpreted
    assert EVIL_GROUP in pdf_text


def test_pdf_without_kaleido_is_tables_only_with_a_note(folder, tmp_path, monkeypatch):
    import kaleido

    def broken(*args, **kwargs):
        raise RuntimeError("no chromium here")

    import audit.report.pdf as pdf

    monkeypatch.setattr(pdf, "_browser_path", lambda: "/bin/sh")  # a browser is found, kaleido fails anyway
    monkeypatch.setattr(kaleido, "start_sync_server", broken)
    path = render_report(folder, format="pdf", out=tmp_path / "r.pdf", thumbnails=False)
    from pypdf import PdfReader

    text = "\n".join(p.extract_text() for p in PdfReader(path).pages)
    assert squash("Charts are left out of this PDF") in squash(text) and squash("no chromium here") in squash(text)


def test_pdf_without_a_browser_is_written_at_once_with_a_note(folder, tmp_path, monkeypatch):
    """Kaleido >= 1 without Chromium waits for ever in its server thread; the report checks first."""
    from audit.report.pdf import NOTE_NO_CHARTS, REASON_NO_BROWSER

    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-browser"))
    path = render_report(folder, format="pdf", out=tmp_path / "r.pdf", thumbnails=False)
    from pypdf import PdfReader

    text = "\n".join(p.extract_text() for p in PdfReader(path).pages)
    assert squash(NOTE_NO_CHARTS.format(reason=REASON_NO_BROWSER)) in squash(text)


def test_a_browser_that_never_answers_costs_the_timeout_not_the_report(tmp_path):
    """A Chromium that hangs: the charts give up after CHART_TIMEOUT_S and the process still exits (run in a
    child process: the abandoned chart thread must not keep it alive)."""
    import subprocess
    import sys
    import textwrap

    from audit.report.pdf import REASON_TIMEOUT

    browser = tmp_path / "hung-browser"
    browser.write_text("#!/bin/sh\nsleep 20\n")
    browser.chmod(0o755)
    code = textwrap.dedent("""
        import plotly.graph_objects as go
        import audit.report.pdf as pdf
        pdf.CHART_TIMEOUT_S = 3
        images, reason = pdf.export_static_charts({"a": go.Figure(go.Bar(x=[1], y=[2]))})
        print(len(images), reason)
    """)
    import os

    environment = {**os.environ, "BROWSER_PATH": str(browser)}
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0 " + REASON_TIMEOUT.format(seconds=3)


# -- HTML --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def html(folder, tmp_path_factory):
    return render_report(folder, format="html", out=tmp_path_factory.mktemp("html") / "r.html").read_text()


def test_html_is_self_contained_and_interactive(html):
    assert "Plotly.newPlot" in html
    assert not re.search(r"""<(script|img|link|iframe)[^>]*(src|href)=["']?https?://""", html)  # no remote resource
    assert not re.search(r"<script[^>]*\ssrc=", html)  # plotly.js inlined, not loaded
    assert html.count("data:image/jpeg;base64,") >= 10  # thumbnails embedded
    assert "image unavailable" in html  # absent and unreadable files give placeholders


def test_html_escapes_user_data(html):
    assert EVIL_CLASS not in html and EVIL_GROUP not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "alert(1)" in html  # still shown (escaped), not dropped


def test_html_review_status(html):
    assert "1 images reviewed" in html and "label_wrong: 1" in html
    assert "not reviewed" in html


def test_no_thumbnails(folder, tmp_path):
    text = render_report(folder, format="html", out=tmp_path / "r.html", thumbnails=False).read_text()
    assert "data:image/jpeg" not in text and "image unavailable" not in text
    assert "thumbnails left out on request" in text


def test_numbers_are_read_not_recomputed(folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    audit = json.loads((copy / "audit.json").read_text())
    audit["analyses"]["label_noise"]["label_disagreement_rate"] = 0.4242
    (copy / "audit.json").write_text(json.dumps(audit))
    assert "Label disagreement rate: 42.4 %" in render_report(copy, format="md").read_text()


# -- Markdown ----------------------------------------------------------------------------------------------------
def test_markdown_summary(folder):
    path = render_report(folder, format="md")
    assert path == folder / "report.md"
    text = path.read_text()
    audit = load_audit_json(folder)
    assert f"Policy verdict: " in text and audit["verdict"]["status"] in text
    assert fmt_percent(audit["analyses"]["label_noise"]["label_disagreement_rate"]) in text
    assert "<script>" not in text and "<img" not in text
    assert "| status | check | where | value | threshold |" in text
    assert not list(folder.glob(".report.md.*"))  # atomic write left no temporary file


# -- long class lists, missing sections, errors -----------------------------------------------------------------
def test_thousand_classes_stay_readable(tmp_path):
    folder = build_audit_folder(tmp_path / "big", n_images=3000, n_classes=1000, n_image_files=0,
                                with_data_quality=False)
    report = build_report(folder, thumbnails=False)
    classes = report.sections["composition"]["classes"]
    assert len(classes["rows"]) == 30 and classes["others"]["n_classes"] == 970
    assert len(report.sections["label_quality"]["per_class"]) == 15
    assert "noise_matrix" not in report.figures and len(report.sections["label_quality"]["confusions"]) > 0
    bars = report.figures["class_counts"].data[0]
    assert len(bars.y) == 31 and bars.y[-1] == "others (970 classes)"
    text = render_report(folder, format="html", out=tmp_path / "big.html").read_text()
    assert "others (970 classes)" in text


def test_audit_without_model_and_with_failed_analysis(tmp_path):
    no_model = build_audit_folder(tmp_path / "nomodel", with_model=False, n_image_files=0)
    text = render_report(no_model, format="html").read_text()
    assert "No label-noise estimate: the audit has no model or predictions." in text
    assert "No performance by group" in text
    failed = build_audit_folder(tmp_path / "failed", errors=["group_performance"], n_image_files=0)
    text = render_report(failed, format="md").read_text()
    assert "synthetic failure of group_performance" in text
    broken = ["class_distribution", "attribute_distribution", "associations", "label_noise", "group_performance",
              "weak_slices", "data_quality"]
    nothing = build_audit_folder(tmp_path / "nothing", errors=broken, n_image_files=0)
    text = render_report(nothing, format="html").read_text()
    for name in broken[:5]:
        assert f"The {name} analysis failed: RuntimeError: synthetic failure of {name}" in text


def test_bad_input(tmp_path, folder, capsys):
    with pytest.raises(InputError) as error:
        render_report(folder, format="docx")
    assert str(error.value) == ERROR_FORMAT.format(value="docx")
    assert main(["report", str(tmp_path / "missing"), "--format", "md"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: audit folder") and err.count("\n") == 1


# -- figures -----------------------------------------------------------------------------------------------------
def test_figures_are_pure_and_escape_labels():
    fig = figures.class_counts_figure({EVIL_CLASS: 5, "b": 3, "c": 1}, top_n=2)
    assert isinstance(fig, go.Figure)
    assert list(fig.data[0].y) == ["&lt;script&gt;alert(1)&lt;/script&gt;", "b", "others (1 classes)"]
    assert list(fig.data[0].x) == [5, 3, 1]
    rows = pd.DataFrame({"group": ["a", "b"], "n": [50, 60], "value": [0.7, 0.9], "ci_low": [0.6, 0.8],
                         "ci_high": [0.8, 0.95], "verdict": ["worse_than_rest", "no_evidence_of_gap"]})
    fig = figures.group_metric_figure(rows, metric="accuracy", attribute="g", overall=0.8, threshold=0.75)
    assert {t.name for t in fig.data if t.mode == "markers"} == {"worse than the rest", "no evidence of a gap"}
    assert [t.name for t in fig.data if t.mode == "lines"] == ["whole data", "policy threshold"]  # legend keys
    worse = next(t for t in fig.data if t.name == "worse than the rest")
    assert list(worse.error_x.array) == pytest.approx([0.1]) and list(worse.error_x.arrayminus) == pytest.approx([0.1])


def test_review_decisions_follow_the_contract(tmp_path):
    from audit.folder import load_reviews

    folder = tmp_path / "f"
    folder.mkdir()
    images = pd.DataFrame({"id": ["a", "b", "c"], "content_hash": ["ha", "hb", "hc"]})
    write_reviews(folder, [
        {"id": "a", "content_hash": "ha", "reviewer": "r1", "decision": "label_correct", "new_label": None,
         "note": "", "decided_at": "2026-01-01T00:00:00"},
        {"id": "a", "content_hash": "ha", "reviewer": "r1", "decision": "label_wrong", "new_label": "dog",
         "note": "", "decided_at": "2026-01-02T00:00:00"},  # the reviewer's latest decision counts
        {"id": "b", "content_hash": "hb", "reviewer": "r1", "decision": "label_wrong", "new_label": None,
         "note": "", "decided_at": "2026-01-01T00:00:00"},
        {"id": "b", "content_hash": "hb", "reviewer": "r2", "decision": "label_correct", "new_label": None,
         "note": "", "decided_at": "2026-01-01T00:00:00"},
        {"id": "c", "content_hash": "old", "reviewer": "r1", "decision": "label_wrong", "new_label": None,
         "note": "", "decided_at": "2026-01-01T00:00:00"},  # the image changed since: does not apply
    ])
    reviews = load_reviews(folder, images).set_index("id")
    assert reviews.loc["a", "decision"] == "label_wrong" and reviews.loc["a", "new_label"] == "dog"
    assert reviews.loc["b", "decision"] == "conflict" and reviews.loc["b", "reviewers"] == "r1, r2"
    assert "c" not in reviews.index
    assert load_reviews(tmp_path, images) is None  # no reviews.sqlite


SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture(scope="module")
def sample_audit(tmp_path_factory):
    """The sample audit computed from sample_data/ (as on a fresh clone)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("sample") / "audit"
    done = subprocess.run([sys.executable, "-m", "audit", "run", "--data", str(SAMPLE_DATA / "manifest.csv"),
                           "--model", str(SAMPLE_DATA / "model.onnx"), "--out", str(out), "--quiet", "--cache-dir",
                           str(out.parent / "cache")], cwd=SAMPLE_DATA.parent, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return out


def test_sample_audit_markdown_matches_its_tables(tmp_path, sample_audit):
    SAMPLE = sample_audit
    gm = load_group_metrics(SAMPLE)
    overall = gm[(gm.attribute == "all") & (gm.metric == "accuracy") & (gm["class"] == "")].iloc[0]
    text = render_report(SAMPLE, format="md", out=tmp_path / "sample.md").read_text()
    assert f"Accuracy: {fmt_percent(overall.value)} (95 % CI {fmt_interval(overall.ci_low, overall.ci_high)}" in text


def test_thumbnails_only_from_inside_the_audited_data_root(tmp_path):
    from PIL import Image

    from audit.report.render import _inside_root, thumbnail_data_uri

    root = tmp_path / "data"
    root.mkdir()
    inside = root / "a.png"
    outside = tmp_path / "secret.png"
    for path in (inside, outside):
        Image.new("RGB", (8, 8), "red").save(path)
    (root / "link.png").symlink_to(outside)
    assert _inside_root(inside, root) and thumbnail_data_uri(inside) is not None
    assert not _inside_root(outside, root)
    assert not _inside_root(root / "link.png", root)  # a symlink out of the root
    assert not _inside_root(root / ".." / "secret.png", root)
    assert not _inside_root(inside, None)


def test_html_shows_commands_as_code_and_pixel_attributes_in_words(html):
    # policy messages are shared with the terminal: their `commands` become <code>, never literal backticks
    assert "<code>python -m audit review DIR --sample" in html and "`python -m audit review" not in html
    assert "Accuracy by image brightness" in html and "Accuracy by image_brightness_group" not in html


def test_markdown_shows_the_review_commands_as_code(folder):
    text = render_report(folder, format="md").read_text()
    assert "\\`python -m audit review" not in text and "`python -m audit review " in text


def test_pdf_sections_run_on_and_short_blocks_stay_whole():
    """Forced page breaks before sections left pages with two lines or two table rows on them (sample PDF)."""
    from importlib.resources import files

    css = files("audit.report").joinpath("templates/report.css").read_text()
    assert "page-break-before: always" not in css and "break-before: page" not in css
    assert re.search(r"\.block \{[^}]*break-inside: avoid", css)
