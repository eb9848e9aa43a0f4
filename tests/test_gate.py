"""`python -m audit gate`: exit codes for pass, fail, warn, insufficient evidence (with/without --strict), error."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from audit.cli import main
from audit.folder import ERROR_NO_AUDIT_JSON, ERROR_NOT_A_FOLDER, load_group_metrics

from tests.audit_builder import build_audit_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_audit_folder(tmp_path_factory.mktemp("gate") / "audit", n_image_files=0)


@pytest.fixture(scope="module")
def female(folder):
    gm = load_group_metrics(folder)
    return gm[(gm.attribute == "gender") & (gm.group == "Female") & (gm.metric == "accuracy")].iloc[0]


def policy(tmp_path, threshold: float, margin: float = 0.0, attributes=("gender",)) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(f"[performance]\nmin_worst_group = {threshold!r}\nattributes = {json.dumps(list(attributes))}\n"
                    f"[gate]\nwarn_margin = {margin!r}\n")
    return path


def gate(folder, policy_file, *extra):
    return main(["gate", str(folder), "--policy", str(policy_file), *extra])


def test_pass(folder, female, tmp_path, capsys):
    assert gate(folder, policy(tmp_path, float(female.ci_low) - 0.05)) == 0
    out = capsys.readouterr().out
    assert "verdict: PASS" in out and "performance.min_worst_group" in out


def test_fail(folder, female, tmp_path, capsys):
    assert gate(folder, policy(tmp_path, float(female.ci_high) + 0.01)) == 1
    assert "verdict: FAIL" in capsys.readouterr().out


def test_warn_passes_and_is_listed(folder, female, tmp_path, capsys):
    threshold = float(female.ci_low) - 0.005
    assert gate(folder, policy(tmp_path, threshold, margin=float(female.value) - threshold + 0.01)) == 0
    out = capsys.readouterr().out
    assert "WARN" in out and "verdict: PASS" in out and "1 WARN" in out


def test_insufficient_evidence_with_and_without_strict(folder, female, tmp_path, capsys):
    straddling = policy(tmp_path, float(female.ci_low + female.value) / 2)
    assert gate(folder, straddling) == 0
    assert "INSUFFICIENT_EVIDENCE" in capsys.readouterr().out
    assert gate(folder, straddling, "--strict") == 1
    assert "verdict: FAIL (strict" in capsys.readouterr().out
    small_group = policy(tmp_path, 0.01, attributes=("age",))  # age = old has 20 images < min_group_size
    assert gate(folder, small_group) == 0
    assert gate(folder, small_group, "--strict") == 1


def test_error_when_the_analysis_failed(tmp_path, capsys):
    failed = build_audit_folder(tmp_path / "failed", errors=["group_performance"], n_image_files=0)
    assert gate(failed, policy(tmp_path, 0.5)) == 2
    out = capsys.readouterr().out
    assert "verdict: ERROR" in out and "synthetic failure of group_performance" in out


def test_error_wins_over_fail(tmp_path, capsys):
    failed = build_audit_folder(tmp_path / "failed", errors=["label_noise"], n_image_files=0)
    path = tmp_path / "p.toml"
    path.write_text("[label_noise]\nbasis = \"model\"\nmax_rate = 0.1\n[performance]\nmin_worst_group = 0.99\n")
    assert gate(failed, path) == 2


def test_skipped_without_model_passes(tmp_path, capsys):
    no_model = build_audit_folder(tmp_path / "nomodel", with_model=False, n_image_files=0)
    assert gate(no_model, policy(tmp_path, 0.9)) == 0
    assert "SKIPPED" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert gate(tmp_path / "nowhere", policy(tmp_path, 0.5)) == 2
    err = capsys.readouterr().err
    assert err == f"error: {ERROR_NOT_A_FOLDER.format(path=tmp_path / 'nowhere')}\n"
    (tmp_path / "empty").mkdir()
    assert gate(tmp_path / "empty", policy(tmp_path, 0.5)) == 2
    assert capsys.readouterr().err == f"error: {ERROR_NO_AUDIT_JSON.format(path=tmp_path / 'empty')}\n"


def test_corrupt_audit_json_and_bad_policy_exit_2(folder, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "audit.json").write_text("{not json")
    assert gate(broken, policy(tmp_path, 0.5)) == 2
    assert "audit.json cannot be read as JSON" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[performance]\nmin_worst = 0.5\n")
    assert gate(folder, bad) == 2
    err = capsys.readouterr().err
    assert "performance.min_worst" in err and err.count("\n") == 1


def test_json_and_markdown(folder, female, tmp_path, capsys):
    out_file = tmp_path / "verdict.json"
    assert gate(folder, policy(tmp_path, float(female.ci_high) + 0.01), "--format", "md", "--json", str(out_file)) == 1
    markdown = capsys.readouterr().out
    assert markdown.startswith("### imagefair release gate: ")
    assert "| status | check | where | value | threshold | details |" in markdown
    assert "❌ FAIL" in markdown and "gender = Female" in markdown
    verdict = json.loads(out_file.read_text())
    assert verdict["status"] == "FAIL"
    assert verdict["checks"][0]["value"] == pytest.approx(float(female.value))
    assert not list(tmp_path.glob(".verdict.json.*"))  # no temporary file left behind


def test_module_entry_point(folder, female, tmp_path):
    result = subprocess.run([sys.executable, "-m", "audit", "gate", str(folder), "--policy",
                             str(policy(tmp_path, float(female.ci_high) + 0.01))], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 1 and "verdict: FAIL" in result.stdout


def test_a_zero_change_is_never_minus_zero():
    """`gate --baseline` printed "-0" and "drop -0.0 points" for an unchanged group."""
    from audit.compare.gate import _fmt as points
    from audit.gate import _value

    assert _value(-0.0) == "0" and _value(-1e-17) != "-0" and _value(0.25) == "0.25"
    assert points(-1e-18) == "0.0 points" and points(-0.0123) == "-1.2 points"
