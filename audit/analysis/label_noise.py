"""Label-noise estimation by confident learning, streamed over chunks of model probabilities.

Confident learning (Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset
Labels", JAIR 2021) compares each image's given label with out-of-sample model probabilities:

1. per-class thresholds ``t_k`` = mean probability of class ``k`` over the images labelled ``k``;
2. the *confident joint* ``C[i, j]`` counts images given label ``i`` whose probability of class ``j``
   reaches ``t_j`` (the largest probability decides when several classes do); it is calibrated so row
   ``i`` sums to the number of images labelled ``i`` -> ``joint = C / N`` estimates
   ``P(given = i, true = j)`` *as the probabilities see it*, and ``1 - trace(joint)`` the fraction of
   images the probabilities place off the diagonal (an engine value compared with cleanlab, not written);
3. "prune by noise rate": for every off-diagonal cell ``(i, j)`` the ``C[i, j]`` images labelled ``i``
   with the largest margin ``p_j - p_i`` are flagged; an image whose most probable class is its given
   label is never flagged.

The implementation follows the reference (cleanlab 2.9 ``filter.find_label_issues`` with default
settings, ``count.compute_confident_joint``, ``count.estimate_joint`` and
``count.estimate_py_and_noise_matrices_from_probabilities``) operation by operation, so the flagged set
and the matrices are the same on the same inputs, but it never holds the N x K probabilities: it reads
them as chunks in three passes (four when a tie at a pruning boundary has to be broken the way the
reference's sort breaks it), keeping O(K^2) state, a few numbers per image (self-confidence, predicted
class) and the current pruning candidates (about as many as there are flagged images).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from audit.analysis import _confident_learning as cl
from audit.analysis._stats import adjust_p_values, fisher_p_value_higher, wilson_interval
from audit.analysis._table import (
    VERDICT_INSUFFICIENT,
    VERDICT_NO_GAP,
    VERDICT_NONE,
    VERDICT_WORSE,
    coerce_group_metrics,
    empty_group_metrics,
    flag_insufficient_evidence,
)
from audit.errors import InputError
from audit.types import json_float

ERROR_N_CLASSES = "n_classes must be an integer of at least 2, got {value!r}"
ERROR_LABELS_SHAPE = "labels must be a 1-D array with one class index per image, found shape {shape}"
ERROR_LABELS_DTYPE = ("labels must be integer class indices, found dtype {dtype}; map each class name to its "
                      "position in the class list first")
ERROR_LABEL_RANGE = ("labels: row {row} has class index {value}, outside 0..{max_index} for {n_classes} "
                     "classes; check the class list (--classes) against the labels file")
ERROR_TOO_FEW_IMAGES = "label-noise estimation needs at least 1 image, got {n}"
ERROR_PROBABILITIES_TYPE = ("probabilities must be a 2-D numpy array or a callable returning an iterator of "
                            "2-D chunks (see audit.io.arrays), got {kind}")
ERROR_PROBABILITIES_SHAPE = "probabilities: chunk {chunk} has shape {shape}; expected 2-D chunks with {n_classes} columns"
ERROR_PROBABILITIES_COLUMNS = ("probabilities have {found} columns but there are {n_classes} classes; the columns "
                               "must follow the class list, one per class")
ERROR_PROBABILITIES_ROWS = ("probabilities have {found} rows but labels have {expected}; both must list the same "
                            "images in the same order")
ERROR_PROBABILITIES_DTYPE = "probabilities must be numbers, found dtype {dtype}"
ERROR_PROBABILITIES_NOT_FINITE = ("probabilities: row {row} contains NaN or infinite values; re-run inference for "
                                  "that image or leave it out")
ERROR_PROBABILITIES_RANGE = ("probabilities: row {row} has values outside [0, 1] (min {low:.6g}, max {high:.6g}); "
                             "pass probabilities, not logits (apply a softmax first)")
ERROR_PASSES_DIFFER = ("probabilities: pass {pass_number} over the chunk source gave different rows than the first "
                       "pass (row {row}); the callable must return the same chunks every time")
ERROR_SCORE_METHOD = "score_method must be 'self_confidence' or 'normalized_margin', got {value!r}"
ERROR_CONFIDENCE_LEVEL = "confidence_level must lie strictly between 0 and 1, got {value!r}"
ERROR_CLASSES_LENGTH = "classes has {found} names but the result has {n_classes} classes"
ERROR_GROUP_LENGTH = ("group attribute {attribute!r} has {found} values but there are {expected} images; give one "
                      "value per image, in image order")
ERROR_MASK_LENGTH = "is_label_issue has {found} entries but labels have {expected}"

SCORE_METHODS = ("self_confidence", "normalized_margin")
METHOD_NAME = "confident_learning"
FILTER_BY = "prune_by_noise_rate"
NOISE_RATE_CI_METHOD = "wilson"
#: The one name of the confident-learning figure (issue 13): the fraction of images whose given label the
#: probabilities confidently disagree with, i.e. the flagged fraction (``is_label_issue``), overall, per class
#: and per group. A screening figure, not a label-error rate: the scorer's own errors are flagged too.
METRIC_NAME = "label_disagreement_rate"
#: Written beside every disagreement rate, on the same images: the fraction whose most probable class (under
#: the same probabilities) is not the given label, so the reader sees how much of the disagreement the
#: scorer's own errors can explain.
ERROR_METRIC_NAME = "model_error_rate"
#: Name of the metric before schema 2.0 (migrated on read, :mod:`audit.migrate`).
OLD_METRIC_NAME = "estimated_noise_rate"
#: ``audit.json`` ``metrics`` entries of the two (direction and what they mean).
METRIC_DESCRIPTIONS = {
    METRIC_NAME: {"higher_is_better": False, "description": (
        "share of the group's images whose given label the probabilities confidently disagree with (flagged by "
        "confident learning, the same images as cleanlab's find_label_issues): a screening figure, not a "
        "label-error rate, since the model's own mistakes are flagged too (see the model error rate); Wilson "
        "interval")},
    ERROR_METRIC_NAME: {"higher_is_better": False, "description": (
        "share of the same images whose most probable class (under the probabilities that screen the labels, "
        "analyses.label_noise.source) is not the given label: shown beside every disagreement rate, since where "
        "the model is wrong the label is flagged too; Wilson interval, no test")},
}

#: Probabilities may stray this far outside [0, 1] (float rounding) before they are rejected.
_RANGE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ClassNoise:
    """Estimated label noise among the images *given* one class.

    Attributes
    ----------
    class_index : int
        Position of the class in the class list.
    n : int
        Number of images given this label.
    n_mislabelled : int
        Estimated number of them whose true class differs: row total minus diagonal of the calibrated
        confident joint.
    noise_rate : float or None
        ``n_mislabelled / n`` = ``1 - joint[i, i] / sum_j joint[i, j]`` (None when ``n == 0``).
    ci_low, ci_high : float
        Wilson interval of ``noise_rate`` at the result's confidence level (treats the estimated count as
        binomial in ``n``; the model's own error is not included, see :class:`LabelNoiseResult`).
    n_label_issues : int
        Number of flagged images with this given label.
    n_model_errors : int
        Number of them whose most probable class is not the given label.

    The serialised figure is the *label disagreement rate* ``n_label_issues / n`` (see
    :data:`METRIC_NAME`); ``noise_rate`` (from the joint) stays an engine value, compared with cleanlab.
    """

    class_index: int
    n: int
    n_mislabelled: int
    noise_rate: float | None
    ci_low: float
    ci_high: float
    n_label_issues: int
    n_model_errors: int = 0


@dataclass(frozen=True, eq=False)
class LabelNoiseResult:
    """Everything confident learning estimates about the labels of one data set.

    Attributes
    ----------
    n_classes : int
    score_method : str
        ``"self_confidence"`` or ``"normalized_margin"`` (what ``label_score`` holds).
    confidence_level : float
        Coverage of every interval.
    thresholds : ndarray (K,)
        Per-class thresholds: mean probability of class ``k`` over images labelled ``k`` (2.0 for a class
        nobody is labelled as, so nothing is counted there).
    uncalibrated_confident_joint : ndarray (K, K) of int
        ``[i, j]``: images given label ``i`` confidently of class ``j`` (diagonal at least 1).
    confident_joint : ndarray (K, K) of int
        The same calibrated so row ``i`` sums to the number of images labelled ``i`` (and the total to N).
        Equals ``cleanlab.count.compute_confident_joint(labels, pred_probs)``.
    joint : ndarray (K, K)
        ``P(given = i, true = j)`` = ``confident_joint / N``.
    noise_matrix : ndarray (K, K)
        ``P(given = i | true = j)`` (columns sum to 1).
    inverse_noise_matrix : ndarray (K, K)
        ``P(true = i | given = j)`` (columns sum to 1).
    true_class_prior : ndarray (K,)
        Estimated ``P(true = j)``. These last three equal
        ``cleanlab.count.estimate_py_and_noise_matrices_from_probabilities`` (the probabilities variant of
        ``estimate_noise_matrices``, which would itself train a classifier).
    noise_rate : float
        ``1 - trace(joint)`` (engine value, compared with cleanlab; the audit writes
        :attr:`label_disagreement_rate` instead, the one definition of docs/methods.md).
    noise_rate_ci : tuple of float
        Wilson interval of ``noise_rate`` (N images, ``round(noise_rate * N)`` mislabelled). It covers
        sampling of the images only, not the error of the model whose probabilities are used.
    per_class : tuple of ClassNoise
        One entry per class, in class order.
    label_score : ndarray (N,)
        In [0, 1], lower = label more likely wrong: the probability of the given label
        (``self_confidence``) or ``(p_given - max_other + 1) / 2`` (``normalized_margin``).
    is_label_issue : ndarray (N,) of bool
        The flagged images (prune by noise rate; same set as ``cleanlab.filter.find_label_issues``).
    suggested_label : ndarray (N,) of int
        Most probable class. A flagged image's most probable class is never its given label (the method
        un-flags those), so for flagged images this is always another class.
    ranking : ndarray (n_label_issues,) of int
        Indices of the flagged images, most suspect (lowest ``label_score``) first.
    n_label_issues : int
        Number of flagged images. Under prune by noise rate it is (up to images selected for two cells
        and images un-flagged because the model agrees with their label) the off-diagonal total of the
        calibrated confident joint, i.e. the estimated number of mislabelled images.
    """

    n_classes: int
    score_method: str
    confidence_level: float
    thresholds: np.ndarray
    uncalibrated_confident_joint: np.ndarray
    confident_joint: np.ndarray
    joint: np.ndarray
    noise_matrix: np.ndarray
    inverse_noise_matrix: np.ndarray
    true_class_prior: np.ndarray
    noise_rate: float
    noise_rate_ci: tuple[float, float]
    per_class: tuple[ClassNoise, ...]
    label_score: np.ndarray
    is_label_issue: np.ndarray
    suggested_label: np.ndarray
    ranking: np.ndarray
    n_label_issues: int
    n_model_errors: int = 0

    @property
    def n_images(self) -> int:
        return int(self.is_label_issue.shape[0])

    @property
    def label_disagreement_rate(self) -> float:
        """Fraction of images flagged (``n_label_issues / N``): the probabilities confidently disagree with
        the given label. The one definition used in ``audit.json`` and ``group_metrics`` (docs/methods.md)."""
        return self.n_label_issues / self.n_images if self.n_images else float("nan")

    @property
    def model_error_rate(self) -> float:
        """Fraction of images whose most probable class is not the given label (same probabilities)."""
        return self.n_model_errors / self.n_images if self.n_images else float("nan")

    def image_columns(self, classes: Sequence[str]) -> pd.DataFrame:
        """The ``images.parquet`` label-quality columns, one row per image in probabilities order.

        ``label_score`` (float, 0..1, lower = more likely mislabelled), ``is_label_issue`` (bool) and
        ``suggested_label`` (class name), as ``contract.md`` names them.
        """
        classes = np.asarray([str(name) for name in classes], dtype=object)
        if classes.size != self.n_classes:
            raise ValueError(ERROR_CLASSES_LENGTH.format(found=classes.size, n_classes=self.n_classes))
        return pd.DataFrame({"label_score": np.asarray(self.label_score, dtype=np.float64),
                             "is_label_issue": self.is_label_issue,
                             "suggested_label": classes[self.suggested_label]})

    def to_dict(self, classes: Sequence[str] | None = None, *, source: str | None = None) -> dict:
        """JSON-safe summary for ``audit.json`` section ``label_noise`` (matrices as nested lists).

        Parameters
        ----------
        classes : sequence of str, optional
            Class names in class order (default: the indices as strings).
        source : str, optional
            Where the probabilities came from (e.g. ``"model"``, ``"predictions file"``); filled in by the
            caller, ``None`` otherwise.

        Per-image values (``label_score``, ``is_label_issue``, ``suggested_label``) belong in
        ``images.parquet`` and are not included.
        """
        if classes is None:
            classes = [str(k) for k in range(self.n_classes)]
        classes = [str(name) for name in classes]
        if len(classes) != self.n_classes:
            raise ValueError(ERROR_CLASSES_LENGTH.format(found=len(classes), n_classes=self.n_classes))

        def matrix(values) -> list:
            # json_float of every entry, vectorised (K x K entries: a million at 1,000 classes)
            values = np.asarray(values, dtype=float)
            out = values.astype(object)
            out[~np.isfinite(values)] = None
            return out.tolist()

        n = self.n_images
        low, high = wilson_interval(self.n_label_issues, n, confidence_level=self.confidence_level)
        err_low, err_high = wilson_interval(self.n_model_errors, n, confidence_level=self.confidence_level)
        per_class = []
        for row in self.per_class:
            c_low, c_high = wilson_interval(row.n_label_issues, row.n, confidence_level=self.confidence_level)
            e_low, e_high = wilson_interval(row.n_model_errors, row.n, confidence_level=self.confidence_level)
            per_class.append({
                "class": classes[row.class_index], "n": row.n, "n_label_issues": row.n_label_issues,
                "label_disagreement_rate": json_float(row.n_label_issues / row.n) if row.n else None,
                "ci_low": json_float(c_low) if row.n else None, "ci_high": json_float(c_high) if row.n else None,
                "n_model_errors": row.n_model_errors,
                "model_error_rate": json_float(row.n_model_errors / row.n) if row.n else None,
                "model_error_rate_ci": [json_float(e_low), json_float(e_high)] if row.n else [None, None],
                "confident_joint_off_diagonal": row.n_mislabelled})
        return {
            "method": METHOD_NAME,
            "filter_by": FILTER_BY,
            "score_method": self.score_method,
            "source": source,
            "reference": "cleanlab 2.9 filter.find_label_issues (default settings)",
            "n_images": n,
            "n_classes": self.n_classes,
            "confidence_level": float(self.confidence_level),
            "label_disagreement_rate": json_float(self.label_disagreement_rate),
            "label_disagreement_rate_ci": [json_float(low), json_float(high)],
            "label_disagreement_rate_ci_method": NOISE_RATE_CI_METHOD,
            "n_label_issues": int(self.n_label_issues),
            "model_error_rate": json_float(self.model_error_rate),
            "model_error_rate_ci": [json_float(err_low), json_float(err_high)],
            "n_model_errors": int(self.n_model_errors),
            "thresholds": [json_float(v) for v in np.asarray(self.thresholds, dtype=float)],
            "confident_joint": [[int(v) for v in row] for row in self.confident_joint],
            "joint": matrix(self.joint),
            "noise_matrix": matrix(self.noise_matrix),
            "inverse_noise_matrix": matrix(self.inverse_noise_matrix),
            "true_class_prior": [json_float(v) for v in self.true_class_prior],
            "matrix_axes": {"confident_joint": "given x true", "joint": "given x true",
                            "noise_matrix": "given x true, P(given | true)",
                            "inverse_noise_matrix": "true x given, P(true | given)"},
            "per_class": per_class,
        }


# --------------------------------------------------------------------------------------------- inputs

def _check_n_classes(n_classes) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise InputError(ERROR_N_CLASSES.format(value=n_classes))
    return int(n_classes)


def _check_labels(labels, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise InputError(ERROR_LABELS_SHAPE.format(shape=labels.shape))
    if labels.size == 0:
        raise InputError(ERROR_TOO_FEW_IMAGES.format(n=0))
    if labels.dtype.kind not in "iu":
        raise InputError(ERROR_LABELS_DTYPE.format(dtype=labels.dtype))
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        row = int(bad[0])
        raise InputError(ERROR_LABEL_RANGE.format(row=row, value=int(labels[row]), max_index=n_classes - 1,
                                                  n_classes=n_classes), row=row, column="label")
    return labels.astype(np.int64, copy=False)


def default_chunk_rows(n_classes: int) -> int:
    """Rows per chunk an in-memory ``(N, n_classes)`` array is cut into (about 4M values): a chunk source
    that gives the same blocks gives the same numbers (sums are accumulated chunk by chunk)."""
    return max(1, (1 << 22) // max(1, int(n_classes)))


def _as_chunk_source(probabilities, chunk_rows: int | None) -> Callable[[], Iterator[np.ndarray]]:
    if callable(probabilities):
        return probabilities
    if isinstance(probabilities, np.ndarray):
        if probabilities.ndim != 2:
            raise InputError(ERROR_PROBABILITIES_SHAPE.format(chunk=0, shape=probabilities.shape,
                                                              n_classes="K"))
        rows = chunk_rows or default_chunk_rows(probabilities.shape[1])
        return lambda: (probabilities[start:start + rows] for start in range(0, probabilities.shape[0], rows))
    raise InputError(ERROR_PROBABILITIES_TYPE.format(kind=type(probabilities).__name__))


def _iter_checked(source, *, n_classes: int, n_rows: int, dtype, pass_number: int):
    """Yield ``(start, chunk)`` with shapes and the total row count checked; cast to ``dtype``."""
    start = 0
    for index, chunk in enumerate(source()):
        chunk = np.asarray(chunk)
        if chunk.ndim != 2:
            raise InputError(ERROR_PROBABILITIES_SHAPE.format(chunk=index, shape=chunk.shape, n_classes=n_classes))
        if chunk.shape[1] != n_classes:
            raise InputError(ERROR_PROBABILITIES_COLUMNS.format(found=chunk.shape[1], n_classes=n_classes))
        if chunk.dtype.kind not in "fiub":
            raise InputError(ERROR_PROBABILITIES_DTYPE.format(dtype=chunk.dtype))
        if dtype is not None and chunk.dtype != dtype:
            chunk = chunk.astype(dtype)
        if start + chunk.shape[0] > n_rows:
            raise InputError(ERROR_PROBABILITIES_ROWS.format(found=f"more than {n_rows}", expected=n_rows))
        if chunk.shape[0]:
            yield start, chunk
        start += chunk.shape[0]
    if start != n_rows:
        raise InputError(ERROR_PROBABILITIES_ROWS.format(found=start, expected=n_rows))


def _working_dtype(dtype: np.dtype) -> np.dtype:
    # float32/float64 are used as given (bit-for-bit agreement with the reference); anything else is
    # widened: float16 to float32, integers and booleans to float64.
    if dtype in (np.float32, np.float64):
        return np.dtype(dtype)
    if dtype == np.float16:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _check_values(chunk: np.ndarray, start: int) -> None:
    low, high = chunk.min(), chunk.max()
    if low >= -_RANGE_TOLERANCE and high <= 1 + _RANGE_TOLERANCE:
        return
    finite = np.isfinite(chunk).all(axis=1)
    if not finite.all():
        row = start + int(np.flatnonzero(~finite)[0])
        raise InputError(ERROR_PROBABILITIES_NOT_FINITE.format(row=row), row=row)
    bad = np.flatnonzero((chunk.min(axis=1) < -_RANGE_TOLERANCE) | (chunk.max(axis=1) > 1 + _RANGE_TOLERANCE))
    row = int(bad[0])
    raise InputError(ERROR_PROBABILITIES_RANGE.format(row=start + row, low=float(chunk[row].min()),
                                                      high=float(chunk[row].max())), row=start + row)


# --------------------------------------------------------------------------------------------- engine

def estimate_label_noise(labels, probabilities, *, n_classes: int, score_method: str = "self_confidence",
                         confidence_level: float = 0.95, chunk_rows: int | None = None) -> LabelNoiseResult:
    """Flag the images whose given label the probabilities confidently disagree with (confident learning).

    Parameters
    ----------
    labels : ndarray (N,) of int
        Given class index of every image (0..K-1).
    probabilities : ndarray (N, K) or callable
        Out-of-sample model probabilities, columns in class order; or a callable with no arguments
        returning a fresh iterator over consecutive row chunks (``audit.io.arrays.npy_chunk_source``,
        ``parquet_chunk_source``, ``array_chunk_source`` or an inference stream). It is called three
        times (four if a pruning tie must be broken), and must give the same rows each time. float32
        and float64 are used as given; other dtypes are widened.
    n_classes : int
        K, the number of classes (at least 2).
    score_method : {"self_confidence", "normalized_margin"}
        What ``label_score`` holds and how flagged images are ranked.
    confidence_level : float
        Coverage of the intervals.
    chunk_rows : int, optional
        Rows per chunk when ``probabilities`` is an in-memory array (default: about 4M values).

    Returns
    -------
    LabelNoiseResult

    Raises
    ------
    InputError
        Labels not integers in 0..K-1, probabilities of the wrong shape, with NaN/inf or outside [0, 1],
        row counts that differ, or a chunk source that changes between passes.
    """
    n_classes = _check_n_classes(n_classes)
    if score_method not in SCORE_METHODS:
        raise InputError(ERROR_SCORE_METHOD.format(value=score_method))
    if isinstance(confidence_level, bool) or not isinstance(confidence_level, (int, float)) \
            or not 0 < confidence_level < 1:
        raise InputError(ERROR_CONFIDENCE_LEVEL.format(value=confidence_level))
    labels = _check_labels(labels, n_classes)
    source = _as_chunk_source(probabilities, chunk_rows)
    n, k = labels.shape[0], n_classes

    # Pass 1: per-image self-confidence and prediction; validate values.
    self_confidence = None
    predicted = np.empty(n, dtype=np.int64)
    model_agrees = np.empty(n, dtype=bool)
    max_other = None
    dtype = None
    for start, chunk in _iter_checked(source, n_classes=k, n_rows=n, dtype=None, pass_number=1):
        if dtype is None:
            dtype = _working_dtype(chunk.dtype)
            self_confidence = np.empty(n, dtype=dtype)
            if score_method == "normalized_margin":
                max_other = np.empty(n, dtype=dtype)
        if chunk.dtype != dtype:
            chunk = chunk.astype(dtype)
        _check_values(chunk, start)
        stop = start + chunk.shape[0]
        y = labels[start:stop]
        rows = np.arange(chunk.shape[0])
        sc = chunk[rows, y]
        pred = chunk.argmax(axis=1)
        self_confidence[start:stop] = sc
        predicted[start:stop] = pred
        model_agrees[start:stop] = _given_label_is_prediction(chunk, y, sc, pred)
        if max_other is not None:
            max_other[start:stop] = _max_other(chunk, y, pred)

    # Thresholds: mean self-confidence per class, computed with numpy's own summation over the class's
    # values in image order (a fresh contiguous array, as the reference has), so the float32 rounding
    # of the threshold is identical.
    label_counts = np.bincount(labels, minlength=k)
    order = np.argsort(labels, kind="stable")
    sorted_confidence = self_confidence[order]
    del order
    bounds = np.concatenate([[0], np.cumsum(label_counts)])
    means = [np.mean(np.array(sorted_confidence[bounds[c]:bounds[c + 1]])) if label_counts[c] else None
             for c in range(k)]
    del sorted_confidence
    thresholds = cl.class_thresholds(means)
    comparison_thresholds = thresholds - 1e-6

    # Pass 2: the confident joint.
    counts = np.zeros(k * k, dtype=np.int64)
    pass_number = 2
    for start, chunk in _iter_checked(source, n_classes=k, n_rows=n, dtype=dtype, pass_number=pass_number):
        stop = start + chunk.shape[0]
        y = labels[start:stop]
        same = chunk[np.arange(chunk.shape[0]), y] == self_confidence[start:stop]
        if not same.all():
            row = start + int(np.flatnonzero(~same)[0])
            raise InputError(ERROR_PASSES_DIFFER.format(pass_number=pass_number, row=row), row=row)
        confident = chunk >= comparison_thresholds
        n_confident = np.count_nonzero(confident, axis=1)
        first_confident = confident.argmax(axis=1)
        del confident
        guess = np.where(n_confident > 1, predicted[start:stop], first_confident)
        counted = n_confident > 0
        counts += np.bincount(guess[counted] * k + y[counted], minlength=k * k)
    # Counted as (true guess, given) and transposed, i.e. the same memory layout as the reference's
    # transposed confusion matrix: float sums over the matrix then add in the same order.
    uncalibrated = counts.reshape(k, k).T
    np.fill_diagonal(uncalibrated, uncalibrated.diagonal().clip(min=1))
    calibrated = cl.calibrate_confident_joint(uncalibrated, label_counts)
    joint = cl.estimate_joint_from_calibrated(calibrated)
    prior, noise_matrix, inverse_noise_matrix = cl.estimate_latent(calibrated, label_counts, converge=True)

    # Pass 3 (+ 4 for ties): prune by noise rate.
    prune = cl.prune_counts(calibrated, min_examples_per_class=1)
    flagged = _prune_by_noise_rate(source, labels, self_confidence, prune, label_counts,
                                   n_classes=k, dtype=dtype)
    is_label_issue = np.zeros(n, dtype=bool)
    is_label_issue[flagged] = True
    is_label_issue &= ~model_agrees

    if score_method == "self_confidence":
        label_score = self_confidence
    else:
        label_score = (self_confidence - max_other + 1) / 2
    issue_indices = np.arange(n)[is_label_issue]
    ranking = issue_indices[np.argsort(label_score[is_label_issue])]

    n_mislabelled = n - int(np.trace(calibrated))
    low, high = wilson_interval(n_mislabelled, n, confidence_level=confidence_level)
    per_class = _per_class(calibrated, label_counts, labels, is_label_issue, confidence_level, predicted)
    return LabelNoiseResult(
        n_classes=k, score_method=score_method, confidence_level=float(confidence_level),
        thresholds=np.asarray(thresholds), uncalibrated_confident_joint=uncalibrated,
        confident_joint=calibrated, joint=joint, noise_matrix=noise_matrix,
        inverse_noise_matrix=inverse_noise_matrix, true_class_prior=prior,
        noise_rate=float(1.0 - np.trace(joint)), noise_rate_ci=(float(low), float(high)),
        per_class=per_class, label_score=label_score, is_label_issue=is_label_issue,
        suggested_label=predicted, ranking=ranking, n_label_issues=int(is_label_issue.sum()),
        n_model_errors=int(np.count_nonzero(predicted != labels)),
    )


def _given_label_is_prediction(chunk, y, self_confidence, predicted) -> np.ndarray:
    """True where the given label, bumped by 1e-6, is the first maximum of the row (never flagged)."""
    bumped = self_confidence + cl.FLOATING_POINT_COMPARISON  # same dtype as the probabilities
    top = chunk[np.arange(chunk.shape[0]), predicted]
    agrees = bumped > top
    # Exact ties with the bumped value: argmax takes the first maximum, so decide those rows one by one.
    for row in np.flatnonzero(bumped == top):
        values = chunk[row].copy()
        values[y[row]] = bumped[row]
        agrees[row] = values.argmax() == y[row]
    return agrees


def _max_other(chunk, y, predicted) -> np.ndarray:
    """Largest probability among the classes other than the given label."""
    rows = np.arange(chunk.shape[0])
    result = chunk[rows, predicted].copy()
    same = np.flatnonzero(predicted == y)
    if same.size:
        block = chunk[same].copy()
        block[np.arange(same.size), y[same]] = -np.inf
        result[same] = block.max(axis=1)
    return result


#: Pass 3 works on row blocks of about this many probabilities, so its temporaries stay small.
_BLOCK_ELEMENTS = 1 << 20
#: Pending pruning candidates are merged (and the per-cell cut-offs raised) once there are this many.
_MERGE_CANDIDATES = 1 << 20
#: Pass 3 gathers only a row's active cells when (mean active cells per row) x this <= K.
_SPARSE_FACTOR = 8


def _prune_by_noise_rate(source, labels, self_confidence, prune, label_counts, *, n_classes, dtype):
    """Indices selected by "prune by noise rate" before the model-agrees filter.

    For every class ``k`` with more than one image and every other class ``j`` with ``prune[j, k] > 0``
    (a *cell* ``(k, j)``), select the ``prune[j, k]`` images labelled ``k`` with the largest margin
    ``p_j - p_k`` (computed in the probabilities' dtype, like the reference).

    Streaming: a K x K matrix holds each cell's current cut-off (the m-th largest margin seen so far,
    -inf until m images have been seen, +inf for cells that prune nothing). A block's margins are compared
    with it densely; the few that reach it are kept as candidates, and candidates are periodically merged,
    keeping per cell the m best plus anything tied with the m-th, which raises the cut-offs. Memory: one
    block of margins plus the candidates (about the number of flagged images). A tie that straddles a
    cell's final cut-off is broken by reproducing the reference's sort on that cell's full margin vector
    (an extra, rare pass).
    """
    k = n_classes
    cell_m = np.ascontiguousarray(prune.T).reshape(-1).astype(np.int64)  # cell k*K + j -> prune[j, k]
    active = cell_m > 0
    active[np.arange(k) * (k + 1)] = False  # diagonal cells prune nothing
    active &= np.repeat(label_counts > 1, k)  # classes with at most one image are never pruned
    cell_m[~active] = 0
    if not active.any():
        return np.zeros(0, dtype=np.int64)
    cut = np.where(active, -np.inf, np.inf).astype(dtype).reshape(k, k)
    flat_cut = cut.reshape(-1)
    # Active columns of each class, for the sparse path.
    active_cells = np.flatnonzero(active)
    cells_per_class = np.bincount(active_cells // k, minlength=k)
    first_cell = np.concatenate([[0], np.cumsum(cells_per_class)[:-1]])
    active_columns = active_cells % k
    n = labels.shape[0]
    # Dense (all K margins of a row) or sparse (only the row's active cells): the sparse path gathers
    # scattered values, worth it when a row has few active cells (the usual case for large K).
    mean_cells = float(cells_per_class[labels].mean())
    sparse = mean_cells * _SPARSE_FACTOR <= k
    block_rows = max(1, _BLOCK_ELEMENTS // (max(1, int(cells_per_class.max())) if sparse else k))

    kept = (np.zeros(0, np.int64), np.zeros(0, dtype), np.zeros(0, np.int64))
    pending, n_pending = [], 0
    # Warm-up: until the cut-offs are established every margin is a candidate, so start with small
    # blocks and frequent merges and let both grow geometrically.
    rows_now = max(1, block_rows // 64)
    merge_at = min(4096, _MERGE_CANDIDATES)
    for start, chunk in _iter_checked(source, n_classes=k, n_rows=n, dtype=dtype, pass_number=3):
        flat = chunk.reshape(-1) if sparse else None
        offset = 0
        while offset < chunk.shape[0]:
            first = start + offset
            y = labels[first:first + min(rows_now, chunk.shape[0] - offset)]
            offset += y.size
            rows_now = min(block_rows, 2 * rows_now)
            if sparse:
                per_row = cells_per_class[y]
                rows = np.flatnonzero(per_row)
                repeats = per_row[rows]
                expanded = np.repeat(rows, repeats)
                position = np.arange(expanded.size) - np.repeat(np.cumsum(repeats) - repeats, repeats)
                columns = active_columns[first_cell[y[expanded]] + position]
                margin = flat[(first - start + expanded) * k + columns] - self_confidence[first + expanded]
                cells = y[expanded] * k + columns
                hit = margin >= flat_cut[cells]
                rows, cells, margin = expanded[hit], cells[hit], margin[hit]
            else:
                block = chunk[first - start:first - start + y.size]
                margin = block - self_confidence[first:first + y.size, None]
                rows, columns = np.nonzero(margin >= cut[y])
                cells, margin = y[rows] * k + columns, margin[rows, columns]
            if rows.size == 0:
                continue
            pending.append((cells, margin, first + rows))
            n_pending += rows.size
            if n_pending >= max(merge_at, kept[0].size):
                kept = _merge_candidates(kept, pending, cell_m, cut)
                pending, n_pending = [], 0
                merge_at = min(_MERGE_CANDIDATES, 2 * merge_at)
    cells, margins, indices = _merge_candidates(kept, pending, cell_m, cut)

    # Final selection: the first m of every cell (sorted by margin, descending); a cell whose m-th and
    # (m+1)-th margins are equal is re-done the reference's way.
    starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]]) if cells.size else np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, cells.size])
    m = cell_m[cells[starts]]
    rank = np.arange(cells.size) - np.repeat(starts, counts)
    chosen = rank < np.repeat(m, counts)
    straddling = counts > m
    straddling[straddling] = margins[(starts + m - 1)[straddling]] == margins[(starts + m)[straddling]]
    if not straddling.any():
        return np.unique(indices[chosen])
    tied_cells = cells[starts[straddling]]
    chosen &= ~np.repeat(straddling, counts)
    resolved = _resolve_ties(source, labels, tied_cells, cell_m, n_classes=k, dtype=dtype)
    return np.unique(np.concatenate([indices[chosen], resolved]))


def _order_by_cell_then_margin(cells: np.ndarray, margins: np.ndarray) -> np.ndarray:
    """Permutation sorting by cell, then margin descending (order among equal margins is irrelevant)."""
    if margins.dtype == np.float32 and (cells.size == 0 or cells.max() < 2**32):
        # One integer sort: the cell in the high 32 bits, an order-preserving image of -margin below.
        bits = (margins + np.float32(0)).view(np.uint32)  # + 0 turns -0.0 into +0.0
        ascending = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))
        key = (cells.astype(np.uint64) << np.uint64(32)) | (~ascending).astype(np.uint64)
        return np.argsort(key)
    return np.lexsort((-margins, cells))


def _merge_candidates(kept, pending, cell_m, cut):
    """Keep, per cell, the m largest margins and any tied with the m-th; raise the cells' cut-offs.

    Returns the kept ``(cells, margins, indices)`` sorted by cell, then margin descending.
    """
    parts = [kept] + pending
    cells = np.concatenate([p[0] for p in parts])
    margins = np.concatenate([p[1] for p in parts])
    indices = np.concatenate([p[2] for p in parts])
    order = _order_by_cell_then_margin(cells, margins)
    cells, margins, indices = cells[order], margins[order], indices[order]
    if cells.size == 0:
        return cells, margins, indices
    starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
    counts = np.diff(np.r_[starts, cells.size])
    m = cell_m[cells[starts]]
    full = counts >= m
    threshold = np.full(starts.size, -np.inf, dtype=margins.dtype)
    threshold[full] = margins[starts[full] + m[full] - 1]
    cut.reshape(-1)[cells[starts[full]]] = threshold[full]
    keep = margins >= np.repeat(threshold, counts)
    return cells[keep], margins[keep], indices[keep]


def _resolve_ties(source, labels, tied_cells, cell_m, *, n_classes, dtype):
    """Select the tied cells' images exactly as the reference: argsort of minus the full margin vector."""
    k = n_classes
    margins = {int(c): [] for c in tied_cells}
    indices = {int(c): [] for c in tied_cells}
    n = labels.shape[0]
    for start, chunk in _iter_checked(source, n_classes=k, n_rows=n, dtype=dtype, pass_number=4):
        y = labels[start:start + chunk.shape[0]]
        for cell in margins:
            given, other = divmod(cell, k)
            rows = np.flatnonzero(y == given)
            if rows.size:
                margins[cell].append(chunk[rows, other] - chunk[rows, given])
                indices[cell].append(start + rows)
    selected = []
    for cell in margins:
        margin = np.concatenate(margins[cell])
        index = np.concatenate(indices[cell])
        selected.append(index[np.argsort(-margin)[:cell_m[cell]]])
    return np.concatenate(selected) if selected else np.zeros(0, dtype=np.int64)


def _per_class(calibrated, label_counts, labels, is_label_issue, confidence_level,
               predicted=None) -> tuple[ClassNoise, ...]:
    k = calibrated.shape[0]
    row_totals = calibrated.sum(axis=1)
    mislabelled = row_totals - np.diagonal(calibrated)
    flagged = np.bincount(labels[is_label_issue], minlength=k)
    errors = (np.bincount(labels[predicted != labels], minlength=k) if predicted is not None
              else np.zeros(k, dtype=np.int64))
    low, high = wilson_interval(mislabelled, label_counts, confidence_level=confidence_level)
    rows = []
    for c in range(k):
        n_c = int(label_counts[c])
        rate = float(mislabelled[c] / row_totals[c]) if n_c and row_totals[c] else None
        rows.append(ClassNoise(class_index=c, n=n_c, n_mislabelled=int(mislabelled[c]), noise_rate=rate,
                               ci_low=float(low[c]), ci_high=float(high[c]), n_label_issues=int(flagged[c]),
                               n_model_errors=int(errors[c])))
    return tuple(rows)


# --------------------------------------------------------------------------------------------- groups

def estimate_disagreement_rate_by_group(is_label_issue, labels, group_labels: Mapping[str, pd.Series], *,
                                        classes: Sequence[str], predicted=None, confidence_level: float = 0.95,
                                        min_group_size: int = 30, max_ci_width: float = 0.2,
                                        correction: str = "holm") -> pd.DataFrame:
    """Label disagreement rate of every group and every class x group, as ``group_metrics`` rows, and
    (with ``predicted``) the model error rate on the same images beside each.

    The value is the fraction of the group's images that are flagged: images whose given label the
    probabilities confidently disagree with (the flagged set of confident learning, identical to cleanlab's
    ``find_label_issues``). It is a screening figure, not a label-error rate: where the model is wrong the
    label is flagged too, which is why ``model_error_rate`` rows (fraction whose most probable class is not
    the given label, same images, Wilson interval, no test) stand beside every row.

    Parameters
    ----------
    is_label_issue : array-like (N,) of bool
        ``LabelNoiseResult.is_label_issue``.
    labels : array-like (N,) of int
        Given class indices.
    group_labels : mapping of str to Series
        Attribute (or intersection, e.g. ``"race & age"``) -> group of each image, in image order, as
        ``audit.analysis._groups.iter_group_keys`` yields them.
    classes : sequence of str
        Class names in class order (for the ``class`` column).
    confidence_level : float
        Coverage of the Wilson intervals; ``1 - confidence_level`` is the test level.
    min_group_size, max_ci_width : int, float
        A row has ``insufficient_evidence`` when ``n < min_group_size`` or a proportion from ``n`` images
        could have an interval wider than ``max_ci_width`` (a rule on ``n`` only).
    correction : {"holm", "bh"}
        Adjustment of this table's provisional verdicts (the audit re-adjusts all rows together).
    predicted : array-like (N,) of int, optional
        Most probable class of each image under the same probabilities; adds the ``model_error_rate`` rows.

    Returns
    -------
    DataFrame
        The contract's ``group_metrics`` columns, metric ``label_disagreement_rate``: an ``all`` row and one
        per class (``class`` set), then per attribute one row per group and one per class x group.
        ``verdict``: ``insufficient_data`` exactly when ``insufficient_evidence``; otherwise each group is
        tested against the rest of the data (of the same class, for class rows) with a one-sided Fisher
        exact test (a higher rate is harmful; raw p-value in ``p_value``, the rest's rate in
        ``rest_value``), adjusted with ``correction`` over the tested groups of one attribute (per class
        for class rows): ``worse_than_rest`` when the adjusted p-value is below ``1 - confidence_level``,
        else ``no_evidence_of_gap``. ``all`` rows have no verdict. In an audit these verdicts are replaced
        by the audit-wide ones of :func:`audit.analysis.multiplicity.apply_audit_multiplicity`.
        ``model_error_rate`` rows follow, one per disagreement row (same attribute, group, class and ``n``),
        untested (empty verdict unless ``insufficient_data``, no p-value).
    """
    flags = np.asarray(is_label_issue, dtype=bool)
    labels = np.asarray(labels)
    n = flags.shape[0]
    if labels.shape[0] != n:
        raise InputError(ERROR_MASK_LENGTH.format(found=n, expected=labels.shape[0]))
    classes = [str(c) for c in classes]
    bad = np.flatnonzero((labels < 0) | (labels >= len(classes)))
    if bad.size:
        row = int(bad[0])
        raise InputError(ERROR_LABEL_RANGE.format(row=row, value=int(labels[row]), max_index=len(classes) - 1,
                                                  n_classes=len(classes)), row=row, column="label")
    if predicted is not None:
        predicted = np.asarray(predicted)
        if predicted.shape[0] != n:
            raise InputError(ERROR_MASK_LENGTH.format(found=predicted.shape[0], expected=n))
        wrong = predicted != labels
    else:
        wrong = np.zeros(n, dtype=bool)
    alpha = 1.0 - confidence_level
    records = []

    def add(attribute, group, class_name, n_rows, n_flagged, verdict_family, n_wrong=0):
        records.append({"attribute": attribute, "group": group, "class": class_name, "n": int(n_rows),
                        "metric": METRIC_NAME, "flagged": int(n_flagged), "family": verdict_family,
                        "wrong": int(n_wrong)})

    add("all", "all", "", n, flags.sum(), None, wrong.sum())
    class_n = np.bincount(labels, minlength=len(classes))
    class_flagged = np.bincount(labels[flags], minlength=len(classes))
    class_wrong = np.bincount(labels[wrong], minlength=len(classes))
    for c, name in enumerate(classes):
        add("all", "all", name, class_n[c], class_flagged[c], None, class_wrong[c])
    for attribute, values in group_labels.items():
        values = pd.Series(values)
        if len(values) != n:
            raise InputError(ERROR_GROUP_LENGTH.format(attribute=attribute, found=len(values), expected=n),
                             column=str(attribute))
        codes, names = pd.factorize(values.astype(str).to_numpy(), sort=True)
        group_n = np.bincount(codes, minlength=len(names))
        group_flagged = np.bincount(codes[flags], minlength=len(names))
        group_wrong = np.bincount(codes[wrong], minlength=len(names))
        for g, group in enumerate(names):
            add(attribute, group, "", group_n[g], group_flagged[g], (attribute, ""), group_wrong[g])
        cell = labels.astype(np.int64) * len(names) + codes
        size = len(classes) * len(names)
        cell_n = np.bincount(cell, minlength=size).reshape(len(classes), len(names))
        cell_flagged = np.bincount(cell[flags], minlength=size).reshape(len(classes), len(names))
        cell_wrong = np.bincount(cell[wrong], minlength=size).reshape(len(classes), len(names))
        for c, name in enumerate(classes):
            for g, group in enumerate(names):
                if cell_n[c, g]:
                    add(attribute, group, name, cell_n[c, g], cell_flagged[c, g], (attribute, name),
                        cell_wrong[c, g])
    if not records:
        return empty_group_metrics()
    frame = pd.DataFrame.from_records(records)
    successes = frame["flagged"].to_numpy()
    totals = frame["n"].to_numpy()
    low, high = wilson_interval(successes, totals, confidence_level=confidence_level)
    frame["value"] = np.where(totals > 0, successes / np.maximum(totals, 1), np.nan)
    frame["ci_low"], frame["ci_high"] = low, high
    frame["insufficient_evidence"] = flag_insufficient_evidence(frame, min_group_size=min_group_size,
                                                                max_ci_width=max_ci_width,
                                                                confidence_level=confidence_level)
    verdict = np.full(len(frame), VERDICT_NONE, dtype=object)
    p_values = np.full(len(frame), np.nan)
    rest_values = np.full(len(frame), np.nan)
    # Families (an attribute's groups, within a class for class rows) are numbered once and every row is
    # tested in one vectorised call: with 1,000 classes there are tens of thousands of families.
    rows = np.flatnonzero(frame["family"].notna().to_numpy())
    codes, _ = pd.factorize(np.array([f"{f[0]}\x00{f[1]}" for f in frame["family"].to_numpy()[rows]], dtype=object))
    n_families = int(codes.max()) + 1 if codes.size else 0
    # "The rest" = the same attribute's other groups (within the class for class rows).
    family_n = np.bincount(codes, weights=totals[rows], minlength=n_families)
    family_flagged = np.bincount(codes, weights=successes[rows], minlength=n_families)
    rest_n = family_n[codes] - totals[rows]
    rest_flagged = family_flagged[codes] - successes[rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        rest_values[rows] = np.where(rest_n > 0, rest_flagged / np.maximum(rest_n, 1), np.nan)
    # One-sided Fisher exact test: is the group's rate higher than the rest's (harmful direction)?
    p_values[rows] = fisher_p_value_higher(successes[rows], totals[rows], rest_flagged, rest_n)
    insufficient = frame["insufficient_evidence"].to_numpy()
    verdict[rows[insufficient[rows]]] = VERDICT_INSUFFICIENT
    tested = ~insufficient[rows] & np.isfinite(p_values[rows])
    tested_rows, tested_codes = rows[tested], codes[tested]
    order = np.argsort(tested_codes, kind="stable")
    bounds = np.flatnonzero(np.diff(tested_codes[order])) + 1
    for members in np.split(tested_rows[order], bounds) if tested_rows.size else []:
        # Provisional (within this analysis); the audit adjusts every row together
        # (audit.analysis.multiplicity), with the correction the audit was asked for.
        adjusted = adjust_p_values(p_values[members], method=correction)
        verdict[members] = np.where(adjusted < alpha, VERDICT_WORSE, VERDICT_NO_GAP)
    frame["verdict"] = verdict
    frame["p_value"] = p_values
    frame["rest_value"] = rest_values
    parts = [frame]
    if predicted is not None:
        # The confound beside each rate: same images, same interval method, no test (context, not a finding).
        errors = frame.copy()
        wrong_counts = errors["wrong"].to_numpy()
        e_low, e_high = wilson_interval(wrong_counts, totals, confidence_level=confidence_level)
        errors["metric"] = ERROR_METRIC_NAME
        errors["value"] = np.where(totals > 0, wrong_counts / np.maximum(totals, 1), np.nan)
        errors["ci_low"], errors["ci_high"] = e_low, e_high
        errors["verdict"] = np.where(errors["insufficient_evidence"], VERDICT_INSUFFICIENT, VERDICT_NONE)
        errors["p_value"] = np.nan
        errors["rest_value"] = np.nan
        parts.append(errors)
    table = pd.concat(parts, ignore_index=True)
    return coerce_group_metrics(table.drop(columns=["flagged", "family", "wrong"]))

