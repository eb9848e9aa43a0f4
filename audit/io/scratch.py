"""Working folders of a run (temporary stores, on-disk probabilities, known hashes for the workers).

A run deletes its working folders when it ends, but a run that is killed (``kill -9``, the machine's
out-of-memory killer, a closed terminal) cannot: at a million images its on-disk probabilities alone are
5 GB. :func:`make_scratch_dir` therefore names each folder after the process that made it
(``imagefair-<what>-<pid>-<random>``) and, before making a new one, deletes the folders in the same place
whose process is no longer running. A folder whose process id is in use again is left alone (at worst it is
deleted later), and so is anything not named this way.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

_NAME = re.compile(r"^imagefair-(?P<what>[a-z]+)-(?P<pid>[0-9]+)-[A-Za-z0-9_]+$")


def _running(pid: int) -> bool:
    """Whether a process with this id exists on this machine (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def sweep_stale(parent: str | os.PathLike | None = None) -> list[Path]:
    """Delete the working folders under ``parent`` (default: the system's temporary folder) left by runs
    that are no longer running, and return them. Folders of other users are never touched."""
    parent = Path(parent if parent is not None else tempfile.gettempdir())
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    uid = os.getuid() if hasattr(os, "getuid") else None
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None or int(match["pid"]) == os.getpid():
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if uid is not None and entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        if not _running(int(match["pid"])):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def make_scratch_dir(what: str, *, dir: str | os.PathLike | None = None) -> Path:  # noqa: A002 - tempfile's name
    """A new working folder ``imagefair-<what>-<pid>-<random>`` under ``dir`` (default: the system's
    temporary folder), after deleting the stale ones there (:func:`sweep_stale`). The caller deletes it."""
    if not re.fullmatch(r"[a-z]+", what):
        raise ValueError(f"what must be lower-case letters, got {what!r}")
    sweep_stale(dir)
    return Path(tempfile.mkdtemp(prefix=f"imagefair-{what}-{os.getpid()}-", dir=dir))
