"""Words and orders for people: how every view (app pages, reports, findings) names metrics and sorts group
values. Pure functions over strings; no engine imports, so any layer may use them.

- :func:`group_sort_key` / :func:`sort_groups`: group values that are numbers or numeric ranges (``0-2``,
  ``3-9``, ``10-19``, ``more than 70``, ``<18``, ``65+``) sort by number, not as text (``0-2, 10-19, 3-9``);
  other values sort as text (case-insensitive); ``<missing>`` comes last. Intersections (``a & b``) sort part
  by part.
- :func:`metric_label`: ``issue_rate:dark`` -> ``share flagged as too dark``, ``macro_f1`` -> ``macro-F1``;
  :func:`summary_label`: ``leakage.n_pairs`` -> ``near-duplicate pairs across splits (train/test leakage)``.
- :func:`attribute_label`: the engine's pixel attributes in words (``image_brightness_group`` -> ``image
  brightness``, ``image_is_grayscale`` -> ``grayscale image``); metadata attributes as given.
- :func:`tied_extremes`: the smallest and largest classes with ties kept, so balanced data never names
  one class at random.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: The group value of missing attribute values (as ``audit.types.MISSING_GROUP``; repeated to stay layer 0).
MISSING = "<missing>"
#: Separator of intersection groups (as ``audit.types.INTERSECTION_SEPARATOR``).
SEPARATOR = " & "

_NUMBER = re.compile(r"(?<![\w.])[-−]?\d+(?:,\d{3})*(?:\.\d+)?")
#: Words before a number that put the value just below it (``<18``, ``under 5``) or after it (``more than 70``).
_BELOW = re.compile(r"(<|≤|\bunder\b|\bbelow\b|\bless than\b|\bup to\b|\bat most\b)\s*$", re.IGNORECASE)
_ABOVE_BEFORE = re.compile(r"(>|≥|\bover\b|\babove\b|\bmore than\b|\bolder than\b|\bat least\b)\s*$", re.IGNORECASE)
_ABOVE_AFTER = re.compile(r"^\s*(\+|and (over|above|older|more)\b|or (more|older|above)\b)", re.IGNORECASE)
#: Rank of the engine's pixel-attribute bin words (``audit.analysis.image_properties.BINS``): each attribute
#: uses one scale, so ``dark < mid < bright`` and ``low < normal < high`` are listed low to high.
BIN_WORD_RANKS = {"small": 0, "medium": 1, "large": 2, "portrait": 0, "square": 1, "landscape": 2,
                  "dark": 0, "mid": 1, "bright": 2, "low": 0, "normal": 1, "high": 2,
                  "muted": 0, "moderate": 1, "colourful": 2, "blurry": 0, "sharp": 2}


def _part_key(text: str) -> tuple:
    if text == MISSING:
        return (3, 0.0, 0, "", text)
    match = _NUMBER.search(text)
    if match is not None:
        number = float(match.group().replace("−", "-").replace(",", ""))
        before, after = text[:match.start()], text[match.end():]
        shift = (-1 if _BELOW.search(before) else
                 1 if (_ABOVE_BEFORE.search(before) or _ABOVE_AFTER.search(after)) else 0)
        return (0, number, shift, text.casefold(), text)
    if text in BIN_WORD_RANKS:
        return (1, float(BIN_WORD_RANKS[text]), 0, text, text)
    return (2, 0.0, 0, text.casefold(), text)


def group_sort_key(value) -> tuple:
    """Sort key of a group value: numbers and numeric ranges by their first number (``0-2 < 3-9 < 10-19 <
    more than 70``, ``<18 < 18-29 < 65+``), the engine's pixel bins low to high (``dark < mid < bright``),
    then other text case-insensitively, ``<missing>`` last; intersections (``a & b``) part by part."""
    text = "" if value is None else str(value)
    return tuple(_part_key(part) for part in text.split(SEPARATOR))


def sort_groups(values: Iterable) -> list:
    """``values`` (duplicates removed) in :func:`group_sort_key` order."""
    return sorted(dict.fromkeys(values), key=group_sort_key)


def group_ranks(values: Iterable) -> dict:
    """``{value: position in sort_groups(values)}``: a tie-break for lists sorted by a number (size, value)."""
    return {value: rank for rank, value in enumerate(sort_groups(values))}


def is_ordinal(values: Iterable) -> bool:
    """True when every value but ``<missing>`` holds a number (age bins, sizes) or is a pixel bin word: such
    attributes read best in their natural order rather than by size."""
    keys = [group_sort_key(v) for v in values if str(v) != MISSING]
    return bool(keys) and all(len(k) == 1 and k[0][0] in (0, 1) for k in keys)


# -- metric and field names -------------------------------------------------------------------------------
#: Display words of the metrics in ``group_metrics.parquet`` (``metric``) and ``audit.json`` (``metrics``).
#: Names not listed are shown with underscores as spaces.
METRIC_LABELS = {
    "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1",
    "recall": "recall", "precision": "precision", "top_k_accuracy": "top-k accuracy",
    "expected_calibration_error": "calibration error (ECE)", "share": "share of images",
    "annotation_agreement": "annotator agreement", "model_error_rate": "model error rate",
}
#: Words of the per-image issues (``is_<issue>_issue``); unknown issues are shown with underscores as spaces.
ISSUE_LABELS = {
    "exact_duplicate": "exact duplicate", "near_duplicate": "near duplicate", "dark": "too dark",
    "light": "too light", "blurry": "blurry", "low_information": "low information", "grayscale": "grayscale",
    "odd_size": "odd size", "odd_aspect_ratio": "odd aspect ratio", "outlier": "outlier",
    "label": "label issue", "annotation_disagreement": "annotator disagreement",
}
ISSUE_RATE_PREFIX = "issue_rate:"


def issue_label(issue) -> str:
    """``odd_aspect_ratio`` -> ``odd aspect ratio``."""
    return ISSUE_LABELS.get(str(issue), str(issue).replace("_", " "))


def metric_label(name) -> str:
    """Words for a metric name: ``issue_rate:dark`` -> ``share flagged as too dark``; ``macro_f1`` ->
    ``macro-F1``; unknown names with underscores as spaces."""
    name = str(name)
    if name.startswith(ISSUE_RATE_PREFIX):
        return f"share flagged as {issue_label(name[len(ISSUE_RATE_PREFIX):])}"
    return METRIC_LABELS.get(name, name.replace("_", " "))


def is_data_rate(name) -> bool:
    """True for metrics that describe the data (issue rates, label disagreement, annotator agreement), not
    the model: the Fairness page lists them apart from the model metrics."""
    name = str(name)
    return (name.startswith(ISSUE_RATE_PREFIX) or "noise" in name or "disagreement" in name
            or name.startswith("annotation"))


#: Words of the engine's pixel attributes (``audit.analysis.image_properties``; contract: every pixel attribute
#: starts with ``image_``, its binned group column ends in ``_group``).
ATTRIBUTE_LABELS = {
    "image_width": "image width", "image_height": "image height", "image_aspect_ratio": "image aspect ratio",
    "image_brightness": "image brightness", "image_contrast": "image contrast",
    "image_colourfulness": "image colourfulness", "image_sharpness": "image sharpness",
    "image_is_grayscale": "grayscale image",
}
PIXEL_PREFIX = "image_"


def _attribute_part(name: str) -> str:
    if not name.startswith(PIXEL_PREFIX):
        return name  # a metadata attribute: the user's own column name
    base = name[:-len("_group")] if name.endswith("_group") else name
    return ATTRIBUTE_LABELS.get(base, base.replace("_", " "))


def attribute_label(name) -> str:
    """Words for an attribute or intersection (``a & b``, part by part): the engine's pixel attributes
    (``image_*``) lose their underscores and ``_group`` suffix (``image_brightness_group`` -> ``image
    brightness``); metadata attributes are shown as given; ``all`` stays ``all``."""
    return SEPARATOR.join(_attribute_part(part) for part in str(name).split(SEPARATOR))


#: Words of the summary numbers of ``analyses.data_quality`` (dotted keys as the report flattens them).
SUMMARY_LABELS = {
    "leakage.n_pairs": "near-duplicate pairs across splits (train/test leakage)",
    "n_images": "images checked", "n_duplicate_sets": "near-duplicate sets",
    "n_images_in_duplicate_sets": "images in near-duplicate sets",
    "n_exact_duplicate_sets": "exact-duplicate sets", "n_exact_duplicate_groups": "exact-duplicate groups",
    "n_concentration_findings": "issues concentrated in a class or group",
}


def summary_label(key) -> str:
    """Words for a dotted summary key; unknown keys lose their ``n_`` prefix and underscores."""
    key = str(key)
    if key in SUMMARY_LABELS:
        return SUMMARY_LABELS[key]
    last = key.rsplit(".", 1)[-1]
    if last.startswith("n_"):
        last = "number of " + last[2:]
    return last.replace("_", " ")


#: Said instead of a leakage count when it could not be checked.
LEAKAGE_NOT_CHECKED_NO_SPLITS = "Train/test leakage was not checked: the data has no split column."
LEAKAGE_NOT_CHECKED_ONE_SPLIT = "Train/test leakage was not checked: every image is in the one split {split}."


def leakage_not_checked(splits) -> str | None:
    """Why train/test leakage could not be checked (fewer than two splits), or None when it was."""
    splits = [str(s) for s in (splits or [])]
    if not splits:
        return LEAKAGE_NOT_CHECKED_NO_SPLITS
    if len(splits) == 1:
        return LEAKAGE_NOT_CHECKED_ONE_SPLIT.format(split=splits[0])
    return None


# -- smallest and largest classes -------------------------------------------------------------------------
def tied_extremes(counts: Mapping) -> dict:
    """``{"smallest": [...], "largest": [...], "balanced": bool}`` of non-empty classes in ``counts`` order.

    Every class tied for the smallest (largest) count is listed; ``balanced`` is True when all non-empty
    classes have the same count (then there is no smallest or largest class to name).
    """
    present = {name: int(n) for name, n in counts.items() if n}
    if not present:
        return {"smallest": [], "largest": [], "balanced": False}
    low, high = min(present.values()), max(present.values())
    return {"smallest": [c for c, n in present.items() if n == low],
            "largest": [c for c, n in present.items() if n == high], "balanced": low == high}


def join_names(names: Iterable, *, limit: int = 5) -> str:
    """``a``, ``a and b``, ``a, b and c``; beyond ``limit`` names: ``a, b, ... and 7 more``."""
    names = [str(n) for n in names]
    if len(names) > limit:
        return ", ".join(names[:limit]) + f" and {len(names) - limit} more"
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]
