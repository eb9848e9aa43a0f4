"""AppTest of the Annotators page: opens on an audit with annotations, shows the engine's numbers, escapes names."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.app.apptest import open_app_page  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.test_annotations_cli import CLASSES, crowd  # noqa: E402

MARKUP = "<b>ann</b>"


@pytest.fixture(scope="module")
def annotated(tmp_path_factory) -> Path:
    from audit.folder import write_audit_folder
    from audit.pipeline.labels_input import run_label_noise_audit

    folder = tmp_path_factory.mktemp("annotated")
    rng = np.random.default_rng(3)
    ids = [f"x{i}" for i in range(300)]
    truth = rng.choice(CLASSES, len(ids))
    pd.DataFrame({"id": ids, "label": truth}).to_csv(folder / "labels.csv", index=False)
    crowd(ids, truth, careless=MARKUP).to_csv(folder / "annotations.csv", index=False)
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    result = run_label_noise_audit(labels_file=str(folder / "labels.csv"), predictions_file=None,
                                   classes_file=str(folder / "classes.txt"),
                                   annotations_file=str(folder / "annotations.csv"))
    out = folder / "reports" / "annotated"
    write_audit_folder(out, audit=result.audit, images=result.images, group_metrics=result.group_metrics,
                       probabilities=result.probabilities, annotators=result.extra.get("files", {}).get("annotators"))
    return out


def _open(folder: Path, monkeypatch) -> AppTest:
    return open_app_page(folder, "annotators", monkeypatch)


def test_annotators_page_shows_engine_numbers_and_escapes(annotated, monkeypatch):
    app = _open(annotated, monkeypatch)
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    audit = json.loads((annotated / "audit.json").read_text())
    section = audit["analyses"]["annotations"]
    shown = {m.label: m.value for m in app.metric}
    assert shown["Krippendorff's alpha"] == f"{section['krippendorff_alpha']['value']:.3f}"
    assert shown["Annotators"] == f"{section['n_annotators']:,}"
    charts = [json.loads(c.proto.spec) for c in app.get("plotly_chart") if c.proto.id.endswith("-annotators_accuracy")]
    assert len(charts) == 1
    text = json.dumps(charts[0])
    assert MARKUP not in text and "&lt;b&gt;ann&lt;/b&gt;" in text
    markdown = " ".join(m.value for m in app.markdown)
    assert MARKUP not in markdown


def test_annotators_page_without_annotations_says_how(tmp_path, monkeypatch):
    from tests.app.synthetic_audit import build_audit

    folder = build_audit(tmp_path / "data", tmp_path / "reports" / "plain")
    app = _open(folder, monkeypatch)
    assert not app.exception
    assert any("--annotations" in i.value for i in app.info)


def test_annotators_page_reads_in_words(annotated, monkeypatch):
    """Tables with readable headers and verdicts (not worse_than_rest / p_adjusted 0.00000000000000001), no
    column of None (no timings, no image paths in a label-only audit), the tie rule's `classes` as code."""
    app = _open(annotated, monkeypatch)
    assert not app.exception, [e.value for e in app.exception]
    tables = {tuple(d.value.columns): d.value for d in app.dataframe}
    annotators = next(t for columns, t in tables.items() if "annotator" in columns)
    assert {"labels", "95 % CI low", "adjusted p"} <= set(annotators.columns)
    assert not {"n", "ci_low", "p_adjusted", "median_seconds"} & set(annotators.columns)
    assert not any("_" in str(v) for v in annotators["verdict"])
    assert all(len(str(p)) <= 8 for p in annotators["adjusted p"])
    assert all("_" not in str(c) and str(c) != "path" for t in tables.values() for c in t.columns)
    caption = next(c.value for c in app.caption if c.value.startswith("Consensus by"))
    assert "\\`" not in caption
