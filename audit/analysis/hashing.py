"""Perceptual hashes of one decoded image, for near-duplicate search.

Eighteen 64-bit hashes (three kinds of hash on six regions), computed in the pipeline's single decoding
pass: about 0.45 ms for a 32 x 32 image and 0.85 ms for a 640 x 480 one on one core (the six
whole/centre hashes alone took 0.29 and 0.63 ms). Large images are first box-reduced by an integer factor
to a shorter side of at least 64 px. Luminance is ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601).

``phash`` (DCT hash)
    Y is resized to 32 x 32 (Pillow bilinear, which low-pass filters when shrinking), a 2-D DCT-II
    (orthonormal) is taken and the 64 lowest-frequency *AC* coefficients in zig-zag order (every
    coefficient with ``u + v <= 10`` except the DC term and the last one of that diagonal) are compared
    with their median: bit ``k`` is 1 when coefficient ``k`` is above it. Leaving out the DC term (always
    above the median, so a constant bit in the classic 8 x 8 pHash) keeps all 64 bits informative, and the
    zig-zag order keeps the lowest frequencies, which survive resizing, JPEG and small crops best. With
    detail, exactly 32 bits are set, so distances are even.
``dhash`` (difference hash)
    Y is resized to 9 x 8 (width x height); bit ``8 * row + col`` is 1 when pixel ``col`` is brighter than
    pixel ``col + 1`` of the same row.
``chash`` (colour-layout hash)
    Box means on a 4 x 4 grid of the opponent colour channels ``R - G`` and ``(R + G) / 2 - B`` (16 bits
    each: above the channel's median) and on a 4 (wide) x 8 (high) grid of Y (32 bits). It carries the
    colour that the two luminance hashes ignore.

Regions (suffix of the column name)
    none: the whole image; ``_centre``: the central 95 % (of width and of height); ``_nw``, ``_ne``,
    ``_sw``, ``_se``: the 90 % crops anchored at the top-left, top-right, bottom-left and bottom-right
    corners. A cropped copy is geometrically closer to a region of its original than to the whole original,
    so comparing the whole of each image with the regions of the other lets crops through at a lower
    distance: a 95 % crop is within half its margin of the central 95 %; a 90 % crop taken anywhere is
    within half its margin (2.5 % of the side) of one of the four corner crops (a centred one is equally
    near all four).

Each is a Python int in ``[0, 2**64)`` (a ``numpy.uint64`` column). The Hamming distance (differing bits,
0..64) measures how different two images look: unrelated images sit near 32, copies near 0.

Why this combination (measured on the 10,000 CIFAR-10 test JPEGs, 32 x 32): 0.5x / 2x resizes and JPEG
q50 re-encodes move ``phash`` by 0-4 bits, but a 95 % crop at a random offset by 10 bits in the median and
16-18 in the worst tenth, and about 1 unrelated pair in 10,000 is within 16 bits, so one hash cannot tell
crops from unrelated images. :func:`audit.analysis.data_quality.find_data_quality_issues` therefore
requires all three hashes to agree in one alignment (whole/whole, centre/whole, whole/centre: ``phash <=
16``, ``dhash <= 14``, ``chash <= 12``; whole/corner or corner/whole: ``<= 12``, ``<= 10``, ``<= 10``).
tests/data/test_data_quality_cifar.py gives the recall and precision per kind of copy.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.fft import dct

ERROR_NOT_RGB = ("compute_perceptual_hashes expects an RGB image array of shape (height, width, 3) and "
                 "dtype uint8, got shape {shape} and dtype {dtype}: decode the image to RGB first")

#: Hash column names written by :func:`compute_perceptual_hashes`.
HASH_NAMES = ("phash", "dhash", "chash", "phash_centre", "dhash_centre", "chash_centre",
              "phash_nw", "dhash_nw", "chash_nw", "phash_ne", "dhash_ne", "chash_ne",
              "phash_sw", "dhash_sw", "chash_sw", "phash_se", "dhash_se", "chash_se")

#: Suffixes of the four corner-crop hashes (nw = top left, ne = top right, sw = bottom left, se = bottom right).
CORNERS = ("nw", "ne", "sw", "se")

#: Fraction of width and height kept by the centre hashes.
CENTRE_FRACTION = 0.95

#: Fraction of width and height kept by the corner-crop hashes.
CORNER_FRACTION = 0.90

_DCT_SIZE = 32
_REDUCE_SIDE = 64
_N_BITS = 64


def _zigzag_positions(n_coefficients: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the first ``n_coefficients`` AC coefficients in zig-zag (u + v, then u) order."""
    positions = sorted(((u, v) for u in range(size) for v in range(size) if 0 < u + v),
                       key=lambda uv: (uv[0] + uv[1], uv[0]))[:n_coefficients]
    rows, cols = zip(*positions)
    return np.asarray(rows), np.asarray(cols)


_ZZ_ROWS, _ZZ_COLS = _zigzag_positions(_N_BITS, _DCT_SIZE)
#: Rows of the orthonormal DCT-II matrix up to the highest frequency the hash keeps: the 2-D DCT-II of
#: ``x`` restricted to those frequencies is ``_DCT_ROWS @ x @ _DCT_ROWS.T`` (same values as scipy's ``dctn``).
_DCT_ROWS = dct(np.eye(_DCT_SIZE), type=2, norm="ortho", axis=0)[:int(max(_ZZ_ROWS.max(), _ZZ_COLS.max())) + 1]


def _bits_to_int(bits: np.ndarray) -> int:
    """Pack 64 booleans (bit k = element k) into a Python int."""
    return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


def _median(values: np.ndarray) -> float:
    """Median of an even number of values (the mean of the two middle ones, as ``numpy.median``), faster."""
    middle = values.size // 2
    low, high = np.partition(values, (middle - 1, middle))[middle - 1:middle + 1]
    return (low + high) / 2


def _resize(plane: Image.Image, box: tuple[int, int, int, int], width: int, height: int,
            resample: Image.Resampling) -> np.ndarray:
    """Region ``box`` (left, top, right, bottom) of a mode-F image resized to ``width`` x ``height``."""
    if box == (0, 0, plane.width, plane.height) and plane.size == (width, height):
        return np.asarray(plane, dtype=np.float32)
    return np.asarray(plane.crop(box).resize((width, height), resample), dtype=np.float32)


def _above_median(values: np.ndarray) -> np.ndarray:
    values = values.ravel()
    return values > _median(values)


def _planes(rgb: np.ndarray) -> tuple[Image.Image, Image.Image, Image.Image]:
    """Luminance and the two opponent colour channels of an RGB uint8 array, as mode-F (float32) images."""
    channels = rgb.astype(np.float32)
    red, green, blue = channels[..., 0], channels[..., 1], channels[..., 2]
    gray = red * 0.299 + green * 0.587 + blue * 0.114
    return tuple(Image.fromarray(np.ascontiguousarray(plane), mode="F")
                 for plane in (gray, red - green, (red + green) / 2 - blue))


def _three_hashes(planes: tuple[Image.Image, Image.Image, Image.Image],
                  box: tuple[int, int, int, int]) -> tuple[int, int, int]:
    """(phash, dhash, chash) of region ``box`` (left, top, right, bottom) of the planes; module docstring."""
    gray, red_green, yellow_blue = planes
    small = _resize(gray, box, _DCT_SIZE, _DCT_SIZE, Image.Resampling.BILINEAR)
    coefficients = (_DCT_ROWS @ small.astype(np.float64) @ _DCT_ROWS.T)[_ZZ_ROWS, _ZZ_COLS]
    # Rounding noise (~1e-13) of the matrix product stands for exact zeros (a flat image): keep it at zero.
    coefficients[np.abs(coefficients) < 1e-7] = 0.0
    phash = _bits_to_int(coefficients > _median(coefficients))

    tiny = _resize(gray, box, 9, 8, Image.Resampling.BILINEAR)
    dhash = _bits_to_int((tiny[:, :-1] > tiny[:, 1:]).ravel())

    colour_bits = np.concatenate([
        _above_median(_resize(red_green, box, 4, 4, Image.Resampling.BOX)),
        _above_median(_resize(yellow_blue, box, 4, 4, Image.Resampling.BOX)),
        _above_median(_resize(gray, box, 4, 8, Image.Resampling.BOX)),
    ])
    chash = _bits_to_int(colour_bits)
    return phash, dhash, chash


def _regions(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of the whole image, its central 95 % and its four 90 % corner crops."""
    keep_w = max(1, round(width * CENTRE_FRACTION))
    keep_h = max(1, round(height * CENTRE_FRACTION))
    regions = [(0, 0, height, width), ((height - keep_h) // 2, (width - keep_w) // 2, keep_h, keep_w)]
    keep_w = max(1, round(width * CORNER_FRACTION))
    keep_h = max(1, round(height * CORNER_FRACTION))
    for top, left in ((0, 0), (0, width - keep_w), (height - keep_h, 0), (height - keep_h, width - keep_w)):
        regions.append((top, left, keep_h, keep_w))
    return regions


def compute_perceptual_hashes(rgb: np.ndarray) -> dict:
    """Perceptual hashes of one image.

    Parameters
    ----------
    rgb : ndarray of uint8, shape (height, width, 3)
        The decoded image.

    Returns
    -------
    dict
        ``{"phash", "dhash", "chash", "phash_centre", "dhash_centre", "chash_centre"}`` (:data:`HASH_NAMES`),
        each a 64-bit hash as a Python int in ``[0, 2**64)`` (store as ``numpy.uint64``). See the module
        docstring for how each is computed.

    Raises
    ------
    ValueError
        When ``rgb`` is not an (H, W, 3) uint8 array.
    """
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 \
            or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise ValueError(ERROR_NOT_RGB.format(shape=shape, dtype=dtype))
    # Large images are first box-reduced by an integer factor (fast, in Pillow) to a shorter side of at least
    # _REDUCE_SIDE px; every hash works on 32 px or less, so this changes nothing but the time taken.
    factor = min(rgb.shape[0], rgb.shape[1]) // _REDUCE_SIDE
    if factor >= 2:
        rgb = np.asarray(Image.fromarray(rgb).reduce(factor))
    planes = _planes(rgb)
    values = []
    for top, left, height, width in _regions(rgb.shape[0], rgb.shape[1]):
        values.extend(_three_hashes(planes, (left, top, left + width, top + height)))
    return dict(zip(HASH_NAMES, values))  # HASH_NAMES lists (phash, dhash, chash) region by region


def hamming_distance(a, b) -> np.ndarray:
    """Number of differing bits between 64-bit hashes ``a`` and ``b`` (broadcast, as uint64 arrays)."""
    from audit.analysis.near_duplicates import popcount

    return popcount(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)))
