"""Perceptual hashes of one decoded image, for near-duplicate search.

Eighteen 64-bit hashes (three kinds of hash on six regions), computed in the pipeline's single decoding
pass for a batch of images at once (:func:`compute_perceptual_hashes_batch`: images of the same size are
stacked and every resize of the stack is one sparse matrix product): about 0.1 ms of one core per 32 x 32
image. Large images are first box-reduced by an integer factor to a shorter side of at least 64 px. Luminance
is ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601). Resizes use Pillow's resampling filters and arithmetic
(see "resampling" below; the values do not depend on the Pillow version).

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

import math
from functools import lru_cache

import numpy as np
from PIL import Image

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
def _dct_matrix(size: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (row u = frequency u), the same values as ``scipy.fft.dct(eye, norm="ortho")``."""
    u = np.arange(size)[:, None]
    x = np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * x + 1) * u / (2 * size)) * np.sqrt(2.0 / size)
    matrix[0] /= np.sqrt(2.0)
    return matrix


_DCT_ROWS = _dct_matrix(_DCT_SIZE)[:int(max(_ZZ_ROWS.max(), _ZZ_COLS.max())) + 1]


def _check_rgb(rgb) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 \
            or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise ValueError(ERROR_NOT_RGB.format(shape=shape, dtype=dtype))


# -- resampling ------------------------------------------------------------------------------------------------
# The hashes are defined on Pillow's resize of float32 (mode F) planes: the weights of ``precompute_coeffs`` in
# Pillow's Resample.c (the "bilinear" triangle and the "box" filter, both widened when shrinking, so they low-pass
# filter), a horizontal pass whose result is stored as float32, then a vertical pass, each output the sum of its
# taps in tap order in double precision (``ImagingResample*_32bpc``). Here each pass over a whole stack of
# same-sized images is one product of a sparse weight matrix (CSR, taps in order) with a dense array whose other
# axes are columns: scipy accumulates ``y += w * x`` tap by tap exactly like Pillow, so the values are Pillow's
# (horizontal pass first) on every machine, whatever the Pillow version (Pillow 13 runs some resizes vertical pass
# first, a float32 ulp apart) and without its ~90 calls per image. A crop is weights that are zero outside it.

def _filter_weight(x: float, kind: str) -> float:
    if kind == "box":
        return 1.0 if -0.5 < x <= 0.5 else 0.0
    x = abs(x)  # bilinear (triangle)
    return 1.0 - x if x < 1.0 else 0.0


_SUPPORT = {"box": 0.5, "bilinear": 1.0}


@lru_cache(maxsize=4096)
def _taps(start: int, length: int, out_size: int, kind: str) -> tuple:
    """Per output value, ``((index, weight), ...)`` in tap order: Pillow's ``precompute_coeffs`` resampling
    ``[start, start + length)`` of an axis to ``out_size`` values (zero weights left out; a copy when sizes match)."""
    if length == out_size:
        return tuple(((start + out, 1.0),) for out in range(out_size))
    scale = length / out_size
    filterscale = max(scale, 1.0)
    support = _SUPPORT[kind] * filterscale
    rows = []
    for out in range(out_size):
        center = (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)   # C (int) truncates toward zero, as int() does
        count = min(int(center + support + 0.5), length) - first
        values = [_filter_weight((x + first - center + 0.5) * (1.0 / filterscale), kind) for x in range(count)]
        total = 0.0
        for value in values:  # in order, as Pillow sums them
            total += value
        rows.append(tuple((start + first + tap, value / total if total != 0.0 else value)
                          for tap, value in enumerate(values) if value != 0.0))
    return tuple(rows)


def _csr(rows: list, n_columns: int):
    """A CSR matrix from rows of ``(column, weight)`` pairs, kept in the given (tap) order."""
    from scipy import sparse

    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(row) for row in rows])
    indices = np.array([column for row in rows for column, _ in row], dtype=np.int64)
    data = np.array([weight for row in rows for _, weight in row], dtype=np.float64)
    matrix = sparse.csr_matrix((data, indices, indptr), shape=(len(rows), n_columns))
    matrix.has_sorted_indices = True  # the taps are in increasing order already: never re-sort them
    return matrix


#: Resizes of each region: (plane, width, height, filter). The gray plane gives the phash (32 x 32), the dhash
#: (9 x 8) and the gray part of the chash (4 wide x 8 high); the opponent colour planes the rest of the chash.
_GRAY_OUTPUTS = ((_DCT_SIZE, _DCT_SIZE, "bilinear"), (9, 8, "bilinear"), (4, 8, "box"))
_COLOUR_OUTPUT = (4, 4, "box")


@lru_cache(maxsize=128)
def _plan(height: int, width: int):
    """Sparse weights of every resize the hashes of a ``height`` x ``width`` image need (cached per size).

    Returns ``(gray_h, gray_v, colour_h, colour_v, layout)``. ``gray_h`` (columns x width) holds the horizontal
    taps of every output column of every region and gray output; ``gray_v`` maps the horizontal result, laid
    out (column, row), to the final values, laid out (column, output row). ``layout`` gives per region and
    output the ``(start, n_columns, n_rows)`` of its block of rows in the final values.
    """
    regions = _regions(height, width)
    result = []
    for outputs in (_GRAY_OUTPUTS, (_COLOUR_OUTPUT,)):
        horizontal, vertical, layout = [], [], []
        for top, left, h, w in regions:
            blocks = []
            for out_w, out_h, kind in outputs:
                blocks.append((None, out_w, out_h))
                column_taps = _taps(left, w, out_w, kind)
                row_taps = _taps(top, h, out_h, kind)
                for taps in column_taps:
                    column = len(horizontal)
                    horizontal.append(taps)
                    # output rows of this column: (column, out row) <- sum over input rows y of (column, y)
                    vertical.extend(tuple((column * height + y, weight) for y, weight in row)
                                    for row in row_taps)
            layout.append(blocks)
        # block starts in the final values (rows): blocks are written column by column, out_h rows each
        start = 0
        for blocks in layout:
            for index, (_, out_w, out_h) in enumerate(blocks):
                blocks[index] = (start, out_w, out_h)
                start += out_w * out_h
        result.append((_csr(horizontal, width), _csr(vertical, len(horizontal) * height), layout))
    (gray_h, gray_v, gray_layout), (colour_h, colour_v, colour_layout) = result
    return gray_h, gray_v, gray_layout, colour_h, colour_v, colour_layout


def _resize_all(plane: np.ndarray, horizontal, vertical, batch: int, height: int) -> np.ndarray:
    """Every resize of one plane laid out ``(width, height * B)`` float64: ``(final rows, B)`` float32."""
    passed = horizontal @ plane  # (columns, height * B)
    np.copyto(passed, passed.astype(np.float32))  # the horizontal pass is stored as float32, as in Pillow
    return (vertical @ passed.reshape(-1, batch)).astype(np.float32)


def _median_rows(values: np.ndarray) -> np.ndarray:
    """Median of each row (an even number of values: the mean of the two middle ones, as ``numpy.median``)."""
    middle = values.shape[1] // 2
    part = np.partition(values, (middle - 1, middle), axis=1)
    return (part[:, middle - 1] + part[:, middle]) / 2


def _pack(bits: np.ndarray) -> np.ndarray:
    """Rows of 64 booleans (bit k = element k) as uint64."""
    packed = np.packbits(bits, axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").ravel().astype(np.uint64)


def _above_median_rows(values: np.ndarray) -> np.ndarray:
    flat = values.reshape(values.shape[0], -1)
    return flat > _median_rows(flat)[:, None]


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


def _dct_hash_bits(values: np.ndarray, batch: int) -> np.ndarray:
    """phash bits ``(B, 64)`` of 32 x 32 images laid out ``(column, row, B)`` (as :func:`_resize_all` gives)."""
    k = _DCT_ROWS.shape[0]
    # coefficient[u, v] = sum_y sum_x D[u, y] image[y, x] D[v, x]: contract the columns, then the rows
    by_row = np.matmul(_DCT_ROWS, values.reshape(_DCT_SIZE, _DCT_SIZE * batch))          # (v, y * B)
    by_row = np.ascontiguousarray(by_row.reshape(k, _DCT_SIZE, batch).transpose(1, 0, 2))  # (y, v, B)
    coefficients = np.matmul(_DCT_ROWS, by_row.reshape(_DCT_SIZE, k * batch)).reshape(k, k, batch)  # (u, v, B)
    coefficients = np.ascontiguousarray(coefficients[_ZZ_ROWS, _ZZ_COLS].T)  # (B, 64) in zig-zag order
    # Rounding noise (~1e-13) of the matrix products stands for exact zeros (a flat image): keep it at zero.
    coefficients[np.abs(coefficients) < 1e-7] = 0.0
    return coefficients > _median_rows(coefficients)[:, None]


def _hash_stack(stack: np.ndarray) -> np.ndarray:
    """``(B, 18)`` uint64 hashes (:data:`HASH_NAMES` order) of ``B`` same-sized RGB images ``(B, H, W, 3)``."""
    batch, height, width = stack.shape[:3]
    gray_h, gray_v, gray_layout, colour_h, colour_v, colour_layout = _plan(height, width)
    # channel planes laid out (W, H, B): the resampled axes first, every image a column
    red, green, blue = stack.transpose(3, 2, 1, 0).astype(np.float32)
    shape = (width, height * batch)
    gray = (red * 0.299 + green * 0.587 + blue * 0.114).reshape(shape).astype(np.float64)
    red_green = (red - green).reshape(shape).astype(np.float64)
    yellow_blue = ((red + green) / 2 - blue).reshape(shape).astype(np.float64)
    del red, green, blue
    gray_values = _resize_all(gray, gray_h, gray_v, batch, height)
    rg_values = _resize_all(red_green, colour_h, colour_v, batch, height)
    yb_values = _resize_all(yellow_blue, colour_h, colour_v, batch, height)

    def image_rows(values: np.ndarray, start: int, n_columns: int, n_rows: int) -> np.ndarray:
        # rows (column, row) x B -> (B, n_rows * n_columns), each image's values row by row
        block = values[start:start + n_columns * n_rows].reshape(n_columns, n_rows, batch)
        return np.ascontiguousarray(block.transpose(2, 1, 0)).reshape(batch, n_rows * n_columns)

    out = np.empty((batch, len(HASH_NAMES)), dtype=np.uint64)
    for index, (gray_blocks, colour_blocks) in enumerate(zip(gray_layout, colour_layout)):
        (start, n_columns, n_rows), tiny_block, chash_block = gray_blocks
        out[:, 3 * index] = _pack(_dct_hash_bits(gray_values[start:start + n_columns * n_rows], batch))
        tiny = image_rows(gray_values, *tiny_block).reshape(batch, 8, 9)
        out[:, 3 * index + 1] = _pack((tiny[:, :, :-1] > tiny[:, :, 1:]).reshape(batch, -1))
        out[:, 3 * index + 2] = _pack(np.concatenate([
            _above_median_rows(image_rows(rg_values, *colour_blocks[0])),
            _above_median_rows(image_rows(yb_values, *colour_blocks[0])),
            _above_median_rows(image_rows(gray_values, *chash_block))], axis=1))
    return out


def _reduced(rgb: np.ndarray) -> np.ndarray:
    # Large images are first box-reduced by an integer factor (fast, in Pillow) to a shorter side of at least
    # _REDUCE_SIDE px; every hash works on 32 px or less, so this changes nothing but the time taken.
    factor = min(rgb.shape[0], rgb.shape[1]) // _REDUCE_SIDE
    if factor >= 2:
        return np.asarray(Image.fromarray(rgb).reduce(factor))
    return rgb


#: Pixels (images x height x width) hashed in one stack: small enough for the work arrays (~300 bytes a pixel)
#: to stay in the processor's caches (64 CIFAR images: half the time per image of 2,048 at once).
_STACK_PIXELS = 1 << 16


def compute_perceptual_hashes_batch(images) -> dict[str, np.ndarray]:
    """Perceptual hashes of many images at once (the same values as :func:`compute_perceptual_hashes`).

    Images of the same size (after the integer reduction of large images) are stacked and hashed together
    with a few matrix products, so the cost per image is a few microseconds of numpy work instead of dozens of
    Pillow calls.

    Parameters
    ----------
    images : sequence of ndarray of uint8, shape (height, width, 3)

    Returns
    -------
    dict
        :data:`HASH_NAMES` -> ``uint64`` array with one hash per image, in input order.

    Raises
    ------
    ValueError
        When an image is not an (H, W, 3) uint8 array (:data:`ERROR_NOT_RGB`).
    """
    n = len(images)
    for rgb in images:
        _check_rgb(rgb)
    reduced = [_reduced(rgb) for rgb in images]
    groups: dict[tuple, list[int]] = {}
    for position, rgb in enumerate(reduced):
        groups.setdefault(rgb.shape, []).append(position)
    values = np.zeros((n, len(HASH_NAMES)), dtype=np.uint64)
    for shape, positions in groups.items():
        step = max(1, _STACK_PIXELS // (shape[0] * shape[1]))
        for start in range(0, len(positions), step):
            chunk = positions[start:start + step]
            stack = reduced[chunk[0]][None] if len(chunk) == 1 else np.stack([reduced[i] for i in chunk])
            values[chunk] = _hash_stack(stack)
    return {name: values[:, k] for k, name in enumerate(HASH_NAMES)}


def compute_perceptual_hashes(rgb: np.ndarray) -> dict:
    """Perceptual hashes of one image.

    Parameters
    ----------
    rgb : ndarray of uint8, shape (height, width, 3)
        The decoded image.

    Returns
    -------
    dict
        :data:`HASH_NAMES` (``phash``, ``dhash``, ``chash``, then the same for the ``_centre``, ``_nw``, ``_ne``,
        ``_sw`` and ``_se`` regions), each a 64-bit hash as a Python int in ``[0, 2**64)`` (store as
        ``numpy.uint64``). See the module docstring for how each is computed; many images at once:
        :func:`compute_perceptual_hashes_batch`.

    Raises
    ------
    ValueError
        When ``rgb`` is not an (H, W, 3) uint8 array.
    """
    _check_rgb(rgb)
    values = compute_perceptual_hashes_batch([rgb])
    return {name: int(values[name][0]) for name in HASH_NAMES}


def hamming_distance(a, b) -> np.ndarray:
    """Number of differing bits between 64-bit hashes ``a`` and ``b`` (broadcast, as uint64 arrays)."""
    from audit.analysis.near_duplicates import popcount

    return popcount(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)))
