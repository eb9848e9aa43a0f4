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

_SUPPORT = {"box": 0.5, "bilinear": 1.0}


@lru_cache(maxsize=4096)
def _tap_arrays(start: int, length: int, out_size: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` resampling ``[start, start + length)`` of an axis to ``out_size`` values:
    ``(indices, weights)``, each ``(out_size, K)``, the taps of each output value in order, padded after its
    last tap with that index and weight 0 (adding ``x * 0`` leaves a sum unchanged). Equal sizes: a copy."""
    if length == out_size:
        return (start + np.arange(out_size, dtype=np.int64))[:, None], np.ones((out_size, 1))
    scale = length / out_size
    filterscale = max(scale, 1.0)
    support = _SUPPORT[kind] * filterscale
    centers = (np.arange(out_size) + 0.5) * scale
    # C's (int) truncates toward zero
    first = np.maximum(np.trunc(centers - support + 0.5).astype(np.int64), 0)
    count = np.minimum(np.trunc(centers + support + 0.5).astype(np.int64), length) - first
    taps = np.arange(int(count.max()))
    positions = first[:, None] + taps[None, :]
    x = (positions - centers[:, None] + 0.5) * (1.0 / filterscale)
    if kind == "box":
        weights = ((x > -0.5) & (x <= 0.5)).astype(np.float64)
    else:  # bilinear (triangle)
        x = np.abs(x)
        weights = np.where(x < 1.0, 1.0 - x, 0.0)
    used = taps[None, :] < count[:, None]
    weights = np.where(used, weights, 0.0)
    total = np.cumsum(weights, axis=1)[:, -1:]  # summed in tap order, as Pillow does
    weights = np.where(total != 0.0, weights / np.where(total != 0.0, total, 1.0), weights)
    last = first + count - 1
    indices = np.where(used, positions, last[:, None]) + start
    return indices, weights


#: Resizes of each region: the gray plane gives the phash (32 x 32), the dhash (9 wide x 8 high) and the gray part
#: of the chash (4 wide x 8 high); each opponent colour plane gives 4 x 4 values of the chash. (width, height, filter)
_GRAY_OUTPUTS = ((_DCT_SIZE, _DCT_SIZE, "bilinear"), (9, 8, "bilinear"), (4, 8, "box"))
_COLOUR_OUTPUTS = ((4, 4, "box"),)
_N_REGIONS = 6


def _axis_spans(size: int) -> list[tuple[int, int]]:
    """(start, length) of the six regions of :func:`_regions` along the horizontal axis of an image ``size``
    wide (each region's columns depend on the width only)."""
    return [(left, w) for _, left, _, w in _regions(size, size)]


def _row_spans(size: int) -> list[tuple[int, int]]:
    """The same along the vertical axis of an image ``size`` high."""
    return [(top, h) for top, _, h, _ in _regions(size, size)]


def _csr_blocks(blocks: list, n_columns: int):
    """CSR matrix from blocks of rows ``(indices (rows, K), weights (rows, K))``, each row's taps in order."""
    from scipy import sparse

    indices = np.concatenate([b[0].ravel() for b in blocks])
    weights = np.concatenate([b[1].ravel() for b in blocks])
    lengths = np.concatenate([np.full(b[0].shape[0], b[0].shape[1], dtype=np.int64) for b in blocks])
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    matrix = sparse.csr_matrix((weights, indices, indptr), shape=(len(lengths), n_columns))
    matrix.has_sorted_indices = True  # taps are in increasing order already (padding repeats the last): keep them
    return matrix


@lru_cache(maxsize=1024)
def _horizontal_pass(width: int, colour: bool):
    """``(columns, width)`` sparse weights of the horizontal pass of every region and output of a plane whose
    images are ``width`` wide (a column per output value: region by region, output by output)."""
    outputs = _COLOUR_OUTPUTS if colour else _GRAY_OUTPUTS
    blocks = [_tap_arrays(left, w, out_w, kind) for left, w in _axis_spans(width) for out_w, _, kind in outputs]
    return _csr_blocks(blocks, width)


@lru_cache(maxsize=1024)
def _vertical_pass(height: int, colour: bool):
    """Sparse weights from the horizontal result, laid out (column, input row), to the final values, laid out
    (column, output row), of images ``height`` high (block-diagonal: each column resampled on its own)."""
    outputs = _COLOUR_OUTPUTS if colour else _GRAY_OUTPUTS
    blocks, column = [], 0
    for top, h in _row_spans(height):
        for out_w, out_h, kind in outputs:
            indices, weights = _tap_arrays(top, h, out_h, kind)
            columns = (column + np.arange(out_w))[:, None, None] * height
            blocks.append(((columns + indices[None]).reshape(out_w * out_h, -1),
                           np.broadcast_to(weights[None], (out_w,) + weights.shape).reshape(out_w * out_h, -1)))
            column += out_w
    return _csr_blocks(blocks, column * height)


def _layout(outputs) -> list:
    """Per region, per output: ``(start, n_columns, n_rows)`` of its block in the final values."""
    layout, start = [], 0
    for _ in range(_N_REGIONS):
        blocks = []
        for out_w, out_h, _ in outputs:
            blocks.append((start, out_w, out_h))
            start += out_w * out_h
        layout.append(blocks)
    return layout


_GRAY_LAYOUT = _layout(_GRAY_OUTPUTS)
_COLOUR_LAYOUT = _layout(_COLOUR_OUTPUTS)


@lru_cache(maxsize=1)
def _csr_matvecs():
    """scipy's own kernel of "CSR matrix times dense columns", called without the ~25 us of dispatch around it
    (None for a scipy without it: the public operator does the same). Imported on first use, not with this
    module: importing scipy.sparse takes about 0.5 s, which the pipeline's main process, reading this module's
    constants only (the feature cache key), would otherwise spend while its workers wait for their shards."""
    try:
        from scipy.sparse._sparsetools import csr_matvecs
    except ImportError:  # pragma: no cover
        return None
    return csr_matvecs


def _times(matrix, dense: np.ndarray) -> np.ndarray:
    """``matrix @ dense`` for a CSR ``matrix`` and a C-contiguous float64 ``dense`` (rows x columns): for each
    output row, ``y += w * x`` over the row's entries in order (scipy's ``csr_matvecs``)."""
    kernel = _csr_matvecs()
    if kernel is None:  # pragma: no cover
        return matrix @ dense
    out = np.zeros((matrix.shape[0], dense.shape[1]))
    kernel(matrix.shape[0], matrix.shape[1], dense.shape[1], matrix.indptr, matrix.indices, matrix.data,
           dense.ravel(), out.ravel())
    return out


def _resize_all(plane: np.ndarray, horizontal, vertical, batch: int) -> np.ndarray:
    """Every resize of one plane laid out ``(width, height * B)`` float64: ``(final rows, B)`` float32."""
    passed = _times(horizontal, plane)  # (columns, height * B)
    np.copyto(passed, passed.astype(np.float32))  # the horizontal pass is stored as float32, as in Pillow
    return _times(vertical, passed.reshape(-1, batch)).astype(np.float32)


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


def _resized_stack(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The final values of every resize of ``B`` same-sized RGB images ``(B, H, W, 3)``: gray, red-green and
    yellow-blue, each ``(final rows, B)`` float32 in the layout of :data:`_GRAY_LAYOUT` / :data:`_COLOUR_LAYOUT`."""
    batch, height, width = stack.shape[:3]
    # channel planes laid out (W, H, B): the resampled axes first, every image a column
    red, green, blue = stack.transpose(3, 2, 1, 0).astype(np.float32)
    shape = (width, height * batch)
    gray = (red * 0.299 + green * 0.587 + blue * 0.114).reshape(shape).astype(np.float64)
    red_green = (red - green).reshape(shape).astype(np.float64)
    yellow_blue = ((red + green) / 2 - blue).reshape(shape).astype(np.float64)
    del red, green, blue
    return (_resize_all(gray, _horizontal_pass(width, False), _vertical_pass(height, False), batch),
            _resize_all(red_green, _horizontal_pass(width, True), _vertical_pass(height, True), batch),
            _resize_all(yellow_blue, _horizontal_pass(width, True), _vertical_pass(height, True), batch))


def _hashes_from_values(gray_values: np.ndarray, rg_values: np.ndarray, yb_values: np.ndarray) -> np.ndarray:
    """``(B, 18)`` uint64 hashes (:data:`HASH_NAMES` order) from the final resize values of ``B`` images of any
    sizes (:func:`_resized_stack`, concatenated along the image axis)."""
    batch = gray_values.shape[1]

    def image_rows(values: np.ndarray, start: int, n_columns: int, n_rows: int) -> np.ndarray:
        # rows (column, row) x B -> (B, n_rows * n_columns), each image's values row by row
        block = values[start:start + n_columns * n_rows].reshape(n_columns, n_rows, batch)
        return np.ascontiguousarray(block.transpose(2, 1, 0)).reshape(batch, n_rows * n_columns)

    out = np.empty((batch, len(HASH_NAMES)), dtype=np.uint64)
    for index, (gray_blocks, colour_blocks) in enumerate(zip(_GRAY_LAYOUT, _COLOUR_LAYOUT)):
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
#: Images whose hashes are extracted together from their resized values (any sizes).
_EXTRACT_IMAGES = 256


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
    # Resize stack by stack (same size), then extract the hashes of many stacks at once: with images of mixed
    # sizes most stacks hold one image, and the extraction costs the same for 1 image as for 100.
    pending, pending_positions = [], []

    def flush():
        if pending_positions:
            parts = list(zip(*pending))
            values[np.concatenate(pending_positions)] = _hashes_from_values(
                *(np.concatenate(part, axis=1) for part in parts))
            pending.clear()
            pending_positions.clear()

    held = 0
    for shape, positions in groups.items():
        step = max(1, _STACK_PIXELS // (shape[0] * shape[1]))
        for start in range(0, len(positions), step):
            chunk = positions[start:start + step]
            stack = reduced[chunk[0]][None] if len(chunk) == 1 else np.stack([reduced[i] for i in chunk])
            pending.append(_resized_stack(stack))
            pending_positions.append(np.asarray(chunk, dtype=np.int64))
            held += len(chunk)
            if held >= _EXTRACT_IMAGES:
                flush()
                held = 0
    flush()
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
