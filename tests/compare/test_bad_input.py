"""Bad input to compare / gate --baseline: one clear line on stderr, exit 2; or a stated limitation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from audit.cli import main
from audit.compare.core import NOTE_NO_OVERLAP, compare_audits
from audit.compare.folder import (ERROR_IS_COMPARISON, ERROR_NOT_COMPARISON, ERROR_OUT_IS_AUDIT, ERROR_SAME_FOLDER,
                                  ERROR_SCHEMA_VERSION, HINT_IS_AUDIT, load_comparison_folder, load_pair,
                                  supported_audit_major)
from audit.errors import InputError
from tests.audit_builder import rewrite_audit_files
from tests.compare.builders import planted_pair, probabilities_for, write_audit


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    old, new, _ = planted_pair(root, n=400, drop=0.0, seed=4)
    out = root / "cmp"
    assert main(["compare", str(old), str(new), "--out", str(out), "--n-bootstrap", "50"]) == 0
    return root, old, new, out


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    return err


def test_comparison_folder_given_as_an_audit(base, capsys, tmp_path):
    _, old, new, out = base
    assert main(["compare", str(out), str(new), "--out", str(tmp_path / "x")]) == 2
    assert _one_line(capsys) == "error: " + ERROR_IS_COMPARISON.format(path=out, role="OLD")
    assert main(["gate", str(new), "--baseline", str(out), "--policy", str(_policy(tmp_path))]) == 2
    assert _one_line(capsys) == "error: " + ERROR_IS_COMPARISON.format(path=out, role="OLD")
    assert main(["gate", str(out), "--policy", str(_policy(tmp_path))]) == 2
    assert "comparison folder" in _one_line(capsys)


def test_audit_folder_given_as_a_comparison(base, capsys):
    _, old, _, _ = base
    with pytest.raises(InputError) as error:
        load_comparison_folder(old)
    assert str(error.value) == ERROR_NOT_COMPARISON.format(path=old, hint=HINT_IS_AUDIT)
    assert main(["compare", str(old), str(old), "--out", str(old.parent / "y")]) == 2
    assert _one_line(capsys) == "error: " + ERROR_SAME_FOLDER.format(path=old)


def test_out_must_not_be_an_audit_folder(base, capsys):
    root, old, new, _ = base
    target = root / "other_audit"
    target.mkdir()
    (target / "audit.json").write_text("{}")
    assert main(["compare", str(old), str(new), "--out", str(target)]) == 2
    assert _one_line(capsys) == "error: " + ERROR_OUT_IS_AUDIT.format(path=target)
    assert sorted(p.name for p in target.iterdir()) == ["audit.json"]  # nothing written into it


def test_unknown_schema_version_is_refused_naming_it(base, capsys, tmp_path):
    import shutil

    _, old, new, _ = base
    future = tmp_path / "future"
    shutil.copytree(new, future)
    audit = json.loads((future / "audit.json").read_text())
    audit["schema_version"] = "99.0"
    (future / "audit.json").write_text(json.dumps(audit))
    assert main(["compare", str(old), str(future), "--out", str(tmp_path / "z")]) == 2
    assert _one_line(capsys) == "error: " + ERROR_SCHEMA_VERSION.format(file=future / "audit.json", found="99.0",
                                                                       supported=f"up to {supported_audit_major()}.x")
    assert not (tmp_path / "z").exists()


def test_different_class_lists_compare_the_shared_ones(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    ids = [f"i{i}" for i in range(n)]
    labels3 = rng.integers(0, 3, n)
    correct = rng.random(n) < 0.8
    old = write_audit(tmp_path / "old", ids=ids, labels=labels3, probabilities=probabilities_for(labels3, correct, 3, rng),
                      classes=["cat", "dog", "fox"], attributes={"site": np.array(["A", "B"])[np.arange(n) % 2]})
    labels4 = labels3.copy()
    labels4[:40] = 3
    new = write_audit(tmp_path / "new", ids=ids, labels=labels4, probabilities=probabilities_for(labels4, correct, 4, rng),
                      classes=["cat", "dog", "fox", "owl"], attributes={"site": np.array(["A", "B"])[np.arange(n) % 2]})
    comparison = compare_audits(*load_pair(old, new), n_bootstrap=50).comparison
    assert comparison["classes"] == {"shared": ["cat", "dog", "fox"], "only_old": [], "only_new": ["owl"]}
    assert any("only in NEW: owl" in note and "40 image(s)" in note for note in comparison["notes"])
    assert {r["class"] for r in comparison["model"]["rows"]} <= {"", "cat", "dog", "fox"}
    assert comparison["model"]["n_paired"] == n - 40


def test_no_overlap_says_so_and_compares_unpaired(tmp_path):
    rng = np.random.default_rng(1)
    n = 300
    for name, offset in (("old", 0), ("new", 10_000)):
        labels = rng.integers(0, 2, n)
        write_audit(tmp_path / name, ids=[f"i{offset + i}" for i in range(n)], labels=labels,
                    probabilities=probabilities_for(labels, rng.random(n) < 0.8, 2, rng), classes=["a", "b"],
                    attributes={"site": rng.choice(["A", "B"], n)}, content=[f"c{offset + i}" for i in range(n)])
    comparison = compare_audits(*load_pair(tmp_path / "old", tmp_path / "new"), n_bootstrap=50).comparison
    assert NOTE_NO_OVERLAP in comparison["notes"] and NOTE_NO_OVERLAP in comparison["findings"]
    assert comparison["model"]["method"] == "unpaired"
    assert comparison["matching"]["counts"] == {"added": n, "removed": n, "unchanged": 0, "relabelled": 0,
                                                "replaced": 0}


def _policy(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[regression]\nmax_drop = 0.05\n")
    return path


def test_an_audit_without_predictions_gives_no_model_comparison(base, tmp_path):
    import shutil

    import pandas as pd

    from audit.compare.core import NOTE_NO_MODEL

    _, old, new, _ = base
    bare = tmp_path / "bare"
    shutil.copytree(new, bare, symlinks=True)
    images = pd.read_parquet(bare / "images.parquet").drop(columns=["prediction"])
    rewrite_audit_files(bare, images=images)
    comparison = compare_audits(*load_pair(old, bare), n_bootstrap=50).comparison
    assert comparison["model"]["method"] == "none" and comparison["model"]["rows"] == []
    assert NOTE_NO_MODEL.format(which="NEW") in comparison["notes"]
    policy = tmp_path / "p.toml"
    policy.write_text("[regression]\nmax_drop = 0.05\n")
    verdict = tmp_path / "v.json"
    assert main(["gate", str(bare), "--baseline", str(old), "--policy", str(policy), "--json", str(verdict)]) == 0
    assert json.loads(verdict.read_text())["checks"][0]["status"] == "SKIPPED"
