"""Per-group model performance with intervals, tests against the rest of the data and disparity summaries.

What is computed
----------------
For the whole data set (attribute ``all``), every group attribute and every intersection of attributes up
to ``max_depth`` (names and values joined with `` & ``, see :mod:`audit.analysis._groups`):

* ``accuracy``, ``balanced_accuracy``, ``macro_f1`` for every group;
* ``top_k_accuracy`` (label among the ``top_k`` most probable classes) when probabilities are given and
  there are more than ``top_k`` classes;
* ``expected_calibration_error`` (15 equal-width confidence bins) when probabilities are given;
* per-class ``recall`` and ``precision`` (``class`` column set) for ``all`` and single attributes only:
  intersections x classes would explode on 100-class data and every cell would be too small to say
  anything. A per-class row exists only where its denominator is positive (recall: images of the class
  in the group; precision: images predicted as the class in the group); ``n`` is that denominator.

Point estimates follow scikit-learn exactly (and therefore ``fairlearn.metrics.MetricFrame`` with the
scikit-learn functions): balanced accuracy averages recall over the classes present in the group's labels;
macro-F1 averages ``2 TP / (n_true + n_pred)`` over the classes present in the group's labels or
predictions.

Intervals: Wilson score intervals for the proportions (accuracy, top-k accuracy, recall, precision); for
balanced accuracy and macro-F1 the central interval of a Bayesian bootstrap of the group's confusion
cells with Jeffreys-like pseudo-counts (``_posterior_intervals``: it does not collapse to [1, 1] for a
group without errors, unlike the percentile bootstrap it replaced); for the calibration error, whose
plug-in estimate is biased upwards in small groups, the union of the expanded percentile interval and the
basic (reverse-percentile) one of a vectorised Poisson bootstrap (:mod:`audit.analysis._bootstrap`).
Every interval is widened if needed so that it contains its point estimate. Measured coverage of the
population ECE (15 bins, 200 simulated data sets each, n = 300 / 1,500): 99.5 % / 93.5 % at a true ECE
of 0.10, 90.5 % / 96.5 % at 0.02, about 62 % at exactly 0 (no interval around a plug-in ECE, which is
always positive, covers a perfectly calibrated model reliably). Coverage of the other intervals is
checked by tests/test_error_rates.py.

Tests: each group against the rest of the data (all images outside the group), one-sided in the harmful
direction; raw p-values in the table's ``p_value``: Boschloo's exact unconditional test for the accuracy
of single metadata attributes (the candidate primary rows) and Fisher's exact test for every other
proportion; a Wald test with the Poisson-bootstrap standard error of the difference (group - rest) for
balanced accuracy and macro-F1; a permutation test (group labels shuffled over the images) for the
calibration error. ``insufficient_evidence`` depends on ``n`` only. Verdicts come from the audit-wide
multiplicity control of :mod:`audit.analysis.multiplicity` applied to this table (``scope``,
``p_adjusted``); in an audit the pipeline repeats it over every analysis's rows together.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from itertools import combinations

import numpy as np
import pandas as pd

from audit.analysis import _bootstrap
from audit.analysis._groups import codes_for, iter_group_keys
from audit.analysis._jobs import ERROR_N_JOBS, check_n_jobs, n_workers  # noqa: F401 - ERROR_N_JOBS re-exported
from audit.analysis._stats import boschloo_p_value_lower, fisher_p_value_lower, wilson_interval
from audit.analysis._table import (VERDICT_INSUFFICIENT, VERDICT_NONE, VERDICT_WORSE, coerce_group_metrics,
                                   insufficient_by_size)
from audit.analysis.multiplicity import apply_audit_multiplicity
from audit.errors import InputError
from audit.types import json_safe

ERROR_LABELS_SHAPE = ("labels must be a 1-D array of class indices, got shape {shape}: pass one integer "
                      "label per image")
ERROR_PREDICTIONS_SHAPE = ("predictions has shape {shape} but labels has {n} entries: pass one predicted class "
                           "index per image, in the same order as the labels")
ERROR_NOT_INTEGER = "{name} must hold integer class indices, got dtype {dtype}: map class names to indices first"
ERROR_CLASS_RANGE = ("{name} holds class index {value}, outside 0..{last} (there are {k} classes): check that "
                     "classes lists every class in the order the indices use")
ERROR_NO_CLASSES = "classes is empty: pass the class names in index order"
ERROR_GROUPS_LENGTH = ("groups has {rows} rows but there are {n} images: pass one row of group attributes per "
                       "image, in the same order as the labels")
ERROR_PROBABILITIES_SHAPE = ("probabilities has shape {shape}, expected ({n}, {k}) (one row per image, one column "
                             "per class in the order of classes)")
ERROR_CONFIDENCE_VALUES = ("confidence and label_rank must hold one value per image ({n}), confidence in [0, 1]")
ERROR_PROBABILITIES_VALUES = ("probabilities holds values outside [0, 1] or non-finite values (row {row}): pass "
                              "probabilities, not logits (apply a softmax first)")
ERROR_EMPTY = "there are no images to evaluate: labels is empty"
ERROR_SETTING = "{name} must be {what}, got {value!r}"

#: Families (``all``, each attribute, each intersection) run in worker processes (``n_jobs``) only when
#: images x families reaches this: below it, starting the workers (about a second) costs more than it saves.
PARALLEL_MIN_WORK = 200_000

#: Order of the aggregate metrics in the table.
AGGREGATE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "top_k_accuracy", "expected_calibration_error")
#: Per-class metrics (``class`` column set).
PER_CLASS_METRICS = ("recall", "precision")
#: Number of equal-width confidence bins of the expected calibration error.
ECE_BINS = 15
#: Sub-bins per ECE bin used by the bootstrap (cells keep the exact mean confidence of their sub-bin).
_ECE_SUB_BINS = 16

#: ``metrics`` section of ``audit.json``: direction and one-line definition of every metric here.
METRIC_INFO = {
    "accuracy": {"higher_is_better": True,
                 "description": "share of images whose predicted class equals the label"},
    "balanced_accuracy": {"higher_is_better": True,
                          "description": "mean over the classes present among the group's labels of per-class "
                                         "recall (sklearn balanced_accuracy_score)"},
    "macro_f1": {"higher_is_better": True,
                 "description": "mean over the classes present among the group's labels or predictions of "
                                "F1 = 2 TP / (images of the class + images predicted as it) (sklearn "
                                "f1_score, average='macro')"},
    "top_k_accuracy": {"higher_is_better": True,
                       "description": "share of images whose label is among the k most probable classes "
                                      "(k = settings.top_k; ties counted in the label's favour)"},
    "expected_calibration_error": {"higher_is_better": False,
                                   "description": "sum over 15 equal-width bins (lo, hi] of the predicted "
                                                  "class's probability of (images in bin / images) x "
                                                  "|accuracy in bin - mean confidence in bin|"},
    "recall": {"higher_is_better": True,
               "description": "per class: share of the class's images predicted as that class (true positive "
                              "rate); n = images of the class"},
    "precision": {"higher_is_better": True,
                  "description": "per class: share of the images predicted as the class that truly belong to "
                                 "it; n = images predicted as the class"},
}


@dataclass(frozen=True)
class GroupPerformanceResult:
    """Per-group performance of a model.

    Attributes
    ----------
    table : DataFrame
        ``group_metrics.parquet`` rows, exactly the contract columns (``attribute, group, class, n, metric,
        value, ci_low, ci_high, insufficient_evidence, verdict``).
    summaries : tuple of dict
        One JSON-safe dict per attribute or intersection (see :func:`compute_group_performance`).
    overall : dict
        ``{metric: {"value", "ci_low", "ci_high", "n"}}`` over the whole data set (aggregate metrics).
    settings : dict
        Settings used and methods (JSON-safe).
    """

    table: pd.DataFrame
    summaries: tuple = field(default_factory=tuple)
    overall: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The ``group_performance`` section of ``audit.json`` (JSON-safe: no NaN/inf, only None)."""
        metrics_used = [m for m in AGGREGATE_METRICS + PER_CLASS_METRICS if m in set(self.table["metric"])]
        return _json_safe({
            "settings": self.settings,
            "metrics": {name: dict(METRIC_INFO[name]) for name in metrics_used},
            "overall": self.overall,
            "attributes": list(self.summaries),
            "worse_than_rest": [dict(item, attribute=summary["attribute"])
                                for summary in self.summaries for item in summary["worse_than_rest"]],
        })


_json_safe = json_safe  # one conversion for every section of audit.json


def _validate(labels, predictions, classes, groups, probabilities, settings) -> tuple:
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    if labels.ndim != 1:
        raise InputError(ERROR_LABELS_SHAPE.format(shape=labels.shape))
    n = labels.shape[0]
    if n == 0:
        raise InputError(ERROR_EMPTY)
    if predictions.shape != (n,):
        raise InputError(ERROR_PREDICTIONS_SHAPE.format(shape=predictions.shape, n=n))
    k = len(classes)
    if k == 0:
        raise InputError(ERROR_NO_CLASSES)
    for name, values in (("labels", labels), ("predictions", predictions)):
        if not np.issubdtype(values.dtype, np.integer):
            raise InputError(ERROR_NOT_INTEGER.format(name=name, dtype=values.dtype))
        bad = (values < 0) | (values >= k)
        if bad.any():
            raise InputError(ERROR_CLASS_RANGE.format(name=name, value=int(values[np.argmax(bad)]), last=k - 1, k=k))
    if groups is None or groups.shape[1] == 0:
        # no group attributes: a column-less frame (``pd.DataFrame({})`` has 0 rows) means "no groups"
        groups = pd.DataFrame(index=range(n))
    if len(groups) != n:
        raise InputError(ERROR_GROUPS_LENGTH.format(rows=len(groups), n=n))
    groups = groups.reset_index(drop=True)
    if probabilities is not None:
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if probabilities.shape != (n, k):
            raise InputError(ERROR_PROBABILITIES_SHAPE.format(shape=probabilities.shape, n=n, k=k))
        bad_rows = ~(np.isfinite(probabilities) & (probabilities >= 0) & (probabilities <= 1 + 1e-6)).all(axis=1)
        if bad_rows.any():
            raise InputError(ERROR_PROBABILITIES_VALUES.format(row=int(np.argmax(bad_rows))))
    checks = (
        ("max_depth", settings["max_depth"], lambda v: isinstance(v, (int, np.integer)) and v >= 1,
         "an integer >= 1"),
        ("min_group_size", settings["min_group_size"], lambda v: isinstance(v, (int, np.integer)) and v >= 1,
         "an integer >= 1"),
        ("max_ci_width", settings["max_ci_width"], lambda v: isinstance(v, (int, float)) and 0 < v <= 1,
         "a number in (0, 1]"),
        ("confidence_level", settings["confidence_level"], lambda v: isinstance(v, float) and 0 < v < 1,
         "a number strictly between 0 and 1"),
        ("n_bootstrap", settings["n_bootstrap"], lambda v: isinstance(v, (int, np.integer)) and v >= 2,
         "an integer >= 2"),
        ("top_k", settings["top_k"], lambda v: isinstance(v, (int, np.integer)) and v >= 1, "an integer >= 1"),
        ("correction", settings["correction"], lambda v: v in ("holm", "bh"), "'holm' or 'bh'"),
    )
    for name, value, ok, what in checks:
        if not ok(value):
            raise InputError(ERROR_SETTING.format(name=name, what=what, value=value))
    return labels.astype(np.int64), predictions.astype(np.int64), groups, probabilities


def compute_group_performance(labels: np.ndarray, predictions: np.ndarray, *, classes, groups: pd.DataFrame,
                              probabilities: np.ndarray | None = None, confidence: np.ndarray | None = None,
                              label_rank: np.ndarray | None = None, max_depth: int = 2,
                              min_group_size: int = 30, max_ci_width: float = 0.3,
                              confidence_level: float = 0.95, n_bootstrap: int = 1000, seed: int = 0,
                              correction: str = "holm", top_k: int = 5,
                              n_jobs: int | None = None) -> GroupPerformanceResult:
    """Per-group performance with intervals, verdicts and disparity summaries.

    Parameters
    ----------
    labels, predictions : ndarray of int, shape (n,)
        True and predicted class indices into ``classes``.
    classes : sequence of str
        Class names in index order.
    groups : DataFrame, n rows
        One column per group attribute (string values; missing values ``None`` or ``<missing>``, which
        form the group ``<missing>``). Column order gives the order of intersections.
    probabilities : ndarray, shape (n, k), optional
        Model probabilities; needed for ``top_k_accuracy`` and ``expected_calibration_error``. The
        confidence of an image is the probability of its *predicted* class (``predictions``).
    confidence, label_rank : ndarray, shape (n,), optional
        Used only without ``probabilities`` (e.g. when a large matrix was streamed): each image's confidence
        and the number of classes more probable than its label, from which calibration error and top-k
        accuracy are computed exactly as from the matrix.
    max_depth : int
        1 = single attributes, 2 = also pairs (default), 3 = also triples.
    min_group_size : int
        Rows with ``n`` below it have ``insufficient_evidence``.
    max_ci_width : float
        Rows whose interval is wider have ``insufficient_evidence``.
    confidence_level : float
        Interval coverage; the tests use ``alpha = 1 - confidence_level``.
    n_bootstrap : int
        Poisson bootstrap replicates (balanced accuracy, macro-F1, calibration error).
    seed : int
        Seeds the bootstrap (each attribute has its own stream derived from seed and its name).
    correction : {"holm", "bh"}
        Multiple-comparison control within each attribute x metric family.
    top_k : int
        k of ``top_k_accuracy``; the metric is left out unless there are more than ``top_k`` classes.
    n_jobs : int or None
        Worker processes (joblib's loky backend) over which the families (``all``, attributes,
        intersections) are spread; None or 1 = this process, -1 = all cores. Used only when images x
        families reaches :data:`PARALLEL_MIN_WORK`. Every family draws from its own random stream (derived
        from ``seed`` and its name), so the result is the same, bit for bit, for any ``n_jobs``. The
        workers receive the per-image columns (labels, predictions, confidence, label rank), never the
        probability matrix.

    Returns
    -------
    GroupPerformanceResult
        ``table``: contract rows. ``insufficient_evidence`` = ``n < min_group_size`` or interval width
        ``> max_ci_width``; ``verdict`` = ``insufficient_data`` exactly then, else ``worse_than_rest``
        when the adjusted one-sided p-value is below ``alpha`` and ``no_evidence_of_gap`` otherwise; ``all``
        rows have verdict ``''``.

        ``summaries``: per attribute/intersection ``{"attribute", "depth", "n_groups", "metrics": {metric:
        {"worst_group", "worst_value", "best_group", "best_value", "difference" (best - worst, absolute),
        "ratio" (smallest value / largest value), "n_groups_compared"}}, "equalized_odds_gap": {"value",
        "class", "rate" ("tpr"/"fpr"), "high_group", "low_group"}, "binary": {"demographic_parity_difference",
        "equalized_odds_difference"} (two-class tasks only, fairlearn's definitions with class index 1 as
        positive, over all groups), "worse_than_rest": [{"group", "metric", "class", "n", "value",
        "rest_value", "p_value", "p_value_adjusted"}]}``. Worst/best/difference/ratio compare only the
        groups without ``insufficient_evidence``; the equalized-odds gap (largest difference between groups
        of one class's true-positive rate or false-positive rate, over classes) compares the groups with
        at least ``min_group_size`` images and is a point estimate.
    """
    settings = {"max_depth": max_depth, "min_group_size": min_group_size, "max_ci_width": max_ci_width,
                "confidence_level": confidence_level, "n_bootstrap": n_bootstrap, "seed": seed,
                "correction": correction, "top_k": top_k}
    labels, predictions, groups, probabilities = _validate(labels, predictions, classes, groups, probabilities,
                                                           settings)
    check_n_jobs(n_jobs)
    classes = tuple(str(c) for c in classes)
    k = len(classes)
    if probabilities is None and confidence is not None:
        confidence = np.asarray(confidence, dtype=np.float64)
        if confidence.shape != labels.shape or not ((confidence >= 0) & (confidence <= 1 + 1e-6)).all():
            raise InputError(ERROR_CONFIDENCE_VALUES.format(n=labels.size))
        label_rank = None if label_rank is None else np.asarray(label_rank, dtype=np.int64)
        if label_rank is not None and label_rank.shape != labels.shape:
            raise InputError(ERROR_CONFIDENCE_VALUES.format(n=labels.size))
    else:
        confidence = label_rank = None
    data = _Data(labels=labels, predictions=predictions, k=k, classes=classes, probabilities=probabilities, top_k=top_k,
                 given_confidence=confidence, given_label_rank=label_rank)
    alpha = 1.0 - confidence_level

    families = [("all", np.zeros(len(labels), dtype=np.int64), ["all"], 0)]
    attributes = [str(c) for c in groups.columns]
    combos = [combo for depth in range(1, max_depth + 1) for combo in combinations(attributes, depth)]
    for combo, (name, group_labels) in zip(combos, iter_group_keys(groups, attributes, max_depth=max_depth)):
        codes, names = codes_for(group_labels)
        families.append((name, codes, names, len(combo)))

    blocks = []
    extras = []
    for (name, codes, names, depth), (block, extra) in zip(families, _all_family_rows(
            families, data, n_jobs=n_jobs, classes=classes, confidence_level=confidence_level,
            n_bootstrap=n_bootstrap, seed=seed)):
        _add_verdicts(block, tested=depth > 0, min_group_size=min_group_size, max_ci_width=max_ci_width,
                      confidence_level=confidence_level)
        blocks.append(block)
        extras.append(extra)
    frame = pd.DataFrame(_concat(blocks))
    # One multiplicity story: the rows of this analysis alone, adjusted as the audit adjusts all its rows
    # (the pipeline repeats this over every analysis's rows; see audit.analysis.multiplicity).
    adjusted = apply_audit_multiplicity(frame, alpha=alpha, correction=correction).table
    frame["p_adjusted"] = adjusted["p_adjusted"].to_numpy()
    frame["verdict"] = adjusted["verdict"].to_numpy()
    frame["scope"] = adjusted["scope"].to_numpy()
    summaries = []
    for (name, codes, names, depth), extra in zip(families, extras):
        if depth == 0:
            continue
        rows = {column: frame[column].to_numpy() for column in frame.columns}
        select = rows["attribute"] == name
        rows = {column: values[select] for column, values in rows.items()}
        rows["p_value_adjusted"] = rows["p_adjusted"]
        summaries.append(_summary(rows, name, codes, names, depth, extra, data, min_group_size=min_group_size,
                                  max_ci_width=max_ci_width, confidence_level=confidence_level))
    first = blocks[0]
    overall = {first["metric"][i]: {"value": first["value"][i], "ci_low": first["ci_low"][i],
                                    "ci_high": first["ci_high"][i], "n": int(first["n"][i])}
               for i in np.flatnonzero(first["class"] == "")}
    notes = []
    if not data.has_scores:
        notes.append("no probabilities: top_k_accuracy and expected_calibration_error not computed")
    elif probabilities is None and label_rank is None:
        notes.append("no label ranks given: top_k_accuracy not computed")
    elif k <= top_k:
        notes.append(f"top_k_accuracy not computed: {k} classes is not more than top_k = {top_k}")
    settings_out = dict(settings, alpha=round(alpha, 12), ece_bins=ECE_BINS, per_class_max_depth=1,
                        interval_methods={"accuracy": "wilson", "top_k_accuracy": "wilson", "recall": "wilson",
                                          "precision": "wilson",
                                          "balanced_accuracy": "bayesian bootstrap with Jeffreys pseudo-counts, "
                                                               "central interval",
                                          "macro_f1": "bayesian bootstrap with Jeffreys pseudo-counts, "
                                                      "central interval",
                                          "expected_calibration_error":
                                              "poisson bootstrap, union of expanded percentile and basic"},
                        test=("one-sided, group vs rest of the data in the harmful direction: Boschloo exact "
                              "unconditional test (accuracy of single metadata attributes), Fisher exact test (other "
                              "proportions), Wald test with the Poisson-bootstrap standard error of the difference "
                              "(balanced accuracy, macro-F1), permutation test (calibration error); adjusted "
                              "audit-wide: primary rows (single metadata attribute x accuracy) with the chosen "
                              "correction, every other tested row with Benjamini-Hochberg"),
                        notes=notes)
    table = coerce_group_metrics(frame)
    return GroupPerformanceResult(table=table, summaries=tuple(summaries), overall=_json_safe(overall),
                                  settings=_json_safe(settings_out))


def _all_family_rows(families, data: _Data, *, n_jobs, **settings) -> list:
    """``_family_rows`` of every family, in order: here, or spread over ``n_jobs`` worker processes.

    Workers get a copy of ``data`` without the probability matrix (its per-image confidence and label rank
    instead, computed once here, with the same values and dtypes that ``_family_rows`` would read).
    """
    jobs = n_workers(n_jobs, at_most=len(families))
    if jobs <= 1 or data.labels.size * len(families) < PARALLEL_MIN_WORK:
        return [_family_rows(name, codes, names, depth, data, **settings) for name, codes, names, depth in families]
    from joblib import Parallel, delayed

    light = data.without_matrix()
    # The largest families (most groups x classes) first, so that the last ones to finish are short.
    order = sorted(range(len(families)), key=lambda i: -len(families[i][2]))
    done = Parallel(n_jobs=jobs, backend="loky", batch_size=1, pre_dispatch="all")(
        delayed(_family_rows)(*families[i], light, **settings) for i in order)
    out = [None] * len(families)
    for i, rows in zip(order, done):
        out[i] = rows
    return out


def worse_than_rest_entries(table: pd.DataFrame, attribute: str | None = None) -> list[dict]:
    """``worse_than_rest`` rows of this analysis's metrics as the section lists them (JSON-safe dicts with
    ``group, metric, class, n, value, rest_value, p_value, p_value_adjusted, scope``)."""
    rows = table[(table["verdict"] == VERDICT_WORSE)
                 & table["metric"].isin(AGGREGATE_METRICS + PER_CLASS_METRICS)]
    if attribute is not None:
        rows = rows[rows["attribute"] == attribute]
    entries = []
    for row in rows.to_dict("records"):
        entries.append({"group": row["group"], "metric": row["metric"], "class": row["class"], "n": int(row["n"]),
                        "value": row["value"], "rest_value": row.get("rest_value"), "p_value": row.get("p_value"),
                        "p_value_adjusted": row.get("p_adjusted"), "scope": row.get("scope", "")})
    return _json_safe(entries)


def refresh_worse_than_rest(section: dict, table: pd.DataFrame) -> None:
    """Bring a ``group_performance`` section's ``worse_than_rest`` lists in line with ``table`` (the audit-wide
    adjusted ``group_metrics``) in place."""
    for summary in section.get("attributes", []):
        summary["worse_than_rest"] = worse_than_rest_entries(table, summary["attribute"])
    section["worse_than_rest"] = [dict(item, attribute=summary["attribute"])
                                  for summary in section.get("attributes", [])
                                  for item in summary["worse_than_rest"]]


def _add_verdicts(block: dict, *, tested: bool, min_group_size, max_ci_width, confidence_level) -> None:
    """Fill ``insufficient_evidence`` and a provisional ``verdict`` of one attribute's rows in place.

    ``insufficient_evidence`` depends on ``n`` only (:func:`audit.analysis._table.insufficient_by_size`).
    Tested rows get their final verdict from :func:`audit.analysis.multiplicity.apply_audit_multiplicity`.
    """
    insufficient = insufficient_by_size(block["n"], min_group_size=min_group_size, max_ci_width=max_ci_width,
                                        confidence_level=confidence_level)
    block["insufficient_evidence"] = insufficient
    verdict = np.full(len(insufficient), VERDICT_NONE, dtype=object)
    if tested:
        verdict[insufficient] = VERDICT_INSUFFICIENT
    else:
        block["p_value"] = np.full(len(insufficient), np.nan)
    block["verdict"] = verdict


@dataclass(frozen=True)
class _Data:
    labels: np.ndarray
    predictions: np.ndarray
    k: int
    classes: tuple
    probabilities: np.ndarray | None
    top_k: int
    given_confidence: np.ndarray | None = None
    given_label_rank: np.ndarray | None = None

    @property
    def correct(self) -> np.ndarray:
        return self.labels == self.predictions

    @property
    def has_scores(self) -> bool:
        """Probabilities, or the per-image values derived from them, are available (top-k, calibration)."""
        return self.probabilities is not None or self.given_confidence is not None

    def confidence(self) -> np.ndarray:
        if self.probabilities is None:
            return self.given_confidence
        return self.probabilities[np.arange(self.labels.size), self.predictions]

    def label_rank(self) -> np.ndarray | None:
        """Number of classes more probable than the given label (0 = the label is the top class)."""
        if self.probabilities is None:
            return self.given_label_rank
        return self._label_rank_from_probabilities

    @cached_property
    def _label_rank_from_probabilities(self) -> np.ndarray:
        # computed once (a pass over the n x k matrix), not once per attribute
        label_probability = self.probabilities[np.arange(self.labels.size), self.labels]
        return (self.probabilities > label_probability[:, None]).sum(axis=1)

    def top_k_hits(self) -> np.ndarray:
        return self.label_rank() < self.top_k

    def without_matrix(self) -> "_Data":
        """The same data with the per-image confidence and label rank in place of the probability matrix
        (same values and dtypes: what a worker process needs, at O(n) instead of O(n x k))."""
        if self.probabilities is None:
            return self
        return _Data(labels=self.labels, predictions=self.predictions, k=self.k, classes=self.classes,
                     probabilities=None, top_k=self.top_k, given_confidence=self.confidence(),
                     given_label_rank=self.label_rank() if self.k > self.top_k else None)


def balanced_accuracy_from_counts(tp: np.ndarray, n_true: np.ndarray) -> np.ndarray:
    """Mean recall over classes with ``n_true > 0`` (last axis = classes); NaN where no class is present."""
    present = n_true > 0
    # Divide only where the class is present (no temporaries of the full shape but the result itself);
    # the sum runs over the same array as before, so the result is bitwise unchanged.
    recall = np.zeros(np.broadcast_shapes(np.shape(tp), np.shape(n_true)))
    np.divide(tp, n_true, out=recall, where=present)
    with np.errstate(invalid="ignore", divide="ignore"):
        return recall.sum(axis=-1) / np.count_nonzero(present, axis=-1)


def macro_f1_from_counts(tp: np.ndarray, n_true: np.ndarray, n_pred: np.ndarray) -> np.ndarray:
    """Mean of ``2 TP / (n_true + n_pred)`` over classes with ``n_true + n_pred > 0`` (last axis = classes)."""
    support = np.add(n_true, n_pred)
    present = support > 0
    f1 = np.zeros(np.broadcast_shapes(np.shape(tp), support.shape))
    np.divide(np.multiply(2.0, tp), support, out=f1, where=present)
    with np.errstate(invalid="ignore", divide="ignore"):
        return f1.sum(axis=-1) / np.count_nonzero(present, axis=-1)


def _ece_from_bins(n_bin: np.ndarray, correct_bin: np.ndarray, confidence_bin: np.ndarray) -> np.ndarray:
    """ECE from per-bin counts and sums (last axis = bins)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(correct_bin - confidence_bin).sum(axis=-1) / n_bin.sum(axis=-1)


_COLUMNS = ("attribute", "group", "class", "n", "metric", "value", "ci_low", "ci_high", "p_value", "rest_value")


def _block(name, names, metric, n, value, low, high, p_value, rest_value, class_names=None) -> dict:
    """Rows of one metric of one attribute, as a dict of equal-length numpy arrays."""
    size = len(value)
    return {
        "attribute": np.full(size, name, dtype=object),
        "group": np.asarray(names, dtype=object),
        "class": np.full(size, "", dtype=object) if class_names is None else np.asarray(class_names, dtype=object),
        "n": np.asarray(n).astype(np.int64), "metric": np.full(size, metric, dtype=object),
        "value": np.asarray(value, dtype=float), "ci_low": np.asarray(low, dtype=float),
        "ci_high": np.asarray(high, dtype=float),
        "p_value": np.asarray(p_value, dtype=float) if p_value is not None else np.full(size, np.nan),
        "rest_value": np.asarray(rest_value, dtype=float) if rest_value is not None else np.full(size, np.nan),
    }


def _concat(blocks) -> dict:
    return {column: np.concatenate([block[column] for block in blocks]) for column in blocks[0]}


def _family_rows(name, codes, names, depth, data: _Data, *, classes, confidence_level, n_bootstrap, seed):
    """All rows of one attribute (or intersection, or ``all``) plus counts the summary needs."""
    k = data.k
    g_count = len(names)
    has_rest = depth > 0
    labels, predictions = data.labels, data.predictions
    key = (codes * k + labels) * k + predictions
    cells, counts = np.unique(key, return_counts=True)
    cell_group = cells // (k * k)
    cell_true = (cells // k) % k
    cell_pred = cells % k
    size = g_count * k
    diagonal = np.where(cell_true == cell_pred, cell_group * k + cell_true, -1)
    true_target = cell_group * k + cell_true
    pred_target = cell_group * k + cell_pred
    tp = np.bincount(diagonal[diagonal >= 0], weights=counts[diagonal >= 0], minlength=size).reshape(g_count, k)
    n_true = np.bincount(true_target, weights=counts, minlength=size).reshape(g_count, k)
    n_pred = np.bincount(pred_target, weights=counts, minlength=size).reshape(g_count, k)
    n_group = n_true.sum(axis=1)
    n_total = n_group.sum()
    rest_tp, rest_true, rest_pred = tp.sum(0) - tp, n_true.sum(0) - n_true, n_pred.sum(0) - n_pred
    rest_n = n_total - n_group

    blocks = []
    # accuracy (Wilson interval, Fisher exact test)
    successes = tp.sum(axis=1)
    accuracy = successes / n_group
    low, high = wilson_interval(successes, n_group, confidence_level=confidence_level)
    p = rest_acc = None
    if has_rest:
        rest_successes = successes.sum() - successes
        if depth == 1 and not name.startswith("image_"):
            # Candidate primary rows (few): Boschloo's exact unconditional test, uniformly more powerful
            # than Fisher's and still exact.
            p = boschloo_p_value_lower(successes, n_group, rest_successes, rest_n)
        else:
            p = fisher_p_value_lower(successes, n_group, rest_successes, rest_n)
        with np.errstate(invalid="ignore", divide="ignore"):
            rest_acc = rest_successes / rest_n
    blocks.append(_block(name, names, "accuracy", n_group, accuracy, low, high, p, rest_acc))

    # balanced accuracy and macro-F1 (Poisson bootstrap of the confusion cells)
    balanced = balanced_accuracy_from_counts(tp, n_true)
    macro = macro_f1_from_counts(tp, n_true, n_pred)
    rest_balanced = balanced_accuracy_from_counts(rest_tp, rest_true) if has_rest else None
    rest_macro = macro_f1_from_counts(rest_tp, rest_true, rest_pred) if has_rest else None
    rng = _bootstrap.family_rng(seed, name)
    targets = [_bootstrap.indicator(diagonal, size), _bootstrap.indicator(true_target, size),
               _bootstrap.indicator(pred_target, size)]
    diffs = {"balanced_accuracy": [], "macro_f1": []}
    # The tests against the rest use the Poisson bootstrap's standard error of the difference.
    for b, (tp_b, true_b, pred_b) in (_bootstrap.iter_poisson_sums(counts, targets, n_boot=n_bootstrap, rng=rng,
                                                                   width=size) if has_rest else ()):
        tp_b, true_b, pred_b = (a.reshape(b, g_count, k) for a in (tp_b, true_b, pred_b))
        bal_b = balanced_accuracy_from_counts(tp_b, true_b)
        f1_b = macro_f1_from_counts(tp_b, true_b, pred_b)
        if has_rest:
            rtp, rtrue, rpred = (a.sum(axis=1, keepdims=True) - a for a in (tp_b, true_b, pred_b))
            diffs["balanced_accuracy"].append(bal_b - balanced_accuracy_from_counts(rtp, rtrue))
            diffs["macro_f1"].append(f1_b - macro_f1_from_counts(rtp, rtrue, rpred))
    posterior = _posterior_intervals(counts, cell_group, cell_true, cell_pred, g_count, k, n_true,
                                     n_draws=n_bootstrap, rng=rng, confidence_level=confidence_level,
                                     estimates={"balanced_accuracy": balanced, "macro_f1": macro})
    for metric, estimate, rest_value in (("balanced_accuracy", balanced, rest_balanced),
                                         ("macro_f1", macro, rest_macro)):
        low, high = posterior[metric]
        p = None
        if has_rest:
            p = _bootstrap.bootstrap_p_value_lower(estimate - rest_value, np.concatenate(diffs[metric], axis=0))
        blocks.append(_block(name, names, metric, n_group, estimate, low, high, p, rest_value))

    if data.has_scores:
        if k > data.top_k and data.label_rank() is not None:
            hits = data.top_k_hits()
            successes = np.bincount(codes, weights=hits, minlength=g_count)
            low, high = wilson_interval(successes, n_group, confidence_level=confidence_level)
            p = rest_value = None
            if has_rest:
                rest_successes = successes.sum() - successes
                p = fisher_p_value_lower(successes, n_group, rest_successes, rest_n)
                with np.errstate(invalid="ignore", divide="ignore"):
                    rest_value = rest_successes / rest_n
            blocks.append(_block(name, names, "top_k_accuracy", n_group, successes / n_group, low, high, p,
                                 rest_value))
        blocks.append(_ece_block(name, codes, names, has_rest, data, n_group, confidence_level=confidence_level,
                                 n_bootstrap=n_bootstrap, rng=rng))

    if depth <= 1:
        class_names = np.asarray(classes, dtype=object)
        group_grid = np.repeat(np.asarray(names, dtype=object), k)
        class_grid = np.tile(class_names, g_count)
        for metric, denominator, rest_denominator in (("recall", n_true, rest_true), ("precision", n_pred, rest_pred)):
            keep = denominator.ravel() > 0
            x, n = tp.ravel()[keep], denominator.ravel()[keep]
            low, high = wilson_interval(x, n, confidence_level=confidence_level)
            p = rest_value = None
            if has_rest:
                rx, rn = rest_tp.ravel()[keep], rest_denominator.ravel()[keep]
                p = fisher_p_value_lower(x, n, rx, rn)
                with np.errstate(invalid="ignore", divide="ignore"):
                    rest_value = np.where(rn > 0, rx / np.where(rn > 0, rn, 1), np.nan)
            blocks.append(_block(name, group_grid[keep], metric, n, x / n, low, high, p, rest_value,
                                 class_names=class_grid[keep]))
    extra = {"tp": tp, "n_true": n_true, "n_pred": n_pred, "n_group": n_group}
    return _concat(blocks), extra


#: Prior pseudo-counts per class present in a group: one half of a correct and one half of a wrong
#: prediction (Jeffreys' Beta(1/2, 1/2) on each recall), so that a group without errors keeps an interval.
POSTERIOR_PSEUDO_COUNT = 0.5
#: Up to this many classes the pseudo miss is spread over the other classes (else it goes to no class).
SPREAD_MAX_CLASSES = 10


def _posterior_intervals(counts, cell_group, cell_true, cell_pred, g_count, k, n_true, *, n_draws, rng,
                         confidence_level, estimates) -> dict:
    """Equal-tailed intervals of balanced accuracy and macro-F1 from a Bayesian bootstrap of the confusion
    cells with Jeffreys-like pseudo-counts (:data:`POSTERIOR_PSEUDO_COUNT`).

    Each group's cells (true class, predicted class) get Dirichlet posterior weights from their counts; each
    class present in the group also gets half a pseudo-image predicted correctly and half a pseudo-image
    predicted wrongly, spread evenly over the other classes (with more than :data:`SPREAD_MAX_CLASSES`
    classes: predicted as no class, a miss that is nobody's false positive). Draws are turned into balanced accuracy
    and macro-F1 exactly as the point estimates are; the interval is the central ``confidence_level`` of
    the draws, widened to contain the point estimate. The percentile bootstrap this replaces collapsed to
    [1, 1] for a group without errors (coverage 39 % at n = 10 and 78 % at n = 30, accuracy 0.95); see
    tests/test_error_rates.py for the measured coverage.
    """
    present = np.flatnonzero(n_true.ravel() > 0)
    pseudo_group, pseudo_class = present // k, present % k
    a = POSTERIOR_PSEUDO_COUNT
    if k <= SPREAD_MAX_CLASSES:
        # the pseudo miss is spread evenly over the other classes (a false positive of each)
        miss_group = np.repeat(pseudo_group, k - 1)
        miss_true = np.repeat(pseudo_class, k - 1)
        offsets = np.tile(np.arange(1, k), present.size)
        miss_pred = (miss_true + offsets) % k
        miss_weight = np.full(miss_true.size, a / (k - 1))
    else:
        # too many classes to spread: a miss that is nobody's false positive
        miss_group, miss_true, miss_pred = pseudo_group, pseudo_class, np.full(present.size, -1)
        miss_weight = np.full(present.size, a)
    weights = np.concatenate([counts.astype(float), np.full(present.size, a), miss_weight])
    group = np.concatenate([cell_group, pseudo_group, miss_group])
    true = np.concatenate([cell_true, pseudo_class, miss_true])
    pred = np.concatenate([cell_pred, pseudo_class, miss_pred])
    diagonal = np.where(true == pred, group * k + true, -1)
    true_target = group * k + true
    pred_target = np.where(pred >= 0, group * k + pred, -1)
    size = g_count * k
    targets = [_bootstrap.indicator(diagonal, size), _bootstrap.indicator(true_target, size),
               _bootstrap.indicator(pred_target, size)]
    draws = {"balanced_accuracy": [], "macro_f1": []}
    for b, (tp_b, true_b, pred_b) in _bootstrap.iter_dirichlet_sums(weights, targets, n_draws=n_draws, rng=rng):
        tp_b, true_b, pred_b = (x.reshape(b, g_count, k) for x in (tp_b, true_b, pred_b))
        draws["balanced_accuracy"].append(balanced_accuracy_from_counts(tp_b, true_b))
        draws["macro_f1"].append(macro_f1_from_counts(tp_b, true_b, pred_b))
    out = {}
    for metric, values in draws.items():
        out[metric] = _bootstrap.percentile_interval(np.concatenate(values, axis=0), estimates[metric],
                                                     confidence_level=confidence_level)
    return out


def _ece_block(name, codes, names, has_rest, data: _Data, n_group, *, confidence_level, n_bootstrap, rng):
    g_count = len(names)
    confidence = data.confidence()
    correct = data.correct
    scaled = confidence * ECE_BINS
    ece_bin = np.clip(np.ceil(scaled).astype(np.int64) - 1, 0, ECE_BINS - 1)
    # Sub-bins nest exactly in the bins: ceil(16 x) - 1 // 16 == ceil(x) - 1 for the same float x.
    sub_bin = np.clip(np.ceil(scaled * _ECE_SUB_BINS).astype(np.int64) - 1, 0, ECE_BINS * _ECE_SUB_BINS - 1)
    sub_bin = np.maximum(sub_bin, ece_bin * _ECE_SUB_BINS)
    # Exact point estimate.
    bin_key = codes * ECE_BINS + ece_bin
    gap = np.bincount(bin_key, weights=correct - confidence, minlength=g_count * ECE_BINS).reshape(g_count, ECE_BINS)
    estimate = np.abs(gap).sum(axis=1) / n_group
    n_bin = np.bincount(bin_key, minlength=g_count * ECE_BINS).reshape(g_count, ECE_BINS)
    corr_bin = np.bincount(bin_key, weights=correct, minlength=g_count * ECE_BINS).reshape(g_count, ECE_BINS)
    conf_bin = np.bincount(bin_key, weights=confidence, minlength=g_count * ECE_BINS).reshape(g_count, ECE_BINS)
    rest_value = None
    if has_rest:
        rest_value = _ece_from_bins(n_bin.sum(0) - n_bin, corr_bin.sum(0) - corr_bin, conf_bin.sum(0) - conf_bin)
    # Bootstrap on cells (group, sub-bin, correct), each carrying its exact mean confidence.
    cell_key = (codes * (ECE_BINS * _ECE_SUB_BINS) + sub_bin) * 2 + correct
    cells, inverse, counts = np.unique(cell_key, return_inverse=True, return_counts=True)
    mean_conf = np.bincount(inverse, weights=confidence) / counts
    cell_group = cells // (2 * ECE_BINS * _ECE_SUB_BINS)
    cell_bin = ((cells // 2) % (ECE_BINS * _ECE_SUB_BINS)) // _ECE_SUB_BINS
    cell_correct = (cells % 2).astype(float)
    target = cell_group * ECE_BINS + cell_bin
    size = g_count * ECE_BINS
    targets = [_bootstrap.indicator(target, size), _bootstrap.indicator(target, size, weights=cell_correct),
               _bootstrap.indicator(target, size, weights=mean_conf)]
    reps = []
    for b, sums in _bootstrap.iter_poisson_sums(counts, targets, n_boot=n_bootstrap, rng=rng, width=size):
        n_b, corr_b, conf_b = (a.reshape(b, g_count, ECE_BINS) for a in sums)
        ece_b = _ece_from_bins(n_b, corr_b, conf_b)
        reps.append(ece_b)
    # The plug-in ECE is biased upwards, more so in small groups. The percentile interval then sits above a
    # small true ECE and the basic (bias-reflecting) interval undercovers a large one; their union covers
    # both (measured: see the module docstring). The test's null distribution carries the same bias, which
    # keeps small groups from looking worse than large ones.
    replicates = np.concatenate(reps)
    basic_low, basic_high = _bootstrap.basic_interval(replicates, estimate, confidence_level=confidence_level,
                                                      n=n_group)
    pct_low, pct_high = _bootstrap.percentile_interval(replicates, estimate, confidence_level=confidence_level,
                                                       n=n_group)
    low, high = np.fmin(basic_low, pct_low), np.fmax(basic_high, pct_high)
    p = None
    if has_rest:
        p = _ece_permutation_p_value(estimate - rest_value, codes, ece_bin, correct, confidence, g_count,
                                     n_permutations=n_bootstrap, rng=rng)
    return _block(name, names, "expected_calibration_error", n_group, estimate, low, high, p, rest_value)


#: Largest number of (permutation, image) pairs drawn at once by the calibration-error permutation test.
_PERMUTATION_CHUNK_ELEMENTS = 2_000_000


def _ece_permutation_p_value(observed, codes, ece_bin, correct, confidence, g_count, *, n_permutations,
                             rng) -> np.ndarray:
    """One-sided permutation p-value that a group's calibration error exceeds the rest's.

    Null hypothesis: group membership is exchangeable with the images' (confidence, correctness), i.e. the
    group is a random subset of its size. Each permutation shuffles the group labels over the images and
    recomputes ECE(group) - ECE(rest) for every group at once from per-bin sums (the rest's sums are the
    totals minus the group's), so the plug-in ECE's small-group bias is in the null distribution too. The
    p-value is the upper tail of a Pearson type III (moment-matched gamma) distribution fitted to the
    permutation distribution's mean, standard deviation and skewness: it follows the skewed null (the
    normal approximation it replaces rejected a true null 9-26 % of the time at a nominal 5 %) and, unlike
    the raw share of permutations, is not bounded below by ``1 / (1 + n_permutations)``, which after
    adjustment over hundreds of exploratory rows would leave no calibration gap detectable. Its level is
    checked by simulation (tests/test_error_rates.py).
    """
    from scipy import stats

    n = codes.size
    gap_image = np.asarray(correct, dtype=float) - np.asarray(confidence, dtype=float)
    total_gap = np.bincount(ece_bin, weights=gap_image, minlength=ECE_BINS)
    moments = np.zeros((3, g_count))
    chunk = max(1, min(n_permutations, _PERMUTATION_CHUNK_ELEMENTS // max(n, 1)))
    done = 0
    size_of_group = np.bincount(codes, minlength=g_count)
    per_size = {}  # chunk size -> (offset of each (permutation, image) bin, gap of each image repeated)
    while done < n_permutations:
        size = min(chunk, n_permutations - done)
        permuted = rng.permuted(np.broadcast_to(codes, (size, n)), axis=1)
        if size not in per_size:
            per_size[size] = ((np.arange(size)[:, None] * (g_count * ECE_BINS) + ece_bin[None, :]).ravel(),
                              np.tile(gap_image, size))
        offset, weights = per_size[size]
        # key = (permutation, group, bin), the same integers as ((p * g + group) * bins + bin)
        key = permuted.ravel().astype(np.int64, copy=False)
        key *= ECE_BINS
        key += offset
        gap = np.bincount(key, weights=weights, minlength=size * g_count * ECE_BINS).reshape(size, g_count, ECE_BINS)
        with np.errstate(invalid="ignore", divide="ignore"):
            difference = (np.abs(gap).sum(axis=2) / size_of_group
                          - np.abs(total_gap - gap).sum(axis=2) / (n - size_of_group))
        moments += np.stack([difference.sum(axis=0), (difference ** 2).sum(axis=0), (difference ** 3).sum(axis=0)])
        done += size
    mean = moments[0] / n_permutations
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = np.maximum(moments[1] / n_permutations - mean ** 2, 0.0)
        third = moments[2] / n_permutations - 3 * mean * moments[1] / n_permutations + 2 * mean ** 3
        sd = np.sqrt(variance)
        skew = third / sd ** 3
        z = (observed - mean) / sd
        shape = 4.0 / np.maximum(skew ** 2, 1e-12)
        upper = np.where(skew > 1e-3, stats.gamma.sf(shape + z * np.sqrt(shape), shape),
                         np.where(skew < -1e-3, stats.gamma.cdf(shape - z * np.sqrt(shape), shape),
                                  stats.norm.sf(z)))
    p = np.where(sd <= 1e-15, np.where(observed > mean + 1e-12, 0.0, 1.0), upper)
    return np.where(np.isfinite(observed) & np.isfinite(p), np.clip(p, 0.0, 1.0), np.nan)


def _summary(rows: dict, name, codes, names, depth, extra, data: _Data, *, min_group_size, max_ci_width,
             confidence_level) -> dict:
    metrics = {}
    present = set(rows["metric"])
    for metric in AGGREGATE_METRICS:
        if metric not in present:
            continue
        select = (rows["metric"] == metric) & ~rows["insufficient_evidence"] & np.isfinite(rows["value"])
        if not select.any():
            metrics[metric] = {"worst_group": None, "worst_value": None, "best_group": None, "best_value": None,
                               "difference": None, "ratio": None, "n_groups_compared": 0}
            continue
        higher_is_better = METRIC_INFO[metric]["higher_is_better"]
        values, group_names = rows["value"][select], rows["group"][select]
        worst = int(np.argmin(values) if higher_is_better else np.argmax(values))
        best = int(np.argmax(values) if higher_is_better else np.argmin(values))
        top, bottom = values.max(), values.min()
        metrics[metric] = {
            "worst_group": group_names[worst], "worst_value": float(values[worst]),
            "best_group": group_names[best], "best_value": float(values[best]),
            "difference": float(top - bottom), "ratio": float(bottom / top) if top > 0 else None,
            "n_groups_compared": int(select.sum()),
        }
    worse_list = [{column: rows[column][i] for column in ("group", "metric", "class", "n", "value", "rest_value",
                                                         "p_value", "p_value_adjusted", "scope")}
                  for i in np.flatnonzero(rows["verdict"] == VERDICT_WORSE)]
    summary = {"attribute": name, "depth": depth, "n_groups": len(names), "metrics": metrics,
               "equalized_odds_gap": _equalized_odds_gap(extra, names, data.classes, min_group_size=min_group_size),
               "worse_than_rest": worse_list}
    if data.k == 2:
        group_n = np.bincount(codes, minlength=len(names))
        sufficient = ~insufficient_by_size(group_n, min_group_size=min_group_size, max_ci_width=max_ci_width,
                                           confidence_level=confidence_level)
        summary["binary"] = _binary_fairlearn(data, codes, names, sufficient=sufficient)
    return _json_safe(summary)


def _equalized_odds_gap(extra, names, classes, *, min_group_size) -> dict:
    """Largest between-group gap in one class's true-positive or false-positive rate (one-vs-rest)."""
    tp, n_true, n_pred, n_group = extra["tp"], extra["n_true"], extra["n_pred"], extra["n_group"]
    big = n_group >= min_group_size
    empty = {"value": None, "class": None, "rate": None, "high_group": None, "low_group": None,
             "n_groups_compared": int(big.sum())}
    if big.sum() < 2:
        return empty
    tp, n_true, n_pred, n_group = tp[big], n_true[big], n_pred[big], n_group[big]
    kept = np.asarray(names, dtype=object)[big]
    negatives = n_group[:, None] - n_true
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.where(n_true > 0, tp / np.where(n_true > 0, n_true, 1), np.nan)
        fpr = np.where(negatives > 0, (n_pred - tp) / np.where(negatives > 0, negatives, 1), np.nan)
    best = empty
    for rate_name, rate in (("tpr", tpr), ("fpr", fpr)):
        valid = np.isfinite(rate)
        usable = valid.sum(axis=0) >= 2
        if not usable.any():
            continue
        high = np.where(valid, rate, -np.inf).max(axis=0)
        low = np.where(valid, rate, np.inf).min(axis=0)
        gap = np.where(usable, high - low, -np.inf)
        c = int(np.argmax(gap))
        if best["value"] is None or gap[c] > best["value"]:
            column = np.where(valid[:, c], rate[:, c], np.nan)
            best = {"value": float(gap[c]), "class": classes[c], "rate": rate_name,
                    "high_group": kept[int(np.nanargmax(column))], "low_group": kept[int(np.nanargmin(column))],
                    "n_groups_compared": int(valid[:, c].sum())}
    return best


def _binary_fairlearn(data: _Data, codes, names, *, sufficient) -> dict:
    """fairlearn's demographic-parity and equalized-odds differences (positive class = index 1), over the
    groups with sufficient evidence only (``sufficient``, by size; a difference between groups of one or two
    images says nothing).

    Computed from per-group counts, which equals fairlearn's result on the same images (tested) and avoids
    running ``MetricFrame`` once per attribute and intersection. Groups without positives or negatives leave
    a rate undefined; then fairlearn itself is called on those groups' images, so its conventions hold.
    ``n_groups_compared`` says how many groups entered; with fewer than two the differences are None.
    """
    sufficient = np.asarray(sufficient, dtype=bool)
    n_groups = len(names)
    result = {"positive_class_index": 1, "n_groups_compared": int(sufficient.sum()),
              "demographic_parity_difference": None, "equalized_odds_difference": None}
    if sufficient.sum() < 2:
        return result
    keep = sufficient[codes]
    labels = np.asarray(data.labels)[keep] == 1
    predicted = np.asarray(data.predictions)[keep] == 1
    kept_codes = np.asarray(codes)[keep]
    size = np.bincount(kept_codes, minlength=n_groups)
    present = size > 0
    positives = np.bincount(kept_codes, weights=labels, minlength=n_groups)
    negatives = size - positives
    if np.any(present & ((positives == 0) | (negatives == 0))):
        from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

        sensitive = np.asarray(names, dtype=object)[kept_codes]
        y_true, y_pred = np.asarray(data.labels)[keep], np.asarray(data.predictions)[keep]
        result["demographic_parity_difference"] = float(demographic_parity_difference(
            y_true, y_pred, sensitive_features=sensitive))
        result["equalized_odds_difference"] = float(equalized_odds_difference(
            y_true, y_pred, sensitive_features=sensitive))
        return result
    selected = np.bincount(kept_codes, weights=predicted, minlength=n_groups)[present] / size[present]
    true_positive = (np.bincount(kept_codes, weights=labels & predicted, minlength=n_groups)[present]
                     / positives[present])
    false_positive = (np.bincount(kept_codes, weights=~labels & predicted, minlength=n_groups)[present]
                      / negatives[present])
    result["demographic_parity_difference"] = float(selected.max() - selected.min())
    result["equalized_odds_difference"] = float(max(true_positive.max() - true_positive.min(),
                                                    false_positive.max() - false_positive.min()))
    return result
