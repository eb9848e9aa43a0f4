"""`report` renders a comparison folder as Markdown (PR-sized), HTML (escaped, self-contained) and PDF."""
from __future__ import annotations

import pytest

from audit.cli import main
from tests.compare.builders import planted_pair


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    old, new, _ = planted_pair(root, n=800, drop=0.2, seed=3)
    out = root / "cmp"
    assert main(["compare", str(old), str(new), "--out", str(out), "--n-bootstrap", "50"]) == 0
    return out


def test_markdown_is_pr_sized(comparison):
    assert main(["report", str(comparison), "--format", "md"]) == 0
    text = (comparison / "report.md").read_text()
    assert text.startswith("## imagefair comparison") and "site = C" in text
    assert len(text) < 65_536  # GitHub's comment limit


def test_html_is_self_contained_and_escaped(comparison, tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", str(comparison), "--format", "html", "--out", str(out)]) == 0
    html = out.read_text()
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "data:image/svg+xml;base64," in html and "Old vs new by group" in html


def test_pdf(comparison, tmp_path):
    out = tmp_path / "r.pdf"
    assert main(["report", str(comparison), "--format", "pdf", "--out", str(out)]) == 0
    assert out.read_bytes()[:5] == b"%PDF-"
