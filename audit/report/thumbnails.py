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

    The pixel count is checked from the header before anything is decoded (images above
    ``MAX_THUMBNAIL_PIXELS`` give None), without changing Pillow's process-wide limit. None when the file is
    absent or unreadable: callers show a placeholder.
    """
    try:
        from PIL import Image

        with Image.open(path) as image:
            if image.width * image.height > MAX_THUMBNAIL_PIXELS:
                return None
            image.draft("RGB", (size * 2, size * 2))
            image = image.convert("RGB")
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, format=format, **({"quality": 70} if format == "JPEG" else {}))
        return buffer.getvalue()
    except Exception:  # noqa: BLE001 - a missing or broken image shows a placeholder, never ends the report
        return None


def thumbnail_data_uri(path, *, size: int = THUMBNAIL_SIZE) -> str | None:
    """A small JPEG ``data:`` URI of the image at ``path``, or None when it is absent or unreadable."""
    data = thumbnail_bytes(path, size=size)
    return None if data is None else "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
