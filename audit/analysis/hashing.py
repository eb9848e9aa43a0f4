"""Perceptual hashes of one decoded image, for near-duplicate search.

Two 64-bit hashes are computed from the image's luminance (ITU-R BT.601 weights):

``phash`` (DCT hash)
    The luminance is resized to 32 x 32 (Pillow bilinear, which low-pass filters when shrinking), a 2-D
    DCT-II (orthonormal) is taken and the 64 lowest-frequency *AC* coefficients in zig-zag order
    (``u + v`` from 1 to 10, i.e. every coefficient with ``u + v <= 10`` except the DC term and the last one
    of that diagonal) are compared with their median: bit ``k`` is 1 when coefficient ``k`` is above the
    median. Leaving out the DC term (always above the median, so always 1 in the classic 8 x 8 pHash) keeps
    all 64 bits informative, and the zig-zag order keeps the lowest frequencies, which survive resizing,
    JPEG compression and small crops best.
``dhash`` (difference hash)
    The luminance is resized to 9 x 8 (width x height); bit ``8 * row + col`` is 1 when pixel ``col`` is
    brighter than pixel ``col + 1`` of the same row. Cheap and sensitive to local gradients; used by
    :func:`audit.analysis.data_quality.find_data_quality_issues` only as a second opinion (see there).

Both are returned as Python ints in ``[0, 2**64)`` so they fit a ``numpy.uint64`` column. The Hamming
distance between two hashes (number of differing bits, 0..64) measures how different the images look:
unrelated images sit near 32, copies near 0. Measured robustness (bench/results/data_quality.json and
tests/data/test_data_quality_cifar.py, CIFAR-10 test JPEGs, 32 x 32): see ``DEFAULT_MAX_DISTANCE`` in
:mod:`audit.analysis.near_duplicates`.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.fft import dctn

ERROR_NOT_RGB = ("compute_perceptual_hashes expects an RGB image array of shape (height, width, 3) and "
                 "dtype uint8, got shape {shape} and dtype {dtype}: decode the image to RGB first")

#: Hash column names written by :func:`compute_perceptual_hashes`.
HASH_NAMES = ("phash", "dhash")

_DCT_SIZE = 32
_N_BITS = 64


def _zigzag_positions(n_coefficients: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the first ``n_coefficients`` AC coefficients in zig-zag (u + v, then u) order."""
    positions = sorted(((u, v) for u in range(size) for v in range(size) if 0 < u + v),
                       key=lambda uv: (uv[0] + uv[1], uv[0]))[:n_coefficients]
    rows, cols = zip(*positions)
    return np.asarray(rows), np.asarray(cols)


_ZZ_ROWS, _ZZ_COLS = _zigzag_positions(_N_BITS, _DCT_SIZE)
_BIT_WEIGHTS = (np.uint64(1) << np.arange(_N_BITS, dtype=np.uint64)).astype(np.uint64)


def _bits_to_int(bits: np.ndarray) -> int:
    """Pack 64 booleans (bit k = element k) into a Python int."""
    return int(np.bitwise_or.reduce(np.where(bits, _BIT_WEIGHTS, np.uint64(0))))


def _luminance(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _resize(gray: np.ndarray, width: int, height: int) -> np.ndarray:
    if gray.shape == (height, width):
        return gray
    image = Image.fromarray(gray, mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def compute_perceptual_hashes(rgb: np.ndarray) -> dict:
    """Perceptual hashes of one image.

    Parameters
    ----------
    rgb : ndarray of uint8, shape (height, width, 3)
        The decoded image.

    Returns
    -------
    dict
        ``{"phash": int, "dhash": int}``, each a 64-bit hash as a Python int in ``[0, 2**64)`` (store as
        ``numpy.uint64``). See the module docstring for how each is computed.

    Raises
    ------
    ValueError
        When ``rgb`` is not an (H, W, 3) uint8 array.
    """
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise ValueError(ERROR_NOT_RGB.format(shape=shape, dtype=dtype))
    gray = _luminance(rgb)

    small = _resize(gray, _DCT_SIZE, _DCT_SIZE)
    coefficients = dctn(small.astype(np.float64), type=2, norm="ortho")[_ZZ_ROWS, _ZZ_COLS]
    phash = _bits_to_int(coefficients > np.median(coefficients))

    tiny = _resize(gray, 9, 8)
    dhash = _bits_to_int((tiny[:, :-1] > tiny[:, 1:]).ravel())
    return {"phash": phash, "dhash": dhash}


def hamming_distance(a, b) -> np.ndarray:
    """Number of differing bits between 64-bit hashes ``a`` and ``b`` (broadcast, as uint64 arrays)."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)))
