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


def test_compare_page_reads_in_words_and_natural_order(tmp_path, monkeypatch):
    """Age-like groups in natural order in the chart (3-9 before 10-19), added images without "nan ->",
    metric rows with readable headers, and a sentence instead of an empty table."""
    rng = np.random.default_rng(1)
    n = 200
    ids = [f"i{i}" for i in range(n)]
    labels = rng.integers(0, 2, n)
    age = np.where(np.arange(n) % 2 == 0, "3-9", "10-19")
    correct = rng.random(n) < 0.85
    write_audit(tmp_path / "v1", ids=ids[:160], labels=labels[:160], classes=["cat", "dog"],
                probabilities=probabilities_for(labels[:160], correct[:160], 2, rng),
                attributes={"age": age[:160]}, content=ids[:160])
    write_audit(tmp_path / "v2", ids=ids, labels=labels, classes=["cat", "dog"],
                probabilities=probabilities_for(labels, correct, 2, rng), attributes={"age": age}, content=ids)
    monkeypatch.setenv("IMAGEFAIR_REPORTS", str(tmp_path))
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    app.session_state["audit_dir"] = str(tmp_path / "v1")
    app.switch_page("app_pages/compare.py")
    app.run()
    app.button(key="cmp_run").click().run()
    assert not app.exception, [e.value for e in app.exception]
    from audit.compare.folder import load_comparison_folder
    from audit.compare.report import changed_images, dumbbell_charts

    folder = load_comparison_folder(tmp_path / ".comparisons" / "v1__vs__v2")
    title, svg = dumbbell_charts(folder.comparison)[0]
    assert title == "accuracy by age" and svg.index(">3-9<") < svg.index(">10-19<")
    added = [i for i in changed_images(folder, folder.comparison, thumbnails=False) if i["change"] == "added"]
    assert added and all(i["label_old"] == "-" for i in added)
    texts = " ".join(t.value for t in app.text)
    assert "nan ->" not in texts and "- -> " in texts
    tables = [d.value for d in app.dataframe if "verdict" in d.value.columns]
    assert all("n_old" not in t.columns and "p_adjusted" not in t.columns for t in tables)
    if not tables:
        assert any("No row with the verdicts" in c.value for c in app.caption)
