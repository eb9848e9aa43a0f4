"""Perceptual hashes: robustness to resizing, JPEG and small crops; distinct images far apart."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from audit.analysis.hashing import ERROR_NOT_RGB, HASH_NAMES, compute_perceptual_hashes, hamming_distance


def synthetic_image(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A smooth colour field with a few random shapes: structured like a photo, different for every seed."""
    field = rng.normal(128, 60, size=(4, 4, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(field).resize((size, size), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = rng.integers(0, size - 8, 2)
        x1, y1 = x0 + rng.integers(6, size // 2), y0 + rng.integers(6, size // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((int(x0), int(y0), int(x1), int(y1)), fill=colour)
    return np.asarray(image)


def resized(rgb, factor):
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((round(w * factor), round(h * factor)), Image.Resampling.BICUBIC))


def jpeg(rgb, quality):
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def crop(rgb, fraction, x, y):
    h, w = rgb.shape[:2]
    ch, cw = round(h * fraction), round(w * fraction)
    return rgb[y:y + ch, x:x + cw]


def test_returns_every_hash_as_a_64_bit_int():
    hashes = compute_perceptual_hashes(synthetic_image(np.random.default_rng(0)))
    assert tuple(hashes) == HASH_NAMES
    for value in hashes.values():
        assert isinstance(value, int) and 0 <= value < 2 ** 64
    np.array(list(hashes.values()), dtype=np.uint64)  # fits the column type


def test_deterministic_and_identical_for_identical_pixels():
    image = synthetic_image(np.random.default_rng(1))
    assert compute_perceptual_hashes(image) == compute_perceptual_hashes(image.copy())


def test_phash_uses_all_bits_half_set():
    # Bits are "above the median" of 64 coefficients: exactly half are set for an image with detail.
    hashes = compute_perceptual_hashes(synthetic_image(np.random.default_rng(2)))
    assert bin(hashes["phash"]).count("1") == 32


@pytest.mark.parametrize("transform, max_bits", [
    (lambda im: resized(im, 0.5), 4),
    (lambda im: resized(im, 2.0), 4),
    (lambda im: jpeg(im, 50), 6),
])
def test_phash_survives_resizing_and_jpeg(transform, max_bits):
    rng = np.random.default_rng(3)
    distances = []
    for _ in range(20):
        image = synthetic_image(rng)
        distances.append(int(hamming_distance(compute_perceptual_hashes(image)["phash"],
                                              compute_perceptual_hashes(transform(image))["phash"])))
    assert np.median(distances) <= max_bits / 2
    assert max(distances) <= max_bits * 2


def test_centre_hash_brings_crops_closer():
    rng = np.random.default_rng(4)
    whole, best = [], []
    for _ in range(30):
        image = synthetic_image(rng)
        copy = crop(image, 0.95, int(rng.integers(0, 4)), int(rng.integers(0, 4)))
        a, b = compute_perceptual_hashes(image), compute_perceptual_hashes(copy)
        d_whole = int(hamming_distance(a["phash"], b["phash"]))
        d_best = min(d_whole, int(hamming_distance(a["phash_centre"], b["phash"])),
                     int(hamming_distance(a["phash"], b["phash_centre"])))
        whole.append(d_whole)
        best.append(d_best)
    assert np.mean(best) <= np.mean(whole)
    assert np.percentile(best, 90) <= 16


def test_unrelated_images_are_far_apart():
    rng = np.random.default_rng(5)
    hashes = [compute_perceptual_hashes(synthetic_image(rng)) for _ in range(40)]
    for name in ("phash", "dhash", "chash"):
        values = np.array([h[name] for h in hashes], dtype=np.uint64)
        distances = hamming_distance(values[:, None], values[None, :])[np.triu_indices(len(values), 1)]
        assert np.median(distances) >= 20, name


def test_hamming_distance_counts_bits():
    assert int(hamming_distance(0, 2 ** 64 - 1)) == 64
    assert int(hamming_distance(0b1011, 0b0001)) == 2
    assert hamming_distance([1, 3], [1, 0]).tolist() == [0, 2]


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 300, 3), (300, 2, 3), (1000, 700, 3)])
def test_any_size_works(shape):
    rng = np.random.default_rng(6)
    hashes = compute_perceptual_hashes(rng.integers(0, 256, size=shape, dtype=np.uint8))
    assert set(hashes) == set(HASH_NAMES)


def test_flat_image_hashes_to_zero_bits_above_median():
    hashes = compute_perceptual_hashes(np.full((32, 32, 3), 90, dtype=np.uint8))
    assert hashes["phash"] == 0 and hashes["dhash"] == 0


@pytest.mark.parametrize("bad", [np.zeros((8, 8), dtype=np.uint8), np.zeros((8, 8, 4), dtype=np.uint8),
                                 np.zeros((8, 8, 3), dtype=np.float32), np.zeros((0, 8, 3), dtype=np.uint8)])
def test_rejects_non_rgb_arrays(bad):
    with pytest.raises(ValueError) as error:
        compute_perceptual_hashes(bad)
    assert str(error.value) == ERROR_NOT_RGB.format(shape=bad.shape, dtype=bad.dtype)


def test_corner_hashes_are_the_hashes_of_the_corner_crops():
    # The nw/se corner hashes of an image equal the whole-image hashes of its 90 % top-left/bottom-right crop.
    image = synthetic_image(np.random.default_rng(7), size=60)
    hashes = compute_perceptual_hashes(image)
    for corner, (x, y) in (("nw", (0, 0)), ("se", (6, 6))):
        crop_hashes = compute_perceptual_hashes(crop(image, 0.9, x, y))
        for name in ("phash", "dhash", "chash"):
            assert hashes[f"{name}_{corner}"] == crop_hashes[name]


@pytest.mark.parametrize("size", [32, 64, 96])
def test_corner_hashes_bring_off_centre_90_percent_crops_closer(size):
    # A 90 % crop at a random offset is at most half the margin away from one of the four corner crops: its
    # best corner is nearer than the whole original and than the best whole/centre alignment. (Whether it is
    # near enough to be linked is tested with the link rule in tests/test_data_quality.py.)
    rng = np.random.default_rng(8)
    whole, centre, corner = [], [], []
    margin = size - round(size * 0.9)
    for _ in range(40):
        image = synthetic_image(rng, size=size)
        copy = crop(image, 0.9, int(rng.integers(0, margin + 1)), int(rng.integers(0, margin + 1)))
        a, b = compute_perceptual_hashes(image), compute_perceptual_hashes(copy)
        whole.append(int(hamming_distance(a["phash"], b["phash"])))
        centre.append(min(whole[-1], int(hamming_distance(a["phash_centre"], b["phash"])),
                          int(hamming_distance(a["phash"], b["phash_centre"]))))
        corner.append(min(int(hamming_distance(a[f"phash_{c}"], b["phash"])) for c in ("nw", "ne", "sw", "se")))
    assert np.mean(corner) < np.mean(centre) <= np.mean(whole)
    assert np.median(corner) <= 12
