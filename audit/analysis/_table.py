"""The tidy per-group table (``group_metrics.parquet``) shared by every analysis that reports groups."""
from __future__ import annotations

import numpy as np
import pandas as pd

GROUP_METRIC_COLUMNS = ("attribute", "group", "class", "n", "metric", "value", "ci_low", "ci_high",
                        "insufficient_evidence", "verdict")

#: Verdict words of ``group_metrics.parquet`` (contract).
VERDICT_WORSE = "worse_than_rest"
VERDICT_NO_GAP = "no_evidence_of_gap"
VERDICT_INSUFFICIENT = "insufficient_data"
VERDICT_NONE = ""


def empty_group_metrics() -> pd.DataFrame:
    """An empty table with the contract's columns and dtypes."""
    return coerce_group_metrics(pd.DataFrame({column: [] for column in GROUP_METRIC_COLUMNS}))


def coerce_group_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with exactly the contract columns, in order, with stable dtypes."""
    frame = frame.copy()
    for column in GROUP_METRIC_COLUMNS:
        if column not in frame:
            frame[column] = "" if column in ("class", "verdict") else np.nan
    frame = frame[list(GROUP_METRIC_COLUMNS)]
    for column in ("attribute", "group", "class", "metric", "verdict"):
        frame[column] = frame[column].fillna("").astype(str)
    frame["n"] = frame["n"].fillna(0).astype("int64")
    for column in ("value", "ci_low", "ci_high"):
        frame[column] = frame[column].astype("float64")
    flags = frame["insufficient_evidence"].astype(object)
    frame["insufficient_evidence"] = flags.where(flags.notna(), False).astype(bool)
    return frame.reset_index(drop=True)


def flag_insufficient_evidence(frame: pd.DataFrame, *, min_group_size: int, max_ci_width: float) -> pd.Series:
    """``True`` where ``n < min_group_size`` or the interval is wider than ``max_ci_width`` (contract)."""
    width = (frame["ci_high"] - frame["ci_low"]).fillna(np.inf)
    return (frame["n"] < min_group_size) | (width > max_ci_width)
