"""Issue 12 item 10: a classes file shorter than the predictions is blamed by name (it used to read as a
problem of the labels against "the predictions' columns")."""
from __future__ import annotations

import numpy as np

from audit.pipeline.labels_input import ERROR_CLASSES_COUNT
from tests.helpers import run_cli


def test_short_classes_file_is_named(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "p.npy", rng.dirichlet(np.ones(3), size=50).astype(np.float32))
    np.save(tmp_path / "l.npy", rng.integers(0, 3, 50))
    (tmp_path / "c.txt").write_text("a\nb\n")
    done = run_cli("label-noise", "--labels", str(tmp_path / "l.npy"), "--predictions", str(tmp_path / "p.npy"),
                   "--classes", str(tmp_path / "c.txt"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    expected = ERROR_CLASSES_COUNT.format(path=tmp_path / "c.txt", n=2, predictions=tmp_path / "p.npy", k=3)
    assert done.stderr.strip().splitlines() == [f"error: {expected}"]


def test_a_labels_file_without_rows_is_one_line_not_an_internal_error(tmp_path):
    """Issue 11 item 8: zero rows used to end in "internal error ... schema" after the analyses ran."""
    from audit.pipeline.labels_input import ERROR_LABELS_EMPTY

    np.save(tmp_path / "p.npy", np.zeros((0, 2), dtype=np.float32))
    (tmp_path / "c.txt").write_text("a\nb\n")
    (tmp_path / "labels.csv").write_text("id,label\n")
    np.save(tmp_path / "l.npy", np.zeros(0, dtype=np.int64))
    for labels in (tmp_path / "labels.csv", tmp_path / "l.npy"):
        done = run_cli("label-noise", "--labels", str(labels), "--predictions", str(tmp_path / "p.npy"),
                       "--classes", str(tmp_path / "c.txt"), "--out", str(tmp_path / "out"))
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [f"error: {ERROR_LABELS_EMPTY.format(path=labels)}"]
        assert not (tmp_path / "out").exists()


def test_predictions_with_one_column_are_refused_by_name(tmp_path):
    """Issue 11 item 8: K = 1 predictions (no classes file) ended in an IndexError."""
    from audit.pipeline.labels_input import ERROR_PREDICTIONS_ONE_CLASS

    np.save(tmp_path / "p.npy", np.ones((20, 1), dtype=np.float32))
    (tmp_path / "labels.csv").write_text("id,label\n" + "".join(f"i{i},0\n" for i in range(20)))
    done = run_cli("label-noise", "--labels", str(tmp_path / "labels.csv"), "--predictions", str(tmp_path / "p.npy"),
                   "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    expected = ERROR_PREDICTIONS_ONE_CLASS.format(path=tmp_path / "p.npy", k=1)
    assert done.stderr.strip().splitlines() == [f"error: {expected}"]
