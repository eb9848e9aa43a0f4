"""Small generated data sets with known ground truth, shared by the engine tests."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CHECKER = REPO.parent / "shared" / "tools" / "check_audit_folder.py"


def write_manifest_dataset(folder: Path, *, n_per_cell: int = 20, seed: int = 0, classes=("cat", "dog"),
                           groups=("a", "b"), size: int = 24) -> Path:
    """A CSV manifest of small random PNGs: every class x group cell holds ``n_per_cell`` images.

    Group ``b`` images are darker, so pixel attributes differ by group. Returns the manifest path.
    """
    rng = np.random.default_rng(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    k = 0
    for label in classes:
        for group in groups:
            for _ in range(n_per_cell):
                base = 60 if group == "b" else 160
                pixels = np.clip(rng.normal(base, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
                name = f"img_{k:04d}.png"
                Image.fromarray(pixels).save(images / name)
                rows.append({"id": f"i{k}", "path": f"images/{name}", "label": label, "site": group,
                             "age": ["young", "old"][k % 2]})
                k += 1
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def write_predictions_csv(manifest: Path, out: Path, *, accuracy_by_group: dict, seed: int = 0,
                          classes=("cat", "dog")) -> Path:
    """Probabilities whose argmax is right with the given accuracy in each ``site`` group."""
    rng = np.random.default_rng(seed)
    table = pd.read_csv(manifest)
    rows = []
    for _, row in table.iterrows():
        right = rng.random() < accuracy_by_group[row["site"]]
        target = row["label"] if right else [c for c in classes if c != row["label"]][0]
        confidence = rng.uniform(0.6, 0.99)
        probabilities = {c: (confidence if c == target else (1 - confidence) / (len(classes) - 1)) for c in classes}
        rows.append({"id": row["id"], **probabilities})
    pd.DataFrame(rows).to_csv(out, index=False)
    return out


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m audit ARGS`` in a subprocess; returns the completed process (text output)."""
    import os

    environment = dict(os.environ)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "audit", *args], cwd=cwd or REPO, capture_output=True, text=True,
                          env=environment, timeout=600)


def check_folder(folder: Path) -> tuple[int, str]:
    """Run the shared contract checker; returns (exit code, output).

    The checker lives beside the repository (``../shared/tools``), present on developer machines and in CI;
    without it a smaller check runs: the shipped JSON Schema, the tables' columns and their row counts.
    """
    if not CHECKER.is_file():
        return _fallback_check(folder)
    done = subprocess.run([sys.executable, str(CHECKER), str(folder)], capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def _fallback_check(folder: Path) -> tuple[int, str]:
    import json

    from audit.analysis._table import GROUP_METRIC_COLUMNS
    from audit.schema import validate_audit

    problems = []
    try:
        audit = json.loads((folder / "audit.json").read_text())
        validate_audit(audit)
        images = pd.read_parquet(folder / "images.parquet")
        groups = pd.read_parquet(folder / "group_metrics.parquet")
        if list(groups.columns) != list(GROUP_METRIC_COLUMNS):
            problems.append(f"group_metrics columns {list(groups.columns)}")
        if not {"id", "path", "label"} <= set(images.columns) or images["id"].duplicated().any():
            problems.append("images.parquet lacks id/path/label or has duplicate ids")
        if (folder / "probabilities.npy").exists():
            shape = np.load(folder / "probabilities.npy", mmap_mode="r").shape
            if shape != (len(images), len(audit["classes"])):
                problems.append(f"probabilities.npy shape {shape}")
    except Exception as error:  # noqa: BLE001 - reported as a failed check
        problems.append(f"{type(error).__name__}: {error}")
    return (1 if problems else 0), "\n".join(problems) or "ok (fallback check: ../shared/tools is absent)"
