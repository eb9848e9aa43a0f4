"""One multiplicity story for the whole audit (issue 13, item 4).

Every analysis that compares a group with the rest of the data writes the raw one-sided p-value of that
test into ``group_metrics`` (column ``p_value``). Once all rows of an audit exist,
:func:`apply_audit_multiplicity` sorts the tested rows into two families and adjusts each as a whole:

* ``primary``: the release question, one row per group of each single *metadata* attribute (not a
  pixel attribute ``image_*``, not an intersection) for the policy's performance metric (default
  ``accuracy``), over all classes. The family-wise error rate over *all* primary rows of the audit is
  controlled (Holm; ``correction = "bh"`` controls the false discovery rate instead).
* ``exploratory``: every other tested row (other metrics, per-class rows, intersections, pixel attributes,
  label-disagreement and data-quality rates). The false discovery rate over all exploratory rows of the
  audit is controlled (Benjamini-Hochberg; with ``correction = "holm"`` the exploratory family stays BH,
  because Holm over thousands of leads would find nothing; see ``docs/methods.md``).

A row is *tested* when it has a finite ``p_value`` and not ``insufficient_evidence``. Its ``p_adjusted``
is the adjusted p-value within its family and its verdict is ``worse_than_rest`` when ``p_adjusted <
alpha``, else ``no_evidence_of_gap``; untested rows keep ``insufficient_data`` (when insufficient) or
the empty verdict, with an empty ``scope``.

Under the null of no group effect anywhere, the chance of *any* false ``worse_than_rest`` row is then at
most ``alpha`` for the primary family and, because false discovery rate control equals family-wise control
when every hypothesis is null, at most ``alpha`` for the exploratory family too (measured on shuffled
sample attributes by ``bench/error_rates.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from audit.analysis._stats import adjust_p_values
from audit.analysis._table import (SCOPE_EXPLORATORY, SCOPE_NONE, SCOPE_PRIMARY, VERDICT_INSUFFICIENT,
                                   VERDICT_NO_GAP, VERDICT_NONE, VERDICT_WORSE, coerce_group_metrics)
from audit.types import INTERSECTION_SEPARATOR

ERROR_CORRECTION = "correction must be 'holm' or 'bh', got {value!r}"
ERROR_ALPHA = "alpha must be a number strictly between 0 and 1, got {value!r}"

#: Prefix of the engine's pixel attributes (never primary: they describe images, not people or sources).
PIXEL_PREFIX = "image_"

METHOD_NAMES = {"holm": "Holm step-down (family-wise error rate)",
                "bh": "Benjamini-Hochberg (false discovery rate)"}


@dataclass(frozen=True)
class MultiplicityResult:
    """The adjusted table and a JSON-safe account of the tests made.

    Attributes
    ----------
    table : DataFrame
        ``group_metrics`` with ``scope``, ``p_adjusted`` and ``verdict`` set audit-wide.
    summary : dict
        ``{"alpha", "primary_metric", "primary_attributes", "n_tests", "families": {"primary": {...},
        "exploratory": {...}}}``; each family ``{"n_tests", "n_worse_than_rest", "method",
        "controls"}``.
    """

    table: pd.DataFrame
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.summary)


def is_metadata_attribute(attribute: str) -> bool:
    """A single attribute from the manifest or attributes file (not ``all``, a pixel attribute or an
    intersection)."""
    return (attribute != "all" and INTERSECTION_SEPARATOR not in attribute
            and not attribute.startswith(PIXEL_PREFIX))


def is_metadata_only(attribute: str) -> bool:
    """An attribute or intersection made of metadata attributes only (no ``image_*`` part)."""
    if attribute == "all":
        return False
    return all(not part.startswith(PIXEL_PREFIX) for part in attribute.split(INTERSECTION_SEPARATOR))


def primary_mask(table: pd.DataFrame, *, primary_metric: str = "accuracy",
                 primary_attributes=None) -> np.ndarray:
    """Rows of the release question: single metadata attributes x ``primary_metric``, over all classes.

    ``primary_attributes`` (optional) restricts the attributes further (e.g. the policy's).
    """
    attributes = table["attribute"].astype(str)
    mask = (table["metric"].astype(str) == primary_metric) & (table["class"].astype(str) == "")
    mask &= attributes.map(is_metadata_attribute)
    if primary_attributes is not None:
        mask &= attributes.isin([str(a) for a in primary_attributes])
    return mask.to_numpy(dtype=bool)


def apply_audit_multiplicity(table: pd.DataFrame, *, alpha: float = 0.05, correction: str = "holm",
                             primary_metric: str = "accuracy", primary_attributes=None) -> MultiplicityResult:
    """Set ``scope``, ``p_adjusted`` and ``verdict`` of every row from the audit-wide families.

    Parameters
    ----------
    table : DataFrame
        Every ``group_metrics`` row of the audit, with raw one-sided ``p_value`` (NaN: no test).
    alpha : float
        Level of both families (``1 - confidence_level``).
    correction : {"holm", "bh"}
        Control of the primary family: family-wise error (Holm, default) or false discovery rate (BH).
        The exploratory family is always Benjamini-Hochberg.
    primary_metric : str
        The policy's performance metric (default ``accuracy``).
    primary_attributes : sequence of str, optional
        Limit primary rows to these attributes (default: every single metadata attribute).

    Returns
    -------
    MultiplicityResult
    """
    if correction not in ("holm", "bh"):
        raise ValueError(ERROR_CORRECTION.format(value=correction))
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(ERROR_ALPHA.format(value=alpha))
    frame = coerce_group_metrics(table)
    p = frame["p_value"].to_numpy(dtype=float)
    insufficient = frame["insufficient_evidence"].to_numpy(dtype=bool)
    tested = np.isfinite(p) & ~insufficient
    primary = tested & primary_mask(frame, primary_metric=primary_metric, primary_attributes=primary_attributes)
    exploratory = tested & ~primary
    adjusted = np.full(len(frame), np.nan)
    if primary.any():
        adjusted[primary] = adjust_p_values(p[primary], method=correction)
    if exploratory.any():
        adjusted[exploratory] = adjust_p_values(p[exploratory], method="bh")
    scope = np.full(len(frame), SCOPE_NONE, dtype=object)
    scope[primary] = SCOPE_PRIMARY
    scope[exploratory] = SCOPE_EXPLORATORY
    verdict = frame["verdict"].to_numpy(dtype=object).copy()
    verdict[tested] = np.where(adjusted[tested] < alpha, VERDICT_WORSE, VERDICT_NO_GAP)
    verdict[insufficient] = VERDICT_INSUFFICIENT
    # A row that was given a test verdict by its analysis but has no p-value left (e.g. an empty rest) is
    # not a test: no verdict.
    untested_verdict = ~tested & ~insufficient & np.isin(verdict, [VERDICT_WORSE, VERDICT_NO_GAP])
    verdict[untested_verdict] = VERDICT_NONE
    frame["scope"] = scope
    frame["p_adjusted"] = adjusted
    frame["verdict"] = verdict
    worse = verdict == VERDICT_WORSE
    summary = {
        "alpha": float(alpha),
        "primary_metric": primary_metric,
        "primary_attributes": sorted(set(frame.loc[primary, "attribute"])),
        "n_tests": int(tested.sum()),
        "families": {
            SCOPE_PRIMARY: {"n_tests": int(primary.sum()), "n_worse_than_rest": int((worse & primary).sum()),
                            "method": correction, "method_name": METHOD_NAMES[correction],
                            "controls": "family-wise error rate" if correction == "holm"
                            else "false discovery rate"},
            SCOPE_EXPLORATORY: {"n_tests": int(exploratory.sum()),
                                "n_worse_than_rest": int((worse & exploratory).sum()),
                                "method": "bh", "method_name": METHOD_NAMES["bh"],
                                "controls": "false discovery rate"},
        },
        "n_untested_insufficient": int((insufficient & np.isfinite(p)).sum()),
        "description": ("Each tested row compares a group with the rest of the data, one-sided in the harmful "
                        "direction. Primary rows (single metadata attribute x the performance metric) form one "
                        "family for the whole audit; every other tested row forms one exploratory family. "
                        "p_adjusted is the adjusted p-value within the row's family; worse_than_rest means "
                        "p_adjusted < alpha."),
    }
    return MultiplicityResult(table=frame, summary=summary)
