"""On-disk cache of model outputs for a whole data set, keyed by what determines them.

The key is the sha256 of the images' content hashes (in row order), the model file's sha256 and the
preprocessing. Two ``.npy`` files per key (``<key>.probabilities.npy``, ``<key>.embeddings.npy``) are
written atomically, never pickled; a model without embeddings stores an ``(n, 0)`` array. A missing,
truncated or otherwise unreadable entry is a miss, never an error.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from audit.io.atomic import write_npy_atomic

__all__ = ["CACHE_FORMAT_VERSION", "default_cache_dir", "inference_cache_key", "load_cached", "store_cached"]

#: Bumped whenever what is stored (or how it is computed) changes, so old entries stop matching.
CACHE_FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$IMAGEFAIR_CACHE_DIR`` if set, else ``~/.cache/imagefair``."""
    configured = os.environ.get("IMAGEFAIR_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "imagefair"


def inference_cache_key(*, content_hashes: list[str], model_sha256: str, preprocessing: dict) -> str:
    """Hex sha256 identifying one inference run.

    Parameters
    ----------
    content_hashes : list of str
        sha256 of each image file, in the row order of the cached arrays (order matters).
    model_sha256 : str
        sha256 of the model file.
    preprocessing : dict
        ``Preprocessing.to_dict()`` (class names included).
    """
    digest = hashlib.sha256()
    header = {"version": CACHE_FORMAT_VERSION, "model_sha256": model_sha256, "preprocessing": preprocessing,
              "n": len(content_hashes)}
    digest.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    for content_hash in content_hashes:
        digest.update(b"\n")
        digest.update(str(content_hash).encode("ascii"))
    return digest.hexdigest()


def _paths(cache_dir: str | os.PathLike, key: str) -> tuple[Path, Path]:
    folder = Path(cache_dir) / "inference"
    return folder / f"{key}.probabilities.npy", folder / f"{key}.embeddings.npy"


def load_cached(cache_dir: str | os.PathLike, key: str, *, n_rows: int | None = None
                ) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The cached ``(probabilities, embeddings or None)`` for ``key``, or None on a miss.

    A miss is: no entry, an unreadable or corrupt file, wrong dtypes or shapes, non-finite values, or a
    row count different from ``n_rows`` (when given).
    """
    probabilities_path, embeddings_path = _paths(cache_dir, key)
    try:
        probabilities = np.load(probabilities_path, allow_pickle=False)
        embeddings = np.load(embeddings_path, allow_pickle=False)
    except Exception:  # noqa: BLE001 - any unreadable entry (truncated, garbage, wrong format) is a miss
        return None
    if (probabilities.dtype != np.float32 or probabilities.ndim != 2 or embeddings.dtype != np.float32
            or embeddings.ndim != 2 or embeddings.shape[0] != probabilities.shape[0]):
        return None
    if n_rows is not None and probabilities.shape[0] != n_rows:
        return None
    if not np.isfinite(probabilities).all() or not np.isfinite(embeddings).all():
        return None
    return probabilities, (embeddings if embeddings.shape[1] > 0 else None)


def store_cached(cache_dir: str | os.PathLike, key: str, probabilities: np.ndarray,
                 embeddings: np.ndarray | None) -> None:
    """Write an entry atomically (embeddings first, so a present probabilities file means a whole entry)."""
    probabilities = np.ascontiguousarray(probabilities, dtype=np.float32)
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be 2-D, got shape {probabilities.shape}")
    if embeddings is None:
        embeddings = np.zeros((probabilities.shape[0], 0), dtype=np.float32)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != probabilities.shape[0]:
        raise ValueError(f"embeddings must be (n, D) with n = {probabilities.shape[0]}, got {embeddings.shape}")
    probabilities_path, embeddings_path = _paths(cache_dir, key)
    write_npy_atomic(embeddings_path, embeddings)
    write_npy_atomic(probabilities_path, probabilities)
