"""A rate with its 95 % Wilson interval, as the bench JSON files record it (shared by the bench scripts; kept
independent of the package under test, whose code the baselines replace)."""
from __future__ import annotations

import math

from scipy import stats


def wilson(k: int, n: int) -> list | None:
    """95 % Wilson score interval of ``k`` successes in ``n`` trials, rounded to 4 digits (None when n = 0)."""
    if n == 0:
        return None
    z = stats.norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def rate(k: int, n: int) -> dict:
    """``{"rate", "count", "n", "ci95"}`` (rate and interval None when n = 0)."""
    return {"rate": round(k / n, 4) if n else None, "count": int(k), "n": int(n), "ci95": wilson(k, n)}
