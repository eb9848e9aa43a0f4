"""CSV export safe to open in a spreadsheet (no formula injection).

Following the OWASP "CSV Injection" guidance, every *text* cell (and every column name) that starts with
``=``, ``+``, ``-``, ``@``, a tab, a carriage return or a line feed gets a single quote ``'`` in front, so
Excel, LibreOffice and Google Sheets show it as text instead of evaluating it. Numbers, booleans and
missing values are written as they are (a negative *number* stays ``-3``; the *text* ``"-3"`` becomes
``'-3``). Quoting of commas, quotes and line breaks is the csv module's (pandas ``to_csv``).
"""
from __future__ import annotations

import os

import pandas as pd

from audit.io.atomic import write_text_atomic

#: First characters that make a spreadsheet treat a cell as a formula (OWASP), with the full-width forms
#: (U+FF1D, U+FF0B, U+FF0D, U+FF20) that some spreadsheet locales also read as formula starts.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralise_cell(value):
    """``"'" + value`` when ``value`` is a string starting with one of :data:`FORMULA_PREFIXES`, also after
    leading spaces (some importers trim them before evaluating); else ``value``."""
    if isinstance(value, str) and value.lstrip(" \u00a0\u3000").startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with every text cell and column name neutralised (numbers untouched)."""
    safe = pd.DataFrame(index=frame.index)
    for position in range(frame.shape[1]):
        column = frame.iloc[:, position]
        name = neutralise_cell(str(frame.columns[position]))
        if pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype) \
                or pd.api.types.is_datetime64_any_dtype(column.dtype):
            values = column
        else:
            values = column.astype(object).map(neutralise_cell)
        safe.insert(position, name, values, allow_duplicates=True)
    return safe


def to_safe_csv(frame: pd.DataFrame) -> str:
    """The CSV text of ``frame`` (no index, UTF-8 text) with formula-like cells neutralised."""
    return neutralise_frame(frame).to_csv(index=False, lineterminator="\n")


def write_safe_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write :func:`to_safe_csv` of ``frame`` to ``path`` atomically (temporary file + rename)."""
    write_text_atomic(path, to_safe_csv(frame))
