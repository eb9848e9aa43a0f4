"""Tests of audit.io.images: safe decoding, RGB conversion of every mode, counted skips, ordered iteration."""
from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile

import audit  # noqa: F401  (importing the package must not switch on truncated-image loading)
from audit.errors import AuditError
from audit.io import images as im
from audit.io.images import DecodedImage, ImageSkip, iter_images, read_image
from audit.types import SkipEntry

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR_JPEG = SHARED_DATA / "cifar10-test-jpeg" / "test"


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def _noise(size=(64, 48), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _skip_reason(path, **kwargs) -> str:
    with pytest.raises(ImageSkip) as caught:
        read_image(path, **kwargs)
    assert str(caught.value) == caught.value.reason
    return caught.value.reason


def test_truncated_loading_stays_off():
    assert audit is not None
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_loading_switched_on_elsewhere_is_refused(tmp_path, monkeypatch):
    path = _save(Image.new("RGB", (4, 4)), tmp_path / "a.png")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(AuditError) as caught:
        read_image(path)
    assert str(caught.value) == im.ERROR_TRUNCATED_LOADING_ON


def test_read_rgb_png_hash_and_size(tmp_path):
    source = _noise()
    path = _save(source, tmp_path / "a.png")
    decoded = read_image(path)
    assert isinstance(decoded, DecodedImage)
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape == (48, 64, 3)
    np.testing.assert_array_equal(decoded.rgb, np.asarray(source))
    assert decoded.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (decoded.width, decoded.height, decoded.mode, decoded.n_bytes) == (64, 48, "RGB", path.stat().st_size)
    assert decoded.is_grayscale_mode is False


@pytest.mark.parametrize("mode, suffix", [("L", ".png"), ("1", ".png"), ("LA", ".png"), ("P", ".png"),
                                          ("RGBA", ".png"), ("CMYK", ".jpg"), ("RGB", ".webp"), ("P", ".gif"),
                                          ("RGB", ".bmp"), ("RGB", ".tiff")])
def test_every_mode_becomes_rgb(tmp_path, mode, suffix):
    path = _save(Image.new(mode, (5, 4)), tmp_path / f"x{suffix}")
    decoded = read_image(path)
    assert decoded.rgb.shape == (4, 5, 3) and decoded.rgb.dtype == np.uint8
    assert decoded.mode == Image.open(path).mode


def test_grayscale_and_palette_values(tmp_path):
    gray = read_image(_save(Image.new("L", (3, 2), 77), tmp_path / "g.png"))
    assert gray.mode == "L" and gray.is_grayscale_mode
    assert np.all(gray.rgb == 77)
    rgba = read_image(_save(Image.new("RGBA", (3, 2), (10, 20, 30, 0)), tmp_path / "t.png"))
    assert rgba.mode == "RGBA" and np.all(rgba.rgb == [10, 20, 30])  # alpha dropped, as convert("RGB")
    palette = Image.new("P", (3, 2), 1)
    palette.putpalette([0, 0, 0, 200, 0, 0])
    decoded = read_image(_save(palette, tmp_path / "p.png"))
    assert decoded.mode == "P" and np.all(decoded.rgb == [200, 0, 0])


def test_sixteen_bit_and_float_images_are_scaled(tmp_path):
    sixteen = Image.fromarray(np.full((2, 3), 0x8040, dtype=np.uint16))
    decoded = read_image(_save(sixteen, tmp_path / "s.png"))
    assert decoded.mode.startswith("I")  # Pillow reads 16-bit PNG as I;16 or I
    assert np.all(decoded.rgb == 0x80) and decoded.is_grayscale_mode
    floats = Image.fromarray(np.full((2, 3), 100.4, dtype=np.float32), "F")
    decoded = read_image(_save(floats, tmp_path / "f.tiff"))
    assert decoded.mode == "F" and np.all(decoded.rgb == 100)


def test_missing_directory_and_zero_byte(tmp_path):
    assert _skip_reason(tmp_path / "missing.png") == im.SKIP_NOT_FOUND
    (tmp_path / "folder.png").mkdir()
    assert _skip_reason(tmp_path / "folder.png") == im.SKIP_NOT_A_FILE
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert _skip_reason(tmp_path / "empty.jpg") == im.SKIP_ZERO_BYTES


def test_non_image_file(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is text, not a JPEG")
    assert _skip_reason(tmp_path / "notes.jpg") == im.SKIP_NOT_IMAGE


@pytest.mark.parametrize("fmt, suffix", [("JPEG", ".jpg"), ("PNG", ".png")])
def test_truncated_image(tmp_path, fmt, suffix):
    buffer = io.BytesIO()
    _noise((128, 128)).save(buffer, format=fmt)
    data = buffer.getvalue()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    assert _skip_reason(path).startswith("truncated or corrupt image: ")


def test_corrupt_png_data(tmp_path):
    buffer = io.BytesIO()
    _noise((64, 64)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IDAT") + 40
    data[start:start + 200] = bytes(200)  # zero a stretch of compressed data
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    assert _skip_reason(path).startswith("truncated or corrupt image: ")


def test_pixel_cap_checked_before_decoding(tmp_path):
    path = _save(Image.new("RGB", (20, 10)), tmp_path / "big.png")
    assert _skip_reason(path, max_pixels=199) == im.SKIP_TOO_LARGE.format(width=20, height=10, pixels=200, cap=199)
    assert read_image(path, max_pixels=200).width == 20


def test_pillow_decompression_bomb_limit_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    warned = _save(Image.new("RGB", (15, 10)), tmp_path / "warn.png")  # 150 px: Pillow would only warn
    with pytest.warns(Image.DecompressionBombWarning):
        reason = _skip_reason(warned)
    assert reason == im.SKIP_TOO_LARGE.format(width=15, height=10, pixels=150, cap=100)
    bomb = _save(Image.new("RGB", (30, 10)), tmp_path / "bomb.png")  # 300 px > 2 x limit: Pillow raises
    assert _skip_reason(bomb) == im.SKIP_BOMB.format(detail="Image size (300 pixels) exceeds limit of 200 pixels")


def test_iter_images_in_order_with_counted_skips(tmp_path):
    paths = []
    for i in range(75):  # more than one chunk of CHUNK_IMAGES
        paths.append(str(_save(Image.new("RGB", (4, 4), (i, 0, 0)), tmp_path / f"{i:03d}.png")))
    (tmp_path / "bad.png").write_text("nope")
    paths[10] = str(tmp_path / "bad.png")
    paths[40] = str(tmp_path / "gone.png")
    table = pd.DataFrame({"row": range(100, 175), "path": paths})
    finished = []
    results = list(iter_images(table, n_threads=2, progress=finished.append))
    assert [position for position, _ in results] == list(range(75))
    assert sum(finished) == 75
    assert results[10][1] == SkipEntry(110, paths[10], im.SKIP_NOT_IMAGE)
    assert results[40][1] == SkipEntry(140, paths[40], im.SKIP_NOT_FOUND)
    decoded = [item for _, item in results if isinstance(item, DecodedImage)]
    assert len(decoded) == 73
    assert [int(item.rgb[0, 0, 0]) for item in decoded] == [i for i in range(75) if i not in (10, 40)]
    serial = list(iter_images(table, n_threads=1))
    assert [(p, getattr(i, "content_hash", i)) for p, i in serial] == \
        [(p, getattr(i, "content_hash", i)) for p, i in results]


def test_iter_images_without_row_column_uses_positions(tmp_path):
    table = pd.DataFrame({"path": [str(tmp_path / "missing.png")]})
    assert list(iter_images(table)) == [(0, SkipEntry(0, str(tmp_path / "missing.png"), im.SKIP_NOT_FOUND))]


def test_iter_images_stops_cleanly_when_abandoned(tmp_path):
    paths = [str(_save(Image.new("RGB", (4, 4)), tmp_path / f"{i}.png")) for i in range(100)]
    iterator = iter_images(pd.DataFrame({"path": paths}), n_threads=2)
    assert next(iterator)[0] == 0
    iterator.close()  # the pool shuts down without decoding the rest


@pytest.mark.skipif(not CIFAR_JPEG.is_dir(), reason="../shared/data/cifar10-test-jpeg is absent")
def test_cifar10_jpegs_all_decode():
    from audit.io.manifest import load_dataset

    dataset = load_dataset(CIFAR_JPEG)
    start = time.perf_counter()
    n_decoded = 0
    for position, item in iter_images(dataset.table, n_threads=2):
        assert isinstance(item, DecodedImage), item
        assert item.rgb.shape == (32, 32, 3)
        n_decoded += 1
    print(f"iter_images decoded {n_decoded} CIFAR-10 JPEGs in {time.perf_counter() - start:.2f} s (2 threads)")
    assert n_decoded == 10_000
