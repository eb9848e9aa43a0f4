"""Predictions read row by row with reasons (issue 11, item 5): ``auto`` refuses a mix naming the first
odd row, tolerance set by the file's dtype, the chosen kind on the CLI summary line, row-count mismatches
are errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import audit.model.predictions as pr
from audit.cli import main
from audit.errors import InputError
from tests.helpers import write_manifest_dataset, write_predictions_csv


def _table(n: int) -> pd.DataFrame:
    return pd.DataFrame({"row": np.arange(n), "id": [f"i{k}" for k in range(n)], "path": "",
                         "label": ["a", "b"] * (n // 2)})


def _probabilities(n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.dirichlet(np.ones(k) * 0.5, size=n)
    return values


def test_one_row_summing_to_098_is_refused_not_turned_into_logits(tmp_path):
    """The defect: one such row re-softmaxed the whole file (max confidence 0.987 -> 0.726)."""
    values = _probabilities(40, 2)
    values[17] = [0.49, 0.49]
    np.save(tmp_path / "p.npy", values)
    with pytest.raises(InputError) as info:
        pr.load_predictions(tmp_path / "p.npy", table=_table(40), classes=("a", "b"))
    assert str(info.value) == pr.ERROR_PREDICTIONS_MIXED.format(
        file=str(tmp_path / "p.npy"), row=17, where="", this=pr._LOOKS_LOGITS.format(total=0.98, low=0.49,
                                                                                     high=0.49),
        n_other=39, that="look like probabilities", tolerance=1e-4, dtype="float64")
    assert info.value.row == 17


@pytest.mark.parametrize("k", [2, 10])
def test_float16_probabilities_are_probabilities(tmp_path, k):
    """float16 rounding moves row sums by up to ~K * 5e-4: the tolerance follows the dtype."""
    values = _probabilities(200, k, seed=k).astype(np.float16)
    assert np.abs(values.astype(np.float64).sum(axis=1) - 1).max() > 1e-4  # the old test failed these rows
    np.save(tmp_path / "p16.npy", values)
    result = pr.load_predictions(tmp_path / "p16.npy", table=_table(200), classes=tuple(f"c{j}" for j in range(k)))
    assert result.kind_used == "probabilities"
    expected = values.astype(np.float64) / values.astype(np.float64).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)


def test_tolerance_by_dtype():
    assert pr.probability_tolerance(np.float64, 1000) == 1e-4
    assert pr.probability_tolerance(np.float32, 10) == 1e-4
    assert pr.probability_tolerance(np.float16, 2) == pytest.approx(2 * 2.0 ** -10)
    assert pr.probability_tolerance(np.float16, 1000) == 1e-2


def test_all_logits_still_logits(tmp_path):
    values = np.random.default_rng(1).normal(0, 3, (30, 3))
    np.save(tmp_path / "l.npy", values)
    result = pr.load_predictions(tmp_path / "l.npy", table=_table(30), classes=("a", "b", "c"))
    assert result.kind_used == "logits"


def test_npy_with_extra_rows_is_an_error(tmp_path):
    """The defect: 5 rows too many were cut with only a note."""
    np.save(tmp_path / "p.npy", _probabilities(45, 2))
    with pytest.raises(InputError) as info:
        pr.load_predictions(tmp_path / "p.npy", table=_table(40), classes=("a", "b"), n_source_rows=40)
    assert str(info.value) == pr.ERROR_PREDICTIONS_N_ROWS.format(file=str(tmp_path / "p.npy"), found=45, n=40)
    # one row per manifest row, some images skipped: taken by position
    table = _table(40).iloc[::2].reset_index(drop=True)
    values = _probabilities(40, 2)
    np.save(tmp_path / "m.npy", values)
    result = pr.load_predictions(tmp_path / "m.npy", table=table, classes=("a", "b"), n_source_rows=40)
    np.testing.assert_allclose(result.probabilities, values[::2], rtol=1e-6)


def test_cli_summary_line_names_the_kind(tmp_path, capsys):
    manifest = write_manifest_dataset(tmp_path, n_per_cell=3, size=16)
    write_predictions_csv(manifest, tmp_path / "p.csv", accuracy_by_group={"a": 0.9, "b": 0.7})
    capsys.readouterr()
    assert main(["run", "--data", str(manifest), "--predictions", str(tmp_path / "p.csv"), "--out",
                 str(tmp_path / "out"), "--quiet", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert f"  model: predictions {tmp_path / 'p.csv'} (read as probabilities)" in out.splitlines()
