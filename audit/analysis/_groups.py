"""Group keys: one label per image for every attribute and every intersection of attributes.

Missing values form the group ``<missing>``; intersections join attribute names and values with `` & ``
in the order the attributes were given, as ``contract.md`` defines.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from audit.types import INTERSECTION_SEPARATOR, MISSING_GROUP


def group_labels(values: pd.Series) -> pd.Series:
    """Return ``values`` as strings, with missing (NaN, None, empty or blank) values as ``<missing>``."""
    as_object = values.astype(object)
    missing = as_object.isna() | as_object.map(lambda v: isinstance(v, str) and v.strip() == "")
    labels = as_object.where(~missing, MISSING_GROUP).map(str)
    return labels.astype(object)


def iter_group_keys(table: pd.DataFrame, attributes, *, max_depth: int = 2):
    """Yield ``(attribute_name, labels)`` for each attribute and each intersection up to ``max_depth``.

    Parameters
    ----------
    table : DataFrame
        Holds every column named in ``attributes``.
    attributes : sequence of str
        Group attributes, in the order the user gave them.
    max_depth : int
        1 = single attributes only, 2 = also every pair, 3 = also every triple.

    Yields
    ------
    name : str
        The attribute, or the intersection ``"a & b"``.
    labels : Series of str
        The group of each row, ``"x & y"`` for intersections.
    """
    single = {attribute: group_labels(table[attribute]) for attribute in attributes}
    for depth in range(1, max_depth + 1):
        for combo in combinations(attributes, depth):
            if depth == 1:
                yield combo[0], single[combo[0]]
                continue
            joined = single[combo[0]]
            for attribute in combo[1:]:
                joined = joined + INTERSECTION_SEPARATOR + single[attribute]
            yield INTERSECTION_SEPARATOR.join(combo), joined


def codes_for(labels: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer code per row and the sorted list of group names (stable across runs)."""
    names = sorted(pd.unique(labels.to_numpy()))
    index = {name: i for i, name in enumerate(names)}
    return labels.map(index).to_numpy(dtype=np.int64), names
