"""What a report shows (:class:`Report`) and how its numbers are written, shared by every format.

:mod:`audit.report.render` builds a :class:`Report`; :mod:`~audit.report.html`, :mod:`~audit.report.pdf` and
:mod:`~audit.report.markdown` lay it out. Both sides import this module, never each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class Report:
    """What a report shows, already selected and ordered. ``figures`` maps a key to a plotly Figure."""

    folder: Path
    audit: dict
    sections: dict
    figures: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    thumbnails: bool = True


# -- formatting ----------------------------------------------------------------------------------------------
def fmt_percent(value, digits: int = 1) -> str:
    """``0.8213`` -> ``"82.1 %"``; None/NaN -> ``"n/a"``."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{100 * float(value):.{digits}f} %"


def fmt_number(value, digits: int = 4) -> str:
    """Significant-digit formatting used in tables and policy rows (``0.81879`` -> ``"0.8188"``)."""
    if value is None:
        return "-"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not np.isfinite(value):
        return "n/a"
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value)}"
    return f"{value:.{digits}g}"


def fmt_interval(low, high, digits: int = 1) -> str:
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return ""
    return f"{100 * float(low):.{digits}f}-{100 * float(high):.{digits}f} %"


def fmt_p(value) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    return f"{float(value):.2g}"
