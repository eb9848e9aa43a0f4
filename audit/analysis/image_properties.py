"""Per-image pixel attributes and their fixed, dataset-independent bins.

Every attribute is computed from the decoded RGB array (uint8, H x W x 3) by :func:`compute_image_properties`
and binned by :func:`bin_image_properties` into named groups with **fixed cut points** (not data quantiles),
so ``dark`` means dark on any data set and groups compare across audits. All columns are prefixed
``image_`` (contract: they never collide with manifest columns).

=========================  ==========================================================================
column                     meaning
=========================  ==========================================================================
``image_width``            stored width in pixels
``image_height``           stored height in pixels
``image_aspect_ratio``     width / height
``image_brightness``       mean perceived luminance Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601 luma),
                           on a 0..1 scale (0 = black, 1 = white)
``image_contrast``         RMS contrast: standard deviation of Y on the 0..1 scale (0 = flat; a
                           uniform luminance histogram gives 0.29, a half-black half-white image 0.5)
``image_colourfulness``    Hasler & Suesstrunk (2003) colourfulness M on 0..255 pixel values, the
                           paper's own scale, so its named levels apply directly:
                           ``rg = R - G``, ``yb = (R + G) / 2 - B``,
                           ``M = sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2)``.
                           0 for a gray image; pure red is 85.5.
``image_sharpness``        variance of the 4-neighbour Laplacian of Y on 0..255 gray levels (squared
                           gray levels), computed after a box-filter downscale to a shorter side of at
                           most :data:`SHARPNESS_REFERENCE_SIDE` px, so large photos are judged at one
                           reference scale. Higher = sharper. None for images under 3 px on a side.
``image_is_grayscale``     the file is a grayscale format (mode L, 1, I, I;16, F...), or no pixel's
                           channels differ by more than :data:`GRAYSCALE_TOLERANCE` levels
=========================  ==========================================================================

Cut points (:data:`BINS`; a value equal to a cut point goes to the upper group)
------------------------------------------------------------------------------
brightness : ``dark`` < 0.25 <= ``mid`` < 0.75 <= ``bright``
    Quarters of the luminance range: a dark image has a mean luminance in the bottom quarter (under-exposed,
    night), a bright one in the top quarter (over-exposed, white background).
contrast : ``low`` < 0.10 <= ``normal`` < 0.30 <= ``high``
    Under 0.10 the luminance spread is under a tenth of the range (fog, haze, flat or washed-out images);
    0.30 is just above the 0.29 of a uniform histogram, so ``high`` means a strongly two-toned image
    (hard shadows, text, line art). Typical photographs fall in between.
colourfulness : ``muted`` < 33 <= ``moderate`` < 59 <= ``colourful``
    Hasler & Suesstrunk's perceptual levels: not colourful 0, slightly 15, moderately 33, averagely 45,
    quite 59, highly 82, extremely 109. ``muted`` = below "moderately colourful", ``colourful`` = "quite
    colourful" or more.
sharpness : ``blurry`` < 100 <= ``normal`` < 1000 <= ``sharp``
    100 is the usual focus threshold for the variance of the Laplacian on 0..255 gray levels (Pech-Pacheco
    et al. 2000, "Diatom autofocusing in brightfield microscopy"; widely used as the blur cut-off);
    ``sharp`` = ten times that: dense fine detail or strong edges at the reference scale.
width, height : ``small`` < 64 <= ``medium`` < 256 <= ``large`` (pixels)
    Under 64 px a side is thumbnail scale (CIFAR's 32 px is about the least at which people still
    recognise scenes, Torralba et al. 2008); 256 px is the usual resize before the 224 px crop of
    ImageNet models.
aspect ratio : ``portrait`` < 1/1.1 <= ``square`` <= 1.1 < ``landscape``
    Within 10 % of square counts as square (4:3 and 3:4 are landscape and portrait).
"""
from __future__ import annotations

import math

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # imported where used: worker processes start without pandas
    import pandas as pd

#: Original Pillow modes that make an image grayscale whatever its converted pixels.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})

#: Largest per-pixel channel difference (0..255 levels) still counted as gray (JPEG rounding noise).
GRAYSCALE_TOLERANCE = 8

#: Shorter side (px) above which an image is box-downscaled before measuring sharpness.
SHARPNESS_REFERENCE_SIDE = 256

#: Rows processed at once for the sums (keeps memory small on very large images).
_CHUNK_PIXELS = 1 << 20

#: Numeric pixel attributes, in contract order.
NUMERIC_PROPERTIES = ("image_width", "image_height", "image_aspect_ratio", "image_brightness",
                     "image_contrast", "image_colourfulness", "image_sharpness")

#: Every pixel attribute column :func:`compute_image_properties` returns.
PROPERTY_COLUMNS = NUMERIC_PROPERTIES + ("image_is_grayscale",)

#: Fixed bins: column -> (cut points, group names); len(names) == len(cut points) + 1.
BINS: dict[str, tuple[tuple[float, ...], tuple[str, ...]]] = {
    "image_width": ((64, 256), ("small", "medium", "large")),
    "image_height": ((64, 256), ("small", "medium", "large")),
    "image_aspect_ratio": ((1 / 1.1, math.nextafter(1.1, math.inf)), ("portrait", "square", "landscape")),
    "image_brightness": ((0.25, 0.75), ("dark", "mid", "bright")),
    "image_contrast": ((0.10, 0.30), ("low", "normal", "high")),
    "image_colourfulness": ((33.0, 59.0), ("muted", "moderate", "colourful")),
    "image_sharpness": ((100.0, 1000.0), ("blurry", "normal", "sharp")),
}

#: Group columns :func:`bin_image_properties` adds.
GROUP_COLUMNS = tuple(f"{name}_group" for name in BINS)

_LUMA = np.array([0.299, 0.587, 0.114])
_LUMA32 = _LUMA.astype(np.float32)
_RG = np.array([1.0, -1.0, 0.0])    # Hasler-Suesstrunk rg = R - G
_YB = np.array([0.5, 0.5, -1.0])    # Hasler-Suesstrunk yb = (R + G) / 2 - B
_GB = np.array([0.0, 1.0, -1.0])
_RB = np.array([1.0, 0.0, -1.0])


def compute_image_properties(rgb: np.ndarray, *, mode: str | None = None) -> dict:
    """Pixel attributes of one image (see the module docstring for each definition).

    Parameters
    ----------
    rgb : ndarray of uint8, shape (height, width, 3)
    mode : str, optional
        The file's original Pillow mode; a grayscale mode makes ``image_is_grayscale`` true.

    Returns
    -------
    dict
        ``image_width`` and ``image_height`` (int), ``image_aspect_ratio``, ``image_brightness``,
        ``image_contrast``, ``image_colourfulness``, ``image_sharpness`` (float, or None when undefined)
        and ``image_is_grayscale`` (bool).
    """
    array = np.asarray(rgb)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB array of shape (height, width, 3), got shape {array.shape}")
    height, width = int(array.shape[0]), int(array.shape[1])
    if height == 0 or width == 0:
        raise ValueError(f"expected a non-empty image, got shape {array.shape}")

    # Brightness, contrast and colourfulness are means and variances of *linear* combinations of R, G, B,
    # so they all follow from the channel sums and the 3 x 3 matrix of channel cross-products, summed
    # chunk by chunk (exact, one BLAS product per chunk, memory bounded on huge images).
    n = height * width
    rows_per_chunk = max(1, _CHUNK_PIXELS // width)
    sums = np.zeros(3)
    products = np.zeros((3, 3))
    for start in range(0, height, rows_per_chunk):
        # channels as rows (3 x pixels, C order): row sums and the product are contiguous, hence fast
        block = array[start:start + rows_per_chunk].reshape(-1, 3).T.astype(np.float64, order="C")
        sums += block.sum(axis=1)
        products += block @ block.T
    mean = sums / n
    covariance = products / n - np.outer(mean, mean)

    def mean_and_variance(weights: np.ndarray) -> tuple[float, float]:
        return float(weights @ mean), max(float(weights @ covariance @ weights), 0.0)

    mean_y, var_y = mean_and_variance(_LUMA)
    mean_rg, var_rg = mean_and_variance(_RG)
    mean_yb, var_yb = mean_and_variance(_YB)
    colourfulness = math.sqrt(var_rg + var_yb) + 0.3 * math.sqrt(mean_rg ** 2 + mean_yb ** 2)

    if mode in GRAYSCALE_MODES:
        grayscale = True
    else:
        # mean squared channel difference above tolerance^2 means some pixel differs by more: skip the scan
        tolerance2 = GRAYSCALE_TOLERANCE ** 2 + 1e-9
        grayscale = all(float(w @ covariance @ w) + float(w @ mean) ** 2 <= tolerance2 for w in (_RG, _GB, _RB))
        if grayscale:
            grayscale = _max_channel_spread(array, rows_per_chunk) <= GRAYSCALE_TOLERANCE

    return {
        "image_width": width,
        "image_height": height,
        "image_aspect_ratio": width / height,
        "image_brightness": _clean(mean_y / 255.0, 0.0, 1.0),
        "image_contrast": _clean(math.sqrt(var_y) / 255.0, 0.0, 0.5),
        "image_colourfulness": _clean(colourfulness, 0.0, None),
        "image_sharpness": _sharpness(array),
        "image_is_grayscale": bool(grayscale),
    }


#: Images of at most this many pixels are measured together, stacked by size (larger ones one by one) ...
_BATCH_MAX_PIXELS = 1 << 18
#: ... in stacks of about this many pixels (small enough to stay in the processor's caches).
_STACK_PIXELS = 1 << 18


def compute_image_properties_batch(images, modes=None) -> dict[str, np.ndarray]:
    """Pixel attributes of many images at once (the values of :func:`compute_image_properties`).

    Images of the same size (up to :data:`_BATCH_MAX_PIXELS` pixels, shorter side at most
    :data:`SHARPNESS_REFERENCE_SIDE`) are stacked and measured with a few array operations per stack, so the
    cost per small image is microseconds; others go through :func:`compute_image_properties`.

    Parameters
    ----------
    images : sequence of ndarray of uint8, shape (height, width, 3)
    modes : sequence of str or None, optional
        Each file's original Pillow mode (see :func:`compute_image_properties`).

    Returns
    -------
    dict
        :data:`PROPERTY_COLUMNS` -> array with one value per image, in input order (``image_width`` and
        ``image_height`` int64, ``image_is_grayscale`` bool, the others float64; ``image_sharpness`` NaN where
        undefined).
    """
    n = len(images)
    modes = list(modes) if modes is not None else [None] * n
    out = {"image_width": np.zeros(n, dtype=np.int64), "image_height": np.zeros(n, dtype=np.int64)}
    for name in ("image_aspect_ratio", "image_brightness", "image_contrast", "image_colourfulness",
                 "image_sharpness"):
        out[name] = np.full(n, np.nan)
    out["image_is_grayscale"] = np.zeros(n, dtype=bool)
    groups: dict[tuple, list[int]] = {}
    for position, rgb in enumerate(images):
        array = np.asarray(rgb)
        if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0 \
                or array.shape[0] * array.shape[1] > _BATCH_MAX_PIXELS \
                or min(array.shape[:2]) > SHARPNESS_REFERENCE_SIDE:
            values = compute_image_properties(array, mode=modes[position])
            for name, value in values.items():
                out[name][position] = np.nan if value is None else value
            continue
        groups.setdefault(array.shape, []).append(position)
    for (height, width, _), positions in groups.items():
        step = max(1, _STACK_PIXELS // (height * width))
        for start in range(0, len(positions), step):
            chunk = positions[start:start + step]
            _properties_stack(np.stack([np.asarray(images[i]) for i in chunk]), [modes[i] for i in chunk],
                              chunk, out)
    return out


def _properties_stack(stack: np.ndarray, modes: list, positions: list, out: dict) -> None:
    """:func:`compute_image_properties` of ``B`` same-sized small images ``(B, H, W, 3)``, into ``out``."""
    batch, height, width = stack.shape[:3]
    n = height * width
    # channel sums and cross-products: exact integers in float64 (as in compute_image_properties); channels as
    # rows (B, 3, pixels), so that sums and products run over contiguous memory
    channels = stack.reshape(batch, n, 3).transpose(0, 2, 1).astype(np.float64, order="C")
    sums = channels.sum(axis=2)
    products = np.matmul(channels, channels.transpose(0, 2, 1))
    del channels
    mean = sums / n
    covariance = products / n - mean[:, :, None] * mean[:, None, :]

    def quadratic(weights: np.ndarray) -> np.ndarray:  # weights' covariance weights, per image
        return np.matmul(np.matmul(covariance, weights), weights)

    def mean_and_variance(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return mean @ weights, np.maximum(quadratic(weights), 0.0)

    mean_y, var_y = mean_and_variance(_LUMA)
    mean_rg, var_rg = mean_and_variance(_RG)
    mean_yb, var_yb = mean_and_variance(_YB)
    colourfulness = np.sqrt(var_rg + var_yb) + 0.3 * np.sqrt(mean_rg ** 2 + mean_yb ** 2)

    tolerance2 = GRAYSCALE_TOLERANCE ** 2 + 1e-9
    candidate = np.ones(batch, dtype=bool)
    for w in (_RG, _GB, _RB):
        candidate &= quadratic(w) + (mean @ w) ** 2 <= tolerance2
    grayscale = np.array([mode in GRAYSCALE_MODES for mode in modes], dtype=bool)
    for k in np.flatnonzero(candidate & ~grayscale):
        grayscale[k] = _max_channel_spread(stack[k], height) <= GRAYSCALE_TOLERANCE

    if min(height, width) >= 3:
        y = (stack.astype(np.float32) @ _LUMA32).astype(np.float64)
        laplacian = y[:, :-2, 1:-1] + y[:, 2:, 1:-1] + y[:, 1:-1, :-2] + y[:, 1:-1, 2:] - 4.0 * y[:, 1:-1, 1:-1]
        sharpness = laplacian.reshape(batch, -1).var(axis=1)
    else:
        sharpness = np.full(batch, np.nan)

    out["image_width"][positions] = width
    out["image_height"][positions] = height
    out["image_aspect_ratio"][positions] = width / height
    out["image_brightness"][positions] = np.clip(mean_y / 255.0, 0.0, 1.0)
    out["image_contrast"][positions] = np.clip(np.sqrt(var_y) / 255.0, 0.0, 0.5)
    out["image_colourfulness"][positions] = np.maximum(colourfulness, 0.0)
    out["image_sharpness"][positions] = sharpness
    out["image_is_grayscale"][positions] = grayscale


def _clean(value: float, low: float | None, high: float | None) -> float:
    """Remove float round-off just outside the attribute's range (e.g. -1e-17 for a flat image)."""
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    return float(value)


def _max_channel_spread(array: np.ndarray, rows_per_chunk: int) -> int:
    """Largest difference between two channels of one pixel, in 0..255 levels."""
    spread = 0
    for start in range(0, array.shape[0], rows_per_chunk):
        block = array[start:start + rows_per_chunk].astype(np.int16)
        spread = max(spread, int((block.max(axis=2) - block.min(axis=2)).max()))
    return spread


def _sharpness(array: np.ndarray) -> float | None:
    """Variance of the 4-neighbour Laplacian of the luminance (0..255 levels) at the reference scale."""
    height, width = array.shape[:2]
    shorter = min(height, width)
    if shorter > SHARPNESS_REFERENCE_SIDE:
        scale = SHARPNESS_REFERENCE_SIDE / shorter
        size = (max(3, round(width * scale)), max(3, round(height * scale)))
        # box-average the luminance (float, no rounding) down to the reference scale
        luminance = np.empty((height, width), dtype=np.float32)
        rows = max(1, _CHUNK_PIXELS // width)
        for start in range(0, height, rows):
            luminance[start:start + rows] = array[start:start + rows].astype(np.float32) @ _LUMA32
        luminance = np.asarray(Image.fromarray(luminance, mode="F").resize(size, Image.Resampling.BOX),
                               dtype=np.float32)
    else:
        luminance = array.astype(np.float32) @ _LUMA32
    if min(luminance.shape) < 3:
        return None
    y = luminance.astype(np.float64)
    laplacian = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4.0 * y[1:-1, 1:-1]
    return float(laplacian.var())


def bin_image_properties(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``frame`` with a ``<name>_group`` column for every numeric pixel attribute present.

    Parameters
    ----------
    frame : DataFrame
        Holds some or all of :data:`NUMERIC_PROPERTIES` (e.g. one row per image from
        :func:`compute_image_properties`).

    Returns
    -------
    DataFrame
        ``frame`` plus string columns ``image_brightness_group`` (``dark``/``mid``/``bright``),
        ``image_contrast_group`` (``low``/``normal``/``high``), ``image_colourfulness_group``
        (``muted``/``moderate``/``colourful``), ``image_sharpness_group`` (``blurry``/``normal``/``sharp``),
        ``image_width_group`` and ``image_height_group`` (``small``/``medium``/``large``) and
        ``image_aspect_ratio_group`` (``portrait``/``square``/``landscape``), with the fixed cut points of
        :data:`BINS`. A missing value gives None (the ``<missing>`` group downstream).
        ``image_is_grayscale`` stays boolean.
    """
    result = frame.copy()
    for name, (cuts, labels) in BINS.items():
        if name not in result.columns:
            continue
        result[f"{name}_group"] = bin_values(result[name], name)
    return result


def bin_values(values, name: str) -> pd.Series:
    """Group names of ``values`` for the attribute ``name`` (cut points :data:`BINS`); None where missing."""
    import pandas as pd

    cuts, labels = BINS[name]
    series = pd.Series(values)
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    index = np.searchsorted(np.asarray(cuts, dtype=np.float64), numbers, side="right")
    out = np.asarray(labels, dtype=object)[np.clip(index, 0, len(labels) - 1)]
    out[~np.isfinite(numbers)] = None
    return pd.Series(out, index=series.index, dtype=object, name=f"{name}_group")
