"""Safe image decoding: every file is read once, hashed, fully decoded under a pixel cap, or skipped with a
plain-language reason (never silently dropped).

Rules
-----
- Only an allow-list of formats is ever decoded (:data:`ALLOWED_FORMATS`: JPEG, PNG, WebP, BMP, GIF, TIFF),
  recognised from the file's first bytes (its "magic number"), never from its extension, and opened with
  ``Image.open(formats=...)`` limited to the same list. PostScript, EPS and PDF (decoded by Pillow through
  Ghostscript, an interpreter) and every other format Pillow knows (PCX, SGI, TGA, DDS...) are skipped with
  :data:`SKIP_FORMAT_NOT_ALLOWED`. :func:`open_image` is the one function every decode path calls (audit,
  model inference, report and app thumbnails).
- Each decode has a time budget (``max_seconds``, checked each time the decoder pulls another block of the
  file) and, when images are decoded ahead by worker threads, a shared budget of pixels decoded ahead
  (:class:`PixelBudget`), so memory is bounded by pixels, not by file bytes.
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
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from audit.errors import AuditError
from audit.types import SkipEntry

if TYPE_CHECKING:  # pandas only in annotations: worker processes start without it
    import pandas as pd

#: Default pixel cap (width x height) above which an image is skipped instead of decoded.
MAX_PIXELS = 40_000_000

#: Formats decoded, as Pillow names them. Adding one is a deliberate decision: it must be recognised in
#: :func:`sniff_format` and its Pillow decoder must not run an interpreter.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")

#: Default time budget for decoding one image, in seconds (checked between blocks of the file).
MAX_DECODE_SECONDS = 20.0

#: Default budget of pixels decoded ahead of the consumer across all decoding threads (about 3 bytes a
#: pixel once converted to RGB, a few times more while Pillow decodes). One image alone may exceed it.
DECODE_AHEAD_PIXELS = 64_000_000

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
SKIP_NOT_IMAGE = "not an image file (the content is not JPEG, PNG, WebP, BMP, GIF or TIFF, whatever the name)"
SKIP_CORRUPT = "truncated or corrupt image: {detail}"
SKIP_TOO_LARGE = ("image above the pixel cap: {width}x{height} = {pixels} pixels > {cap} "
                  "(downscale the image or raise max_pixels)")
SKIP_BOMB = ("image above the pixel cap: {detail} (downscale the image, or raise max_pixels and "
             "PIL.Image.MAX_IMAGE_PIXELS)")
SKIP_UNSUPPORTED_MODE = "unsupported image mode {mode!r}"
SKIP_FORMAT_NOT_ALLOWED = ("format not allowed: {kind} (only JPEG, PNG, WebP, BMP, GIF and TIFF are decoded, "
                           "recognised from the file's content; convert the file to one of them)")
SKIP_DECODE_TIMEOUT = ("decoding took longer than the {seconds:g} s budget (the file is pathological or the machine "
                       "overloaded; re-encode the image or raise max_decode_seconds)")
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


# --- format recognition --------------------------------------------------------------------------------------
#: Kinds named in skip reasons for formats that are refused on purpose (first bytes -> name). Never echoes
#: the file's content.
_REFUSED_SIGNATURES = (
    (b"%!PS-Adobe", "PostScript/EPS (would run Ghostscript)"),
    (b"%!", "PostScript (would run Ghostscript)"),
    (b"\xc5\xd0\xd3\xc6", "EPS with preview (would run Ghostscript)"),
    (b"%PDF", "PDF (would run Ghostscript)"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x0a\x05\x01", "PCX"), (b"\x0a\x03\x01", "PCX"), (b"\x0a\x02\x01", "PCX"), (b"\x0a\x00\x01", "PCX"),
    (b"\x01\xda", "SGI"),
    (b"DDS ", "DDS"),
    (b"8BPS", "PSD"),
    (b"qoif", "QOI"),
    (b"P1", "PBM/PPM"), (b"P2", "PBM/PPM"), (b"P3", "PBM/PPM"), (b"P4", "PBM/PPM"), (b"P5", "PBM/PPM"),
    (b"P6", "PBM/PPM"), (b"P7", "PAM"),
    (b"\xd7\xcd\xc6\x9a", "WMF"),
)


def sniff_format(head: bytes) -> str | None:
    """The allow-listed format of a file from its first bytes (Pillow's name), or None.

    Parameters
    ----------
    head : bytes
        At least the first 12 bytes of the file.

    Returns
    -------
    str or None
        One of :data:`ALLOWED_FORMATS`, or None when the content is not one of them (whatever the extension).
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    return None


def refused_kind(head: bytes) -> str | None:
    """A short name of a known but refused format for the skip reason, or None when not recognised."""
    for signature, kind in _REFUSED_SIGNATURES:
        if head.startswith(signature):
            return kind
    return None


class _DecodeTimeout(Exception):
    """Raised from inside Pillow's decode loop when the time budget is spent."""


class _DeadlineBytes(io.BytesIO):
    """In-memory file whose reads fail once ``deadline`` (``time.monotonic()``) has passed: Pillow's
    decoders pull the file block by block, so a decode cannot outlive its budget by more than one block.

    The clock is read on every block-sized read and on every 32nd small one: header parsing reads a few bytes
    at a time (dozens of reads per JPEG), and its work is bounded by the bytes it consumes anyway.
    """

    deadline: float | None = None
    _small_reads = 0

    def read(self, size=-1):
        if self.deadline is not None:
            if size is None or size < 0 or size >= _CLOCKED_READ:
                if time.monotonic() > self.deadline:
                    raise _DecodeTimeout()
            else:
                self._small_reads += 1
                if not self._small_reads & 31 and time.monotonic() > self.deadline:
                    raise _DecodeTimeout()
        return super().read(size)


#: Reads of at least this many bytes always check the decode deadline (see :class:`_DeadlineBytes`).
_CLOCKED_READ = 1024


def open_image(data: bytes, *, max_pixels: int = MAX_PIXELS, max_seconds: float | None = MAX_DECODE_SECONDS
               ) -> Image.Image:
    """Open image bytes safely: allow-listed format checked from the content, size checked from the header.

    This is the one entry point through which imagefair hands bytes to Pillow (audit decoding, model
    inference, report and app thumbnails). The returned image is opened, not decoded; call :func:`decode`
    (or ``image.load()`` inside ``try``) to decode it within the time budget.

    Parameters
    ----------
    data : bytes
        The whole file.
    max_pixels : int, default :data:`MAX_PIXELS`
        Images with more pixels (width x height, from the header) are refused before decoding; Pillow's
        own ``Image.MAX_IMAGE_PIXELS`` applies too (the smaller wins).
    max_seconds : float or None, default :data:`MAX_DECODE_SECONDS`
        Time budget for opening and decoding, counted from this call; None for no budget.

    Returns
    -------
    PIL.Image.Image
        Opened with ``formats`` limited to :data:`ALLOWED_FORMATS`; ``image.format`` is one of them.

    Raises
    ------
    ImageSkip
        :data:`SKIP_ZERO_BYTES`, :data:`SKIP_FORMAT_NOT_ALLOWED`, :data:`SKIP_NOT_IMAGE`,
        :data:`SKIP_CORRUPT`, :data:`SKIP_BOMB`, :data:`SKIP_TOO_LARGE` or :data:`SKIP_DECODE_TIMEOUT`.
    """
    if not data:
        raise ImageSkip(SKIP_ZERO_BYTES)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise AuditError(ERROR_TRUNCATED_LOADING_ON)
    head = bytes(data[:64])
    kind = sniff_format(head)
    if kind is None:
        refused = refused_kind(head)
        raise ImageSkip(SKIP_NOT_IMAGE if refused is None else SKIP_FORMAT_NOT_ALLOWED.format(kind=refused))
    if max_seconds is None or (kind == "JPEG" and 0 < len(data) <= ImageFile.MAXBLOCK and max_seconds > 0):
        # Pillow decodes a file of at most MAXBLOCK bytes from one read and one decoder call, so the clock could
        # only be read between the header fields, which a JPEG header reads a few bytes at a time (about 40
        # reads, 10 % of the decode of a small JPEG when each is checked): a plain in-memory file for these.
        stream = io.BytesIO(data)
    else:
        stream = _DeadlineBytes(data)
        stream.deadline = None if max_seconds is None else time.monotonic() + float(max_seconds)
    cap = _effective_cap(max_pixels)
    try:
        image = Image.open(stream, formats=[kind])
    except _DecodeTimeout:
        raise ImageSkip(SKIP_DECODE_TIMEOUT.format(seconds=float(max_seconds))) from None
    except UnidentifiedImageError:
        raise ImageSkip(SKIP_NOT_IMAGE) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageSkip(SKIP_BOMB.format(detail=str(error).split(",")[0])) from None
    except Exception as error:  # Pillow raises many types on a broken header
        raise ImageSkip(SKIP_CORRUPT.format(detail=_error_detail(error))) from None
    if image.format not in ALLOWED_FORMATS and image.format != "MPO":  # MPO: multi-picture JPEG
        image.close()
        raise ImageSkip(SKIP_FORMAT_NOT_ALLOWED.format(kind=str(image.format)))
    width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise ImageSkip(SKIP_CORRUPT.format(detail=f"size {width}x{height}"))
    if width * height > cap:
        image.close()
        raise ImageSkip(SKIP_TOO_LARGE.format(width=width, height=height, pixels=width * height, cap=cap))
    image.info.setdefault("imagefair_max_seconds", max_seconds)
    return image


def decode(image: Image.Image, *, max_pixels: int = MAX_PIXELS) -> None:
    """Fully decode an image from :func:`open_image` (``image.load()``), mapping every failure to a skip.

    Raises
    ------
    ImageSkip
        :data:`SKIP_DECODE_TIMEOUT` when the budget given to :func:`open_image` ran out, :data:`SKIP_TOO_LARGE`
        on Pillow's bomb check, :data:`SKIP_CORRUPT` on any decoder error (truncated file...).
    """
    width, height = image.size
    cap = _effective_cap(max_pixels)
    try:
        image.load()
    except _DecodeTimeout:
        seconds = image.info.get("imagefair_max_seconds") or 0.0
        raise ImageSkip(SKIP_DECODE_TIMEOUT.format(seconds=float(seconds))) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageSkip(SKIP_TOO_LARGE.format(width=width, height=height, pixels=width * height,
                                              cap=cap)) from None
    except Exception as error:
        raise ImageSkip(SKIP_CORRUPT.format(detail=_error_detail(error))) from None


def open_image_file(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS,
                    max_seconds: float | None = MAX_DECODE_SECONDS) -> Image.Image:
    """:func:`open_image` on the bytes of the file at ``path`` (read once, size-capped); raises ImageSkip."""
    return open_image(_read_bytes(path), max_pixels=max_pixels, max_seconds=max_seconds)


def thumbnail_bytes(path: str | os.PathLike, *, size: int, format: str = "PNG",
                    max_pixels: int = MAX_PIXELS, quality: int = 70) -> bytes | None:
    """A small RGB thumbnail (longest side ``size``) of the image at ``path``, encoded as ``format``.

    Goes through :func:`open_image` (allow-list, pixel cap, time budget). Returns None when the file is
    absent, refused or broken (the caller shows a placeholder).
    """
    try:
        image = open_image_file(path, max_pixels=max_pixels)
        with image:
            if image.format in ("JPEG", "MPO"):
                image.draft("RGB", (size * 2, size * 2))
            decode(image, max_pixels=max_pixels)
            rgb = image.convert("RGB")
            rgb.thumbnail((size, size))
            buffer = io.BytesIO()
            if format.upper() == "JPEG":
                rgb.save(buffer, format="JPEG", quality=quality)
            else:
                rgb.save(buffer, format=format)
        return buffer.getvalue()
    except (ImageSkip, AuditError, OSError, ValueError):
        return None


class PixelBudget:
    """A budget of pixels decoded ahead of the consumer, shared by all decoding threads.

    Each image takes a ticket in file order (``acquire(ticket, pixels)``); a ticket is served only after
    every earlier one, and only while the pixels held (decoded, not yet released by the consumer) plus its
    own fit in ``limit`` - or when nothing is held, so one image larger than the budget still decodes, alone.
    Serving tickets in order makes this deadlock-free: the consumer always releases what blocks the head.

    Parameters
    ----------
    limit : int
        Pixels (width x height) held at most, except for a single image above it.
    """

    def __init__(self, limit: int = DECODE_AHEAD_PIXELS):
        self.limit = int(limit)
        self.held = 0
        self.peak = 0
        self._next = 0
        self._closed = False
        self._condition = threading.Condition()

    def acquire(self, ticket: int, pixels: int) -> bool:
        """Wait for ``ticket``'s turn and room for ``pixels``; False when the budget was closed."""
        with self._condition:
            while not self._closed and not (
                    ticket == self._next and (self.held == 0 or self.held + pixels <= self.limit)):
                self._condition.wait()
            if self._closed:
                return False
            self.held += pixels
            self.peak = max(self.peak, self.held)
            self._next += 1
            self._condition.notify_all()
            return True

    def release(self, pixels: int) -> None:
        """Give ``pixels`` back (the consumer is done with an image)."""
        if pixels:
            with self._condition:
                self.held -= pixels
                self._condition.notify_all()

    def close(self) -> None:
        """Wake every waiting thread (the consumer stopped); later acquires return False."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()


def _error_detail(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _effective_cap(max_pixels: int) -> int:
    pillow_cap = Image.MAX_IMAGE_PIXELS
    return int(min(max_pixels, pillow_cap)) if pillow_cap else int(max_pixels)


def read_whole(handle, size: int) -> bytes:
    """Everything in an open binary file of ``size`` bytes (from ``fstat``), at most ``MAX_FILE_BYTES + 1``.

    Asks for ``size + 1`` bytes (asking for the cap would make Python allocate, and give back, 512 MB per file),
    then goes on until the end of the file, so a file that grew, or a special file reporting size 0, is read
    whole up to the cap (the caller refuses more than the cap).
    """
    chunks = []
    total = 0
    want = size + 1 if size > 0 else 1 << 20
    while total <= MAX_FILE_BYTES:
        chunk = handle.read(min(want, MAX_FILE_BYTES + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        want = max(size + 1 - total, 1 << 20)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read_bytes(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise ImageSkip(SKIP_FILE_TOO_LARGE.format(n_bytes=size, cap=MAX_FILE_BYTES))
            data = read_whole(handle, size)
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
    return data


def read_image(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS,
               max_seconds: float | None = MAX_DECODE_SECONDS,
               budget: PixelBudget | None = None, ticket: int | None = None) -> DecodedImage:
    """Read, hash and fully decode one image to RGB (through :func:`open_image`).

    Parameters
    ----------
    path : str or path
    max_pixels : int, default :data:`MAX_PIXELS`
        Images with more pixels (width x height) are skipped before decoding.
    max_seconds : float or None, default :data:`MAX_DECODE_SECONDS`
        Time budget to open and decode the image.
    budget : PixelBudget, optional
        Shared budget of pixels decoded ahead; with it, ``ticket`` (the image's position in decoding order)
        is required, and the caller must ``budget.release(decoded.width * decoded.height)`` once done with the
        image (nothing is held when ImageSkip is raised: a skipped image's ticket is served with 0 pixels).

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
    held = 0
    served = budget is None
    try:
        data = _read_bytes(path)
        content_hash = hashlib.sha256(data).hexdigest()
        image = open_image(data, max_pixels=max_pixels, max_seconds=max_seconds)
        with image:
            width, height = image.size
            mode = image.mode
            if budget is not None:
                served = True
                if not budget.acquire(ticket, width * height):
                    raise ImageSkip("decoding stopped")
                held = width * height
                if max_seconds is not None and isinstance(image.fp, _DeadlineBytes):
                    # the time budget is for decoding: waiting for the pixel budget does not count
                    image.fp.deadline = time.monotonic() + float(max_seconds)
            decode(image, max_pixels=max_pixels)
            rgb = _to_rgb(image, mode)
        result = DecodedImage(rgb=rgb, content_hash=content_hash, width=int(width), height=int(height),
                              mode=mode, n_bytes=len(data))
        held = 0
        return result
    finally:
        if budget is not None:
            if not served:
                budget.acquire(ticket, 0)
            budget.release(held)


def _to_rgb(image: Image.Image, mode: str) -> np.ndarray:
    if mode == "RGB" and image.mode == "RGB":
        return np.asarray(image, dtype=np.uint8)  # already RGB: convert("RGB") would only copy it
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


def _read_or_skip(path: str, max_pixels: int, max_seconds: float | None = MAX_DECODE_SECONDS
                  ) -> DecodedImage | str:
    try:
        return read_image(path, max_pixels=max_pixels, max_seconds=max_seconds)
    except ImageSkip as skip:
        return skip.reason


def _chunks(paths: list[str]) -> Iterator[list[int]]:
    """Consecutive runs of positions holding at most :data:`CHUNK_IMAGES` images or about :data:`CHUNK_BYTES`.

    One task per tiny image (CIFAR: 1 kB) costs more in thread hand-over than the decode itself; one task
    per chunk keeps both small images fast and large ones few per task. Memory is bounded by the
    :class:`PixelBudget`, not by the chunk size.
    """
    chunk: list[int] = []
    size = 0
    for position, path in enumerate(paths):
        chunk.append(position)
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
                progress: Callable[[int], object] | None = None,
                max_seconds: float | None = MAX_DECODE_SECONDS,
                ahead_pixels: int = DECODE_AHEAD_PIXELS,
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
    max_seconds : float or None, default :data:`MAX_DECODE_SECONDS`
        Time budget per image (:func:`open_image`).
    ahead_pixels : int, default :data:`DECODE_AHEAD_PIXELS`
        Pixels decoded ahead of the consumer across all threads (:class:`PixelBudget`); an image is held
        until the consumer asks for the next one.

    Yields
    ------
    position : int
        0-based position in ``table``, increasing.
    item : DecodedImage or SkipEntry
        The decoded image, or ``SkipEntry(row, path, reason)`` for an unusable one.
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
            item = wrap(position, _read_or_skip(path, max_pixels, max_seconds))
            if progress is not None:
                progress(1)
            yield item
        return

    budget = PixelBudget(ahead_pixels)
    slots: list = [None] * len(paths)
    ready = threading.Condition()

    def work(positions: list[int]) -> None:
        for position in positions:
            try:
                outcome = read_image(paths[position], max_pixels=max_pixels, max_seconds=max_seconds,
                                     budget=budget, ticket=position)
            except ImageSkip as skip:
                outcome = skip.reason
            except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
                outcome = error
            with ready:
                slots[position] = outcome
                ready.notify_all()

    window = 2 * n_threads
    chunks = _chunks(paths)
    held = 0
    pool = ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="imagefair-decode")
    pending: deque = deque()
    try:
        for position in range(len(paths)):
            while len(pending) < window:
                chunk = next(chunks, None)
                if chunk is None:
                    break
                pending.append((chunk[-1], pool.submit(work, chunk)))
            budget.release(held)  # the consumer is done with the previous image
            held = 0
            with ready:
                while slots[position] is None:
                    ready.wait()
                outcome, slots[position] = slots[position], None
            while pending and pending[0][0] <= position:
                pending.popleft()
            if isinstance(outcome, BaseException):
                raise outcome
            if isinstance(outcome, DecodedImage):
                held = outcome.width * outcome.height
            if progress is not None:
                progress(1)
            yield wrap(position, outcome)
        budget.release(held)
    finally:
        budget.close()
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
