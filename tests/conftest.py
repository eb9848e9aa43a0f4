"""Shared test set-up.

- The repository root is importable (``pyproject.toml``: ``pythonpath = ["."]``): shared builders are
  imported as ``tests.audit_builder`` (synthetic audit folders), ``tests.helpers`` (CLI runner, contract
  checker) and ``tests.app.*`` (app data and the browser runner); no test edits ``sys.path``.
- Tests leave the working tree as they found it: a session fixture compares ``git status`` before and after
  the run and fails the run when a test wrote into the repository (generated data belongs in ``tmp_path``).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ERROR_TREE_CHANGED = ("the working tree changed during the test run (a test wrote into the repository - write to tmp_path "
                      "instead - or a file was edited meanwhile): {changes}")


def _tree_status() -> str | None:
    """``git status --porcelain`` of the repository, or None outside a git checkout."""
    if shutil.which("git") is None:
        return None
    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    return done.stdout if done.returncode == 0 else None


@pytest.fixture(scope="session", autouse=True)
def working_tree_stays_clean():
    before = _tree_status()
    yield
    after = _tree_status()
    if before is not None and after is not None and after != before:
        changes = sorted(set(after.splitlines()) ^ set(before.splitlines()))
        pytest.fail(ERROR_TREE_CHANGED.format(changes="; ".join(changes[:10])), pytrace=False)


@pytest.fixture(autouse=True, scope="session")
def cache_in_a_temporary_folder(tmp_path_factory):
    """Caches (inference, per-image features) go to a temporary folder, never to the user's ~/.cache."""
    import os

    previous = os.environ.get("IMAGEFAIR_CACHE_DIR")
    os.environ["IMAGEFAIR_CACHE_DIR"] = str(tmp_path_factory.mktemp("imagefair-cache"))
    yield
    if previous is None:
        os.environ.pop("IMAGEFAIR_CACHE_DIR", None)
    else:
        os.environ["IMAGEFAIR_CACHE_DIR"] = previous
