"""Tests of audit/reviews.py: the reviews.sqlite store, conflicts, summaries and the corrected-labels CSV."""
from __future__ import annotations

import csv
import io
import multiprocessing
import sqlite3

import pandas as pd
import pytest

from audit import reviews
from audit.errors import InputError

H1, H2, H3 = "a" * 64, "b" * 64, "c" * 64


def _images() -> pd.DataFrame:
    return pd.DataFrame({"id": ["i1", "i2", "i3", "i4"], "path": ["/d/1.png", "/d/2.png", "/d/3.png", "/d/4.png"],
                         "content_hash": [H1, H2, H3, "d" * 64], "label": ["cat", "dog", "=cmd", "cat"],
                         "is_label_issue": [True, True, True, False]})


def test_store_is_wal_with_contract_table(tmp_path):
    reviews.record_decision(tmp_path, image_id="i1", content_hash=H1, reviewer="ann", decision="label_correct")
    connection = sqlite3.connect(tmp_path / reviews.REVIEWS_FILE)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    columns = [row[1] for row in connection.execute("PRAGMA table_info(decisions)")]
    connection.close()
    assert tuple(columns) == reviews.DECISION_COLUMNS


def test_reading_does_not_create_the_store(tmp_path):
    frame = reviews.list_decisions(tmp_path)
    assert frame.empty and tuple(frame.columns) == reviews.DECISION_COLUMNS
    assert not (tmp_path / reviews.REVIEWS_FILE).exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"decision": "wrong"}, reviews.ERROR_DECISION.format(value="wrong")),
    ({"reviewer": "  "}, reviews.ERROR_REVIEWER),
    ({"decision": "label_wrong"}, reviews.ERROR_NEW_LABEL_MISSING),
    ({"decision": "label_wrong", "new_label": "cow"},
     reviews.ERROR_NEW_LABEL_UNKNOWN.format(value="cow", classes="cat, dog")),
    ({"new_label": "dog"}, reviews.ERROR_NEW_LABEL_UNEXPECTED.format(value="dog", decision="unsure")),
    ({"content_hash": "xyz"}, reviews.ERROR_CONTENT_HASH.format(value="xyz")),
    ({"image_id": ""}, reviews.ERROR_IMAGE_ID),
])
def test_bad_decisions_are_refused(tmp_path, kwargs, message):
    arguments = dict(image_id="i1", content_hash=H1, reviewer="ann", decision="unsure", classes=["cat", "dog"])
    arguments.update(kwargs)
    with pytest.raises(InputError) as raised:
        reviews.record_decision(tmp_path, **arguments)
    assert str(raised.value) == message
    assert reviews.list_decisions(tmp_path).empty


def test_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError) as raised:
        reviews.record_decision(tmp_path / "nope", image_id="i1", content_hash=H1, reviewer="a", decision="unsure")
    assert str(raised.value) == reviews.ERROR_NOT_A_FOLDER.format(path=tmp_path / "nope")


def test_latest_decision_of_a_reviewer_counts_and_log_keeps_all(tmp_path):
    reviews.record_decision(tmp_path, image_id="i1", content_hash=H1, reviewer="ann", decision="unsure")
    reviews.record_decision(tmp_path, image_id="i1", content_hash=H1, reviewer="ann", decision="label_wrong", new_label="dog")
    current = reviews.list_decisions(tmp_path)
    assert len(current) == 1 and current.iloc[0]["decision"] == "label_wrong"
    assert len(reviews.list_decisions(tmp_path, current_only=False)) == 2
    assert reviews.find_conflicts(tmp_path).empty


def test_different_reviewers_disagreeing_is_a_conflict_keeping_both(tmp_path):
    reviews.record_decision(tmp_path, image_id="i1", content_hash=H1, reviewer="ann", decision="label_wrong", new_label="dog")
    reviews.record_decision(tmp_path, image_id="i1", content_hash=H1, reviewer="bob", decision="label_correct")
    # Same decision but a different new label is a conflict too.
    reviews.record_decision(tmp_path, image_id="i2", content_hash=H2, reviewer="ann", decision="label_wrong", new_label="cat")
    reviews.record_decision(tmp_path, image_id="i2", content_hash=H2, reviewer="bob", decision="label_wrong", new_label="cow")
    # Agreement is not.
    reviews.record_decision(tmp_path, image_id="i3", content_hash=H3, reviewer="ann", decision="label_wrong", new_label="dog")
    reviews.record_decision(tmp_path, image_id="i3", content_hash=H3, reviewer="bob", decision="label_wrong", new_label="dog")
    conflicts = reviews.find_conflicts(tmp_path)
    assert sorted(conflicts["id"]) == ["i1", "i2"]
    row = conflicts.set_index("id").loc["i1"]
    assert row["reviewers"] == "ann; bob"
    assert row["details"] == "ann: label_wrong -> dog; bob: label_correct"
    assert len(reviews.list_decisions(tmp_path)) == 6


def test_summary_counts(tmp_path):
    images = _images()
    reviews.record_decision(tmp_path, image_id="i1", content_hash=H1, reviewer="ann", decision="label_wrong", new_label="dog")
    reviews.record_decision(tmp_path, image_id="i2", content_hash=H2, reviewer="ann", decision="label_correct")
    reviews.record_decision(tmp_path, image_id="i3", content_hash=H3, reviewer="ann", decision="unsure")
    reviews.record_decision(tmp_path, image_id="i4", content_hash="d" * 64, reviewer="ann", decision="label_correct")  # not a suspect
    reviews.record_decision(tmp_path, image_id="i9", content_hash="e" * 64, reviewer="ann", decision="label_correct")  # no image
    summary = reviews.summarise_reviews(images, reviews.list_decisions(tmp_path))
    from audit.analysis._stats import wilson_interval

    low, high = wilson_interval(1, 2)
    assert summary.to_dict() == {"n_suspects": 3, "n_reviewed": 3, "n_label_wrong": 1, "n_label_correct": 1,
                                 "n_unsure": 1, "n_conflicts": 0, "confirmed_error_rate": 0.5,
                                 "confirmed_error_ci_low": float(low), "confirmed_error_ci_high": float(high)}
    assert 0 < low < 0.5 < high < 1
    reviews.record_decision(tmp_path, image_id="i1", content_hash=H1, reviewer="bob", decision="label_correct")
    summary = reviews.summarise_reviews(images, reviews.list_decisions(tmp_path))
    assert (summary.n_conflicts, summary.n_label_wrong, summary.confirmed_error_rate) == (1, 0, 0.0)


def test_corrected_labels_csv_follows_contract_and_is_injection_safe(tmp_path):
    images = _images()
    reviews.record_decision(tmp_path, image_id="i1", content_hash=H1, reviewer="ann", decision="label_wrong", new_label="dog",
                            decided_at="2026-01-01T00:00:00+00:00", note="a dog, ears visible")
    reviews.record_decision(tmp_path, image_id="i2", content_hash=H2, reviewer="ann", decision="label_wrong", new_label="cat",
                            note="=HYPERLINK()")
    reviews.record_decision(tmp_path, image_id="i2", content_hash=H2, reviewer="@bob", decision="unsure")
    reviews.record_decision(tmp_path, image_id="i3", content_hash=H3, reviewer="ann", decision="label_correct")
    out = tmp_path / "corrected.csv"
    data = reviews.export_corrected_labels(tmp_path, images, out=out)
    assert out.read_bytes() == data
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    assert tuple(rows[0].keys()) == reviews.CORRECTED_LABEL_COLUMNS
    assert [(r["id"], r["label"], r["corrected_label"], r["decision"]) for r in rows] == [
        ("i1", "cat", "dog", "label_wrong"), ("i2", "dog", "dog", "conflict"),
        ("i3", "'=cmd", "'=cmd", "label_correct")]
    assert rows[0]["decided_at"] == "2026-01-01T00:00:00+00:00"
    # the reviewers' notes travel with the corrected labels (issue 12 item 8), neutralised like every cell
    assert [r["notes"] for r in rows] == ["ann: a dog, ears visible", "ann: =HYPERLINK()", ""]
    assert rows[1]["reviewers"] == "'@bob; ann"


def _write_many(folder, worker, n):
    for i in range(n):
        reviews.record_decision(folder, image_id=f"w{worker}-{i}", content_hash=f"{worker:02x}{i:062x}",
                                reviewer=f"worker{worker}", decision="unsure", note=f"{worker}-{i}")


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    n = 150
    reviews.open_reviews(tmp_path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_many, args=(tmp_path, w, n)) for w in (1, 2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    log = reviews.list_decisions(tmp_path, current_only=False)
    assert len(log) == 2 * n
    assert log["id"].is_unique
    assert set(log["note"]) == {f"{w}-{i}" for w in (1, 2) for i in range(n)}


def test_a_decision_applies_while_id_and_content_hash_match(tmp_path):
    images = _images()
    reviews.record_decision(tmp_path, image_id="i1", content_hash=H1, reviewer="ann", decision="label_wrong",
                            new_label="dog")
    assert reviews.summarise_reviews(images, reviews.list_decisions(tmp_path)).n_reviewed == 1
    # The file of i1 was edited since (new bytes): the old decision no longer applies to it.
    edited = images.assign(content_hash=[H3, H2, H3, "d" * 64])
    assert reviews.summarise_reviews(edited, reviews.list_decisions(tmp_path)).n_reviewed == 0
    assert reviews.corrected_labels(edited, reviews.list_decisions(tmp_path)).empty
    # An exact copy of i1 under another id is another image: it is not reviewed by i1's decision.
    copy = images.assign(content_hash=[H1, H1, H3, "d" * 64])
    assert reviews.corrected_labels(copy, reviews.list_decisions(tmp_path))["id"].tolist() == ["i1"]


def test_the_report_reader_sees_the_same_decisions(tmp_path):
    load = pytest.importorskip("audit.folder")
    images = _images()
    reviews.record_decision(tmp_path, image_id="i1", content_hash=H1, reviewer="ann", decision="unsure")
    reviews.record_decision(tmp_path, image_id="i1", content_hash=H1, reviewer="ann", decision="label_wrong",
                            new_label="dog")
    reviews.record_decision(tmp_path, image_id="i2", content_hash=H2, reviewer="ann", decision="label_correct")
    reviews.record_decision(tmp_path, image_id="i2", content_hash=H2, reviewer="bob", decision="unsure")
    theirs = load.load_reviews(tmp_path, images).set_index("id")
    ours = reviews.corrected_labels(images, reviews.list_decisions(tmp_path)).set_index("id")
    assert theirs.loc["i1", "decision"] == ours.loc["i1", "decision"] == "label_wrong"
    assert theirs.loc["i2", "decision"] == ours.loc["i2", "decision"] == "conflict"
