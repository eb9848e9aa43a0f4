"""AppTest: the random review queue and the verified label-error rate (issue 13 item 2) on Label quality and
Overview; the numbers are those of ``review --status`` (audit.review_sample), never recomputed by a page."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from tests.app.apptest import open_app_page
from tests.app.synthetic_audit import build_audit

from audit import review_sample, reviews
from audit.cli import main


def _open(folder: Path, page: str = "overview") -> AppTest:
    return open_app_page(folder, page)


def _metrics(app: AppTest) -> dict:
    return {m.label: m.value for m in app.metric}


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    out = build_audit(tmp_path / "data", tmp_path / "reports" / "review")
    monkeypatch.setenv("IMAGEFAIR_REPORTS", str(tmp_path / "reports"))
    return out


def test_random_queue_is_drawn_in_the_app_and_is_the_stored_sample(folder):
    app = _open(folder, "labels")
    assert not app.exception
    app.radio(key="labels_queue").set_value("Random sample (verified rate)").run()
    assert not app.exception
    assert any("No random sample yet" in i.value for i in app.info)
    app.number_input(key="review_sample_size").set_value(30).run()
    [b for b in app.button if b.label == "Draw a random sample"][0].click().run()
    assert not app.exception
    sample = review_sample.load_review_sample(folder)
    assert sample is not None and sample.size == 30
    # the gallery lists the sample in draw order; the first card is draw 1
    shown = [t.value for t in app.text if t.value.startswith("random sample #")]
    assert f"random sample #1: {sample.frame['stratum'].iloc[0].replace('_', ' ')}" in shown  # "not flagged"
    assert not any("not_flagged" in t for t in shown)
    assert _metrics(app)["Verified label-error rate"] == "-"
    assert any("has no review yet" in c.value for c in app.caption)


def test_verified_rate_on_labels_and_overview_is_the_status(folder):
    images = reviews.with_review_keys(pd.read_parquet(folder / "images.parquet"))
    request = review_sample.request_review_sample(folder, 40, seed=1)
    truth_wrong = set(images["id"].astype(str).iloc[::9])
    rows = [reviews.check_decision(image_id=i, content_hash=h, reviewer="ann",
                                   decision="label_wrong" if i in truth_wrong else "label_correct",
                                   new_label=("dog" if lab != "dog" else "cat") if i in truth_wrong else None)
            for i, h, lab in images[images["id"].astype(str).isin(request.sample.frame["id"])][
                ["id", "content_hash", "label"]].astype(str).itertuples(index=False)]
    reviews.record_decisions(folder, rows)
    status = review_sample.load_review_status(folder)
    rate = status["label_error_rate"]
    assert rate["estimate"] is not None
    overview = _open(folder)
    assert not overview.exception
    assert _metrics(overview)["Verified label-error rate"] == f"{rate['estimate']:.1%}"
    assert _metrics(overview)["Confirmed label errors"] == f"{rate['confirmed_errors']:,}"
    assert any(c.value.startswith(f"95 % interval {rate['ci_low']:.1%} - {rate['ci_high']:.1%} from {rate['reviewed']}")
               for c in overview.caption)
    labels = _open(folder, "labels")
    labels.radio(key="labels_queue").set_value("Random sample (verified rate)").run()
    assert not labels.exception
    assert any(c.value.startswith(f"About {status['reviews_to_halve_interval']:,} more reviews") for c in labels.caption)
    # the cards say the decisions in words ("ann: label wrong -> dog"), as the review form does
    reviewed = [t.value for t in labels.text if t.value.startswith("reviewed: ")]
    assert reviewed and not any("label_wrong" in t or "label_correct" in t for t in reviewed)
    assert any("ann: label correct" in t for t in reviewed)


def test_label_only_audit_opens_with_the_random_queue(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    n = 300
    ids = [f"x{i}" for i in range(n)]
    pd.DataFrame({"id": ids, "label": rng.choice(["cat", "dog"], n)}).to_csv(tmp_path / "labels.csv", index=False)
    p = rng.uniform(0.05, 0.95, n)
    pd.DataFrame({"id": ids, "cat": p, "dog": 1 - p}).to_csv(tmp_path / "predictions.csv", index=False)
    out = tmp_path / "reports" / "labels-only"
    assert main(["label-noise", "--labels", str(tmp_path / "labels.csv"), "--predictions",
                 str(tmp_path / "predictions.csv"), "--out", str(out)]) == 0
    assert main(["review", str(out), "--sample", "20", "--out", str(tmp_path / "s.csv")]) == 0
    monkeypatch.setenv("IMAGEFAIR_REPORTS", str(tmp_path / "reports"))
    reviews.record_decisions(out, [reviews.check_decision(
        image_id="x1", content_hash=reviews.with_review_keys(pd.DataFrame({"id": ["x1"]}))["content_hash"][0],
        reviewer="ann", decision="label_correct")])
    assert len(reviews.corrected_labels(pd.read_parquet(out / "images.parquet"), reviews.list_decisions(out))) == 1
    for page in ("overview", "export", "labels"):
        app = _open(out, page)
        assert not app.exception, page
    app.radio(key="labels_queue").set_value("Random sample (verified rate)").run()
    assert not app.exception
