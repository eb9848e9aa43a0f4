"""App-only table helpers: group_metrics rows as people read them (words for column names and verdicts,
groups in their natural order: ``0-2, 3-9, 10-19``, never as text)."""
from __future__ import annotations

import pandas as pd

from audit.display import group_sort_key
from audit.report.figures import VERDICT_LABELS


def group_table(rows: pd.DataFrame, *, metric: str = "value") -> pd.DataFrame:
    """``group, n, value, ci_low, ci_high, insufficient_evidence, verdict`` rows of group_metrics as a table with
    readable headers (the value column is named ``metric``), sorted by group in natural order."""
    table = rows.iloc[sorted(range(len(rows)), key=lambda i: group_sort_key(rows["group"].iloc[i]))]
    return pd.DataFrame({
        "group": table["group"].astype(str).to_numpy(), "images": table["n"].to_numpy(),
        metric: table["value"].to_numpy(), "95 % CI low": table["ci_low"].to_numpy(),
        "95 % CI high": table["ci_high"].to_numpy(),
        "too little evidence": table["insufficient_evidence"].astype(bool).to_numpy(),
        "verdict": [VERDICT_LABELS.get(v, v) for v in table["verdict"].fillna("")]})
