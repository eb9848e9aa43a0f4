"""Who and what is in the data: class distribution (overall and per split) and attribute distributions.

Pure functions over label and attribute columns; each returns a frozen result with ``to_dict()`` for
``audit.json`` and, for attributes, the ``share`` rows of ``group_metrics.parquet``.
"""
from __future__ import annotations

import itertools

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from audit.analysis._groups import group_labels, iter_group_keys
from audit.analysis._stats import wilson_interval
from audit.analysis._table import (VERDICT_INSUFFICIENT, VERDICT_NONE, coerce_group_metrics,
                                   empty_group_metrics, flag_insufficient_evidence)
from audit.types import INTERSECTION_SEPARATOR, MISSING_GROUP, json_float

ERROR_REFERENCE_COLUMNS = ("reference file {path}: expected columns attribute,group,expected_share; "
                           "found {columns}")
ERROR_REFERENCE_SHARE = ("reference file {path}, row {row}: expected_share {value!r} is not a number "
                         "between 0 and 1")
ERROR_REFERENCE_EMPTY = ("reference file {path}, row {row}: the '{column}' cell is empty; fill it or remove "
                         "the row")
ERROR_REFERENCE_DUPLICATE = ("reference file {path}: rows {first} and {second} both give attribute {attribute!r}, "
                             "group {group!r}; keep one row per group")
ERROR_REFERENCE_UNKNOWN_ATTRIBUTE = ("reference file {path}, row {row}: attribute {attribute!r} is not a group "
                                     "attribute of the data set ({available}); fix the name or remove its rows")


@dataclass(frozen=True)
class ClassDistributionResult:
    """Class counts and balance.

    Attributes
    ----------
    classes : tuple of str
        Class order.
    counts : tuple of int
        Images per class, in class order (zero for declared classes without images).
    n_images : int
        Total images.
    imbalance_ratio : float
        Count of the largest class divided by the count of the smallest non-empty class (1 = balanced).
    normalised_entropy : float
        Shannon entropy of the class shares divided by ``log(K)`` (1 = perfectly balanced, 0 = one class).
    empty_classes : tuple of str
        Declared classes with no image.
    split_counts : dict
        ``{split: counts tuple}`` when the data set has splits.
    split_shift : dict or None
        Chi-square test of independence of class and split: ``chi2``, ``dof``, ``p_value`` and Cramer's V
        (``cramers_v``: 0 = identical class mix in every split). None without at least two splits.
    """

    classes: tuple[str, ...]
    counts: tuple[int, ...]
    n_images: int
    imbalance_ratio: float
    normalised_entropy: float
    empty_classes: tuple[str, ...]
    split_counts: dict = field(default_factory=dict)
    split_shift: dict | None = None

    def to_dict(self) -> dict:
        """The ``class_distribution`` section of ``audit.json``. Besides the fields above it names the smallest
        and largest non-empty classes: ``smallest_classes`` / ``largest_classes`` list every class tied for
        that count (class order), ``is_balanced`` is True when all non-empty classes have the same count;
        ``smallest_class`` / ``largest_class`` are the first of each list."""
        shares = [c / self.n_images if self.n_images else 0.0 for c in self.counts]
        # every class tied for the smallest / largest non-empty count, in class order: on balanced data no
        # class is "the smallest" (smallest_class / largest_class keep the first of them for old readers)
        present = [(c, n) for c, n in zip(self.classes, self.counts) if n > 0]
        low = min((n for _, n in present), default=None)
        high = max((n for _, n in present), default=None)
        smallest = [c for c, n in present if n == low]
        largest = [c for c, n in present if n == high]
        return {
            "n_images": self.n_images,
            "n_classes": len(self.classes),
            "counts": dict(zip(self.classes, self.counts)),
            "shares": dict(zip(self.classes, shares)),
            "imbalance_ratio": json_float(self.imbalance_ratio),
            "normalised_entropy": json_float(self.normalised_entropy),
            "smallest_class": smallest[0] if smallest else None,
            "largest_class": largest[0] if largest else None,
            "smallest_classes": smallest, "largest_classes": largest,
            "is_balanced": bool(present) and low == high,
            "empty_classes": list(self.empty_classes),
            "by_split": {split: dict(zip(self.classes, counts)) for split, counts in self.split_counts.items()},
            "split_shift": self.split_shift,
        }


def compute_class_distribution(labels: pd.Series, *, classes, splits: pd.Series | None = None
                               ) -> ClassDistributionResult:
    """Count images per class, overall and per split, and test whether the class mix differs by split.

    Parameters
    ----------
    labels : Series of str
        Class name of each image.
    classes : sequence of str
        Class order; every label must be one of them.
    splits : Series of str, optional
        Split of each image; ignored when it has fewer than two distinct values.
    """
    classes = tuple(classes)
    counts_series = labels.astype(str).value_counts().reindex(list(classes), fill_value=0)
    counts = tuple(int(c) for c in counts_series.to_numpy())
    n_images = int(sum(counts))
    nonzero = [c for c in counts if c > 0]
    imbalance_ratio = max(nonzero) / min(nonzero) if nonzero else float("nan")
    shares = np.array(nonzero, dtype=float) / max(n_images, 1)
    entropy = float(-(shares * np.log(shares)).sum()) if len(shares) else 0.0
    normalised_entropy = entropy / np.log(len(classes)) if len(classes) > 1 else float("nan")
    empty = tuple(c for c, n in zip(classes, counts) if n == 0)

    split_counts: dict = {}
    split_shift = None
    if splits is not None:
        split_values = group_labels(splits)
        table = pd.crosstab(split_values, labels.astype(str)).reindex(columns=list(classes), fill_value=0)
        split_counts = {str(s): tuple(int(v) for v in row) for s, row in table.iterrows()}
        if len(table) >= 2:
            observed = table.to_numpy()
            observed = observed[:, observed.sum(0) > 0]
            chi2, p_value, dof, _ = stats.chi2_contingency(observed, correction=False)
            v = np.sqrt(chi2 / (observed.sum() * max(1, min(observed.shape) - 1)))
            split_shift = {"test": "chi-square test of independence of class and split",
                           "chi2": json_float(chi2), "dof": int(dof), "p_value": json_float(p_value),
                           "cramers_v": json_float(v)}
    return ClassDistributionResult(classes=classes, counts=counts, n_images=n_images,
                                   imbalance_ratio=imbalance_ratio, normalised_entropy=normalised_entropy,
                                   empty_classes=empty, split_counts=split_counts, split_shift=split_shift)


@dataclass(frozen=True)
class AttributeDistributionResult:
    """Group sizes per attribute and per intersection, missing rates and reference comparisons.

    Attributes
    ----------
    attributes : dict
        ``{attribute: {"groups": [{"group", "n", "share", "ci_low", "ci_high", "is_small"}], "n_groups",
        "n_missing", "missing_rate", "n_small_groups", "reference": {...} or None}}``; ``share`` is the
        fraction of all images in the group with a Wilson interval, ``is_small`` = ``n < min_group_size``.
    intersections : dict
        ``{"a & b": {"groups": [...], "n_cells_possible", "n_cells_empty", "n_small_groups"}}``; a cell is a
        combination of observed values, empty when no image has it.
    table : DataFrame
        ``share`` rows in the contract's ``group_metrics`` columns.
    min_group_size : int
    """

    attributes: dict
    intersections: dict
    table: pd.DataFrame
    min_group_size: int

    def to_dict(self) -> dict:
        return {"min_group_size": self.min_group_size, "attributes": self.attributes,
                "intersections": self.intersections}


def load_reference_proportions(frame: pd.DataFrame, *, path: str, attributes=None) -> pd.DataFrame:
    """Validate a reference table (``attribute,group,expected_share``) read by the io layer.

    Every row needs an attribute and a group (an empty cell is an error), each (attribute, group) pair
    appears once, and, when ``attributes`` (the data set's group attributes and intersections) is given,
    every attribute must be one of them, so a misspelt attribute is an error instead of a comparison that
    silently never happens.
    """
    from audit.errors import InputError

    expected = {"attribute", "group", "expected_share"}
    if not expected <= set(frame.columns):
        raise InputError(ERROR_REFERENCE_COLUMNS.format(path=path, columns=", ".join(map(str, frame.columns))),
                         source=path)
    for column in ("attribute", "group"):
        empty = frame[column].isna().to_numpy() | (frame[column].astype(str).str.strip() == "").to_numpy()
        if empty.any():
            row = int(np.flatnonzero(empty)[0])
            raise InputError(ERROR_REFERENCE_EMPTY.format(path=path, row=row, column=column), source=path, row=row,
                             column=column)
    keys = list(zip(frame["attribute"].astype(str).str.strip(), frame["group"].astype(str).str.strip()))
    first_row: dict = {}
    for row, key in enumerate(keys):
        if key in first_row:
            raise InputError(ERROR_REFERENCE_DUPLICATE.format(path=path, first=first_row[key], second=row,
                                                              attribute=key[0], group=key[1]),
                             source=path, row=row, column="group")
        first_row[key] = row
    if attributes is not None:
        known = [str(a) for a in attributes]
        for row, (attribute, _) in enumerate(keys):
            if attribute not in known:
                raise InputError(ERROR_REFERENCE_UNKNOWN_ATTRIBUTE.format(
                    path=path, row=row, attribute=attribute, available=", ".join(known) or "none"),
                    source=path, row=row, column="attribute")
    shares = pd.to_numeric(frame["expected_share"], errors="coerce")
    bad = shares.isna() | (shares < 0) | (shares > 1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(ERROR_REFERENCE_SHARE.format(path=path, row=row, value=frame["expected_share"].iloc[row]),
                         source=path, row=row, column="expected_share")
    return pd.DataFrame({"attribute": frame["attribute"].astype(str).str.strip(),
                         "group": frame["group"].astype(str).str.strip(),
                         "expected_share": shares.astype(float)})


def _compare_with_reference(counts: pd.Series, reference: pd.DataFrame, *, confidence_level: float) -> dict:
    """Chi-square goodness of fit of observed group counts against expected shares.

    Only groups listed in the reference are compared (missing values excluded); expected shares are
    renormalised over them. Each group also gets a Wilson interval of its observed share and a flag when the
    expected share lies outside it.
    """
    expected_share = reference.set_index("group")["expected_share"]
    observed = counts.reindex(expected_share.index, fill_value=0).astype(float)
    n = observed.sum()
    rows = []
    result = {"groups_not_in_reference": sorted(set(counts.index) - set(expected_share.index) - {MISSING_GROUP})}
    if n == 0 or expected_share.sum() <= 0:
        result.update({"chi2": None, "p_value": None, "rows": []})
        return result
    expected_normalised = expected_share / expected_share.sum()
    low, high = wilson_interval(observed.to_numpy(), np.full(len(observed), n), confidence_level=confidence_level)
    for i, group in enumerate(expected_share.index):
        observed_share = observed.iloc[i] / n
        rows.append({"group": str(group), "n": int(observed.iloc[i]), "observed_share": float(observed_share),
                     "expected_share": float(expected_normalised.iloc[i]), "ci_low": float(low[i]),
                     "ci_high": float(high[i]),
                     "outside_interval": bool(not (low[i] <= expected_normalised.iloc[i] <= high[i]))})
    positive = expected_normalised > 0
    chi2, p_value = stats.chisquare(observed[positive], f_exp=expected_normalised[positive] * observed[positive].sum())
    result.update({"test": "chi-square goodness of fit", "chi2": json_float(chi2),
                   "p_value": json_float(p_value), "dof": int(positive.sum() - 1), "rows": rows})
    return result


def compute_attribute_distribution(table: pd.DataFrame, *, attributes, min_group_size: int = 30,
                                   max_ci_width: float = 0.3, confidence_level: float = 0.95,
                                   max_depth: int = 2, reference: pd.DataFrame | None = None,
                                   compared_attributes=None) -> AttributeDistributionResult:
    """Group sizes and shares for every attribute and every intersection up to ``max_depth``.

    Parameters
    ----------
    table : DataFrame
        One row per image, holding the attribute columns.
    attributes : sequence of str
        Group attributes, in the user's order.
    min_group_size : int
        Groups with fewer images are flagged ``is_small`` (and ``insufficient_evidence`` in the table).
    reference : DataFrame, optional
        Validated reference proportions (``attribute, group, expected_share``).
    compared_attributes : sequence of str, optional
        The attributes that enter intersections (default: all); attributes with a single group are
        described but not intersected.
    """
    attributes = list(attributes)
    compared = list(attributes if compared_attributes is None else compared_attributes)
    n_total = len(table)
    per_attribute: dict = {}
    per_intersection: dict = {}
    rows = []
    # one attribute or intersection at a time: the labels of an intersection are a string per image (all of
    # them at once were 2.4 GB at 1.28M images and 25 attributes and pairs)
    keys = itertools.chain(iter_group_keys(table, attributes, max_depth=1),
                           ((name, labels) for name, labels in iter_group_keys(table, compared, max_depth=max_depth)
                            if INTERSECTION_SEPARATOR in name))
    for name, labels in keys:
        counts = labels.value_counts()
        counts = counts.sort_index()
        low, high = wilson_interval(counts.to_numpy(), np.full(len(counts), n_total),
                                    confidence_level=confidence_level)
        groups = []
        for i, (group, n) in enumerate(counts.items()):
            groups.append({"group": str(group), "n": int(n), "share": float(n / n_total),
                           "ci_low": float(low[i]), "ci_high": float(high[i]),
                           "is_small": bool(n < min_group_size)})
            rows.append({"attribute": name, "group": str(group), "class": "", "n": int(n), "metric": "share",
                         "value": float(n / n_total), "ci_low": float(low[i]), "ci_high": float(high[i])})
        n_small = int(sum(g["is_small"] for g in groups))
        if INTERSECTION_SEPARATOR in name:
            parts = name.split(INTERSECTION_SEPARATOR)
            possible = int(np.prod([group_labels(table[p]).nunique() for p in parts]))
            per_intersection[name] = {"attributes": parts, "groups": groups, "n_cells_possible": possible,
                                      "n_cells_empty": possible - len(groups), "n_small_groups": n_small}
        else:
            n_missing = int(counts.get(MISSING_GROUP, 0))
            entry = {"groups": groups, "n_groups": len(groups), "n_missing": n_missing,
                     "missing_rate": n_missing / n_total if n_total else 0.0, "n_small_groups": n_small,
                     "reference": None}
            if reference is not None and (reference["attribute"] == name).any():
                entry["reference"] = _compare_with_reference(
                    counts, reference[reference["attribute"] == name], confidence_level=confidence_level)
            per_attribute[name] = entry
    frame = coerce_group_metrics(pd.DataFrame(rows)) if rows else empty_group_metrics()
    # Shares have no harmful direction, so no test applies; small groups are still marked (contract).
    frame["insufficient_evidence"] = flag_insufficient_evidence(frame, min_group_size=min_group_size,
                                                                max_ci_width=max_ci_width)
    frame["verdict"] = np.where(frame["insufficient_evidence"], VERDICT_INSUFFICIENT, VERDICT_NONE)
    return AttributeDistributionResult(attributes=per_attribute, intersections=per_intersection, table=frame,
                                       min_group_size=min_group_size)
