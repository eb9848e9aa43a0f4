"""``python -m audit review DIR --sample | --import | --status`` (issue 13 item 2) on a label-only audit."""
import json

import numpy as np
import pandas as pd
import pytest

from audit import cli_review, review_sample, reviews
from audit.analysis.stratified import METHOD
from audit.cli import main
from tests.helpers import run_cli

CLASSES = ("cat", "dog", "fox")
N = 2000


@pytest.fixture(scope="module")
def _built(tmp_path_factory):
    """2,000 images, 3 classes; a model 80 % right; 3 % of labels truly wrong (the truth is kept aside)."""
    tmp_path = tmp_path_factory.mktemp("review")
    rng = np.random.default_rng(7)
    truth = rng.integers(0, 3, N)
    labels = truth.copy()
    wrong = rng.random(N) < 0.03
    labels[wrong] = (truth[wrong] + rng.integers(1, 3, wrong.sum())) % 3
    predicted = np.where(rng.random(N) < 0.8, truth, rng.integers(0, 3, N))
    probabilities = np.full((N, 3), 0.1)
    probabilities[np.arange(N), predicted] = 0.8
    ids = [f"img{i:04d}" for i in range(N)]
    pd.DataFrame({"id": ids, "label": [CLASSES[k] for k in labels]}).to_csv(tmp_path / "labels.csv", index=False)
    frame = pd.DataFrame(probabilities, columns=list(CLASSES))
    frame.insert(0, "id", ids)
    frame.to_csv(tmp_path / "predictions.csv", index=False)
    pd.DataFrame({"id": ids, "site": rng.choice(["north", "south"], N)}).to_csv(tmp_path / "attributes.csv", index=False)
    out = tmp_path / "audit"
    assert main(["label-noise", "--labels", str(tmp_path / "labels.csv"), "--predictions",
                 str(tmp_path / "predictions.csv"), "--attributes", str(tmp_path / "attributes.csv"),
                 "--out", str(out)]) == 0
    truth_frame = pd.DataFrame({"id": ids, "label": [CLASSES[k] for k in labels],
                                "true": [CLASSES[k] for k in truth]}).set_index("id")
    return out, truth_frame


@pytest.fixture()
def audit_dir(_built, tmp_path):
    """A fresh copy of the built audit per test (links kept: the folder's generations stay intact)."""
    import shutil

    source, truth = _built
    copy = tmp_path / "audit"
    shutil.copytree(source, copy, symlinks=True)
    return copy, truth


def _answers(csv_path, truth, out_path, *, limit=None):
    sample = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if limit is not None:
        sample = sample.head(limit)
    rows = [{"id": i, "decision": "label_wrong" if truth.loc[i, "label"] != truth.loc[i, "true"] else "label_correct",
             "new_label": truth.loc[i, "true"] if truth.loc[i, "label"] != truth.loc[i, "true"] else ""}
            for i in sample["id"]]
    pd.DataFrame(rows).to_csv(out_path, index=False)
    return out_path


def test_sample_import_status_end_to_end(audit_dir, tmp_path, capsys):
    folder, truth = audit_dir
    assert main(["review", str(folder), "--status"]) == 0
    printed = capsys.readouterr().out
    assert review_sample.MESSAGE_NO_SAMPLE.format(path=folder) in printed

    assert main(["review", str(folder), "--sample", "120", "--seed", "3", "--out", str(tmp_path / "s120.csv")]) == 0
    first = pd.read_csv(tmp_path / "s120.csv", dtype=str, keep_default_na=False)
    assert list(first.columns) == list(review_sample.CSV_COLUMNS) and len(first) == 120
    assert set(first["stratum"]) == {"flagged", "not_flagged"}
    assert first["id"].is_unique
    # stored in the current generation, with the audit's run id
    stored = review_sample.load_review_sample(folder)
    assert stored.size == 120 and stored.seed == 3
    assert stored.run_id == json.loads((folder / "audit.json").read_text())["run_id"]
    # the folder still reads as one run (the sample carries the run id)
    from audit.folder import load_audit_folder
    load_audit_folder(folder)

    assert main(["review", str(folder), "--status"]) == 0
    assert review_sample.MESSAGE_NO_REVIEWS.format(path=folder, size=120) in capsys.readouterr().out

    # a larger N extends the same sample (nested); the seed is kept
    assert main(["review", str(folder), "--sample", "300", "--out", str(tmp_path / "s300.csv")]) == 0
    assert review_sample.NOTE_EXTENDED.format(stored=120, size=300) in capsys.readouterr().out
    second = pd.read_csv(tmp_path / "s300.csv", dtype=str, keep_default_na=False)
    assert second["id"].head(120).tolist() == first["id"].tolist()
    # a smaller N keeps the stored sample and lists its first draws
    assert main(["review", str(folder), "--sample", "50", "--out", str(tmp_path / "s50.csv")]) == 0
    assert review_sample.NOTE_KEPT_LARGER.format(stored=300, requested=50) in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "s50.csv", dtype=str)["id"].tolist() == first["id"].head(50).tolist()

    answers = _answers(tmp_path / "s300.csv", truth, tmp_path / "answers.csv")
    assert main(["review", str(folder), "--import", str(answers), "--reviewer", "ann"]) == 0
    assert cli_review.MESSAGE_IMPORTED.format(n=300, reviewer="ann", file=folder / "reviews.sqlite") in \
        capsys.readouterr().out
    assert main(["review", str(folder), "--status", "--json", str(tmp_path / "status.json")]) == 0
    printed = capsys.readouterr().out
    status = json.loads((tmp_path / "status.json").read_text())
    rate = status["label_error_rate"]
    assert set(rate) == {"estimate", "ci_low", "ci_high", "confidence", "sample_size", "reviewed",
                         "confirmed_errors", "method"}
    assert rate["sample_size"] == 300 and rate["reviewed"] == 300 and rate["method"] == METHOD
    true_rate = float((truth["label"] != truth["true"]).mean())
    assert rate["ci_low"] <= true_rate <= rate["ci_high"]
    assert "verified label-error rate:" in printed
    assert {row["group"] for row in status["by_group"]} == {"north", "south"}
    assert set(status["by_group"][0]) == {"attribute", "group", "estimate", "ci_low", "ci_high", "reviewed"}
    assert [row["class"] for row in status["by_class"]] == list(CLASSES)
    assert sum(row["reviewed"] for row in status["by_class"]) == 300


def test_reviews_outside_the_sample_are_a_lower_bound_only(audit_dir, tmp_path, capsys):
    folder, truth = audit_dir
    assert main(["review", str(folder), "--sample", "60", "--out", str(tmp_path / "s.csv")]) == 0
    answers = _answers(tmp_path / "s.csv", truth, tmp_path / "a.csv")
    assert main(["review", str(folder), "--import", str(answers), "--reviewer", "ann"]) == 0
    before = review_sample.load_review_status(folder)["label_error_rate"]
    sampled = set(pd.read_csv(tmp_path / "s.csv", dtype=str)["id"])
    outside = [i for i in truth.index if i not in sampled and truth.loc[i, "label"] != truth.loc[i, "true"]][:20]
    pd.DataFrame({"id": outside, "decision": "label_wrong", "new_label": [truth.loc[i, "true"] for i in outside]}
                 ).to_csv(tmp_path / "suspects.csv", index=False)
    assert main(["review", str(folder), "--import", str(tmp_path / "suspects.csv"), "--reviewer", "bob"]) == 0
    status = review_sample.load_review_status(folder)
    after = status["label_error_rate"]
    assert after["estimate"] == before["estimate"] and after["reviewed"] == before["reviewed"]
    assert after["confirmed_errors"] == before["confirmed_errors"] + 20
    assert status["confirmed_errors_outside_sample"] == 20
    assert after["ci_low"] >= after["confirmed_errors"] / N - 1e-12


def test_sample_larger_than_the_data_is_the_whole_data(audit_dir, tmp_path, capsys):
    folder, _ = audit_dir
    assert main(["review", str(folder), "--sample", "5000", "--out", str(tmp_path / "all.csv")]) == 0
    assert review_sample.NOTE_WHOLE_DATA_SET.format(requested=5000, n_images=N) in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "all.csv")) == N


def test_seed_change_is_refused(audit_dir, tmp_path, capsys):
    folder, _ = audit_dir
    assert main(["review", str(folder), "--sample", "20", "--seed", "1", "--out", str(tmp_path / "s.csv")]) == 0
    assert main(["review", str(folder), "--sample", "40", "--seed", "2", "--out", str(tmp_path / "s.csv")]) == 2
    assert capsys.readouterr().err.strip() == "error: " + review_sample.ERROR_SEED_CHANGED.format(path=folder, stored=1)


def _bad(tmp_path, name, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("content, message", [
    (b"id,decision,new_label\nimg0001,label_correct,\nnobody,label_correct,\n",
     lambda f: reviews.ERROR_IMPORT_ROW.format(file=f, row=3, reason=reviews.REASON_UNKNOWN_ID.format(value="nobody"))),
    (b"id,decision,new_label\nimg0001,label_wrong,cow\n",
     lambda f: reviews.ERROR_IMPORT_ROW.format(file=f, row=2, reason=reviews.ERROR_NEW_LABEL_UNKNOWN.format(
         value="cow", classes="cat, dog, fox"))),
    (b"id,decision,new_label\nimg0001,label_correct,\nimg0002,wrong,\n",
     lambda f: reviews.ERROR_IMPORT_ROW.format(file=f, row=3, reason=reviews.ERROR_DECISION.format(value="wrong"))),
    (b"id,decision,new_label\nimg0001,label_correct,\nimg0002,unsure,\nimg0001,label_correct,\n",
     lambda f: reviews.ERROR_IMPORT_ROW.format(file=f, row=4, reason=reviews.REASON_DUPLICATE.format(
         value="img0001", first=2))),
    (b"", lambda f: reviews.ERROR_IMPORT_EMPTY.format(file=f)),
    (b"id,decision,new_label\n", lambda f: reviews.ERROR_IMPORT_NO_ROWS.format(file=f)),
    (b"\xef\xbb\xbfid,decision,new_label\nimg0001,label_correct,\n", lambda f: reviews.ERROR_IMPORT_BOM.format(file=f)),
    (b"id,verdict\nimg0001,label_correct\n", lambda f: reviews.ERROR_IMPORT_HEADER.format(file=f, found="id,verdict")),
    (b"id,decision,new_label\nimg0001,label_wrong,\n",
     lambda f: reviews.ERROR_IMPORT_ROW.format(file=f, row=2, reason=reviews.ERROR_NEW_LABEL_MISSING)),
    (b"id,decision,new_label\nimg0001,unsure,dog\n",
     lambda f: reviews.ERROR_IMPORT_ROW.format(file=f, row=2, reason=reviews.ERROR_NEW_LABEL_UNEXPECTED.format(
         value="dog", decision="unsure"))),
])
def test_bad_review_csv_imports_nothing(audit_dir, tmp_path, capsys, content, message):
    folder, _ = audit_dir
    # an earlier good import must stay exactly as it was
    good = _bad(tmp_path, "good.csv", b"id,decision,new_label,note\nimg0005,label_wrong,dog,looks like a dog\n")
    assert main(["review", str(folder), "--import", str(good), "--reviewer", "ann"]) == 0
    capsys.readouterr()
    path = _bad(tmp_path, "bad.csv", content)
    assert main(["review", str(folder), "--import", str(path), "--reviewer", "ann"]) == 2
    err = capsys.readouterr().err
    assert err == "error: " + message(path) + "\n"
    log = reviews.list_decisions(folder, current_only=False)
    assert log["id"].tolist() == ["img0005"] and log["note"].tolist() == ["looks like a dog"]


def test_import_round_trips_neutralised_ids(tmp_path):
    images = pd.DataFrame({"id": ["-3", "=x"], "label": ["cat", "dog"]})
    path = _bad(tmp_path, "r.csv", b"id,decision,new_label\n'-3,label_correct,\n'=x,label_wrong,cat\n")
    rows = reviews.read_review_csv(path, images=images, classes=["cat", "dog"], reviewer="ann")
    assert [r["id"] for r in rows] == ["-3", "=x"] and rows[1]["new_label"] == "cat"


def test_review_cli_in_a_subprocess(audit_dir, tmp_path):
    """The real entry point, once: exit codes and the one-line error."""
    folder, _ = audit_dir
    done = run_cli("review", str(folder), "--sample", "10", "--out", str(tmp_path / "s.csv"))
    assert done.returncode == 0, done.stderr
    done = run_cli("review", str(folder), "--import", str(_bad(tmp_path, "e.csv", b"")), "--reviewer", "x")
    assert done.returncode == 2 and done.stderr.count("\n") == 1


def test_report_shows_disagreement_and_verified_side_by_side(audit_dir, tmp_path, capsys):
    from audit.report.document import fmt_interval, fmt_percent
    from audit.report.render import render_report

    folder, truth = audit_dir
    text = render_report(folder, format="md", out=tmp_path / "before.md").read_text()
    assert "- Verified label-error rate: not available (no review sample yet" in text
    assert main(["review", str(folder), "--sample", "150", "--out", str(tmp_path / "s.csv")]) == 0
    answers = _answers(tmp_path / "s.csv", truth, tmp_path / "a.csv")
    assert main(["review", str(folder), "--import", str(answers), "--reviewer", "ann"]) == 0
    rate = review_sample.load_review_status(folder)["label_error_rate"]
    line = (f"- Verified label-error rate: {fmt_percent(rate['estimate'])} (95 % CI "
            f"{fmt_interval(rate['ci_low'], rate['ci_high'])}), from 150 reviewed images of a random sample of 150")
    text = render_report(folder, format="md", out=tmp_path / "after.md").read_text()
    assert line in text and "- Label disagreement rate:" in text
    html = render_report(folder, format="html", out=tmp_path / "r.html").read_text()
    assert "<td>verified label-error rate</td>" in html and "<td>model-label disagreement</td>" in html
    assert f"<td class=\"num\">{fmt_percent(rate['estimate'])}</td>" in html


def test_policy_groups_subdivide_the_strata(audit_dir, tmp_path, capsys):
    folder, truth = audit_dir
    policy = tmp_path / "policy.toml"
    policy.write_text('[label_noise]\nmax_rate = 0.05\nattributes = ["site"]\n')
    assert main(["review", str(folder), "--sample", "80", "--policy", str(policy), "--out", str(tmp_path / "s.csv")]) == 0
    sample = pd.read_csv(tmp_path / "s.csv", dtype=str)
    assert set(sample["stratum"]) == {f"{s} & site={g}" for s in ("flagged", "not_flagged") for g in ("north", "south")}
    # the first draws go round robin over the four strata
    assert sample["stratum"].head(4).nunique() == 4
    # another stratification of the same sample is refused, naming both
    other = tmp_path / "other.toml"
    other.write_text('[label_noise]\nmax_rate = 0.05\nattributes = ["label"]\n')
    capsys.readouterr()
    assert main(["review", str(folder), "--sample", "90", "--policy", str(other), "--out", str(tmp_path / "t.csv")]) == 2
    assert capsys.readouterr().err.strip() == "error: " + review_sample.ERROR_STRATA_CHANGED.format(
        path=folder, stored="site", requested="label")
    # the gate judges the verified rate: none yet -> INSUFFICIENT_EVIDENCE (exit 0), with the reviews needed
    assert main(["gate", str(folder), "--policy", str(policy), "--json", str(tmp_path / "v.json")]) == 0
    check = json.loads((tmp_path / "v.json").read_text())["checks"][0]
    assert check["status"] == "INSUFFICIENT_EVIDENCE" and "about 150 images" in check["message"]
    answers = _answers(tmp_path / "s.csv", truth, tmp_path / "a.csv")
    assert main(["review", str(folder), "--import", str(answers), "--reviewer", "ann"]) == 0
    status = review_sample.load_review_status(folder)
    assert {row["group"] for row in status["by_group"] if row["attribute"] == "site"} == {"north", "south"}
    assert main(["gate", str(folder), "--policy", str(policy), "--json", str(tmp_path / "v.json")]) in (0, 1)
    check = json.loads((tmp_path / "v.json").read_text())["checks"][0]
    assert check["value"] == pytest.approx(status["label_error_rate"]["estimate"])


def test_status_lists_age_like_groups_in_natural_order(tmp_path, capsys):
    """`review --status` listed 0-2, 10-19, 20-29, 3-9 (text order) and said "1 errors"."""
    from tests.audit_builder import build_audit_folder

    folder = build_audit_folder(tmp_path / "audit", gender_values=("3-9", "10-19"), n_image_files=0)
    assert main(["review", str(folder), "--sample", "40", "--out", str(tmp_path / "s.csv")]) == 0
    sample = pd.read_csv(tmp_path / "s.csv", dtype=str, keep_default_na=False)
    decisions = pd.DataFrame({"id": sample["id"], "decision": "label_correct", "new_label": ""})
    decisions.to_csv(tmp_path / "d.csv", index=False)
    assert main(["review", str(folder), "--import", str(tmp_path / "d.csv"), "--reviewer", "ann"]) == 0
    assert main(["review", str(folder), "--status", "--json", str(tmp_path / "st.json")]) == 0
    printed = capsys.readouterr().out
    groups = [r["group"] for r in json.loads((tmp_path / "st.json").read_text())["by_group"]
              if r["attribute"] == "gender"]
    assert groups == ["3-9", "10-19"]
    assert printed.index("gender = 3-9") < printed.index("gender = 10-19") and " 0 errors" in printed
