"""Writes the audit folder exactly as ``contract.md`` defines it: every file atomically, nothing else touched."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.io.atomic import write_json_atomic, write_npy_atomic, write_parquet_atomic
from audit.schema import validate_audit

ERROR_OUT_IS_FILE = "--out {path} is a file; give a folder (it is created if missing)"

CONTRACT_FILES = ("audit.json", "images.parquet", "group_metrics.parquet", "probabilities.npy")


def to_json_safe(value):
    """Recursively convert numpy scalars/arrays and non-finite floats (to None) so ``json`` accepts them."""
    if isinstance(value, dict):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_safe(value.tolist())
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_audit_folder(out: str | Path, *, audit: dict, images: pd.DataFrame, group_metrics: pd.DataFrame,
                       probabilities: np.ndarray | None) -> Path:
    """Write the contract files into ``out``; return the folder.

    ``audit.json`` is validated against the shipped JSON Schema before anything is written and is written
    last, so a reader that sees a new ``audit.json`` also sees the matching tables. A ``probabilities.npy``
    left from an earlier run is removed when this audit has none (it would contradict the new tables);
    every other file in the folder is kept.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(ERROR_OUT_IS_FILE.format(path=folder))
    folder.mkdir(parents=True, exist_ok=True)
    audit = to_json_safe(audit)
    validate_audit(audit)
    json.dumps(audit, allow_nan=False)
    if probabilities is not None:
        write_npy_atomic(folder / "probabilities.npy", np.ascontiguousarray(probabilities, dtype=np.float32))
    else:
        (folder / "probabilities.npy").unlink(missing_ok=True)
    write_parquet_atomic(folder / "images.parquet", images)
    write_parquet_atomic(folder / "group_metrics.parquet", group_metrics)
    write_json_atomic(folder / "audit.json", audit)
    return folder
