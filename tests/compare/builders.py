"""Small generated audit pairs with known ground truth, written by the real label-noise pipeline."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from audit.cli import main
from tests.audit_builder import rewrite_audit_files


def probabilities_for(labels: np.ndarray, correct: np.ndarray, k: int, rng) -> np.ndarray:
    """Probabilities whose arg-max is the label where ``correct`` and another class elsewhere."""
    n = labels.size
    wrong = (labels + rng.integers(1, k, size=n)) % k
    predicted = np.where(correct, labels, wrong)
    top = rng.uniform(0.55, 0.95, size=n)
    probs = np.tile(((1 - top) / (k - 1))[:, None], (1, k))
    probs[np.arange(n), predicted] = top
    return probs


def write_audit(folder: Path, *, ids, labels, probabilities, classes, attributes: dict, content=None, split=None,
                min_group_size: int = 30) -> Path:
    """An audit folder from labels + probabilities (+ attributes); ``content`` (one string per image) gives
    the images a content_hash (sha256 of the string), ``split`` a split column."""
    work = folder.parent / (folder.name + "_inputs")
    work.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": ids, "label": [classes[i] for i in labels]}).to_csv(work / "labels.csv", index=False)
    np.save(work / "probs.npy", probabilities.astype(np.float32))
    (work / "classes.txt").write_text("\n".join(classes) + "\n")
    attributes_file = None
    if attributes:
        pd.DataFrame({"id": ids, **attributes}).to_csv(work / "attributes.csv", index=False)
        attributes_file = str(work / "attributes.csv")
    # through the CLI (the stable interface), then the columns a full `run` would add from the image files
    args = ["label-noise", "--labels", str(work / "labels.csv"), "--predictions", str(work / "probs.npy"),
            "--classes", str(work / "classes.txt"), "--out", str(folder), "--min-group-size", str(min_group_size)]
    if attributes_file:
        args += ["--attributes", attributes_file]
    assert main(args) == 0
    if content is not None or split is not None:
        images = pd.read_parquet(folder / "images.parquet")
        if content is not None:
            images["content_hash"] = [hashlib.sha256(str(c).encode()).hexdigest() for c in content]
        if split is not None:
            images["split"] = list(split)
        rewrite_audit_files(folder, images=images)
    return folder


def planted_pair(root: Path, *, n: int = 2400, drop: float = 0.15, seed: int = 0, k: int = 3,
                 regressed_group: str = "C"):
    """OLD and NEW scoring the same images; NEW is worse by ``drop`` in site = ``regressed_group`` only.

    Accuracy 0.85 everywhere in OLD; NEW keeps each image's outcome with probability 0.8 and redraws it
    otherwise (same accuracy), except in the planted group where its accuracy is 0.85 - drop.
    """
    rng = np.random.default_rng(seed)
    classes = [f"class_{i}" for i in range(k)]
    labels = rng.integers(0, k, size=n)
    site = np.array(["A", "B", "C", "D"])[np.arange(n) % 4]
    age = rng.choice(["young", "old"], size=n)
    correct_old = rng.random(n) < 0.85
    keep = rng.random(n) < 0.8
    target = np.where(site == regressed_group, 0.85 - drop, 0.85)
    redraw = rng.random(n) < target
    # in the planted group the new outcome is drawn with the lower accuracy, correlated with the old one
    # kept outcomes lose (0.85 - drop) / 0.85 of their successes in the planted group, redrawn ones use its
    # lower accuracy: the group's expected accuracy is 0.85 - drop, every other group's stays 0.85
    in_group = site == regressed_group
    demoted = correct_old & (rng.random(n) < (0.85 - drop) / 0.85)
    correct_new = np.where(keep, np.where(in_group, demoted, correct_old), redraw)
    ids = [f"img_{i:05d}.jpg" for i in range(n)]
    attributes = {"site": site, "age": age}
    old = write_audit(root / "old", ids=ids, labels=labels, probabilities=probabilities_for(labels, correct_old, k, rng),
                      classes=classes, attributes=attributes, content=ids)
    new = write_audit(root / "new", ids=ids, labels=labels, probabilities=probabilities_for(labels, correct_new, k, rng),
                      classes=classes, attributes=attributes, content=ids)
    return old, new, {"correct_old": correct_old, "correct_new": correct_new, "site": site, "labels": labels}
