"""Policy and group hostile inputs (issue 11, items 4 and 8): a policy without checks is an error for the
gate unless --allow-empty; every threshold is range-checked; a --group-by column above the cardinality cap
is refused naming it."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from audit.cli import main
from audit.io.manifest import ERROR_GROUP_BY_TOO_MANY, MAX_GROUP_BY_VALUES
from audit.policy import ERROR_EMPTY_POLICY, ERROR_ONLY_REGRESSION, ERROR_VALUE_RANGE, load_policy
from audit.errors import PolicyError
from tests.helpers import write_manifest_dataset, write_predictions_csv


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("policy_data")
    manifest = write_manifest_dataset(folder, n_per_cell=4, size=16)
    write_predictions_csv(manifest, folder / "p.csv", accuracy_by_group={"a": 0.9, "b": 0.7})
    assert main(["run", "--data", str(manifest), "--predictions", str(folder / "p.csv"), "--out",
                 str(folder / "audit"), "--quiet", "--no-cache"]) == 0
    return folder / "audit"


def _stderr_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("text", ["", "# truncated\n", "[performance]\nmetric = \"accuracy\"\n",
                                  "[gate]\nwarn_margin = 0.01\n", "[regression]\nmax_drop = 0.1\n"],
                         ids=["empty", "comment-only", "settings-only", "margin-only", "regression-only"])
def test_gate_refuses_a_policy_without_checks(audit_dir, tmp_path, capsys, text):
    """The defect: an empty or truncated policy passed as "PASS (no checks)"."""
    policy = tmp_path / "policy.toml"
    policy.write_text(text)
    capsys.readouterr()
    assert main(["gate", str(audit_dir), "--policy", str(policy)]) == 2
    # a regression-only policy has checks, but without --baseline they would all be SKIPPED
    expected = ERROR_ONLY_REGRESSION if text.startswith("[regression]") else ERROR_EMPTY_POLICY
    assert _stderr_line(capsys) == "error: " + expected.format(path=policy)
    assert main(["gate", str(audit_dir), "--policy", str(policy), "--allow-empty"]) == 0


@pytest.mark.parametrize("section, key, value, what", [
    ("performance", "min_worst_group", 1.5, "between 0 and 1"),
    ("performance", "max_gap", 2, "between 0 and 1"),
    ("performance", "min_ratio", 0, "above 0 and at most 1 (a ratio of 0 would pass any gap)"),
    ("performance", "min_worst_group", -0.1, "between 0 and 1"),
    ("annotation", "min_agreement", 3, "between 0 and 1"),
    ("label_noise", "max_rate", 1.2, "between 0 and 1"),
])
def test_thresholds_are_range_checked(tmp_path, section, key, value, what):
    policy = tmp_path / "p.toml"
    policy.write_text(f"[{section}]\n{key} = {value}\n")
    with pytest.raises(PolicyError) as info:
        load_policy(policy)
    assert str(info.value) == ERROR_VALUE_RANGE.format(path=policy, key=f"{section}.{key}", what=what,
                                                       value=float(value))


def test_group_by_above_the_cardinality_cap_is_refused(tmp_path, capsys):
    manifest = write_manifest_dataset(tmp_path, n_per_cell=260, size=8)
    table = pd.read_csv(manifest)
    table["free_text"] = [f"v{k}" for k in range(len(table))]
    assert len(table) > MAX_GROUP_BY_VALUES
    table.to_csv(manifest, index=False)
    capsys.readouterr()
    assert main(["run", "--data", str(manifest), "--group-by", "site,free_text", "--out", str(tmp_path / "o"),
                 "--quiet"]) == 2
    assert _stderr_line(capsys) == "error: " + ERROR_GROUP_BY_TOO_MANY.format(
        column="free_text", n=len(table), cap=MAX_GROUP_BY_VALUES)
    assert not (tmp_path / "o").exists()


def test_library_warnings_do_not_break_the_one_line_error(audit_dir, tmp_path, capsys, monkeypatch):
    """Issue 11 item 8: Pillow/torch warnings printed beside the error line broke the one-line promise."""
    import warnings

    import audit.gate as gate

    real = gate.load_policy

    def noisy(path):
        warnings.warn("torch.jit.script is deprecated", DeprecationWarning)
        warnings.warn("Image size exceeds limit", UserWarning)
        return real(path)

    monkeypatch.setattr(gate, "load_policy", noisy)
    policy = tmp_path / "empty.toml"
    policy.write_text("")
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # as a user's environment may have it
        import sys

        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno))  # printed, as outside pytest
        assert main(["gate", str(audit_dir), "--policy", str(policy)]) == 2
    assert _stderr_line(capsys) == "error: " + ERROR_EMPTY_POLICY.format(path=policy)


# --- item 6: reviews.sqlite failures are one clear message (the app shows it; the form keeps the decision) ----
def _decision(folder):
    from audit import reviews

    return reviews.record_decision(folder, image_id="i1", content_hash="a" * 64, reviewer="ann",
                                   decision="label_correct")


def test_damaged_reviews_database_is_one_message(tmp_path):
    from audit import reviews
    from audit.errors import InputError

    (tmp_path / "reviews.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(InputError) as info:
        _decision(tmp_path)
    assert str(info.value) == reviews.ERROR_REVIEWS_DAMAGED.format(folder=tmp_path,
                                                                   reason="file is not a database")


def test_locked_reviews_database_is_one_message(tmp_path, monkeypatch):
    import sqlite3

    from audit import reviews
    from audit.errors import InputError

    _decision(tmp_path)
    holder = sqlite3.connect(tmp_path / "reviews.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(reviews, "BUSY_TIMEOUT_S", 0.2)
    try:
        with pytest.raises(InputError) as info:
            _decision(tmp_path)
        assert str(info.value) == reviews.ERROR_REVIEWS_LOCKED.format(folder=tmp_path, seconds=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert _decision(tmp_path) > 0
