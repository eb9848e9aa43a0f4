"""Safe image decoding: every file is read once, hashed, fully decoded under a pixel cap, or skipped with a
plain-language reason (never silently dropped).

Rules
-----
- The file's bytes are read once; ``content_hash`` is their sha256 and decoding works on the same bytes.
- Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never switched on: ``img.load()`` forces a full decode,
  so a truncated or corrupt file raises and becomes a skip.
- The image size is checked from the header *before* decoding: more than ``max_pixels`` pixels is a
  skip. Pillow's own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) also applies and is treated as
  an error, never a warning: the effective cap is the smaller of the two.
- The first frame of animated / multi-page files is used. EXIF orientation is not applied (as
  torchvision's ``pil_loader``), so ``width``/``height`` are the stored ones.
- Conversion to RGB: palette, alpha (dropped, as ``Image.convert("RGB")``), 1-bit, L/LA, CMYK and YCbCr
  by Pillow; 16-bit (``I;16*``) by keeping the high byte; 32-bit integer ``I`` and float ``F`` by their
  range (values up to 255 kept, up to 65535 divided by 257, otherwise scaled by the maximum). The
  original mode is kept in :attr:`DecodedImage.mode` (grayscale detection uses it).
"""
from __future__ import annotations

import hashlib
import io
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pandas as pd
from PIL import Image, ImageFile, UnidentifiedImageError

from audit.errors import AuditError
from audit.types import SkipEntry

#: Default pixel cap (width x height) above which an image is skipped instead of decoded.
MAX_PIXELS = 40_000_000

#: Files larger than this are skipped before reading (every file is read whole into memory once): the
#: largest image under the pixel cap, uncompressed 16-bit RGBA, takes 320 MB.
MAX_FILE_BYTES = 512 * 2**20

#: Original modes that are grayscale by construction.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})

#: Modes converted to RGB by Pillow directly.
_PILLOW_RGB_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK",
                               "YCbCr"})

# --- skip reasons (ImageSkip message = SkipEntry.reason) ----------------------------------------------------
SKIP_NOT_FOUND = "file not found"
SKIP_NOT_A_FILE = "not a regular file"
SKIP_UNREADABLE = "cannot read file: {detail}"
SKIP_ZERO_BYTES = "zero-byte file"
SKIP_NOT_IMAGE = "not an image file (Pillow cannot identify the format)"
SKIP_CORRUPT = "truncated or corrupt image: {detail}"
SKIP_TOO_LARGE = ("image above the pixel cap: {width}x{height} = {pixels} pixels > {cap} "
                  "(downscale the image or raise max_pixels)")
SKIP_BOMB = ("image above the pixel cap: {detail} (downscale the image, or raise max_pixels and "
             "PIL.Image.MAX_IMAGE_PIXELS)")
SKIP_UNSUPPORTED_MODE = "unsupported image mode {mode!r}"
SKIP_FILE_TOO_LARGE = "file too large: {n_bytes} bytes > {cap} (an image under the pixel cap is far smaller)"


ERROR_TRUNCATED_LOADING_ON = (
    "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is switched on (by another module in this process): truncated "
    "images would decode silently. Set it back to False before auditing.")


class ImageSkip(Exception):
    """An image that cannot be used; ``reason`` (also the message) is the :class:`SkipEntry` reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DecodedImage:
    """One decoded image.

    Attributes
    ----------
    rgb : ndarray of uint8, shape (height, width, 3)
    content_hash : str
        sha256 (hex) of the file's bytes.
    width, height : int
        Stored size in pixels.
    mode : str
        The Pillow mode of the file before conversion to RGB (``"L"``, ``"P"``, ``"RGB"``, ``"I;16"``...).
    n_bytes : int
        File size in bytes.
    """

    rgb: np.ndarray
    content_hash: str
    width: int
    height: int
    mode: str
    n_bytes: int

    @property
    def is_grayscale_mode(self) -> bool:
        """True when the file itself is a grayscale format (mode in :data:`GRAYSCALE_MODES`)."""
        return self.mode in GRAYSCALE_MODES


def _error_detail(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _effective_cap(max_pixels: int) -> int:
    pillow_cap = Image.MAX_IMAGE_PIXELS
    return int(min(max_pixels, pillow_cap)) if pillow_cap else int(max_pixels)


def read_image(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Read, hash and fully decode one image to RGB.

    Parameters
    ----------
    path : str or path
    max_pixels : int, default :data:`MAX_PIXELS`
        Images with more pixels (width x height) are skipped before decoding.

    Returns
    -------
    DecodedImage

    Raises
    ------
    ImageSkip
        With one of the ``SKIP_*`` reasons of this module.
    AuditError
        When another module switched on ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` (:data:`ERROR_TRUNCATED_LOADING_ON`).
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise ImageSkip(SKIP_FILE_TOO_LARGE.format(n_bytes=size, cap=MAX_FILE_BYTES))
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:  # grew while being read, or a special file reporting size 0
            raise ImageSkip(SKIP_FILE_TOO_LARGE.format(n_bytes=len(data), cap=MAX_FILE_BYTES))
    except FileNotFoundError:
        raise ImageSkip(SKIP_NOT_FOUND) from None
    except IsADirectoryError:
        raise ImageSkip(SKIP_NOT_A_FILE) from None
    except OSError as error:
        raise ImageSkip(SKIP_UNREADABLE.format(detail=_error_detail(error))) from None
    if not data:
        raise ImageSkip(SKIP_ZERO_BYTES)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise AuditError(ERROR_TRUNCATED_LOADING_ON)
    content_hash = hashlib.sha256(data).hexdigest()
    cap = _effective_cap(max_pixels)
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageSkip(SKIP_NOT_IMAGE) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageSkip(SKIP_BOMB.format(detail=str(error).split(",")[0])) from None
    except Exception as error:  # Pillow raises many types on a broken header
        raise ImageSkip(SKIP_CORRUPT.format(detail=_error_detail(error))) from None
    with image:
        width, height = image.size
        if width * height > cap:
            raise ImageSkip(SKIP_TOO_LARGE.format(width=width, height=height, pixels=width * height, cap=cap))
        if width <= 0 or height <= 0:
            raise ImageSkip(SKIP_CORRUPT.format(detail=f"size {width}x{height}"))
        mode = image.mode
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageSkip(SKIP_TOO_LARGE.format(width=width, height=height, pixels=width * height,
                                                  cap=cap)) from None
        except Exception as error:
            raise ImageSkip(SKIP_CORRUPT.format(detail=_error_detail(error))) from None
        rgb = _to_rgb(image, mode)
    return DecodedImage(rgb=rgb, content_hash=content_hash, width=int(width), height=int(height), mode=mode,
                        n_bytes=len(data))


def _to_rgb(image: Image.Image, mode: str) -> np.ndarray:
    if mode in _PILLOW_RGB_MODES:
        try:
            converted = image.convert("RGB")
        except Exception as error:
            raise ImageSkip(SKIP_CORRUPT.format(detail=_error_detail(error))) from None
        return np.asarray(converted, dtype=np.uint8)
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image)
        if mode.startswith("I;16"):
            gray = (values.astype(np.uint32) >> 8).astype(np.uint8)
        else:
            values = values.astype(np.float64)
            finite = values[np.isfinite(values)]
            top = float(finite.max()) if finite.size else 0.0
            if top > 65535:
                values = values / top * 255.0
            elif top > 255:
                values = values / 257.0
            gray = np.clip(np.nan_to_num(values, nan=0.0), 0, 255).round().astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    raise ImageSkip(SKIP_UNSUPPORTED_MODE.format(mode=mode))


def _read_or_skip(path: str, max_pixels: int) -> DecodedImage | str:
    try:
        return read_image(path, max_pixels=max_pixels)
    except ImageSkip as skip:
        return skip.reason


def _read_chunk(paths: list[str], max_pixels: int) -> list[DecodedImage | str]:
    return [_read_or_skip(path, max_pixels) for path in paths]


def _chunks(paths: list[str]) -> Iterator[list[str]]:
    """Consecutive runs of paths holding at most :data:`CHUNK_IMAGES` images or about :data:`CHUNK_BYTES`.

    One task per tiny image (CIFAR: 1 kB) costs more in thread hand-over than the decode itself; one task
    per chunk keeps both small images fast and large ones few per task.
    """
    chunk: list[str] = []
    size = 0
    for path in paths:
        chunk.append(path)
        try:
            size += os.stat(path).st_size
        except OSError:
            pass
        if len(chunk) >= CHUNK_IMAGES or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


#: A decoding task holds at most this many images ...
CHUNK_IMAGES = 32
#: ... or stops once its files reach this many bytes.
CHUNK_BYTES = 1 << 20


def iter_images(table: pd.DataFrame, *, max_pixels: int = MAX_PIXELS, n_threads: int = 2,
                progress: Callable[[int], object] | None = None
                ) -> Iterator[tuple[int, DecodedImage | SkipEntry]]:
    """Decode every image of ``table`` in order, with a small thread pool.

    Parameters
    ----------
    table : DataFrame
        Needs a ``path`` column; ``row`` (the manifest row, for skip entries) is used when present.
    max_pixels : int, default :data:`MAX_PIXELS`
    n_threads : int, default 2
        Decoding threads (Pillow releases the GIL while decoding and hashlib while hashing). 1 decodes in
        the calling thread.
    progress : callable, optional
        Called with the number of images just finished (``tqdm(...).update`` fits).

    Yields
    ------
    position : int
        0-based position in ``table``, increasing.
    item : DecodedImage or SkipEntry
        The decoded image, or ``SkipEntry(row, path, reason)`` for an unusable one.

    Notes
    -----
    Work is handed to the threads in chunks of consecutive images (:func:`_chunks`); at most
    ``2 * n_threads`` chunks are decoded ahead of the consumer, so memory stays bounded.
    """
    paths = [str(p) for p in table["path"].tolist()]
    rows = table["row"].tolist() if "row" in table.columns else list(range(len(paths)))

    def wrap(position: int, outcome: DecodedImage | str):
        if isinstance(outcome, str):
            row = rows[position]
            return position, SkipEntry(None if row is None else int(row), paths[position], outcome)
        return position, outcome

    if n_threads <= 1:
        for position, path in enumerate(paths):
            item = wrap(position, _read_or_skip(path, max_pixels))
            if progress is not None:
                progress(1)
            yield item
        return

    window = 2 * n_threads
    chunks = _chunks(paths)
    with ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="imagefair-decode") as pool:
        pending: deque = deque()
        position = 0
        try:
            while True:
                while len(pending) < window:
                    chunk = next(chunks, None)
                    if chunk is None:
                        break
                    pending.append(pool.submit(_read_chunk, chunk, max_pixels))
                if not pending:
                    break
                outcomes = pending.popleft().result()
                if progress is not None:
                    progress(len(outcomes))
                for outcome in outcomes:
                    yield wrap(position, outcome)
                    position += 1
        finally:
            for future in pending:
                future.cancel()
