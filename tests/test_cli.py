"""The CLI: exit codes, one clear line on stderr for bad input, and the help text."""
import json

import numpy as np
import pandas as pd
import pytest

from audit.cli import build_parser
from tests.helpers import REPO, check_folder, run_cli, write_manifest_dataset, write_predictions_csv


def _one_error_line(done):
    lines = [line for line in done.stderr.splitlines() if line.strip() and "it/s" not in line]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_help_documents_every_run_option():
    parser = build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]
    documented = run.format_help()
    for action in run._actions:
        for flag in action.option_strings:
            assert flag in documented
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help"


def test_missing_data_path_exits_2_with_one_line(tmp_path):
    line = _one_error_line(run_cli("run", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")))
    assert "nope.csv" in line


def test_manifest_without_label_column_names_it(tmp_path):
    (tmp_path / "m.csv").write_text("path,klass\na.png,x\n")
    line = _one_error_line(run_cli("run", "--data", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o")))
    assert "label" in line and "m.csv" in line
    assert not (tmp_path / "o" / "audit.json").exists()


def test_predictions_with_wrong_columns_exit_2(tmp_path):
    manifest = write_manifest_dataset(tmp_path, n_per_cell=3)
    ids = pd.read_csv(manifest)["id"]
    pd.DataFrame({"id": ids, "cat": 0.5, "bird": 0.5}).to_csv(tmp_path / "p.csv", index=False)
    line = _one_error_line(run_cli("run", "--data", str(manifest), "--predictions", str(tmp_path / "p.csv"),
                                   "--out", str(tmp_path / "o")))
    assert "p.csv" in line


def test_model_and_predictions_together_is_an_error(tmp_path):
    line = _one_error_line(run_cli("run", "--data", "x.csv", "--model", "m.onnx", "--predictions", "p.csv",
                                   "--out", str(tmp_path)))
    assert line == "error: give either --model or --predictions, not both"


def test_run_with_predictions_writes_valid_folder(tmp_path):
    manifest = write_manifest_dataset(tmp_path, n_per_cell=20)
    predictions = write_predictions_csv(manifest, tmp_path / "p.csv", accuracy_by_group={"a": 0.9, "b": 0.7})
    done = run_cli("run", "--data", str(manifest), "--predictions", str(predictions), "--out", str(tmp_path / "o"),
                   "--quiet", "--n-bootstrap", "100")
    assert done.returncode == 0, done.stderr
    assert "audit written to" in done.stdout
    code, output = check_folder(tmp_path / "o")
    assert code == 0, output


def test_label_noise_command_without_images(tmp_path):
    rng = np.random.default_rng(0)
    n, k = 3000, 4
    true = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += 3.0
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    given = true.copy()
    flip = rng.random(n) < 0.1
    given[flip] = (true[flip] + rng.integers(1, k, flip.sum())) % k
    np.save(tmp_path / "labels.npy", given)
    np.save(tmp_path / "probs.npy", probabilities.astype(np.float32))
    (tmp_path / "classes.txt").write_text("w\nx\ny\nz\n")
    pd.DataFrame({"id": [str(i) for i in range(n)], "camera": rng.choice(["c1", "c2"], n)}).to_csv(
        tmp_path / "attrs.csv", index=False)
    done = run_cli("label-noise", "--labels", str(tmp_path / "labels.npy"), "--predictions",
                   str(tmp_path / "probs.npy"), "--classes", str(tmp_path / "classes.txt"), "--attributes",
                   str(tmp_path / "attrs.csv"), "--out", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    code, output = check_folder(tmp_path / "o")
    assert code == 0, output
    audit = json.loads((tmp_path / "o" / "audit.json").read_text())
    assert audit["kind"] == "label-noise" and audit["classes"] == ["w", "x", "y", "z"]
    assert abs(audit["analyses"]["label_noise"]["label_disagreement_rate"] - flip.mean()) < 0.03
    images = pd.read_parquet(tmp_path / "o" / "images.parquet")
    assert images["is_label_issue"].sum() == audit["analyses"]["label_noise"]["n_label_issues"]
    assert set(pd.read_parquet(tmp_path / "o" / "group_metrics.parquet")["attribute"]) >= {"all", "camera"}


def test_label_noise_command_rejects_out_of_range_label(tmp_path):
    np.save(tmp_path / "labels.npy", np.array([0, 1, 5]))
    np.save(tmp_path / "probs.npy", np.full((3, 2), 0.5, dtype=np.float32))
    line = _one_error_line(run_cli("label-noise", "--labels", str(tmp_path / "labels.npy"), "--predictions",
                                   str(tmp_path / "probs.npy"), "--out", str(tmp_path / "o")))
    assert "row 2" in line and "5" in line


def test_label_score_option_changes_the_ranking_not_the_flagged_set(tmp_path):
    classes = ("bird", "cat", "dog")  # with two classes the normalised margin equals the self-confidence
    manifest = write_manifest_dataset(tmp_path, n_per_cell=20, classes=classes)
    predictions = write_predictions_csv(manifest, tmp_path / "p.csv", accuracy_by_group={"a": 0.9, "b": 0.7},
                                        classes=classes)
    folders = {}
    for method in ("self_confidence", "normalized_margin"):
        out = tmp_path / method
        done = run_cli("run", "--data", str(manifest), "--predictions", str(predictions), "--out", str(out),
                       "--quiet", "--n-bootstrap", "50", "--label-score", method)
        assert done.returncode == 0, done.stderr
        folders[method] = pd.read_parquet(out / "images.parquet")
        assert json.loads((out / "audit.json").read_text())["analyses"]["label_noise"]["score_method"] == method
    first, second = folders["self_confidence"], folders["normalized_margin"]
    assert (first["is_label_issue"] == second["is_label_issue"]).all()
    assert not np.allclose(first["label_score"], second["label_score"])
