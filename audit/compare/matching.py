"""Match the images of two audits and say what happened to each one.

Rules (documented in docs/audit-folder.md, "Comparison folder"):

1. Images with the same ``id`` in both versions are the same item. Same ``content_hash`` (or no hashes
   to compare): ``unchanged`` when the label is the same, ``relabelled`` when it differs. Different
   ``content_hash``: ``replaced`` (same id, new pixels).
2. Among the images left, one with the ``content_hash`` of an old image (under another id, i.e. a moved
   or renamed file) is matched to it, one to one in file order: ``unchanged`` or ``relabelled``, with
   ``renamed`` true.
3. Whatever is left is ``added`` (only in NEW) or ``removed`` (only in OLD).

Without ``content_hash`` in either version (label-noise audits), images are matched by id only, and a
pixel change cannot be seen; the comparison says so.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

ADDED, REMOVED, UNCHANGED, RELABELLED, REPLACED = "added", "removed", "unchanged", "relabelled", "replaced"
CHANGES = (ADDED, REMOVED, UNCHANGED, RELABELLED, REPLACED)

#: Per-version columns copied into image_changes.parquet (suffixed ``_old`` / ``_new``).
VERSION_COLUMNS = ("id", "path", "content_hash", "label", "prediction", "split")


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name in frame.columns:
        return frame[name].astype(object).where(frame[name].notna(), None).to_numpy(dtype=object)
    return np.full(len(frame), None, dtype=object)


def match_images(old: pd.DataFrame, new: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Pair the rows of two ``images.parquet`` tables.

    Parameters
    ----------
    old, new : DataFrame
        The two image tables (``id`` and ``label`` required; ``content_hash`` used when both have it).

    Returns
    -------
    pairs : DataFrame
        One row per matched pair, added or removed image: ``row_old`` / ``row_new`` (row positions, -1 when
        absent), ``change``, ``renamed`` (bool) and, per version, ``id``, ``path``, ``content_hash``,
        ``label``, ``prediction``, ``split`` suffixed ``_old`` / ``_new``.
    method : str
        ``"content_hash+id"`` or ``"id"`` (no hashes to compare).
    """
    use_hash = "content_hash" in old.columns and "content_hash" in new.columns \
        and old["content_hash"].notna().any() and new["content_hash"].notna().any()
    old_ids = old["id"].astype(str).to_numpy()
    new_ids = new["id"].astype(str).to_numpy()
    old_position = pd.Series(np.arange(len(old)), index=old_ids)
    old_position = old_position[~old_position.index.duplicated()]
    row_old = old_position.reindex(new_ids).fillna(-1).astype(np.int64).to_numpy(copy=True)
    renamed = np.zeros(len(new), dtype=bool)
    if use_hash:
        old_hash = _column(old, "content_hash")
        new_hash = _column(new, "content_hash")
        used = np.zeros(len(old), dtype=bool)
        used[row_old[row_old >= 0]] = True
        free: dict = {}
        for position in np.flatnonzero(~used):
            if old_hash[position] is not None:
                free.setdefault(old_hash[position], []).append(position)
        for position in np.flatnonzero(row_old < 0):
            candidates = free.get(new_hash[position])
            if candidates:
                row_old[position] = candidates.pop(0)
                renamed[position] = True
    matched = row_old >= 0
    old_matched = np.zeros(len(old), dtype=bool)
    old_matched[row_old[matched]] = True
    removed = np.flatnonzero(~old_matched)
    rows_old = np.concatenate([row_old, removed])
    rows_new = np.concatenate([np.arange(len(new)), np.full(len(removed), -1)])
    pairs = pd.DataFrame({"row_old": rows_old, "row_new": rows_new,
                          "renamed": np.concatenate([renamed, np.zeros(len(removed), dtype=bool)])})
    for name in VERSION_COLUMNS:
        values_old = _column(old, name)
        values_new = _column(new, name)
        pairs[f"{name}_old"] = np.where(rows_old >= 0, values_old[np.maximum(rows_old, 0)] if len(old) else None, None)
        pairs[f"{name}_new"] = np.where(rows_new >= 0, values_new[np.maximum(rows_new, 0)] if len(new) else None, None)
    change = np.full(len(pairs), UNCHANGED, dtype=object)
    both = (rows_old >= 0) & (rows_new >= 0)
    change[rows_old < 0] = ADDED
    change[rows_new < 0] = REMOVED
    relabelled = both & (pairs["label_old"].astype(str).to_numpy() != pairs["label_new"].astype(str).to_numpy())
    change[relabelled] = RELABELLED
    if use_hash:
        pixels_changed = both & (pairs["content_hash_old"].to_numpy() != pairs["content_hash_new"].to_numpy())
        change[pixels_changed] = REPLACED
    pairs["change"] = change
    return pairs, ("content_hash+id" if use_hash else "id")
