"""What a new user reads on the sample audit (AppTest): metric and pixel-attribute names in words, groups in
natural order in captions, the review hint with its commands as code (not literal backticks), the whole
dataset card (the scrolling frame hid its last rows) and metric labels short enough not to be cut."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from tests.app.apptest import open_app_page
from tests.audit_builder import build_audit_folder

REPO = Path(__file__).resolve().parents[2]
PIXEL = "image_brightness_group"
PIXEL_WORDS = "image brightness"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    # gender values that look like age bins: stored (text) order 10-19, 3-9; natural order 3-9, 10-19
    return build_audit_folder(tmp_path_factory.mktemp("words") / "audit", gender_values=("3-9", "10-19"),
                              n_image_files=0)


def _open(folder: Path, page: str, monkeypatch) -> AppTest:
    return open_app_page(folder, page, monkeypatch, check=True)


def _title(app: AppTest, key: str) -> str:
    chart = next(c for c in app.get("plotly_chart") if c.proto.id.endswith(f"-{key}"))
    return json.loads(chart.proto.spec)["layout"]["title"]["text"]


def test_label_quality_names_metrics_and_pixel_attributes_in_words(folder, monkeypatch):
    app = _open(folder, "labels", monkeypatch)
    labels = [m.label for m in app.metric]
    assert "Model error rate" in labels
    # the first row has five columns: a longer label was cut ("Model error rate (same i...")
    assert all(len(label) <= 24 for label in labels[:5]), labels
    by = app.selectbox(key="labels_noise_attribute")
    assert PIXEL_WORDS in by.options and PIXEL not in by.options
    assert _title(app, "labels_per_group").startswith("label disagreement rate by ")
    by.set_value(PIXEL).run()
    title = _title(app, "labels_per_group")
    assert title.startswith(f"label disagreement rate by {PIXEL_WORDS}") and "_" not in title
    table = next(d.value for d in app.dataframe if "model error rate" in d.value.columns)
    assert PIXEL_WORDS in set(table["attribute"]) and PIXEL not in set(table["attribute"])
    assert "label disagreement rate" in table.columns and "model error rate" in table.columns
    groups = table.loc[table["attribute"] == "gender", "group"].tolist()
    assert groups == ["3-9", "10-19"] and "images" in table.columns  # natural order (stored: text order)
    # no plotly toolbar over the titles (the other pages already drew without it)
    assert all(json.loads(c.proto.config).get("displayModeBar") is False for c in app.get("plotly_chart"))
    gallery = app.selectbox(key="gallery_attribute")
    assert PIXEL_WORDS in gallery.options and PIXEL not in gallery.options


def test_pixel_attributes_in_words_on_attributes_and_fairness(folder, monkeypatch):
    app = _open(folder, "attributes", monkeypatch)
    assert PIXEL_WORDS in app.selectbox(key="attr_attribute").options
    assert not any(o.startswith("image_") for o in app.selectbox(key="attr_attribute").options)
    app.selectbox(key="attr_attribute").set_value(PIXEL).run()
    assert _title(app, "attr_shares") == f"Share of images by {PIXEL_WORDS}"
    app = _open(folder, "fairness", monkeypatch)
    attribute = app.selectbox(key="fair_attribute")
    assert PIXEL_WORDS in attribute.options and PIXEL not in attribute.options
    attribute.set_value(PIXEL).run()
    assert _title(app, "fair_metric_chart").startswith(f"accuracy by {PIXEL_WORDS}")


def test_fairness_disagreement_caption_lists_groups_in_natural_order(folder, monkeypatch):
    app = _open(folder, "fairness", monkeypatch)
    app.radio(key="fair_kind").set_value("Data and label rates").run()
    app.selectbox(key="fair_rate_metric").set_value("label_disagreement_rate").run()
    app.selectbox(key="fair_attribute").set_value("gender").run()
    caption = next(c.value for c in app.caption if "error rate on the same images" in c.value).replace("\\", "")
    assert caption.index("3-9") < caption.index("10-19"), caption


def test_overview_review_hint_shows_commands_as_code_and_the_whole_dataset_card(folder, monkeypatch):
    app = _open(folder, "overview", monkeypatch)
    hint = next(c.value for c in app.caption if "review sample" in c.value)
    assert hint.startswith("No review sample yet")
    assert "\\`" not in hint and "`python -m audit review " in hint  # a code span, not literal backticks
    card = next(t.value for t in app.table if "field" in t.value.columns)
    fields = dict(zip(card["field"], card["value"]))
    assert "model" in fields and "metadata columns (not grouped)" in fields  # the last rows, cut before
    assert fields["pixel attributes"] == PIXEL_WORDS


def test_every_app_chart_is_drawn_without_the_plotly_toolbar():
    """Every ``plotly_chart`` call of the app passes ``config`` (``_charts.CONFIG``: no toolbar over titles and
    legends); the Label quality page had been left out."""
    import ast

    missing = []
    for path in sorted((REPO / "app_pages").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "plotly_chart" \
                    and not any(k.arg == "config" for k in node.keywords):
                missing.append(f"{path.name}:{node.lineno}")
    assert missing == []


def test_label_quality_says_how_the_probabilities_were_picked(tmp_path, monkeypatch):
    folder = build_audit_folder(tmp_path / "audit", n_image_files=0)
    audit = json.loads((folder / "audit.json").read_text())
    audit["analyses"]["label_noise"]["source_choice"] = {
        "requested": "auto", "used": "model", "candidates": ["model"],
        "reason": "auto: the audit has no embeddings, so only the model's probabilities are available"}
    (folder / "audit.json").write_text(json.dumps(audit))
    app = _open(folder, "labels", monkeypatch)
    caption = next(c.value for c in app.caption if "label-noise-source" in c.value)
    assert caption.startswith("Probabilities picked by `--label-noise-source auto` (the audit has no embeddings")
    assert "source: auto:" not in caption


def test_export_shows_the_verified_rate_the_report_includes(folder, monkeypatch):
    app = _open(folder, "export", monkeypatch)
    labels = [m.label for m in app.metric]
    assert "Suspects reviewed" in labels and "Verified label-error rate" in labels


def test_overview_says_the_recorded_verdict_is_checked_again_by_gate(tmp_path, monkeypatch):
    folder = build_audit_folder(tmp_path / "audit", n_image_files=0, verdict={"status": "FAIL", "checks": [
        {"name": "label_noise.max_rate", "status": "INSUFFICIENT_EVIDENCE", "value": None, "threshold": 0.05,
         "attribute": "", "group": "", "class": "", "message": "no verified label-error rate yet"}]})
    app = _open(folder, "overview", monkeypatch)
    assert any(c.value.startswith("Recorded when the audit ran") and "`python -m audit gate " in c.value
               for c in app.caption)
