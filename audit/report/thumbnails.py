"""Thumbnails of audited images for the reports and the app: decoded under a pixel cap, only from the data root."""
from __future__ import annotations

import base64
import io
import os

THUMBNAIL_SIZE = 96
MAX_THUMBNAIL_PIXELS = 40_000_000


def _inside_root(path, root) -> bool:
    """Whether ``path`` lies inside the audited data root. A report embeds only the audited images: a crafted
    ``images.parquet`` naming other files on the reader's disk must not pull them into a shared report."""
    if not path or not root:
        return False
    try:
        real = os.path.realpath(str(path))
        real_root = os.path.realpath(str(root))
        return os.path.commonpath([real, real_root]) == real_root
    except (ValueError, OSError):
        return False


def thumbnail_bytes(path, *, size: int = THUMBNAIL_SIZE, format: str = "JPEG") -> bytes | None:
    """A small ``format`` image (JPEG or PNG) of the image at ``path``, at most ``size`` pixels a side.

    Decoded through :func:`audit.io.images.thumbnail_bytes`, the one safe way imagefair opens images:
    allow-listed formats recognised from the content (never Ghostscript), the pixel count checked from the
    header before decoding (``MAX_THUMBNAIL_PIXELS``, without changing Pillow's process-wide limit) and the
    decode time budget. None when the file is absent, refused or unreadable: callers show a placeholder.
    """
    from audit.io.images import thumbnail_bytes as safe_thumbnail

    return safe_thumbnail(path, size=size, format=format, max_pixels=MAX_THUMBNAIL_PIXELS, quality=70)


def thumbnail_data_uri(path, *, size: int = THUMBNAIL_SIZE) -> str | None:
    """A small JPEG ``data:`` URI of the image at ``path``, or None when it is absent or unreadable."""
    data = thumbnail_bytes(path, size=size)
    return None if data is None else "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
