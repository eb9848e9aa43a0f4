"""Model preprocessing: the sidecar file ``model.json``, where it comes from, and how images are prepared.

The sidecar (contract, section "Model sidecar") tells how a model expects its input and what it outputs:

- ``classes``: the model's output order, as names (or ``null`` when unknown);
- ``input_size``: ``[h, w]`` in pixels;
- ``center_crop``: fraction of the width and of the height kept around the centre before resizing
  (``1.0`` = no crop);
- ``channel_order``: ``"RGB"`` or ``"BGR"``;
- ``mean`` and either ``std`` (pixels scaled to 0..1 first: ``(x / 255 - mean) / std``) or ``scale``
  (pixels left at 0..255: ``(x - mean) * scale``); ``mean``/``std`` are listed in the model's channel order;
- ``output``: ``"probabilities"`` or ``"logits"``.

Where the preprocessing comes from (:func:`audit.model.inference.resolve_preprocessing`): a ``--preprocess`` file, else a sidecar
beside the model file (``<model stem>.json``, else ``model.json``), else the registered default of
``--arch``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from audit.errors import ModelError

__all__ = [
    "Preprocessing",
    "SIDECAR_KEYS",
    "load_sidecar",
    "check_sidecar",
    "find_sidecar",
    "preprocess_image",
    "preprocess_batch",
]

#: Keys a sidecar may hold; ``std`` and ``scale`` are alternatives (exactly one of them).
SIDECAR_KEYS = ("classes", "input_size", "center_crop", "channel_order", "mean", "std", "scale", "output")
_REQUIRED_KEYS = ("input_size", "mean", "output")
CHANNEL_ORDERS = ("RGB", "BGR")
OUTPUT_KINDS = ("probabilities", "logits")

ERROR_SIDECAR_UNREADABLE = (
    "Cannot read the preprocessing file {file}: {reason}. Give a JSON object with the keys "
    + ", ".join(SIDECAR_KEYS) + "."
)
ERROR_SIDECAR_NOT_OBJECT = (
    "The preprocessing file {file} must hold one JSON object (keys " + ", ".join(SIDECAR_KEYS) + "), "
    "not {found}."
)
ERROR_SIDECAR_UNKNOWN_KEY = (
    "Unknown key '{key}' in the preprocessing file {file}. Allowed keys: " + ", ".join(SIDECAR_KEYS)
    + ". Remove it or fix its spelling."
)
ERROR_SIDECAR_MISSING_KEY = (
    "The preprocessing file {file} lacks the key '{key}'. Add it (see the model sidecar format)."
)
ERROR_SIDECAR_TYPE = "Key '{key}' in the preprocessing file {file} must be {expected}, not {found}."
ERROR_SIDECAR_STD_OR_SCALE = (
    "The preprocessing file {file} must give exactly one of 'std' (for pixels on 0..1) or 'scale' "
    "(for pixels on 0..255); it gives {found}."
)
ERROR_SIDECAR_DUPLICATE_CLASS = (
    "Key 'classes' in the preprocessing file {file} names the class '{name}' twice; class names must be unique."
)


@dataclass(frozen=True)
class Preprocessing:
    """How images are turned into a model input, and what the model outputs.

    Attributes
    ----------
    classes : tuple of str or None
        Names of the model outputs, in output order; None when the sidecar does not say.
    input_size : tuple of int
        ``(height, width)`` of the model input in pixels.
    center_crop : float
        Fraction of the image width and of its height kept around the centre before resizing
        (``1.0`` = no crop, ``0.5`` = the middle half in each direction).
    channel_order : str
        ``"RGB"`` or ``"BGR"``: the channel order of the model input.
    mean : tuple of float
        Per-channel mean subtracted, in the model's channel order; on the 0..1 scale with ``std``,
        on the 0..255 scale with ``scale``.
    std : tuple of float or None
        Per-channel divisor for pixels on 0..1: ``(x / 255 - mean) / std``.
    scale : float or None
        Multiplier for pixels on 0..255: ``(x - mean) * scale``. Exactly one of ``std`` and ``scale`` is set.
    output : str
        ``"probabilities"`` (the model ends in a softmax) or ``"logits"`` (softmax is applied by us).
    """

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    output: str
    classes: tuple[str, ...] | None = None
    center_crop: float = 1.0
    channel_order: str = "RGB"
    std: tuple[float, float, float] | None = None
    scale: float | None = None

    def __post_init__(self):
        # The same checks as a sidecar file, so code-built objects cannot be inconsistent either.
        _validate(self.to_dict(), source="Preprocessing(...)")

    def to_dict(self) -> dict:
        """JSON-safe dict with the sidecar keys (``std`` or ``scale`` omitted when unset)."""
        out = {
            "classes": None if self.classes is None else list(self.classes),
            "input_size": [int(self.input_size[0]), int(self.input_size[1])],
            "center_crop": float(self.center_crop),
            "channel_order": self.channel_order,
            "mean": [float(m) for m in self.mean],
        }
        if self.std is not None:
            out["std"] = [float(s) for s in self.std]
        if self.scale is not None:
            out["scale"] = float(self.scale)
        out["output"] = self.output
        return out


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()).rstrip(".") or type(error).__name__


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__ + f" {json.dumps(value)[:60]}"


def check_sidecar(data: dict, *, source: str) -> Preprocessing:
    """Validate sidecar keys and values (``source`` names the file in messages); return the Preprocessing.

    Raises
    ------
    ModelError
        naming the key and ``source`` for an unknown key, a missing key, a wrong type or value.
    """
    _validate(data, source=source)
    std, scale, crop = data.get("std"), data.get("scale"), data.get("center_crop", 1.0)
    return Preprocessing(
        classes=None if data.get("classes") is None else tuple(data["classes"]),
        input_size=(int(data["input_size"][0]), int(data["input_size"][1])),
        center_crop=float(crop),
        channel_order=data.get("channel_order", "RGB"),
        mean=tuple(float(v) for v in data["mean"]),
        std=None if std is None else tuple(float(v) for v in std),
        scale=None if scale is None else float(scale),
        output=data["output"],
    )


def _validate(data: dict, *, source: str) -> None:
    if not isinstance(data, dict):
        raise ModelError(ERROR_SIDECAR_NOT_OBJECT.format(file=source, found=type(data).__name__), source=source)
    for key in data:
        if key not in SIDECAR_KEYS:
            raise ModelError(ERROR_SIDECAR_UNKNOWN_KEY.format(key=key, file=source), source=source, column=key)
    for key in _REQUIRED_KEYS:
        if key not in data:
            raise ModelError(ERROR_SIDECAR_MISSING_KEY.format(key=key, file=source), source=source, column=key)

    def bad(key, expected):
        return ModelError(ERROR_SIDECAR_TYPE.format(key=key, file=source, expected=expected,
                                                    found=_type_name(data[key])), source=source, column=key)

    classes = data.get("classes")
    if classes is not None:
        if (not isinstance(classes, (list, tuple)) or not classes
                or not all(isinstance(c, str) and c != "" for c in classes)):
            raise bad("classes", "a non-empty list of class names (strings) or null")
        seen = set()
        for name in classes:
            if name in seen:
                raise ModelError(ERROR_SIDECAR_DUPLICATE_CLASS.format(file=source, name=name),
                                 source=source, column="classes")
            seen.add(name)
    size = data["input_size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise bad("input_size", "a list of two positive integers [height, width]")
    crop = data.get("center_crop", 1.0)
    if not _is_number(crop) or not 0 < crop <= 1:
        raise bad("center_crop", "a number in (0, 1] (fraction of width and height kept; 1.0 = no crop)")
    order = data.get("channel_order", "RGB")
    if order not in CHANNEL_ORDERS:
        raise bad("channel_order", "\"RGB\" or \"BGR\"")
    mean = data["mean"]
    if not isinstance(mean, (list, tuple)) or len(mean) != 3 or not all(_is_number(v) for v in mean):
        raise bad("mean", "a list of three numbers")
    std, scale = data.get("std"), data.get("scale")
    if (std is None) == (scale is None):
        found = "both" if std is not None else "neither"
        raise ModelError(ERROR_SIDECAR_STD_OR_SCALE.format(file=source, found=found), source=source, column="std")
    if std is not None and (not isinstance(std, (list, tuple)) or len(std) != 3
                            or not all(_is_number(v) and v > 0 for v in std)):
        raise bad("std", "a list of three positive numbers")
    if scale is not None and (not _is_number(scale) or scale <= 0):
        raise bad("scale", "a positive number")
    if data["output"] not in OUTPUT_KINDS:
        raise bad("output", "\"probabilities\" or \"logits\"")


def load_sidecar(path: str | os.PathLike) -> Preprocessing:
    """Read and validate a sidecar JSON file (every key checked; see module docstring)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # tolerate a BOM (Windows editors)
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(ERROR_SIDECAR_UNREADABLE.format(file=source, reason=_one_line(exc)), source=source) from exc
    return check_sidecar(data, source=source)


def find_sidecar(model_path: str | os.PathLike) -> Path | None:
    """The sidecar beside ``model_path``: ``<stem>.json`` first, then ``model.json``; None if neither exists."""
    model = Path(model_path)
    for candidate in (model.with_suffix(".json"), model.parent / "model.json"):
        if candidate != model and candidate.is_file():
            return candidate
    return None


def _crop_box(width: int, height: int, fraction: float) -> tuple[int, int, int, int]:
    """Centre box keeping ``fraction`` of width and height (at least one pixel each)."""
    # Round half up (not Python's half-to-even), so 0.5 of 5 px keeps 3 px centred exactly.
    keep_w = min(width, max(1, int(width * fraction + 0.5)))
    keep_h = min(height, max(1, int(height * fraction + 0.5)))
    left = (width - keep_w) // 2
    top = (height - keep_h) // 2
    return left, top, left + keep_w, top + keep_h


def _check_rgb(rgb) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        found = (getattr(rgb, "shape", None), getattr(rgb, "dtype", type(rgb).__name__))
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got shape/dtype {found}")


def _resized_uint8(rgb: np.ndarray, p: Preprocessing) -> np.ndarray:
    """Centre crop then bilinear resize (PIL) to ``input_size``; HxWx3 uint8 in RGB order."""
    _check_rgb(rgb)
    height, width = p.input_size
    if p.center_crop >= 1.0 and rgb.shape[0] == height and rgb.shape[1] == width:
        return rgb  # PIL's resize to the same size is a plain copy: skip it
    image = Image.fromarray(rgb)
    if p.center_crop < 1.0:
        image = image.crop(_crop_box(rgb.shape[1], rgb.shape[0], p.center_crop))
    if image.size != (width, height):
        image = image.resize((width, height), resample=Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def _normalise_into(out: np.ndarray, pixels: np.ndarray, p: Preprocessing) -> None:
    """Write the normalised CxHxW float32 values of HxWx3 uint8 ``pixels`` into ``out``."""
    chw = pixels.transpose(2, 0, 1)
    if p.channel_order == "BGR":
        chw = chw[::-1]
    mean = np.asarray(p.mean, dtype=np.float32).reshape(3, 1, 1)
    if p.std is not None:
        std = np.asarray(p.std, dtype=np.float32).reshape(3, 1, 1)
        np.divide(chw, np.float32(255.0), out=out, dtype=np.float32)
        out -= mean
        out /= std
    else:
        np.subtract(chw, mean, out=out, dtype=np.float32)
        out *= np.float32(p.scale)


def preprocess_image(rgb: np.ndarray, p: Preprocessing) -> np.ndarray:
    """Turn one decoded image into a model input.

    Steps: centre crop keeping ``p.center_crop`` of width and height (box sides rounded half up to
    whole pixels, centred, any odd leftover pixel going to the right/bottom), resize to ``p.input_size``
    with PIL bilinear (skipped when the size already matches), reorder channels to ``p.channel_order``,
    then ``(x / 255 - mean) / std`` or ``(x - mean) * scale``.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(H, W, 3)`` uint8, RGB.
    p : Preprocessing

    Returns
    -------
    numpy.ndarray
        ``(3, h, w)`` float32 with ``(h, w) = p.input_size``.
    """
    pixels = _resized_uint8(rgb, p)
    out = np.empty((3,) + tuple(p.input_size), dtype=np.float32)
    _normalise_into(out, pixels, p)
    return out


def preprocess_batch(images: Sequence[np.ndarray], p: Preprocessing) -> np.ndarray:
    """:func:`preprocess_image` over a list of images: ``(n, 3, h, w)`` float32 (n may be 0)."""
    out = np.empty((len(images), 3) + tuple(p.input_size), dtype=np.float32)
    for index, rgb in enumerate(images):
        _normalise_into(out[index], _resized_uint8(rgb, p), p)
    return out
