"""Read small user tables (CSV or Parquet) with clear errors; values stay as given (CSV cells as strings)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from audit.errors import InputError

ERROR_TABLE_MISSING = "{path} does not exist"
ERROR_TABLE_FORMAT = "{path}: unsupported table format {suffix!r}; use .csv or .parquet"
ERROR_TABLE_UNREADABLE = "{path} could not be read as {kind}: {detail}"


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (every cell as a string, empty cells as missing) or Parquet file."""
    file = Path(path)
    if not file.is_file():
        raise InputError(ERROR_TABLE_MISSING.format(path=path), source=str(path))
    suffix = file.suffix.lower()
    try:
        if suffix in (".csv", ".txt", ".tsv"):
            return pd.read_csv(file, dtype=str, keep_default_na=False, na_values=[""],
                               sep="\t" if suffix == ".tsv" else ",")
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(file)
    except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        kind = "CSV" if suffix != ".parquet" else "Parquet"
        raise InputError(ERROR_TABLE_UNREADABLE.format(path=path, kind=kind, detail=str(error).splitlines()[0]),
                         source=str(path)) from error
    raise InputError(ERROR_TABLE_FORMAT.format(path=path, suffix=suffix), source=str(path))
