"""Compatibility: the audit folder is written by :mod:`audit.folder` (import from there)."""
from audit.folder import (CONTRACT_FILES, ERROR_OUT_IS_FILE, ERROR_OUT_NOT_WRITABLE, ERROR_STREAM_CHUNK,  # noqa: F401
                          ERROR_STREAM_ROWS, ERROR_STREAM_SHAPE, write_audit_folder, write_json_streamed_atomic,
                          write_npy_chunks_atomic)
from audit.types import json_safe as to_json_safe  # noqa: F401
