"""Hostile image files (issue 11, item 1): only allow-listed formats are decoded, recognised from content;
Ghostscript is never reached; each decode has a time budget; decoding ahead is bounded by pixels.

Ghostscript is not installed on the test machine, so the EPS tests replace Pillow's Ghostscript entry
point by a stand-in that writes a marker file: before the allow-list, Pillow reached it for an EPS named
``.png``; now it never does.
"""
from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import audit.io.images as im
from audit.types import SkipEntry

EPS_WRITES_MARKER = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n"
                     b"(marker) (w) file closefile\nshowpage\n")
EPS_LOOPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n{ } loop\n"


@pytest.fixture
def ghostscript_spy(monkeypatch, tmp_path):
    """Replace Pillow's Ghostscript call by one that writes ``tmp_path/ghostscript-ran``."""
    from PIL import EpsImagePlugin

    marker = tmp_path / "ghostscript-ran"

    def fake_ghostscript(*args, **kwargs):
        marker.write_text("ran")
        raise OSError("stand-in")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", fake_ghostscript)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    return marker


def _png_bytes(size=(16, 16), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128 if mode != "RGB" else (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _skip(path: Path, **kwargs) -> str:
    with pytest.raises(im.ImageSkip) as info:
        im.read_image(path, **kwargs)
    return info.value.reason


@pytest.mark.parametrize("payload", [EPS_WRITES_MARKER, EPS_LOOPS], ids=["writes-file", "loops"])
@pytest.mark.parametrize("name", ["x.png", "x.jpg", "x.eps"])
def test_eps_is_refused_and_never_reaches_ghostscript(tmp_path, ghostscript_spy, payload, name):
    path = tmp_path / name
    path.write_bytes(payload)
    assert _skip(path) == im.SKIP_FORMAT_NOT_ALLOWED.format(kind="PostScript/EPS (would run Ghostscript)")
    assert not ghostscript_spy.exists()
    assert im.thumbnail_bytes(path, size=32) is None
    assert not ghostscript_spy.exists()


def test_binary_eps_and_pdf_refused(tmp_path, ghostscript_spy):
    (tmp_path / "a.png").write_bytes(b"\xc5\xd0\xd3\xc6" + struct.pack("<6I", 30, len(EPS_LOOPS), 0, 0, 0, 0)
                                     + EPS_LOOPS)
    (tmp_path / "b.jpg").write_bytes(b"%PDF-1.4\n1 0 obj<<>>endobj\n")
    assert _skip(tmp_path / "a.png") == im.SKIP_FORMAT_NOT_ALLOWED.format(
        kind="EPS with preview (would run Ghostscript)")
    assert _skip(tmp_path / "b.jpg") == im.SKIP_FORMAT_NOT_ALLOWED.format(kind="PDF (would run Ghostscript)")
    assert not ghostscript_spy.exists()


@pytest.mark.parametrize("fmt, kind", [("PCX", "PCX"), ("SGI", "SGI"), ("DDS", "DDS")])
def test_other_pillow_formats_named_jpg_are_refused(tmp_path, fmt, kind):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(path, format=fmt)
    assert _skip(path) == im.SKIP_FORMAT_NOT_ALLOWED.format(kind=kind)


def test_tga_named_jpg_is_not_an_image(tmp_path):
    """TGA has no magic number: it is simply not one of the allowed formats."""
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(path, format="TGA")
    assert _skip(path) == im.SKIP_NOT_IMAGE


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_allowed_formats_decode_whatever_the_extension(tmp_path, fmt):
    path = tmp_path / "image.dat"
    Image.new("RGB", (20, 10), (200, 100, 50)).save(path, format=fmt)
    decoded = im.read_image(path)
    assert decoded.rgb.shape == (10, 20, 3)
    assert im.sniff_format(path.read_bytes()[:16]) == fmt


def test_decode_time_budget(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_png_bytes((2000, 2000)))
    assert _skip(path, max_seconds=0.0) == im.SKIP_DECODE_TIMEOUT.format(seconds=0.0)
    assert im.read_image(path, max_seconds=30).width == 2000


def _one_bit_bomb(width: int, height: int) -> bytes:
    """A one-bit all-black PNG of ``width`` x ``height``: a few kB for millions of pixels."""
    raw = zlib.compress((b"\x00" + b"\x00" * ((width + 7) // 8)) * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def test_decoding_ahead_is_bounded_by_pixels_not_bytes(tmp_path, monkeypatch):
    """24 one-bit 1000x1000 PNGs (a few kB each, one byte-sized chunk): with a budget of 2.5 M pixels at most
    two are held decoded at once, however slowly the consumer goes."""
    paths = []
    for k in range(24):
        path = tmp_path / f"bomb_{k}.png"
        path.write_bytes(_one_bit_bomb(1000, 1000))
        paths.append(str(path))
    budgets = []
    original = im.PixelBudget

    class Spy(original):
        def __init__(self, limit):
            super().__init__(limit)
            budgets.append(self)

    monkeypatch.setattr(im, "PixelBudget", Spy)
    seen = 0
    for position, item in im.iter_images(pd.DataFrame({"path": paths}), n_threads=2, ahead_pixels=2_500_000):
        assert not isinstance(item, SkipEntry), item
        assert item.rgb.shape == (1000, 1000, 3)
        time.sleep(0.005)
        seen += 1
    assert seen == 24
    assert budgets and budgets[0].peak <= 2_000_000
    assert budgets[0].held == 0


def test_one_image_above_the_budget_still_decodes_alone(tmp_path):
    paths = []
    for k in range(3):
        path = tmp_path / f"b{k}.png"
        path.write_bytes(_one_bit_bomb(2000, 1000))
        paths.append(str(path))
    items = list(im.iter_images(pd.DataFrame({"path": paths}), n_threads=2, ahead_pixels=1_000))
    assert [p for p, _ in items] == [0, 1, 2]
    assert all(not isinstance(item, SkipEntry) for _, item in items)


def test_closing_the_iterator_early_stops_the_workers(tmp_path):
    paths = []
    for k in range(40):
        path = tmp_path / f"s{k}.png"
        path.write_bytes(_png_bytes((64, 64)))
        paths.append(str(path))
    before = threading.active_count()
    iterator = im.iter_images(pd.DataFrame({"path": paths}), n_threads=2, ahead_pixels=64 * 64 * 2)
    next(iterator)
    iterator.close()
    assert threading.active_count() <= before


def test_mixed_outcomes_keep_order(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(_png_bytes())
    bad = tmp_path / "bad.png"
    bad.write_bytes(EPS_LOOPS)
    table = pd.DataFrame({"path": [str(good), str(bad), str(tmp_path / "missing.png"), str(good)],
                          "row": [2, 3, 4, 5]})
    items = list(im.iter_images(table, n_threads=2))
    assert [p for p, _ in items] == [0, 1, 2, 3]
    assert isinstance(items[1][1], SkipEntry) and items[1][1].row == 3
    assert items[2][1].reason == im.SKIP_NOT_FOUND
    assert items[3][1].rgb.shape == (16, 16, 3)


def test_report_thumbnail_goes_through_the_allow_list(tmp_path, ghostscript_spy):
    from audit.report.thumbnails import thumbnail_data_uri

    path = tmp_path / "x.png"
    path.write_bytes(EPS_WRITES_MARKER)
    assert thumbnail_data_uri(path) is None
    assert not ghostscript_spy.exists()
    path.write_bytes(_png_bytes())
    assert thumbnail_data_uri(path).startswith("data:image/jpeg;base64,")


# --- item 7: markup in chart titles ----------------------------------------------------------------------------
EVIL = '<a href="https://evil.example">Click</a>'


def _all_text(fig) -> list[str]:
    texts = [fig.layout.title.text]
    fig.for_each_xaxis(lambda a: texts.append(a.title.text))
    fig.for_each_yaxis(lambda a: texts.append(a.title.text))
    for trace in fig.data:
        texts.append(trace.name)
        for key in ("x", "y"):
            values = getattr(trace, key, None)
            if values is not None:
                texts.extend(v for v in values if isinstance(v, str))
        colorbar = getattr(trace, "colorbar", None)
        if colorbar is not None and colorbar.title:
            texts.append(colorbar.title.text)
    return [t for t in texts if t]


def test_report_figures_escape_a_column_name_with_markup():
    from audit.report import figures

    fig = figures.group_shares_figure([{"group": EVIL, "share": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 10}],
                                      attribute=EVIL)
    texts = _all_text(fig)
    assert any("evil.example" in t for t in texts)
    assert not any("<a" in t for t in texts)


def test_app_heatmap_axis_titles_are_escaped():
    """The defect: the app's heatmap axis titles took the column name raw (a live link)."""
    pytest.importorskip("streamlit")
    from app_pages import _charts

    fig = _charts.heatmap([[1, 2]], x=[EVIL, "b"], y=["c"], title=f"Images by {EVIL}", x_title=EVIL, y_title=EVIL,
                          colorbar_title=EVIL)
    texts = _all_text(fig)
    assert fig.layout.xaxis.title.text == EVIL.replace("<", "&lt;").replace(">", "&gt;")
    assert not any("<a" in t for t in texts)


def test_waiting_for_the_pixel_budget_does_not_count_against_the_time_budget(tmp_path):
    """Found by bench/hostile.py: one of the 64 bombs was skipped as too slow because its clock ran while it
    waited for the previous image to be consumed."""
    path = tmp_path / "a.png"
    path.write_bytes(_png_bytes((64, 64)))
    budget = im.PixelBudget(100)
    assert budget.acquire(0, 100)  # ticket 0 holds the whole budget
    result = {}

    def decode():
        result["item"] = im.read_image(path, max_seconds=0.3, budget=budget, ticket=1)

    worker = threading.Thread(target=decode)
    worker.start()
    time.sleep(0.6)  # longer than the time budget
    budget.release(100)
    worker.join(timeout=30)
    assert result["item"].width == 64
