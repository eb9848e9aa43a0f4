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
