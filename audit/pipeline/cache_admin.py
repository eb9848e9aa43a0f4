"""What the cache holds, and clearing it (``imagefair cache info | clear``).

The cache folder (``--cache-dir``, default ``$IMAGEFAIR_CACHE_DIR`` or ``~/.cache/imagefair``) grows with
every data set audited: at 1.28M images x 1,000 classes the model outputs alone are 5 GB. Nothing is
deleted by a run. This module lists the cache by area and deletes entries, all of them or those not used
for some days.

Areas and their entries (the unit that is deleted):

``features``
    ``store/features/<key>/<part>.parquet``: the per-image features of one shard (content hash, pixel
    attributes, perceptual hashes).
``model outputs``
    ``store/outputs/<key>/<part>.parquet`` (the part's content hashes) with its ``<part>.probabilities.npy``
    and ``<part>.embeddings.npy``.
``analysis steps``
    ``steps/<xx>/<key>/``: one analysis step's output for one set of inputs.
``inference (older versions)``
    ``inference/<key>.probabilities.npy`` and ``.embeddings.npy``: whole-data-set model outputs written by
    versions before the feature store; no longer read.
``incomplete writes``
    temporary files and folders of writes that were interrupted (a killed run), and output arrays whose index
    was never written; only those more than :data:`INCOMPLETE_AGE_S` old are counted, so that a write in
    progress is left alone.

Age of an entry: the time it was written or last used (a run that reads a features part, an outputs part or
a step entry sets its modification time to now, see :func:`touch`). Only files and folders named as above are
deleted; anything else in the folder is left alone and never followed through a symbolic link, so a mistyped
``--cache-dir`` cannot delete unrelated files. Clearing while a run uses the same cache can make that run
fail ("the feature store ... was changed during the run"); run it again.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AREAS", "CacheArea", "ClearResult", "cache_usage", "check_older_than", "clear_cache", "touch",
           "INCOMPLETE_AGE_S", "ERROR_OLDER_THAN"]

#: Temporary files of an interrupted write are removed only when older than this (seconds): a write in
#: progress by a running audit is younger.
INCOMPLETE_AGE_S = 3600.0

ERROR_OLDER_THAN = "--older-than must be a number of days >= 0, got {value!r}"

AREAS = ("features", "model outputs", "analysis steps", "inference (older versions)", "incomplete writes")

_KEY = re.compile(r"^[0-9a-f]{16,64}$")
_PART = re.compile(r"^[0-9a-f]{32}$")
_TEMPORARY = re.compile(r"^\..+\.tmp$")


@dataclass(frozen=True)
class CacheArea:
    """One area of the cache.

    Attributes
    ----------
    name : str
        One of :data:`AREAS`.
    entries : int
        Entries (a part, a step's output, an array pair, a leftover temporary).
    bytes : int
        Their size on disk (apparent size of the files).
    oldest, newest : float or None
        Modification times (seconds since the epoch) of the least and most recently written or used entry.
    """

    name: str
    entries: int
    bytes: int
    oldest: float | None
    newest: float | None


@dataclass(frozen=True)
class ClearResult:
    """What :func:`clear_cache` deleted: entries and bytes per area (areas with nothing deleted omitted)."""

    entries: dict
    bytes: dict

    @property
    def total_entries(self) -> int:
        return int(sum(self.entries.values()))

    @property
    def total_bytes(self) -> int:
        return int(sum(self.bytes.values()))


@dataclass(frozen=True)
class _Entry:
    area: str
    paths: tuple          # files or folders deleted together (the first one gives the age)
    age_path: Path
    size: int
    mtime: float


def touch(path: str | os.PathLike) -> None:
    """Mark a cache entry as used now (its modification time), best effort: a read-only cache is fine."""
    try:
        os.utime(path)
    except OSError:
        pass


def _lstat(path: Path):
    try:
        return os.lstat(path)
    except OSError:
        return None


def _is_dir(path: Path) -> bool:
    info = _lstat(path)
    return info is not None and stat.S_ISDIR(info.st_mode)


def _is_file(path: Path) -> bool:
    info = _lstat(path)
    return info is not None and stat.S_ISREG(info.st_mode)


def _children(folder: Path) -> list[Path]:
    if not _is_dir(folder):
        return []
    try:
        return sorted(Path(entry.path) for entry in os.scandir(folder))
    except OSError:
        return []


def _tree_size(folder: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            info = _lstat(Path(root) / name)
            if info is not None and stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def _entries(cache_dir: Path, now: float) -> list[_Entry]:
    """Every entry of the known layout under ``cache_dir`` (nothing followed through a symbolic link)."""
    found: list[_Entry] = []

    def add(area: str, paths: list[Path], age_path: Path) -> None:
        info = _lstat(age_path)
        if info is None:
            return
        size = 0
        for path in paths:
            if _is_dir(path):
                size += _tree_size(path)
            elif _is_file(path):
                size += _lstat(path).st_size
        found.append(_Entry(area, tuple(paths), age_path, size, info.st_mtime))

    def leftover(path: Path) -> None:
        info = _lstat(path)
        if info is not None and now - info.st_mtime > INCOMPLETE_AGE_S:
            add("incomplete writes", [path], path)

    store = cache_dir / "store"
    for key_dir in _children(store / "features"):
        if not (_is_dir(key_dir) and _KEY.match(key_dir.name)):
            continue
        for path in _children(key_dir):
            if _TEMPORARY.match(path.name) and _is_file(path):
                leftover(path)
            elif path.suffix == ".parquet" and _PART.match(path.stem) and _is_file(path):
                add("features", [path], path)
    for key_dir in _children(store / "outputs"):
        if not (_is_dir(key_dir) and _KEY.match(key_dir.name)):
            continue
        indexed = set()
        for path in _children(key_dir):
            if path.suffix == ".parquet" and _PART.match(path.stem) and _is_file(path):
                indexed.add(path.stem)
                arrays = [key_dir / f"{path.stem}.probabilities.npy", key_dir / f"{path.stem}.embeddings.npy"]
                # the index first: once it is gone, readers no longer see the part
                add("model outputs", [path] + [a for a in arrays if _is_file(a)], path)
        for path in _children(key_dir):
            if _TEMPORARY.match(path.name) and _is_file(path):
                leftover(path)
            elif path.name.endswith(".npy") and _is_file(path):
                stem = path.name.split(".", 1)[0]
                if _PART.match(stem) and stem not in indexed:
                    leftover(path)  # arrays whose index was never written (a run killed between the two)
    for shard_dir in _children(cache_dir / "steps"):
        if not (_is_dir(shard_dir) and re.fullmatch(r"[0-9a-f]{2}", shard_dir.name)):
            continue
        for path in _children(shard_dir):
            if _TEMPORARY.match(path.name) and _is_dir(path):
                leftover(path)
            elif _is_dir(path) and _KEY.match(path.name) and path.name.startswith(shard_dir.name):
                entry_file = path / "entry.json"
                add("analysis steps", [path], entry_file if _is_file(entry_file) else path)
    inference = cache_dir / "inference"
    for path in _children(inference):
        if _TEMPORARY.match(path.name) and _is_file(path):
            leftover(path)
        elif path.name.endswith(".probabilities.npy") and _KEY.match(path.name.split(".", 1)[0]) and _is_file(path):
            embeddings = inference / path.name.replace(".probabilities.npy", ".embeddings.npy")
            add("inference (older versions)", [path] + ([embeddings] if _is_file(embeddings) else []), path)
    return found


def check_older_than(older_than_days) -> float | None:
    """``older_than_days`` as a float (None stays None); :class:`audit.errors.InputError`
    (:data:`ERROR_OLDER_THAN`) unless it is a finite number >= 0."""
    if older_than_days is None:
        return None
    from audit.errors import InputError

    try:
        value = float(older_than_days)
    except (TypeError, ValueError):
        raise InputError(ERROR_OLDER_THAN.format(value=older_than_days)) from None
    if not value >= 0 or value == float("inf"):
        raise InputError(ERROR_OLDER_THAN.format(value=older_than_days))
    return value


def cache_usage(cache_dir: str | os.PathLike, *, now: float | None = None) -> tuple[CacheArea, ...]:
    """Entries, size and age range of each area of the cache at ``cache_dir`` (every area, in :data:`AREAS`
    order; a missing folder gives empty areas)."""
    now = time.time() if now is None else now
    entries = _entries(Path(cache_dir), now)
    areas = []
    for name in AREAS:
        mine = [e for e in entries if e.area == name]
        areas.append(CacheArea(name=name, entries=len(mine), bytes=int(sum(e.size for e in mine)),
                               oldest=min((e.mtime for e in mine), default=None),
                               newest=max((e.mtime for e in mine), default=None)))
    return tuple(areas)


def clear_cache(cache_dir: str | os.PathLike, *, older_than_days: float | None = None,
                now: float | None = None) -> ClearResult:
    """Delete the cache's entries (all, or those written or last used more than ``older_than_days`` ago).

    Parameters
    ----------
    cache_dir : path
        The cache folder. Only entries of the layout in this module's docstring are deleted.
    older_than_days : float, optional
        Keep entries whose modification time is within this many days of ``now``. Incomplete writes are
        always deleted (they are at least :data:`INCOMPLETE_AGE_S` old).
    now : float, optional
        The current time (seconds since the epoch; for tests).

    Returns
    -------
    ClearResult
    """
    limit = check_older_than(older_than_days)
    now = time.time() if now is None else now
    deleted: dict = {}
    sizes: dict = {}
    for entry in _entries(Path(cache_dir), now):
        if limit is not None and entry.area != "incomplete writes" and now - entry.mtime <= limit * 86400.0:
            continue
        removed = False
        for path in entry.paths:
            try:
                if _is_dir(path):
                    # renamed first, so a reader sees the whole entry or none of it
                    hidden = path.with_name(f".{path.name}.deleting.tmp")
                    os.rename(path, hidden)
                    shutil.rmtree(hidden, ignore_errors=True)
                else:
                    os.unlink(path)
                removed = True
            except FileNotFoundError:
                continue
            except OSError:
                break  # not ours to delete (permissions): the rest of the entry stays too
        if removed:
            deleted[entry.area] = deleted.get(entry.area, 0) + 1
            sizes[entry.area] = sizes.get(entry.area, 0) + entry.size
    for folder in (Path(cache_dir) / "store" / "features", Path(cache_dir) / "store" / "outputs"):
        for key_dir in _children(folder):  # key folders left empty
            if _is_dir(key_dir) and _KEY.match(key_dir.name) and not _children(key_dir):
                try:
                    key_dir.rmdir()
                except OSError:
                    pass
    return ClearResult(entries=deleted, bytes=sizes)
