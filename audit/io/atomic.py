"""Atomic file writes: write to a temporary file in the target folder, then rename into place.

A crash leaves either the previous file or the new one, never a half-written file.
"""
from __future__ import annotations

import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


#: An existing target that is not a regular file (or a link) is never replaced: a device node such as
#: /dev/full, a pipe, a socket or a folder.
ERROR_NOT_REGULAR = ("{path} exists and is not a regular file (a device, pipe, socket or folder); it is never "
                     "replaced: give the path of a regular file")


def check_replaceable(path: str | os.PathLike) -> None:
    """Raise :class:`audit.errors.InputError` (:data:`ERROR_NOT_REGULAR`) when ``path`` exists and is neither a
    regular file nor a symbolic link."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        from audit.errors import InputError

        raise InputError(ERROR_NOT_REGULAR.format(path=path), source=str(path))


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error delete it.

    Refuses (:data:`ERROR_NOT_REGULAR`) to replace anything but a regular file or a link, before and again
    just before the rename."""
    target = Path(path)
    check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        # mkstemp creates 0600; give the file the permissions a plain open() would (umask applied).
        os.chmod(temporary_path, 0o666 & ~_umask())
        check_replaceable(target)
        os.replace(temporary_path, target)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


#: Dict levels of a JSON document written one key per line (:func:`dumps_document`); deeper values go on
#: one line each.
DOCUMENT_EXPANDED_LEVELS = 3


def dumps_document(obj, *, expanded_levels: int = DOCUMENT_EXPANDED_LEVELS) -> str:
    """JSON text of a document such as ``audit.json``: the first ``expanded_levels`` levels of dicts one key
    per line (indented by 2), every deeper value compact on its line; ends with a newline.

    ``json.dumps(obj, indent=2)`` runs the pure-Python encoder: for the K x K matrices of a 1000-class audit
    (millions of numbers) that took seconds and tripled the file (60 MB instead of 19 MB). Here each deep
    value is encoded by the C encoder in one call, and the file still reads key by key. ``json.loads`` gives
    back exactly ``obj`` (non-finite floats are refused, as everywhere in the audit folder).
    """
    def encode(value, level: int) -> str:
        if isinstance(value, dict) and value and level < expanded_levels:
            pad = "  " * (level + 1)
            items = [f"{pad}{json.dumps(str(key), ensure_ascii=False)}: {encode(item, level + 1)}"
                     for key, item in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + "  " * level + "}"
        return json.dumps(value, ensure_ascii=False, allow_nan=False)

    return encode(obj, 0) + "\n"


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, dumps_document(obj))


def write_parquet_atomic(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    with atomic_path(path) as temporary:
        frame.to_parquet(temporary, index=False)


def write_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
