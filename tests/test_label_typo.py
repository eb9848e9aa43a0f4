"""Issue 12 item 10: a label the model does not know is one line naming the manifest, the row and the
column, before any image is read (it used to name neither file nor row, after the model had run)."""
from __future__ import annotations

import pandas as pd
import pytest

from audit.io.manifest import ERROR_LABEL_NOT_A_MODEL_CLASS
from tests.helpers import REPO, run_cli

SAMPLE = REPO / "sample_data"


def test_label_typo_names_file_row_and_column(tmp_path):
    if not (SAMPLE / "model.onnx").exists():
        pytest.skip("sample_data is not built")
    frame = pd.read_csv(SAMPLE / "manifest.csv").head(12)
    frame["path"] = [str(SAMPLE / p) for p in frame["path"]]
    frame.loc[3, "label"] = "femal"
    manifest = tmp_path / "m.csv"
    frame.to_csv(manifest, index=False)
    done = run_cli("run", "--data", str(manifest), "--model", str(SAMPLE / "model.onnx"), "--out",
                   str(tmp_path / "out"), "--quiet", "--no-cache")
    assert done.returncode == 2
    expected = ERROR_LABEL_NOT_A_MODEL_CLASS.format(path=str(manifest), where="row 3 (line 5)", label="femal",
                                                    model="female, male", column="label")
    assert done.stderr.strip().splitlines() == [f"error: {expected}"]
    assert not (tmp_path / "out").exists()
