"""AppTest tests of the dashboard: every page opens on an audit without exceptions, and the numbers and
figures it shows are the engine's (audit.json / group_metrics.parquet), never recomputed."""
from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from tests.app.apptest import open_app_page
from tests.audit_builder import rewrite_audit_files
from tests.app.synthetic_audit import CLASSES, HTML_GROUP, build_audit, build_dataset

from app_pages import _state
from audit import reviews
from audit.display import issue_label, sort_groups
from audit.report import figures

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "app.py")
PAGES = ["overview", "classes", "attributes", "labels", "fairness", "quality", "export"]
SAMPLE_DATA = REPO / "sample_data"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """The sample audit: reports/sample when it exists, else computed from sample_data/ (as on a fresh clone)."""
    existing = REPO / "reports" / "sample"
    if (existing / "audit.json").exists():
        return existing
    if not (SAMPLE_DATA / "model.onnx").exists():
        pytest.skip("sample_data is not built")
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("sample-audit") / "sample"
    done = subprocess.run([sys.executable, "-m", "audit", "run", "--data", str(SAMPLE_DATA / "manifest.csv"), "--model",
                           str(SAMPLE_DATA / "model.onnx"), "--out", str(out), "--quiet", "--cache-dir",
                           str(out.parent / "cache"), "--policy", str(REPO / "policy.example.toml")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("app")
    return build_audit(root / "data", root / "reports" / "synthetic")


@pytest.fixture()
def reports(audit_dir, monkeypatch, tmp_path_factory) -> Path:
    monkeypatch.setenv("IMAGEFAIR_REPORTS", str(audit_dir.parent))
    # local-path fields read only under IMAGEFAIR_DATA_ROOTS: the tests' data live in pytest's temp folders
    monkeypatch.setenv("IMAGEFAIR_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))
    return audit_dir.parent


def _open(folder: Path, page: str = "overview") -> AppTest:
    return open_app_page(folder, page)


def _chart(app: AppTest, key: str) -> dict:
    charts = [c for c in app.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert len(charts) == 1, f"chart {key} not shown"
    return json.loads(charts[0].proto.spec)


def _values(array) -> list:
    """Plotly JSON arrays may be plain lists or typed arrays ({"dtype", "bdata"})."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"])).tolist()
    return list(array)


def _escaped(name: str) -> str:
    return name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _metrics(app: AppTest) -> dict:
    return {m.label: m.value for m in app.metric}


def _gallery_ids(app: AppTest) -> list:
    """Image ids of the gallery cards in reading order (the grid is filled row by row; the element tree
    lists it column by column). The review panel's text starts with the id followed by a newline."""
    ids = [t.value for t in app.text if t.value.startswith("img_") and "\n" not in t.value]
    k, n = _state.GALLERY_COLUMNS, len(ids)
    per_column = [(n - c + k - 1) // k for c in range(k)]
    starts = np.concatenate([[0], np.cumsum(per_column)[:-1]]).astype(int)
    columns = [ids[starts[c]: starts[c] + per_column[c]] for c in range(k)]
    return [columns[i % k][i // k] for i in range(n)]


def _load(folder: Path):
    audit = json.loads((folder / "audit.json").read_text())
    return audit, pd.read_parquet(folder / "images.parquet"), pd.read_parquet(folder / "group_metrics.parquet")


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_without_exceptions(audit_dir, reports, page):
    app = _open(audit_dir, page)
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    assert app.title[0].value


def test_overview_shows_dataset_card_and_findings(audit_dir, reports):
    audit, images, _ = _load(audit_dir)
    app = _open(audit_dir)
    shown = _metrics(app)
    assert shown["Images"] == f"{audit['dataset']['n_images']:,}"
    assert shown["Classes"] == str(audit["dataset"]["n_classes"])
    assert shown["Skipped inputs"] == str(audit["dataset"]["n_skipped"])
    assert shown["Suspects reviewed"] == f"0 / {int(images['is_label_issue'].sum())}"
    texts = " ".join(m.value for m in app.markdown)
    # Findings are shown in order, escaped (the class name holds markup): never rendered as HTML.
    assert len([m for m in app.markdown if m.value.startswith(":material/")]) == len(audit["findings"])
    assert "<b>" not in texts and r"\<b\>fox\</b\>" in texts


def test_classes_figure_is_the_engine_count(audit_dir, reports):
    audit, _, _ = _load(audit_dir)
    section = audit["analyses"]["class_distribution"]
    spec = _chart(_open(audit_dir, "classes"), "class_counts")
    shown = dict(zip(spec["data"][0]["y"], _values(spec["data"][0]["x"])))
    assert shown == {_escaped(c): section["counts"][c] for c in audit["classes"]}
    by_split = _chart(_open(audit_dir, "classes"), "class_by_split")
    for trace in by_split["data"]:
        assert _values(trace["y"]) == [section["by_split"][trace["name"]][c] for c in audit["classes"]]


def _points(spec: dict) -> pd.DataFrame:
    """One row per group of a horizontal interval chart (audit.report.figures): label, value, interval ends
    (value + error bars) and the trace name (the verdict)."""
    rows = []
    for trace in spec["data"]:
        if trace.get("mode") == "lines":
            continue  # legend keys of the reference lines (whole data, policy threshold)
        values = _values(trace["x"])
        error = trace.get("error_x", {})
        above, below = _values(error.get("array", [0] * len(values))), _values(error.get("arrayminus", [0] * len(values)))
        for label, value, up, down in zip(trace["y"], values, above, below):
            rows.append({"label": label, "value": value, "ci_low": value - down, "ci_high": value + up,
                         "trace": trace.get("name")})
    return pd.DataFrame(rows)


def test_fairness_bars_are_group_metrics_rows(audit_dir, reports):
    _, _, metrics = _load(audit_dir)
    app = _open(audit_dir, "fairness")
    app.selectbox(key="fair_metric").set_value("accuracy").run()
    app.selectbox(key="fair_attribute").set_value("skin").run()
    points = _points(_chart(app, "fair_metric_chart")).set_index("label")
    rows = metrics[(metrics.metric == "accuracy") & (metrics.attribute == "skin") & (metrics["class"] == "")]
    assert len(points) == len(rows)
    for row in rows.itertuples():
        point = points.loc[_escaped(row.group)]
        assert point["value"] == pytest.approx(row.value, abs=1e-12)
        assert (point["ci_low"], point["ci_high"]) == pytest.approx((row.ci_low, row.ci_high), abs=1e-12)
        assert point["trace"] == figures.VERDICT_LABELS[row.verdict]
    # The synthetic model is built worse on skin == dark: the engine flags it, the chart shows it red.
    assert points.loc["dark", "trace"] == figures.VERDICT_LABELS["worse_than_rest"]


def test_fairness_marks_small_groups_and_recall_heatmap(audit_dir, reports):
    _, _, metrics = _load(audit_dir)
    app = _open(audit_dir, "fairness")
    app.selectbox(key="fair_attribute").set_value("site & skin").run()
    points = _points(_chart(app, "fair_metric_chart"))
    rows = metrics[(metrics.metric == "accuracy") & (metrics.attribute == "site & skin") & (metrics["class"] == "")]
    small = points[points.trace == figures.VERDICT_LABELS["insufficient_data"]]
    assert sorted(small.label) == sorted(_escaped(g) for g in rows[rows.insufficient_evidence].group)
    assert len(small) > 0
    app.selectbox(key="fair_attribute").set_value("site").run()
    spec = _chart(app, "fair_recall_heatmap")
    recall = metrics[(metrics.metric == "recall") & (metrics.attribute == "site") & (metrics["class"] != "")]
    groups = sort_groups(recall.group)  # natural order (0-2, 3-9, 10-19), one helper for every view
    assert spec["data"][0]["x"] == [_escaped(g) for g in groups]
    expected = [[recall[(recall["class"] == c) & (recall.group == g)].value.iloc[0] for g in groups]
                for c in sorted(CLASSES)]
    assert np.allclose(np.array(spec["data"][0]["z"], dtype=float), expected)


def test_label_quality_figures_are_the_engine_estimates(audit_dir, reports):
    audit, images, _ = _load(audit_dir)
    section = audit["analyses"]["label_noise"]
    app = _open(audit_dir, "labels")
    shown = _metrics(app)
    assert shown["Flagged images"] == f"{section['n_label_issues']:,}"
    assert shown["Label disagreement rate"] == f"{section['label_disagreement_rate']:.1%}"
    assert shown["Model error rate"] == f"{section['model_error_rate']:.1%}"
    matrix = _chart(app, "labels_matrix_chart")
    assert np.allclose(np.array(matrix["data"][0]["z"], dtype=float), section["noise_matrix"])
    per_class = _points(_chart(app, "labels_per_class")).set_index("label")
    for row in section["per_class"]:
        assert per_class.loc[_escaped(row["class"]), "value"] == pytest.approx(row["label_disagreement_rate"],
                                                                           abs=1e-12)
        assert per_class.loc[_escaped(row["class"]), "ci_high"] == pytest.approx(row["ci_high"], abs=1e-12)
    # Gallery: the first page is the flagged images with the lowest label score, in that order.
    expected = images[images.is_label_issue].sort_values("label_score", kind="stable").id.head(12).tolist()
    assert _gallery_ids(app) == expected


def test_gallery_filters_by_class_group_and_score(audit_dir, reports):
    _, images, _ = _load(audit_dir)
    app = _open(audit_dir, "labels")
    app.toggle(key="gallery_flagged").set_value(False).run()
    app.multiselect(key="gallery_classes").set_value(["cat"]).run()
    app.selectbox(key="gallery_attribute").set_value("site").run()
    app.selectbox(key="gallery_group").set_value(HTML_GROUP).run()
    app.slider(key="gallery_score").set_value((0.0, 0.5)).run()
    expected = images[(images.label == "cat") & (images.site == HTML_GROUP) & images.label_score.between(0, 0.5)]
    expected = expected.sort_values("label_score", kind="stable").id.head(12).tolist()
    assert _gallery_ids(app) == expected
    assert not app.exception


def test_review_decision_is_recorded_and_counted(tmp_path, monkeypatch):
    folder = build_audit(tmp_path / "data", tmp_path / "reports" / "review")
    monkeypatch.setenv("IMAGEFAIR_REPORTS", str(tmp_path / "reports"))
    app = _open(folder, "labels")
    first = _gallery_ids(app)[0]
    app.text_input(key="reviewer_name").input("ann").run()
    app.radio(key=f"decision_{first}").set_value("label_wrong")
    app.selectbox(key=f"new_label_{first}").set_value("dog")
    app.text_input(key=f"note_{first}").input("clearly a dog")
    submit = [b for b in app.button if b.label == "Save decision"][0]
    submit.click().run()
    assert not app.exception and not app.error
    decisions = reviews.list_decisions(folder)
    assert decisions[["reviewer", "decision", "new_label", "note"]].values.tolist() == [
        ["ann", "label_wrong", "dog", "clearly a dog"]]
    n_suspects = int(pd.read_parquet(folder / "images.parquet").is_label_issue.sum())
    assert _metrics(app)["Suspects reviewed"] == f"1 / {n_suspects}"
    assert _metrics(app)["Confirmed errors among reviewed suspects"] == "1 of 1 (100%)"
    assert any(c.value == "95 % interval of the confirmed share: 21% - 100% (Wilson, 1 decided reviews)." for c in app.caption)
    # A second reviewer disagrees: the conflict is shown, both decisions kept.
    images = pd.read_parquet(folder / "images.parquet")
    content_hash = images.set_index("id").content_hash[first]
    reviews.record_decision(folder, image_id=first, content_hash=content_hash, reviewer="bob",
                            decision="label_correct")
    app = _open(folder, "labels")
    assert any("conflicting" in w.value for w in app.warning)
    export = _open(folder, "export")
    assert not export.exception


def test_review_without_a_name_shows_the_error(audit_dir, reports):
    app = _open(audit_dir, "labels")
    first = _gallery_ids(app)[0]
    app.radio(key=f"decision_{first}").set_value("unsure")
    [b for b in app.button if b.label == "Save decision"][0].click().run()
    assert [e.value for e in app.error] == [reviews.ERROR_REVIEWER]
    assert not app.exception


def test_review_has_no_default_decision_and_remembers_the_reviewer(tmp_path, monkeypatch):
    """Issue 12 item 8: a hurried Save records nothing; the reviewer's name survives page switches and
    reloads (it is kept in the address, ?reviewer=...)."""
    folder = build_audit(tmp_path / "data", tmp_path / "reports" / "nodefault")
    monkeypatch.setenv("IMAGEFAIR_REPORTS", str(tmp_path / "reports"))
    app = _open(folder, "labels")
    first = _gallery_ids(app)[0]
    assert app.radio(key=f"decision_{first}").value is None
    app.text_input(key="reviewer_name").input("ann").run()
    assert app.query_params.get("reviewer") in ("ann", ["ann"])
    [b for b in app.button if b.label == "Save decision"][0].click().run()
    assert [e.value for e in app.error] == [reviews.ERROR_NO_DECISION]
    assert reviews.list_decisions(folder).empty
    app.switch_page("app_pages/overview.py").run()
    app.switch_page("app_pages/labels.py").run()
    assert app.text_input(key="reviewer_name").value == "ann"
    reloaded = AppTest.from_file(APP, default_timeout=120)
    reloaded.session_state["audit_dir"] = str(folder)
    reloaded.query_params["reviewer"] = "ann"
    reloaded.switch_page("app_pages/labels.py")
    reloaded.run()
    assert reloaded.text_input(key="reviewer_name").value == "ann"


def test_new_audit_from_a_bad_manifest_shows_the_reason(tmp_path, reports):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,klass\na.png,cat\n")
    app = _open(reports / "synthetic", "new_audit")
    app.text_input(key="new_name").input("bad_one")
    app.text_input(key="new_data").input(str(bad))
    [b for b in app.button if b.label == "Run audit"][0].click().run()
    assert not app.exception
    assert len(app.error) == 1 and "label" in app.error[0].value
    assert not (reports / "bad_one").exists()


def test_new_audit_name_is_validated(reports):
    app = _open(reports / "synthetic", "new_audit")
    app.text_input(key="new_name").input("../evil")
    app.text_input(key="new_data").input("x.csv")
    [b for b in app.button if b.label == "Run audit"][0].click().run()
    assert [e.value for e in app.error] == ["audit name '../evil': use letters, digits, '-' and '_' only (it "
                                            "becomes the folder reports/NAME)"]


def test_new_audit_from_local_paths_runs_and_opens(tmp_path, reports):
    files = build_dataset(tmp_path / "data2", n_images=60, seed=3)
    app = _open(reports / "synthetic", "new_audit")
    app.text_input(key="new_name").input("fresh")
    app.text_input(key="new_data").input(files["manifest"])
    app.text_input(key="new_predictions").input(files["predictions"])
    [b for b in app.button if b.label == "Run audit"][0].click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert (reports / "fresh" / "audit.json").exists()
    assert app.session_state["audit_dir"] == str((reports / "fresh").resolve())
    assert _metrics(app)["Images"] == "60"


def test_new_audit_stays_open_on_the_next_clicks(tmp_path, reports):
    """Issue 12 item 1: after "Run audit" the picker shows the new audit and two page clicks later it is
    still the audit shown (it used to fall back to the picker's old value)."""
    files = build_dataset(tmp_path / "data4", n_images=40, seed=6)
    app = _open(reports / "synthetic", "classes")
    assert app.selectbox(key="audit_picker").value == str((reports / "synthetic").resolve())
    app.switch_page("app_pages/new_audit.py").run()
    app.text_input(key="new_name").input("newer")
    app.text_input(key="new_data").input(files["manifest"])
    [b for b in app.button if b.label == "Run audit"][0].click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    newer = str((reports / "newer").resolve())
    for page in ("overview", "classes", "fairness"):
        if page != "overview":
            app.switch_page(f"app_pages/{page}.py").run()
        assert not app.exception
        assert app.selectbox(key="audit_picker").value == newer, page
        assert app.session_state["audit_dir"] == newer, page
        assert _state.load_audit(newer).name == "newer"
    assert app.title[0].value == "Fairness"
    # The picker still switches audits.
    app.selectbox(key="audit_picker").set_value(str((reports / "synthetic").resolve())).run()
    assert app.session_state["audit_dir"] == str((reports / "synthetic").resolve())
    app.switch_page("app_pages/overview.py").run()
    assert app.selectbox(key="audit_picker").value == str((reports / "synthetic").resolve())
    assert "Audit synthetic of" in app.caption[0].value


def test_failed_upload_leaves_no_files_behind(reports):
    """A failed audit from uploads removes its upload folder (issue 12 item 8)."""
    app = _open(reports / "synthetic", "new_audit")
    app.radio(key="new_source").set_value("Upload").run()
    app.text_input(key="new_name").input("no_zip")
    [b for b in app.button if b.label == "Run audit"][0].click().run()
    assert [e.value for e in app.error] == ["upload a zip of the images (with a manifest, or one folder per class)"]
    uploads = reports / ".uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []
    assert app.text_input(key="new_manifest_name").value == ""


def test_no_html_rendering_anywhere_in_the_app():
    sources = [REPO / "app.py", *sorted((REPO / "app_pages").glob("*.py"))]
    for source in sources:
        assert "unsafe_allow_html" not in source.read_text(), source


def test_caching_only_in_state_module():
    for source in [REPO / "app.py", *sorted((REPO / "app_pages").glob("*.py"))]:
        if source.name != "_state.py":
            text = source.read_text()
            assert "cache_data" not in text and "cache_resource" not in text, source


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_on_the_sample_audit(page, sample):
    app = _open(sample, page)
    assert not app.exception, [e.value for e in app.exception]
    # A failed policy verdict is shown as an error box on purpose; nothing else may be.
    assert not [e.value for e in app.error if not e.value.startswith("Policy verdict:")]


def test_sample_overview_and_fairness_numbers(sample):
    audit, _, metrics = _load(sample)
    app = _open(sample)
    assert _metrics(app)["Images"] == f"{audit['dataset']['n_images']:,}"
    app = _open(sample, "fairness")
    attribute = app.selectbox(key="fair_attribute").value
    metric = app.selectbox(key="fair_metric").value
    points = _points(_chart(app, "fair_metric_chart"))
    rows = metrics[(metrics.metric == metric) & (metrics.attribute == attribute) & (metrics["class"] == "")]
    assert len(points) == min(len(rows), 40)
    assert all(np.isclose(rows.value, v).any() for v in points["value"])


@pytest.mark.skipif(not (REPO / "sample_data" / "model.onnx").exists(), reason="sample_data not built")
def test_no_arguments_computes_the_sample_once_then_loads_it(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEFAIR_REPORTS", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["app.py"])
    app = AppTest.from_file(APP, default_timeout=300).run()
    assert not app.exception
    assert not [e.value for e in app.error if not e.value.startswith("Policy verdict:")]
    assert (tmp_path / "sample" / "audit.json").exists()
    assert app.session_state["audit_dir"] == str(tmp_path / "sample")
    audit = json.loads((tmp_path / "sample" / "audit.json").read_text())
    assert _metrics(app)["Images"] == f"{audit['dataset']['n_images']:,}"
    # A second start loads the folder instead of recomputing it.
    stamp = (tmp_path / "sample" / "audit.json").stat().st_mtime_ns
    AppTest.from_file(APP, default_timeout=300).run()
    assert (tmp_path / "sample" / "audit.json").stat().st_mtime_ns == stamp


class _Code:
    """Pickles to a call of print: what a malicious checkpoint would do with os.system."""

    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize("case", ["predictions_shape", "pickled_model"])
def test_new_audit_bad_model_or_predictions_shows_the_reason(tmp_path, reports, case, capsys):
    import pickle

    files = build_dataset(tmp_path / "data3", n_images=30, seed=4)
    app = _open(reports / "synthetic", "new_audit")
    app.text_input(key="new_name").input(f"bad_{case}")
    app.text_input(key="new_data").input(files["manifest"])
    if case == "predictions_shape":
        wrong = tmp_path / "wrong.npy"
        np.save(wrong, np.full((7, 2), 0.5, dtype=np.float32))
        app.text_input(key="new_predictions").input(str(wrong))
    else:
        model = tmp_path / "model.pt"
        model.write_bytes(pickle.dumps({"weight": _Code()}, protocol=2))
        app.text_input(key="new_model").input(str(model))
        app.selectbox(key="new_arch").set_value("cifar_resnet20")
    [b for b in app.button if b.label == "Run audit"][0].click().run()
    assert not app.exception
    assert len(app.error) == 1, [e.value for e in app.error]
    assert "Traceback" not in app.error[0].value
    assert str(tmp_path / ("wrong.npy" if case == "predictions_shape" else "model.pt")) in app.error[0].value
    assert "pickled code ran" not in capsys.readouterr().out
    assert not (reports / f"bad_{case}").exists()


def test_export_offers_tables_corrected_labels_and_builds_a_report(audit_dir, reports):
    pytest.importorskip("audit.report.render")
    app = _open(audit_dir, "export")
    labels = [b.label for b in app.get("download_button")] if app.get("download_button") else []
    app.toggle(key="export_images_prepare").set_value(True).run()
    [b for b in app.button if b.label == "Build report.md"][0].click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert (audit_dir / "report.md").exists()
    assert app.session_state["export_report_md"] == str(audit_dir / "report.md")
    assert not labels or "audit.json" in labels


def test_sample_quality_counts_and_rates_are_the_engine_numbers(sample):
    audit, _, metrics = _load(sample)
    section = audit["analyses"].get("data_quality")
    if not section:
        pytest.skip("the sample audit has no data_quality section")
    app = _open(sample, "quality")
    shown = _metrics(app)
    for issue, count in section["summary"]["issues"].items():
        assert shown[issue_label(issue)] == f"{count:,}"
    issue = app.selectbox(key="quality_issue").value
    attribute = app.selectbox(key="quality_rate_attribute").value
    points = _points(_chart(app, "quality_rates")).set_index("label")
    rows = metrics[(metrics.metric == f"issue_rate:{issue}") & (metrics.attribute == attribute)
                   & (metrics["class"] == "")]
    for row in rows.itertuples():
        assert points.loc[_escaped(row.group), "value"] == pytest.approx(row.value, abs=1e-12)


def test_sample_reliability_curves_are_the_engine_bins(sample):
    audit, _, _ = _load(sample)
    app = _open(sample, "fairness")
    attribute = app.selectbox(key="fair_attribute").value
    curves = audit["analyses"]["calibration"]["attributes"][attribute]
    spec = _chart(app, "fair_reliability")
    drawn = {trace["name"]: _values(trace["y"]) for trace in spec["data"][1:]}
    assert drawn, "no group curve drawn"
    for group, accuracy in drawn.items():
        assert accuracy == pytest.approx([b["accuracy"] for b in curves[group] if b["n"] >= 10])


def test_fairness_chart_draws_the_policy_threshold_recorded_with_the_verdict(sample):
    audit, _, _ = _load(sample)
    if "policy" not in audit:
        pytest.skip("the sample audit was computed without a policy")
    app = _open(sample, "fairness")
    attribute = app.selectbox(key="fair_attribute").value
    expected = next(c["threshold"] for c in audit["verdict"]["checks"]
                    if c["name"] == "performance.min_worst_group" and c["attribute"] == attribute)
    shapes = _chart(app, "fair_metric_chart")["layout"].get("shapes", [])
    assert any(s.get("x0") == pytest.approx(expected) and s.get("line", {}).get("dash") == "dot" for s in shapes)


def test_fairness_shows_no_disparities_between_groups_too_small_to_judge(tmp_path, monkeypatch):
    """Issue 12 item 6: an intersection whose groups are all too small gets a sentence, not an all-None
    disparity table and two-class 'fairness' numbers computed from groups of a few images."""
    folder = build_audit(tmp_path / "data", tmp_path / "reports" / "small")
    monkeypatch.setenv("IMAGEFAIR_REPORTS", str(tmp_path / "reports"))
    table = pd.read_parquet(folder / "group_metrics.parquet")
    chosen = table["attribute"] == "site & skin"
    table.loc[chosen, "insufficient_evidence"] = True
    table.loc[chosen, "verdict"] = "insufficient_data"
    rewrite_audit_files(folder, group_metrics=table)  # a new run id: a new version for the app's cache
    app = _open(folder, "fairness")
    app.selectbox(key="fair_attribute").set_value("site & skin").run()
    assert not app.exception
    assert any("no disparity between groups is computed" in i.value for i in app.info)
    assert not [d for d in app.dataframe if d.proto.id.endswith("-fair_disparity")]
    assert not any("Two-class fairness" in m.value for m in app.markdown)
    app.selectbox(key="fair_attribute").set_value("site").run()
    assert not any("no disparity between groups is computed" in i.value for i in app.info)


def test_fairness_shows_the_error_rate_beside_a_disagreement_rate(audit_dir, reports):
    _, _, metrics = _load(audit_dir)
    app = _open(audit_dir, "fairness")
    app.radio(key="fair_kind").set_value("Data and label rates").run()
    app.selectbox(key="fair_rate_metric").set_value("label_disagreement_rate").run()
    attribute = app.selectbox(key="fair_attribute").value
    errors = metrics[(metrics.metric == "model_error_rate") & (metrics.attribute == attribute) & (metrics["class"] == "")]
    assert len(errors)
    expected = ("A screening figure, not a label-error rate. The model's error rate on the same images: "
                + "; ".join(f"{g} {v:.1%}" for g, v in zip(errors.group, errors.value)) + ".")
    assert any(c.value.replace("\\", "") == expected for c in app.caption)  # shown escaped (literal text)
