"""Tests of audit.io.csv_export: formula injection neutralised (OWASP), numbers untouched, atomic write."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from audit.io.csv_export import FORMULA_PREFIXES, neutralise_cell, to_safe_csv, write_safe_csv


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "\nx",
                                  "=HYPERLINK(\"http://x\",\"y\")",
                                  # importers that trim spaces would still see a formula; full-width signs
                                  " =after a space", "\u00a0=after nbsp", "\uff1dcmd", "\uff0b1", "\uff20x"])
def test_formula_like_text_gets_a_quote(text):
    assert neutralise_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["cat", "", "a =not first", "a=b", "'already", 3, -3, -2.5, True, None])
def test_other_values_unchanged(value):
    assert neutralise_cell(value) is value or neutralise_cell(value) == value


def test_prefixes_are_the_owasp_list():
    assert set(FORMULA_PREFIXES) >= {"=", "+", "-", "@", "\t", "\r"}


def test_to_safe_csv_cells_headers_and_numbers():
    frame = pd.DataFrame({
        "=cmd": ["=1+1", "ok", "-3"],
        "n": [-1, 2, 3],
        "x": [-0.5, np.nan, 1.5],
        "flag": [True, False, True],
        "cat": pd.Categorical(["+a", "b", "+a"]),
        "s": pd.array(["@x", None, "y"], dtype="string"),
    })
    text = to_safe_csv(frame)
    assert text.splitlines() == [
        "'=cmd,n,x,flag,cat,s",
        "'=1+1,-1,-0.5,True,'+a,'@x",
        "ok,2,,False,b,",
        "'-3,3,1.5,True,'+a,y",
    ]
    back = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    assert back["'=cmd"].tolist() == ["'=1+1", "ok", "'-3"]
    assert frame.columns[0] == "=cmd" and frame["=cmd"].iloc[0] == "=1+1"  # input untouched


def test_quotes_and_line_breaks_stay_valid_csv():
    frame = pd.DataFrame({"note": ['say "hi", then\nleave', "-x,y"]})
    back = pd.read_csv(io.StringIO(to_safe_csv(frame)), dtype=str)
    assert back["note"].tolist() == ['say "hi", then\nleave', "'-x,y"]


def test_write_safe_csv_is_atomic(tmp_path):
    target = tmp_path / "sub" / "out.csv"
    write_safe_csv(pd.DataFrame({"a": ["=x"]}), target)
    assert target.read_text(encoding="utf-8") == "a\n'=x\n"
    write_safe_csv(pd.DataFrame({"a": ["y"]}), target)
    assert target.read_text(encoding="utf-8") == "a\ny\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.csv"]
