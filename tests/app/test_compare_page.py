"""AppTest of the Compare page: pick two audits from reports/, compare, see findings, charts and changes;
user strings (group names with markup) are escaped in the text and in the chart."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamlit.testing.v1 import AppTest

from tests.compare.builders import probabilities_for, write_audit

REPO = Path(__file__).resolve().parents[2]
HOSTILE = "<b>bold</b> [x](http://evil.example) @team"


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp_reports")
    rng = np.random.default_rng(0)
    n = 240
    ids = [f"i{i}" for i in range(n)]
    labels = rng.integers(0, 2, n)
    site = np.where(np.arange(n) % 2 == 0, "A", HOSTILE)
    correct_old = rng.random(n) < 0.85
    correct_new = np.where(site == "A", correct_old & (rng.random(n) < 0.7), correct_old)
    relabelled = labels.copy()
    relabelled[:5] = 1 - relabelled[:5]
    write_audit(root / "v1", ids=ids, labels=labels, probabilities=probabilities_for(labels, correct_old, 2, rng),
                classes=["cat", "dog"], attributes={"site": site}, content=ids)
    write_audit(root / "v2", ids=ids, labels=relabelled,
                probabilities=probabilities_for(relabelled, correct_new, 2, rng), classes=["cat", "dog"],
                attributes={"site": site}, content=ids)
    for extra in root.glob("*_inputs"):
        import shutil

        shutil.rmtree(extra)
    return root


def test_compare_page_runs_and_shows_the_comparison(reports, monkeypatch):
    monkeypatch.setenv("IMAGEFAIR_REPORTS", str(reports))
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    app.session_state["audit_dir"] = str(reports / "v1")
    app.switch_page("app_pages/compare.py")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    app.button(key="cmp_run").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert (reports / ".comparisons" / "v1__vs__v2" / "comparison.json").is_file()
    text = " ".join(m.value for m in app.markdown)
    assert "Accuracy fell" in text
    assert "<b>" not in text and "](http" not in text  # escaped
    assert app.selectbox(key="cmp_change").value == "relabelled"
    # how many tests were made and how they were controlled (comparison-wide families)
    assert any(c.value.startswith("The comparison made ") and "Holm" in c.value for c in app.caption)


def test_dumbbell_svg_escapes_labels():
    from audit.compare.report import dumbbell_svg

    svg = dumbbell_svg([{"attribute": "site", "group": HOSTILE, "class": "", "old": 0.8, "new": 0.7,
                         "old_ci_low": 0.75, "old_ci_high": 0.85, "new_ci_low": 0.65, "new_ci_high": 0.75,
                         "verdict": "regressed"}], title="accuracy by <script>")
    assert "<b>" not in svg and "<script>" not in svg and "&lt;b&gt;" in svg
