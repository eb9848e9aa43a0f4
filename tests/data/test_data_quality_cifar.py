"""Known-answer test on real images: the 10,000 CIFAR-10 test JPEGs with planted copies and defects.

Skipped when ../shared/data is absent. Planted: exact copies, 0.5x and 2x resizes, JPEG re-encodes at
quality 50, 95 % crops (at a random offset), 90 % crops (centred, and at a random offset), dark, blurry
and tiny images; the planted copies get the other split than their source, so every found copy is
leakage. No embeddings are used: every copy is found by the perceptual hashes alone.

Precision counts the links that touch a planted copy. A link is right when it joins the copy to its source
or to an image that the detector links to the source among the untouched originals: CIFAR-10's test set
holds genuine near-duplicates of its own (e.g. a series of nearly identical white cars), and a copy of one
of them rightly joins the others. The strict figure (source only) is checked too, with a lower bar.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from audit.analysis.data_quality import HASH_COLUMNS, find_data_quality_issues
from audit.analysis.hashing import compute_perceptual_hashes
from audit.analysis.image_properties import compute_image_properties

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10-test-jpeg" / "test"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/cifar10-test-jpeg is absent")

TRANSFORMS = ("exact", "half", "double", "jpeg50", "crop95", "crop90_centred", "crop90_offset")
N_PER_TRANSFORM = 200


def row_for(rgb: np.ndarray, data: bytes, **fields) -> dict:
    row = dict(fields, content_hash=hashlib.sha256(data).hexdigest())
    row.update(compute_image_properties(rgb))
    row.update(compute_perceptual_hashes(rgb))
    return row


def encode(image: Image.Image, fmt="PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def transformed(image: Image.Image, kind: str, rng) -> Image.Image:
    w, h = image.size
    if kind == "half":
        return image.resize((w // 2, h // 2), Image.Resampling.BILINEAR)
    if kind == "double":
        return image.resize((w * 2, h * 2), Image.Resampling.BICUBIC)
    if kind == "jpeg50":
        return Image.open(io.BytesIO(encode(image, "JPEG", quality=50))).convert("RGB")
    if kind in ("crop95", "crop90_offset", "crop90_centred"):
        fraction = 0.95 if kind == "crop95" else 0.90
        cw, ch = round(w * fraction), round(h * fraction)
        if kind == "crop90_centred":
            x, y = (w - cw) // 2, (h - ch) // 2
        else:
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return image.crop((x, y, x + cw, y + ch))
    raise ValueError(kind)


@pytest.fixture(scope="module")
def cifar():
    rng = np.random.default_rng(2026)
    files = sorted(DATA.glob("*/*.jpg"))
    assert len(files) == 10_000
    splits = np.where(rng.random(len(files)) < 0.8, "train", "test")
    rows, raw = [], []
    for k, path in enumerate(files):
        data = path.read_bytes()
        image = Image.open(io.BytesIO(data)).convert("RGB")
        raw.append(image)
        rows.append(row_for(np.asarray(image), data, id=str(path.relative_to(DATA)), label=path.parent.name,
                            split=splits[k]))
    n_originals = len(rows)
    sources = rng.choice(n_originals, size=N_PER_TRANSFORM * len(TRANSFORMS) + 300, replace=False)
    copies = []  # (source, copy, kind)
    for t, kind in enumerate(TRANSFORMS):
        for source in sources[t * N_PER_TRANSFORM:(t + 1) * N_PER_TRANSFORM]:
            other_split = "test" if rows[source]["split"] == "train" else "train"
            if kind == "exact":
                data = (DATA / rows[source]["id"]).read_bytes()
                rgb = np.asarray(raw[source])
            else:
                image = transformed(raw[source], kind, rng)
                data, rgb = encode(image), np.asarray(image)
            rows.append(row_for(rgb, data, id=f"{kind}/{source}", label=rows[source]["label"], split=other_split))
            copies.append((int(source), len(rows) - 1, kind))
    defects = {"dark": [], "blurry": [], "odd_size": []}
    rest = sources[N_PER_TRANSFORM * len(TRANSFORMS):]
    for name, chunk in zip(defects, np.array_split(rest, 3)):
        for source in chunk:
            image = raw[source]
            if name == "dark":
                image = Image.fromarray((np.asarray(image).astype(np.float32) * 0.08).astype(np.uint8))
            elif name == "blurry":
                image = image.filter(ImageFilter.GaussianBlur(2))
            else:
                image = image.resize((8, 8), Image.Resampling.BOX)
            # A defect made from an image is also its near copy; keep defects separate from duplicates by
            # flipping it (a mirror image is a different picture for the hashes).
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            rows.append(row_for(np.asarray(image), encode(image), id=f"{name}/{source}",
                                label=rows[source]["label"], split=rows[source]["split"]))
            defects[name].append(len(rows) - 1)
    table = pd.DataFrame(rows)
    for column in HASH_COLUMNS:
        table[column] = np.array([int(v) for v in table[column]], dtype=np.uint64)
    result = find_data_quality_issues(table, group_labels={"split": table["split"]})
    originals = find_data_quality_issues(table.iloc[:n_originals].reset_index(drop=True))
    return table, result, originals, copies, defects, n_originals


def precision_recall(result, originals, copies, kind):
    pairs = set(zip(result.pairs["i"].tolist(), result.pairs["j"].tolist()))
    own_set = originals.per_image["duplicate_set"]
    mine = [(s, c) for s, c, k in copies if k == kind]
    found = sum((min(s, c), max(s, c)) in pairs for s, c in mine)
    source_of = {c: s for s, c in mine}
    copy_of_source = {}
    for s, c, _ in copies:
        copy_of_source.setdefault(s, set()).add(c)
    right = wrong = strict_right = 0
    for i, j in pairs:
        for copy, other in ((i, j), (j, i)):
            if copy not in source_of:
                continue
            source = source_of[copy]
            if other == source or other in copy_of_source.get(source, ()):
                right += 1
                strict_right += 1
                continue
            # Another image of the source's own near-duplicate set among the originals, or a copy of one.
            target = other if other < len(own_set) else next(
                (s for s, cs in copy_of_source.items() if other in cs), None)
            same_set = (target is not None and pd.notna(own_set[source]) and pd.notna(own_set[target])
                        and own_set[source] == own_set[target])
            right += same_set
            wrong += not same_set
    return found / len(mine), right / max(right + wrong, 1), strict_right / max(right + wrong, 1)


@pytest.mark.parametrize("kind", TRANSFORMS)
def test_planted_copies_found(cifar, kind):
    _, result, originals, copies, _, _ = cifar
    recall, precision, strict = precision_recall(result, originals, copies, kind)
    print(f"{kind}: recall={recall:.3f} precision={precision:.3f} strict_precision={strict:.3f}")
    if kind == "exact":
        assert recall == 1.0
    assert recall >= 0.9
    assert precision >= 0.95
    assert strict >= 0.9


def test_exact_copies_flagged_as_exact(cifar):
    _, result, _, copies, _, _ = cifar
    flags = result.per_image["is_exact_duplicate_issue"]
    exact = [(s, c) for s, c, k in copies if k == "exact"]
    assert all(flags[s] and flags[c] for s, c in exact)
    # No two distinct CIFAR files have the same bytes.
    assert int(flags.sum()) == 2 * len(exact)


@pytest.mark.parametrize("defect", ["dark", "blurry", "odd_size"])
def test_planted_defects_flagged(cifar, defect):
    table, result, _, _, defects, n_originals = cifar
    flags = result.per_image[f"is_{defect}_issue"]
    assert flags[defects[defect]].all()
    # Few untouched CIFAR images carry the defect (dark, blurry and odd size are rare in CIFAR-10).
    assert flags[:n_originals].mean() < 0.01


def test_planted_copies_across_splits_are_leakage(cifar):
    table, result, originals, copies, _, _ = cifar
    listed = {(p["id_a"], p["id_b"]) for p in result.leakage["pairs"]}
    pairs = set(zip(result.pairs["i"].tolist(), result.pairs["j"].tolist()))
    found = [(s, c) for s, c, _ in copies if (min(s, c), max(s, c)) in pairs]
    assert all((table["id"][s], table["id"][c]) in listed for s, c in found)
    assert result.leakage["n_pairs"] >= len(found)
    assert {e["split_a"] for e in result.leakage["by_split_pair"]} == {"test"}
    print("leakage pairs:", result.leakage["n_pairs"], "planted found:", len(found),
          "links among untouched originals:", len(originals.pairs))


def test_few_links_among_untouched_originals(cifar):
    # The extra corner-crop alignments must not link more of the untouched CIFAR-10 test images than the
    # whole/centre rule alone did (130 links, many of them genuine near-duplicates in CIFAR-10 itself).
    _, _, originals, _, _, n_originals = cifar
    assert len(originals.pairs) <= 130
    assert originals.per_image["is_near_duplicate_issue"].mean() < 0.03
