"""Small synthetic data sets and audit folders for the app tests and ``bench/app_latency.py``.

:func:`build_dataset` writes tiny PNG images, a manifest and a predictions file with known structure
(one group whose predictions are worse, a few flipped labels, a group value holding HTML to check that
the app never renders it). :func:`build_audit` runs the real engine on it and writes the audit folder,
so the numbers the app shows can be compared with the engine's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

#: Class names; one holds markup so the app's escaping is exercised.
CLASSES = ("cat", "dog", "<b>fox</b>")
#: A group value with script markup (shown as text, never run).
HTML_GROUP = "<script>alert('x')</script>"


def build_dataset(folder: str | Path, *, n_images: int = 240, seed: int = 0, image_size: int = 12) -> dict:
    """Write ``images/``, ``manifest.csv`` and ``predictions.csv`` into ``folder``.

    Returns ``{"manifest", "predictions", "n_images"}`` (paths as strings).
    """
    folder = Path(folder)
    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    labels = rng.integers(0, k, size=n_images)
    site = rng.choice(["north", "south", HTML_GROUP], size=n_images, p=[0.45, 0.4, 0.15])
    skin = rng.choice(["light", "dark"], size=n_images, p=[0.6, 0.4])
    split = rng.choice(["train", "test"], size=n_images, p=[0.7, 0.3])
    rows = []
    for i in range(n_images):
        # Brightness varies so the pixel attributes form several groups; content differs per image.
        base = int(40 + 180 * (i % 7) / 6)
        pixels = rng.integers(max(base - 30, 0), min(base + 30, 255), size=(image_size, image_size, 3),
                              dtype=np.uint8)
        name = f"img_{i:05d}.png"
        Image.fromarray(pixels, "RGB").save(images_dir / name)
        rows.append({"id": f"img_{i:05d}", "path": f"images/{name}", "label": CLASSES[labels[i]],
                     "split": split[i], "site": site[i], "skin": skin[i]})
    manifest = pd.DataFrame(rows)
    manifest.to_csv(folder / "manifest.csv", index=False)

    # Probabilities: mostly right, clearly worse on skin == dark; a few confident disagreements (label issues).
    logits = rng.normal(0, 1, size=(n_images, k))
    strength = np.where(skin == "dark", 1.0, 3.5)
    logits[np.arange(n_images), labels] += strength
    flipped = rng.choice(n_images, size=max(n_images // 20, 3), replace=False)
    logits[flipped, (labels[flipped] + 1) % k] += 6.0
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predictions = pd.DataFrame(probabilities, columns=list(CLASSES))
    predictions.insert(0, "id", manifest["id"])
    predictions.to_csv(folder / "predictions.csv", index=False, float_format="%.8f")
    return {"manifest": str(folder / "manifest.csv"), "predictions": str(folder / "predictions.csv"),
            "n_images": n_images}


def build_audit(data_folder: str | Path, out: str | Path, *, n_images: int = 240, seed: int = 0,
                n_bootstrap: int = 50) -> Path:
    """Build the data set in ``data_folder`` and write its audit (real engine) into ``out``."""
    from audit.config import AuditConfig
    from audit.pipeline import run_audit
    from audit.folder import write_audit_folder

    files = build_dataset(data_folder, n_images=n_images, seed=seed)
    config = AuditConfig(data=files["manifest"], predictions=files["predictions"], group_by=("site", "skin"),
                         n_bootstrap=n_bootstrap, min_group_size=20, use_cache=False)
    result = run_audit(config)
    return write_audit_folder(out, audit=result.audit, images=result.images, group_metrics=result.group_metrics,
                              probabilities=result.probabilities)
