"""Class x attribute associations: is a class over- or under-represented in some group?

A strong association (e.g. most ``nurse`` images show women) is a spurious correlation a model can learn.
For every group attribute we build the class x group contingency table, test independence with the
chi-square test, measure strength with Cramer's V and list the cells that deviate most.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from audit.analysis._groups import group_labels
from audit.analysis._stats import adjust_p_values, z_value
from audit.types import json_float


@dataclass(frozen=True)
class AssociationResult:
    """Association of the class label with each group attribute.

    Attributes
    ----------
    attributes : tuple of dict
        One entry per attribute, strongest first: ``attribute``, ``n``, ``cramers_v`` (0 = independent,
        1 = the group determines the class), ``chi2``, ``dof``, ``p_value``, ``p_value_adjusted`` (Holm over
        the attributes), ``significant``, ``low_expected_counts`` (more than 20 % of cells expect fewer than
        5 images: the chi-square approximation is rough), ``cells``: the most over/under-represented
        class x group cells (``observed``, ``expected``, ``ratio`` = observed / expected,
        ``adjusted_residual`` (Haberman), ``significant`` at a Bonferroni level over the attribute's cells).
    contingency : dict
        ``{attribute: {"groups": [...], "classes": [...], "counts": [[...]], "adjusted_residuals": [[...]]}}``
        (rows = classes), for heatmaps.
    alpha : float
    """

    attributes: tuple
    contingency: dict
    alpha: float

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "attributes": list(self.attributes), "contingency": self.contingency}


def compute_associations(labels: pd.Series, *, classes, groups: dict, alpha: float = 0.05,
                         correction: str = "holm", max_cells: int = 10) -> AssociationResult:
    """Cramer's V, chi-square p-value and the most deviating cells for class x each attribute.

    Parameters
    ----------
    labels : Series of str
        Class of each image.
    classes : sequence of str
        Class order (rows of the contingency tables).
    groups : dict of str -> Series
        Group attribute name -> value of each image (missing values become the group ``<missing>``).
    alpha : float
        Significance level after multiple-comparison control.
    max_cells : int
        How many cells to list per attribute.
    """
    classes = list(classes)
    entries = []
    contingency = {}
    for attribute, values in groups.items():
        group_values = group_labels(values)
        table = pd.crosstab(labels.astype(str), group_values).reindex(index=classes, fill_value=0)
        table = table.loc[table.sum(axis=1) > 0, table.sum(axis=0) > 0]
        observed = table.to_numpy(dtype=float)
        n = observed.sum()
        entry = {"attribute": attribute, "n": int(n), "n_groups": int(observed.shape[1])}
        if observed.shape[0] < 2 or observed.shape[1] < 2:
            entry.update({"cramers_v": None, "chi2": None, "dof": 0, "p_value": None, "cells": [],
                          "low_expected_counts": False, "note": "fewer than two classes or groups"})
            entries.append(entry)
            continue
        chi2, p_value, dof, expected = stats.chi2_contingency(observed, correction=False)
        cramers_v = np.sqrt(chi2 / (n * (min(observed.shape) - 1)))
        row_share = observed.sum(1, keepdims=True) / n
        column_share = observed.sum(0, keepdims=True) / n
        with np.errstate(invalid="ignore", divide="ignore"):
            residuals = (observed - expected) / np.sqrt(expected * (1 - row_share) * (1 - column_share))
        residuals = np.nan_to_num(residuals, nan=0.0, posinf=0.0, neginf=0.0)
        cell_z = z_value(1 - alpha / observed.size)  # two-sided Bonferroni over the cells
        order = np.argsort(-np.abs(residuals), axis=None)[:max_cells]
        cells = []
        for flat in order:
            i, j = np.unravel_index(flat, observed.shape)
            cells.append({"class": str(table.index[i]), "group": str(table.columns[j]),
                          "observed": int(observed[i, j]), "expected": float(expected[i, j]),
                          "ratio": json_float(observed[i, j] / expected[i, j]) if expected[i, j] > 0 else None,
                          "adjusted_residual": float(residuals[i, j]),
                          "direction": "over" if residuals[i, j] > 0 else "under",
                          "significant": bool(abs(residuals[i, j]) > cell_z)})
        entry.update({"cramers_v": json_float(cramers_v), "chi2": json_float(chi2), "dof": int(dof),
                      "p_value": json_float(p_value), "low_expected_counts": bool((expected < 5).mean() > 0.2),
                      "cells": cells})
        entries.append(entry)
        contingency[attribute] = {"classes": [str(c) for c in table.index], "groups": [str(g) for g in table.columns],
                                  "counts": observed.astype(int).tolist(),
                                  "adjusted_residuals": np.round(residuals, 4).tolist()}
    p_values = np.array([e["p_value"] if e.get("p_value") is not None else np.nan for e in entries])
    adjusted = adjust_p_values(p_values, method=correction)
    for entry, p in zip(entries, adjusted):
        entry["p_value_adjusted"] = json_float(p) if not np.isnan(p) else None
        entry["significant"] = bool(entry["p_value_adjusted"] is not None and entry["p_value_adjusted"] < alpha)
    entries.sort(key=lambda e: -(e["cramers_v"] or 0.0))
    return AssociationResult(attributes=tuple(entries), contingency=contingency, alpha=alpha)
