"""Reliability (calibration) curves per group: does a confidence of 0.8 mean 80 % correct in every group?

``group_metrics.parquet`` holds one number per group (expected calibration error); this analysis keeps the
curve behind it so views can draw reliability diagrams. Bins are the same as the calibration error's
(``ECE_BINS`` equal-width bins of the predicted class's probability, right-closed), so the curve and the
number agree: ECE = sum over bins of n_bin / n x |accuracy_bin - mean_confidence_bin|.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from audit.analysis._groups import codes_for, group_labels
from audit.errors import InputError
from audit.types import json_safe

ERROR_LENGTHS = ("correct has {n_correct} values, confidence {n_confidence} and groups {n_groups} rows: pass one "
                 "value per image")
ERROR_CONFIDENCE_RANGE = "confidence must lie in [0, 1]; row {row} holds {value!r}"


@dataclass(frozen=True)
class ReliabilityResult:
    """Reliability curves overall and per group of each single attribute.

    Attributes
    ----------
    n_bins : int
    overall : tuple of dict
        Non-empty bins: ``bin`` (0-based), ``low``, ``high`` (confidence range), ``n``, ``mean_confidence``,
        ``accuracy`` (fraction of the bin's images predicted correctly).
    attributes : dict
        ``{attribute: {group: [bins as in overall]}}``.
    """

    n_bins: int
    overall: tuple
    attributes: dict

    def to_dict(self) -> dict:
        return json_safe({"n_bins": self.n_bins, "binning": "equal-width bins of the predicted class's "
                          "probability, right-closed (as expected_calibration_error)",
                          "overall": list(self.overall), "attributes": self.attributes})


def _bins(correct: np.ndarray, confidence: np.ndarray, bin_index: np.ndarray, n_bins: int) -> list[dict]:
    n = np.bincount(bin_index, minlength=n_bins)
    hits = np.bincount(bin_index, weights=correct, minlength=n_bins)
    total_confidence = np.bincount(bin_index, weights=confidence, minlength=n_bins)
    return [{"bin": int(b), "low": b / n_bins, "high": (b + 1) / n_bins, "n": int(n[b]),
             "mean_confidence": float(total_confidence[b] / n[b]), "accuracy": float(hits[b] / n[b])}
            for b in np.flatnonzero(n)]


def compute_reliability_by_group(correct, confidence, *, groups: pd.DataFrame, n_bins: int = 15
                                 ) -> ReliabilityResult:
    """Reliability curve of the whole data set and of every group of each column of ``groups``.

    Parameters
    ----------
    correct : array of bool, shape (n,)
        Whether the predicted class equals the label.
    confidence : array of float, shape (n,)
        Probability of the predicted class.
    groups : DataFrame, n rows
        One column per single group attribute (missing values form ``<missing>``).
    n_bins : int
        Number of equal-width confidence bins.
    """
    correct = np.asarray(correct, dtype=float)
    confidence = np.asarray(confidence, dtype=float)
    if not (len(correct) == len(confidence) == len(groups)):
        raise InputError(ERROR_LENGTHS.format(n_correct=len(correct), n_confidence=len(confidence),
                                              n_groups=len(groups)))
    outside = np.flatnonzero(~((confidence >= 0) & (confidence <= 1)))
    if len(outside):
        raise InputError(ERROR_CONFIDENCE_RANGE.format(row=int(outside[0]), value=float(confidence[outside[0]])))
    bin_index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    overall = tuple(_bins(correct, confidence, bin_index, n_bins))
    attributes = {}
    for attribute in groups.columns:
        codes, names = codes_for(group_labels(groups[attribute]))
        attributes[str(attribute)] = {str(name): _bins(correct[codes == code], confidence[codes == code],
                                                       bin_index[codes == code], n_bins)
                                      for code, name in enumerate(names)}
    return ReliabilityResult(n_bins=n_bins, overall=overall, attributes=attributes)
