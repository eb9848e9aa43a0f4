"""The tidy per-group table (``group_metrics.parquet``) shared by every analysis that reports groups."""
from __future__ import annotations

import numpy as np
import pandas as pd

from audit.analysis._stats import wilson_max_width

GROUP_METRIC_COLUMNS = ("attribute", "group", "class", "n", "metric", "value", "ci_low", "ci_high",
                        "insufficient_evidence", "verdict", "scope", "rest_value", "p_value", "p_adjusted")
#: Columns every audit folder has had since the first schema (older folders lack the others).
BASE_GROUP_METRIC_COLUMNS = GROUP_METRIC_COLUMNS[:10]
_TEXT_COLUMNS = ("attribute", "group", "class", "metric", "verdict", "scope")
_FLOAT_COLUMNS = ("value", "ci_low", "ci_high", "rest_value", "p_value", "p_adjusted")

#: Verdict words of ``group_metrics.parquet`` (contract).
VERDICT_WORSE = "worse_than_rest"
VERDICT_NO_GAP = "no_evidence_of_gap"
VERDICT_INSUFFICIENT = "insufficient_data"
VERDICT_NONE = ""

#: ``scope`` words (contract, issue 13): which multiplicity family a tested row belongs to.
SCOPE_PRIMARY = "primary"
SCOPE_EXPLORATORY = "exploratory"
SCOPE_NONE = ""


def empty_group_metrics() -> pd.DataFrame:
    """An empty table with the contract's columns and dtypes."""
    return coerce_group_metrics(pd.DataFrame({column: [] for column in GROUP_METRIC_COLUMNS}))


def coerce_group_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with exactly the contract columns, in order, with stable dtypes.

    ``p_value`` is the raw one-sided p-value of the row's test against the rest (NaN where no test
    applies); ``p_adjusted`` and ``scope`` are set audit-wide by :mod:`audit.analysis.multiplicity`.
    """
    frame = frame.copy()
    for column in GROUP_METRIC_COLUMNS:
        if column not in frame:
            frame[column] = "" if column in _TEXT_COLUMNS else np.nan
    frame = frame[list(GROUP_METRIC_COLUMNS)]
    for column in _TEXT_COLUMNS:
        frame[column] = frame[column].fillna("").astype(str)
    frame["n"] = frame["n"].fillna(0).astype("int64")
    for column in _FLOAT_COLUMNS:
        frame[column] = frame[column].astype("float64")
    flags = frame["insufficient_evidence"].astype(object)
    frame["insufficient_evidence"] = flags.where(flags.notna(), False).astype(bool)
    return frame.reset_index(drop=True)


def insufficient_by_size(n, *, min_group_size: int, max_ci_width: float, confidence_level: float = 0.95):
    """The ``insufficient_evidence`` rule: ``n < min_group_size``, or a proportion from ``n`` images could
    have a 95 % interval wider than ``max_ci_width`` (the Wilson width at 0.5, the least favourable value).

    Depends on ``n`` only, never on the observed value, so it cannot hide a bad group (wide interval near
    0.5) while keeping a good one (narrow interval near 1). With the defaults (30, 0.3) a group needs at
    least 39 images.
    """
    n = np.asarray(n, dtype=float)
    return (n < min_group_size) | (wilson_max_width(n, confidence_level=confidence_level) > max_ci_width)


def flag_insufficient_evidence(frame: pd.DataFrame, *, min_group_size: int, max_ci_width: float,
                               confidence_level: float = 0.95) -> pd.Series:
    """``True`` where :func:`insufficient_by_size` holds for the row's ``n`` (contract)."""
    flags = insufficient_by_size(frame["n"].to_numpy(), min_group_size=min_group_size, max_ci_width=max_ci_width,
                                 confidence_level=confidence_level)
    return pd.Series(flags, index=frame.index)
