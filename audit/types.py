"""Small frozen types shared by every layer of the engine."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing audit.types must not import pandas (worker start-up)
    import pandas as pd

#: Columns of the dataset table that are never group attributes.
RESERVED_COLUMNS = ("id", "path", "label", "split", "row", "content_hash")

#: Name of the group that holds rows whose attribute value is missing (NaN, None or empty).
MISSING_GROUP = "<missing>"

#: Separator between attribute names (and between group values) of an intersection.
INTERSECTION_SEPARATOR = " & "


@dataclass(frozen=True)
class SkipEntry:
    """One input left out of the audit, and why.

    Attributes
    ----------
    row : int or None
        0-based row in the manifest (or position in the ImageFolder listing); None when the input is not a row.
    path : str
        The file concerned, as the user gave it (or as found in the folder).
    reason : str
        Plain-language reason, e.g. ``"truncated or corrupt image: ..."``.
    """

    row: int | None
    path: str
    reason: str

    def to_dict(self) -> dict:
        return {"row": self.row, "path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class Dataset:
    """A validated data set: one row per image, ready for decoding and analysis.

    Attributes
    ----------
    table : pandas.DataFrame
        Columns ``row`` (0-based position in the source manifest/listing), ``id`` (str, unique),
        ``path`` (str, absolute), ``label`` (str, a member of ``classes``), optional ``split`` (str),
        then every attribute column as strings (missing values are ``None``).
    classes : tuple of str
        The class order used everywhere (probabilities columns, matrices).
    group_attributes : tuple of str
        Columns of ``table`` that are analysed as groups.
    metadata_columns : tuple of str
        Other attribute columns, kept but not grouped (e.g. too many distinct values).
    root : Path
        The data root that manifest paths are relative to.
    source : str
        What the user passed as ``--data``.
    kind : str
        ``"imagefolder"``, ``"csv"`` or ``"parquet"``.
    skipped : tuple of SkipEntry
        Rows left out while loading (missing files, escaping paths, ...).
    class_order_source : str
        Where the class order came from (``"sorted"``, ``"model"``, ``"classes file"``).
    notes : tuple of str
        Non-fatal facts about the load (e.g. attribute rows that matched no image).
    """

    table: pd.DataFrame
    classes: tuple[str, ...]
    group_attributes: tuple[str, ...]
    metadata_columns: tuple[str, ...]
    root: Path
    source: str
    kind: str
    skipped: tuple[SkipEntry, ...] = field(default_factory=tuple)
    class_order_source: str = "sorted"
    notes: tuple[str, ...] = ()

    @property
    def n_images(self) -> int:
        return len(self.table)


def json_safe(value):
    """Recursively convert numpy scalars/arrays, tuples and paths to JSON types; non-finite floats and missing
    values (``None``, ``pandas.NA``, ``NaT``) become None.

    The one JSON-cleaning helper: every ``to_dict()`` and the audit-folder writer use it (or
    :func:`json_float` for one number), so ``audit.json`` never holds NaN or Infinity.
    """
    import itertools
    import math

    import numpy as np

    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if value and type(value[0]) is list and all(type(row) is list for row in value):
            # a matrix as lists of rows (e.g. read back from JSON): one C-level pass over its elements
            types = set(map(type, itertools.chain.from_iterable(value)))
            if types == {int} or (types <= {int, float} and all(
                    map(math.isfinite, itertools.chain.from_iterable(value)))):
                return [list(row) for row in value]
        if value and all(type(v) is float for v in value) and all(map(math.isfinite, value)):
            return list(value)  # already clean (e.g. a row of a large matrix): no call per element
        if value and all(type(v) is int for v in value):
            return list(value)
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iub" or (value.dtype.kind == "f" and np.isfinite(value).all()):
            return value.tolist()  # already JSON types (a large matrix: no call per element)
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def json_float(value) -> float | None:
    """One number for JSON: a finite float, or None for None, NaN, infinities and missing values."""
    value = json_safe(value)
    return None if value is None else json_safe(float(value))
