"""Read an annotations file (several labels per image) and code it against the audited images.

Two layouts (CSV or Parquet):

* **long**: one row per label, columns ``id`` (or ``path``), ``annotator``, ``label`` and optionally
  ``seconds`` (time the annotator spent on that label);
* **wide**: one row per image, ``id`` (or ``path``) and one column per annotator holding that annotator's
  label (empty where the annotator did not label the image).

Rows are joined to the images by ``id`` (or by ``path``, relative to the annotations file or absolute).
What happens to bad rows (each message is a constant below, naming the file and row):

* a label that is not one of the classes, or one annotator giving the same image two different labels:
  an error (the file must be fixed: skipping would bias every estimate);
* an id/path that is not among the audited images, an empty annotator id, an empty label (long form),
  an exact repeat of a label already given: the row is skipped and counted in ``skipped``;
* an image that nobody labelled stays in the audit with ``n_annotations = 0`` (counted in the
  ``annotations`` section); with ``--label-column consensus`` it has no label under audit and is skipped
  by the pipeline instead.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.types import SkipEntry

ERROR_FILE_MISSING = "--annotations {path}: file not found"
ERROR_NO_KEY = ("annotations file {path}: needs an id (or path) column to join the labels to the images; found "
                "{columns}")
ERROR_NO_ANNOTATORS = ("annotations file {path}: found neither the long layout (columns id,annotator,label"
                       "[,seconds]) nor any annotator column of the wide layout (id plus one column per "
                       "annotator); found {columns}")
ERROR_PARTIAL_LONG = ("annotations file {path}: has an {present!r} column but no {missing!r} column; the long "
                      "layout needs id,annotator,label[,seconds]")
ERROR_UNKNOWN_LABEL = ("annotations file {path}, {where}: label {label!r} is not one of the classes ({classes}); "
                       "fix the label or the class list")
ERROR_CONFLICT = ("annotations file {path}: annotator {annotator!r} gave image {image!r} two different labels "
                  "({first_label!r} at {first}, {second_label!r} at {second}); keep one label per annotator and "
                  "image")
ERROR_BAD_SECONDS = ("annotations file {path}, {where}: seconds {value!r} is not a non-negative number; leave it "
                     "empty if unknown")
ERROR_NO_ROWS = ("annotations file {path}: no usable label ({n_skipped} rows skipped; first: {first}); check that "
                 "its ids match the images' ids")

REASON_UNKNOWN_ID = "annotation for {key} {value!r}, which is not among the audited images"
REASON_EMPTY_ANNOTATOR = "annotation with an empty annotator id"
REASON_EMPTY_LABEL = "annotation with an empty label"
REASON_REPEAT = "repeat of the label annotator {annotator!r} already gave image {image!r} at {first}"


def _where(row: int, csv: bool) -> str:
    return f"row {row} (line {row + 2})" if csv else f"row {row}"


def _text(values) -> np.ndarray:
    """Cells as stripped strings; missing and blank cells as None."""
    out = []
    for value in values:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            out.append(None)
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = str(value).strip()
        out.append(text or None)
    return np.array(out, dtype=object)


@dataclass(frozen=True)
class LoadedAnnotations:
    """The coded annotations (one entry per label kept) and what was left out.

    Attributes
    ----------
    item, annotator, label : ndarray of int64
        Image row (``images.parquet`` order), annotator index (into ``annotators``), class index.
    seconds : ndarray of float or None
        Seconds per label (NaN where unknown; None when the file has no ``seconds``).
    annotators : tuple of str
    n_items, n_classes : int
    layout : str
        ``long`` or ``wide``.
    skipped : tuple of SkipEntry
        Rows left out (``row`` = 0-based data row of the annotations file).
    source : str
    """

    item: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    seconds: np.ndarray | None
    annotators: tuple
    n_items: int
    n_classes: int
    layout: str
    skipped: tuple
    source: str

    def arrays(self) -> dict:
        """Keyword arguments of :class:`audit.analysis.annotations.Annotations`."""
        return {"item": self.item, "annotator": self.annotator, "label": self.label, "seconds": self.seconds,
                "annotators": self.annotators, "n_items": self.n_items, "n_classes": self.n_classes}


def load_annotations(path: str, *, ids, paths=None, classes, root: str | None = None) -> LoadedAnnotations:
    """Read ``path`` and code it against the images (``ids``, and ``paths`` for a path-keyed file).

    Parameters
    ----------
    path : str
        CSV or Parquet annotations file (long or wide layout, see the module docstring).
    ids : sequence of str
        The audited images' ids, in ``images.parquet`` row order.
    paths : sequence of str, optional
        Their absolute paths (needed when the file joins by ``path``).
    classes : sequence of str
        The class order; a label may also be given as a class index (``"3"`` = ``classes[3]``) when no
        class is named like a number.
    root : str, optional
        Folder that relative paths of a path-keyed file are relative to (default: the file's folder).

    Raises
    ------
    InputError
        With one of this module's ``ERROR_*`` messages.
    """
    from audit.io.tables import read_table

    source = str(path)
    if not Path(path).is_file():
        raise InputError(ERROR_FILE_MISSING.format(path=source), source=source)
    frame = read_table(path)
    csv = Path(path).suffix.lower() != ".parquet"
    columns = [str(c) for c in frame.columns]
    shown = ", ".join(repr(c) for c in columns) or "none"
    if "id" in columns:
        key = "id"
    elif "path" in columns:
        key = "path"
    else:
        raise InputError(ERROR_NO_KEY.format(path=source, columns=shown), source=source)
    has_annotator, has_label = "annotator" in columns, "label" in columns
    if has_annotator != has_label:
        raise InputError(ERROR_PARTIAL_LONG.format(path=source, present="annotator" if has_annotator else "label",
                                                   missing="label" if has_annotator else "annotator"),
                         source=source, column="label" if has_annotator else "annotator")
    keys = _text(frame[key].tolist())
    if has_annotator:
        layout = "long"
        rows = np.arange(len(frame))
        annotator = _text(frame["annotator"].tolist())
        label = _text(frame["label"].tolist())
        seconds_raw = frame["seconds"].tolist() if "seconds" in columns else None
    else:
        layout = "wide"
        annotator_columns = [c for c in columns if c not in ("id", "path", "seconds")]
        if not annotator_columns:
            raise InputError(ERROR_NO_ANNOTATORS.format(path=source, columns=shown), source=source)
        values = np.stack([_text(frame[c].tolist()) for c in annotator_columns], axis=1) if len(frame) else \
            np.empty((0, len(annotator_columns)), dtype=object)
        present = np.array([[v is not None for v in row] for row in values], dtype=bool).reshape(values.shape)
        row_index, column_index = np.nonzero(present)
        rows = row_index
        keys = keys[row_index]
        annotator = np.array(annotator_columns, dtype=object)[column_index]
        label = values[row_index, column_index]
        seconds_raw = None

    skipped: list[SkipEntry] = []
    # key -> image position
    if key == "id":
        lookup = {str(v): i for i, v in enumerate(ids)}
        normalised = keys
    else:
        if paths is None:
            raise InputError(ERROR_NO_KEY.format(path=source, columns=shown), source=source)
        base = Path(os.path.realpath(root or Path(path).parent))
        lookup = {os.path.normpath(str(p)): i for i, p in enumerate(paths)}
        normalised = np.array([None if k is None else os.path.normpath(k if os.path.isabs(k) else str(base / k))
                               for k in keys], dtype=object)
    class_index = {str(c): i for i, c in enumerate(classes)}
    numeric_ok = not any(str(c).lstrip("-").isdigit() for c in classes)

    item, annotator_ids, label_codes, seconds, kept_rows = [], [], [], [], []
    for position in range(len(rows)):
        row = int(rows[position])
        where = _where(row, csv)
        k = normalised[position]
        image = lookup.get(k) if k is not None else None
        if image is None:
            skipped.append(SkipEntry(row=row, path=source, reason=REASON_UNKNOWN_ID.format(key=key, value=keys[position])))
            continue
        who = annotator[position]
        if who is None:
            skipped.append(SkipEntry(row=row, path=source, reason=REASON_EMPTY_ANNOTATOR))
            continue
        given = label[position]
        if given is None:
            skipped.append(SkipEntry(row=row, path=source, reason=REASON_EMPTY_LABEL))
            continue
        code = class_index.get(given)
        if code is None and numeric_ok and given.isdigit() and int(given) < len(classes):
            code = int(given)
        if code is None:
            preview = ", ".join(list(map(str, classes))[:10]) + (", ..." if len(classes) > 10 else "")
            raise InputError(ERROR_UNKNOWN_LABEL.format(path=source, where=where, label=given, classes=preview),
                             source=source, row=row, column="label")
        value = np.nan
        if seconds_raw is not None:
            raw = seconds_raw[row]
            if raw is not None and not (isinstance(raw, float) and np.isnan(raw)) and str(raw).strip() != "":
                try:
                    value = float(raw)
                except (TypeError, ValueError):
                    value = -1.0
                if not np.isfinite(value) or value < 0:
                    raise InputError(ERROR_BAD_SECONDS.format(path=source, where=where, value=raw), source=source,
                                     row=row, column="seconds")
        item.append(image)
        annotator_ids.append(who)
        label_codes.append(code)
        seconds.append(value)
        kept_rows.append(row)

    item = np.asarray(item, dtype=np.int64)
    label_codes = np.asarray(label_codes, dtype=np.int64)
    names, annotator_codes = np.unique(np.asarray(annotator_ids, dtype=object).astype(str), return_inverse=True) \
        if annotator_ids else (np.array([], dtype=object), np.array([], dtype=np.int64))
    annotator_codes = np.asarray(annotator_codes, dtype=np.int64)
    kept_rows = np.asarray(kept_rows, dtype=np.int64)
    # one label per (annotator, image): conflicts are errors, exact repeats are skipped
    if len(item):
        pair = annotator_codes * (len(ids) + 1) + item
        order = np.lexsort((kept_rows, pair))
        sorted_pair = pair[order]
        repeat = np.zeros(len(item), dtype=bool)
        repeat[order[1:]] = sorted_pair[1:] == sorted_pair[:-1]
        if repeat.any():
            first_of = {}
            for position in order:
                first_of.setdefault(int(pair[position]), int(position))
            drop = []
            for position in np.flatnonzero(repeat):
                first = first_of[int(pair[position])]
                first_row, row = int(kept_rows[first]), int(kept_rows[position])
                image_name = str(ids[item[position]])
                if label_codes[position] != label_codes[first]:
                    raise InputError(ERROR_CONFLICT.format(
                        path=source, annotator=str(names[annotator_codes[position]]), image=image_name,
                        first_label=str(classes[label_codes[first]]), first=_where(first_row, csv),
                        second_label=str(classes[label_codes[position]]), second=_where(row, csv)),
                        source=source, row=row, column="label")
                skipped.append(SkipEntry(row=row, path=source, reason=REASON_REPEAT.format(
                    annotator=str(names[annotator_codes[position]]), image=image_name,
                    first=_where(first_row, csv))))
                drop.append(position)
            keep = np.ones(len(item), dtype=bool)
            keep[drop] = False
            item, annotator_codes, label_codes = item[keep], annotator_codes[keep], label_codes[keep]
            seconds = list(np.asarray(seconds)[keep])
            used = np.unique(annotator_codes)
            remap = np.full(len(names), -1, dtype=np.int64)
            remap[used] = np.arange(len(used))
            names, annotator_codes = names[used], remap[annotator_codes]
    if len(item) == 0:
        first = f"{skipped[0].reason} at {_where(skipped[0].row, csv)}" if skipped else "-"
        raise InputError(ERROR_NO_ROWS.format(path=source, n_skipped=len(skipped), first=first), source=source)
    seconds_array = np.asarray(seconds, dtype=float)
    skipped.sort(key=lambda entry: entry.row)
    return LoadedAnnotations(item=item, annotator=annotator_codes, label=label_codes,
                             seconds=seconds_array if np.isfinite(seconds_array).any() else None,
                             annotators=tuple(str(n) for n in names), n_items=len(ids), n_classes=len(classes),
                             layout=layout, skipped=tuple(skipped), source=source)
