"""Model metrics old vs new per group and class: difference, interval, test, verdict.

Pure functions over two per-image tables. See :func:`compare_model` and docs/methods.md ("Comparing two
audits").
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from audit.analysis._groups import iter_group_keys
from audit.compare.multiplicity import adjust_comparison, row_scope, summarise
from audit.compare.stats import (bootstrap_difference, fisher_two_sided_p_value, mcnemar_exact_p_value,
                                 paired_difference_interval, unpaired_difference_interval)

PAIRED, UNPAIRED = "paired", "unpaired"
PRIMARY, EXPLORATORY = "primary", "exploratory"
REGRESSED, IMPROVED, NO_EVIDENCE, INSUFFICIENT = "regressed", "improved", "no_evidence_of_change", "insufficient_data"
VERDICTS = (REGRESSED, IMPROVED, NO_EVIDENCE, INSUFFICIENT)

#: Metrics compared, and whether higher is better.
HIGHER_IS_BETTER = {"accuracy": True, "balanced_accuracy": True, "macro_f1": True, "recall": True,
                    "precision": True, "label_disagreement_rate": False, "label_error_rate": False}
#: Metrics computed by resampling (not a single proportion).
BOOTSTRAP_METRICS = ("balanced_accuracy", "macro_f1")
HIGHER_IS_BETTER.update({"top_k_accuracy": True, "expected_calibration_error": False})

ROW_COLUMNS = ("attribute", "group", "class", "metric", "scope", "method", "n_old", "n_new", "old", "new",
               "difference", "ci_low", "ci_high", "p_value", "p_adjusted", "insufficient_evidence", "verdict",
               "old_ci_low", "old_ci_high", "new_ci_low", "new_ci_high")
#: Interval of each version's own value (Wilson for proportions, bootstrap percentiles otherwise): for views.
VALUE_CI_COLUMNS = ("old_ci_low", "old_ci_high", "new_ci_low", "new_ci_high")


class VersionData:
    """One side of a model comparison: labels, predictions and group labels as integer codes."""

    def __init__(self, labels: np.ndarray, predictions: np.ndarray, groups: dict[str, pd.Series], k: int,
                 confidence: np.ndarray | None = None, top_k_hits: np.ndarray | None = None):
        self.labels = labels
        self.predictions = predictions
        self.correct = labels == predictions
        self.groups = groups
        self.k = k
        #: probability of the predicted class per image (expected calibration error), or None
        self.confidence = None if confidence is None else np.asarray(confidence, dtype=float)
        #: label among the top-k most probable classes per image (top-k accuracy), or None
        self.top_k_hits = None if top_k_hits is None else np.asarray(top_k_hits, dtype=bool)


def _weighted_confusion(weights: np.ndarray, labels: np.ndarray, predictions: np.ndarray, k: int):
    """Per replicate (rows of ``weights``): weighted label counts, prediction counts, true positives."""
    eye = np.eye(k, dtype=np.float32)
    label_hot = eye[labels]
    pred_hot = eye[predictions]
    tp_hot = label_hot * (labels == predictions)[:, None]
    return weights @ label_hot, weights @ pred_hot, weights @ tp_hot


def _bootstrap_metrics(label_n, pred_n, tp):
    """balanced accuracy, macro-F1 and per-class precision from (weighted) confusion margins; arrays (B, ...)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        present = label_n > 0
        recall = np.where(present, tp / np.where(present, label_n, 1), np.nan)
        balanced = np.nanmean(np.where(present, recall, np.nan), axis=-1)
        either = (label_n + pred_n) > 0
        f1 = np.where(either, 2 * tp / np.where(either, label_n + pred_n, 1), np.nan)
        macro_f1 = np.nanmean(f1, axis=-1)
        precision = np.where(pred_n > 0, tp / np.where(pred_n > 0, pred_n, 1), np.nan)
    return {"balanced_accuracy": balanced, "macro_f1": macro_f1, "precision": precision}


def _weighted_ece(weights: np.ndarray, confidence: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Expected calibration error per row of ``weights`` (B, n): 15 equal-width right-closed confidence bins
    (:data:`audit.analysis.group_performance.ECE_BINS`, the audit's binning), ``sum_b |sum_w (correct -
    confidence)| / sum_w``."""
    from audit.analysis.group_performance import ECE_BINS

    bins = np.clip(np.ceil(confidence * ECE_BINS).astype(np.int64) - 1, 0, ECE_BINS - 1)
    gap = np.zeros((confidence.size, ECE_BINS), dtype=np.float32)
    gap[np.arange(confidence.size), bins] = correct.astype(np.float32) - confidence.astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(weights @ gap).sum(axis=1) / weights.sum(axis=1)


def _proportion_row(success_old, success_new, *, paired: bool, confidence_level: float):
    """(n_old, n_new, old, new, difference, low, high, p) for boolean arrays (paired: same length, aligned)."""
    success_old = np.asarray(success_old, dtype=bool)
    success_new = np.asarray(success_new, dtype=bool)
    n_old, n_new = success_old.size, success_new.size
    if paired:
        a = int(np.sum(success_old & success_new))
        b = int(np.sum(success_old & ~success_new))
        c = int(np.sum(~success_old & success_new))
        d = n_old - a - b - c
        diff, low, high = paired_difference_interval(a, b, c, d, confidence_level=confidence_level)
        p = mcnemar_exact_p_value(b, c)
    else:
        x_old, x_new = int(success_old.sum()), int(success_new.sum())
        diff, low, high = unpaired_difference_interval(x_old, n_old, x_new, n_new, confidence_level=confidence_level)
        p = fisher_two_sided_p_value(x_old, n_old, x_new, n_new)
    old = success_old.mean() if n_old else np.nan
    new = success_new.mean() if n_new else np.nan
    from audit.analysis._stats import wilson_interval

    o_low, o_high = wilson_interval(success_old.sum(), n_old, confidence_level=confidence_level)
    n_low, n_high = wilson_interval(success_new.sum(), n_new, confidence_level=confidence_level)
    return (n_old, n_new, float(old), float(new), float(diff), float(low), float(high), float(p),
            (float(o_low), float(o_high), float(n_low), float(n_high)))


def _value_intervals(replicates_old, replicates_new, confidence_level):
    alpha = 1.0 - confidence_level
    out = []
    for replicates in (replicates_old, replicates_new):
        finite = np.asarray(replicates, dtype=float)
        finite = finite[np.isfinite(finite)]
        out.extend(np.quantile(finite, [alpha / 2, 1 - alpha / 2]).tolist() if finite.size >= 10 else [np.nan, np.nan])
    return tuple(float(v) for v in out)


def _masks(data: VersionData, attribute: str):
    if attribute == "all":
        yield "all", np.ones(data.labels.size, dtype=bool)
        return
    labels = data.groups[attribute]
    for group in pd.unique(labels):
        yield str(group), (labels == group).to_numpy()


def compare_model(old: VersionData, new: VersionData, *, classes, method: str, metadata_attributes,
                  pixel_attributes=(), primary_metric: str = "accuracy", max_depth: int = 2,
                  confidence_level: float = 0.95, n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Every model metric, group and class: old, new, difference ``new - old``, interval and raw p-value.

    Parameters
    ----------
    old, new : VersionData
        With ``method="paired"`` both hold the same images in the same order (and the same labels and group
        labels: the comparison holds the data fixed); with ``"unpaired"`` each holds its own images.
    classes : sequence of str
        Class names of the integer codes.
    method : {"paired", "unpaired"}
    metadata_attributes, pixel_attributes : sequence of str
        Group attributes present in both versions. Rows: the whole data set; every single attribute; every
        intersection of up to ``max_depth`` metadata attributes; per class (recall, precision) overall and
        recall within each single metadata group.
    primary_metric : str
        Rows ``(single metadata attribute or all) x primary_metric`` over all classes get scope ``primary``;
        every other row ``exploratory`` (:func:`audit.compare.multiplicity.row_scope`).

    Returns
    -------
    DataFrame
        :data:`ROW_COLUMNS` without ``p_adjusted``, ``insufficient_evidence`` and ``verdict`` (see
        :func:`assign_verdicts`).
    """
    paired = method == PAIRED
    rng = np.random.default_rng(seed)
    k = len(classes)
    rows = []

    def add(attribute, group, class_, metric, values):
        n_old, n_new, v_old, v_new, diff, low, high, p, value_ci = values
        rows.append({"attribute": attribute, "group": group, "class": class_, "metric": metric,
                     "scope": row_scope(attribute, class_, metric, primary_metric),
                     "method": method, "n_old": n_old, "n_new": n_new, "old": v_old, "new": v_new,
                     "difference": diff, "ci_low": low, "ci_high": high, "p_value": p,
                     **dict(zip(VALUE_CI_COLUMNS, value_ci))})

    def bootstrap_rows(attribute, group, mask_old, mask_new, per_class_precision: bool):
        lo, po = old.labels[mask_old], old.predictions[mask_old]
        ln, pn = new.labels[mask_new], new.predictions[mask_new]
        if lo.size == 0 or ln.size == 0:
            return
        ones_old = np.ones((1, lo.size), dtype=np.float32)
        ones_new = np.ones((1, ln.size), dtype=np.float32)
        point_old = _bootstrap_metrics(*_weighted_confusion(ones_old, lo, po, k))
        point_new = _bootstrap_metrics(*_weighted_confusion(ones_new, ln, pn, k))
        w_old = rng.poisson(1.0, size=(n_bootstrap, lo.size)).astype(np.float32)
        w_new = w_old if paired else rng.poisson(1.0, size=(n_bootstrap, ln.size)).astype(np.float32)
        boot_old = _bootstrap_metrics(*_weighted_confusion(w_old, lo, po, k))
        boot_new = _bootstrap_metrics(*_weighted_confusion(w_new, ln, pn, k))
        for metric in BOOTSTRAP_METRICS:
            v_old, v_new = float(point_old[metric][0]), float(point_new[metric][0])
            low, high, p = bootstrap_difference(boot_old[metric], boot_new[metric], v_new - v_old,
                                                confidence_level=confidence_level)
            add(attribute, group, "", metric, (lo.size, ln.size, v_old, v_new, v_new - v_old, low, high, p,
                                               _value_intervals(boot_old[metric], boot_new[metric], confidence_level)))
        if per_class_precision:
            for code, name in enumerate(classes):
                v_old, v_new = float(point_old["precision"][0, code]), float(point_new["precision"][0, code])
                low, high, p = bootstrap_difference(boot_old["precision"][:, code], boot_new["precision"][:, code],
                                                    v_new - v_old, confidence_level=confidence_level)
                n_o = int(np.sum(po == code))
                n_n = int(np.sum(pn == code))
                add(attribute, group, name, "precision", (n_o, n_n, v_old, v_new, v_new - v_old, low, high, p,
                                                          _value_intervals(boot_old["precision"][:, code],
                                                                           boot_new["precision"][:, code],
                                                                           confidence_level)))

    def score_rows(attribute, group, mask_old, mask_new):
        """top-k accuracy (a proportion: as accuracy) and expected calibration error (paired or independent
        Poisson bootstrap of the 15-bin plug-in ECE, as the audit bins it) where both sides have the scores."""
        if old.top_k_hits is not None and new.top_k_hits is not None:
            add(attribute, group, "", "top_k_accuracy",
                _proportion_row(old.top_k_hits[mask_old], new.top_k_hits[mask_new], paired=paired,
                                confidence_level=confidence_level))
        if old.confidence is None or new.confidence is None or not mask_old.any() or not mask_new.any():
            return
        point, replicates = [], []
        w_old = rng.poisson(1.0, size=(n_bootstrap, int(mask_old.sum()))).astype(np.float32)
        w_new = w_old if paired else rng.poisson(1.0, size=(n_bootstrap, int(mask_new.sum()))).astype(np.float32)
        for side, mask, weights in ((old, mask_old, w_old), (new, mask_new, w_new)):
            confidence, correct = side.confidence[mask], side.correct[mask]
            ones = np.ones((1, confidence.size), dtype=np.float32)
            point.append(float(_weighted_ece(ones, confidence, correct)[0]))
            replicates.append(_weighted_ece(weights, confidence, correct))
        low, high, p = bootstrap_difference(replicates[0], replicates[1], point[1] - point[0],
                                            confidence_level=confidence_level)
        add(attribute, group, "", "expected_calibration_error",
            (int(mask_old.sum()), int(mask_new.sum()), point[0], point[1], point[1] - point[0], low, high, p,
             _value_intervals(replicates[0], replicates[1], confidence_level)))

    # whole data set
    all_old = np.ones(old.labels.size, dtype=bool)
    all_new = np.ones(new.labels.size, dtype=bool)
    add("all", "all", "", "accuracy", _proportion_row(old.correct, new.correct, paired=paired,
                                                        confidence_level=confidence_level))
    bootstrap_rows("all", "all", all_old, all_new, per_class_precision=True)
    score_rows("all", "all", all_old, all_new)
    for code, name in enumerate(classes):
        m_old, m_new = old.labels == code, new.labels == code
        add("all", "all", name, "recall", _proportion_row(old.correct[m_old], new.correct[m_new], paired=paired,
                                                           confidence_level=confidence_level))
    # groups
    table_old = pd.DataFrame(old.groups)
    table_new = pd.DataFrame(new.groups)
    attributes = list(metadata_attributes) + list(pixel_attributes)
    if attributes:
        keys_old = dict(iter_group_keys(table_old, list(metadata_attributes), max_depth=max_depth)) \
            if metadata_attributes else {}
        keys_new = dict(iter_group_keys(table_new, list(metadata_attributes), max_depth=max_depth)) \
            if metadata_attributes else {}
        for attribute in pixel_attributes:
            keys_old[attribute] = table_old[attribute].astype(str)
            keys_new[attribute] = table_new[attribute].astype(str)
        for attribute, labels_new in keys_new.items():
            labels_old = keys_old[attribute]
            groups = sorted(set(pd.unique(labels_old)) | set(pd.unique(labels_new)))
            single_metadata = attribute in metadata_attributes
            for group in groups:
                m_old = (labels_old == group).to_numpy()
                m_new = (labels_new == group).to_numpy()
                add(attribute, group, "", "accuracy", _proportion_row(old.correct[m_old], new.correct[m_new],
                                                                      paired=paired,
                                                                      confidence_level=confidence_level))
                if single_metadata:
                    bootstrap_rows(attribute, group, m_old, m_new, per_class_precision=False)
                    score_rows(attribute, group, m_old, m_new)
                    for code, name in enumerate(classes):
                        c_old = m_old & (old.labels == code)
                        c_new = m_new & (new.labels == code)
                        if c_old.any() or c_new.any():
                            add(attribute, group, name, "recall",
                                _proportion_row(old.correct[c_old], new.correct[c_new], paired=paired,
                                                confidence_level=confidence_level))
    return pd.DataFrame(rows, columns=[c for c in ROW_COLUMNS if c not in ("p_adjusted", "insufficient_evidence",
                                                                            "verdict")])


def assign_verdicts(rows: pd.DataFrame, *, min_group_size: int, max_ci_width: float,
                    confidence_level: float = 0.95, primary_metric: str = "accuracy") -> pd.DataFrame:
    """Add ``insufficient_evidence``, ``p_adjusted`` and ``verdict`` to comparison rows (no data tests); see
    :func:`decide_rows`."""
    return decide_rows(rows, min_group_size=min_group_size, max_ci_width=max_ci_width,
                       confidence_level=confidence_level, primary_metric=primary_metric)[0]


def decide_rows(rows: pd.DataFrame, data_p_values=(), *, min_group_size: int, max_ci_width: float,
                confidence_level: float = 0.95, primary_metric: str = "accuracy"):
    """Add ``insufficient_evidence``, ``scope``, ``p_adjusted`` and ``verdict`` to comparison rows, adjusting
    them together with the comparison's data tests (:mod:`audit.compare.multiplicity`).

    A row has insufficient evidence when either version has fewer than ``min_group_size`` images in it or
    its difference interval is wider than ``max_ci_width * sqrt(2)`` (what two single intervals of the
    audit's widest allowed width combine to), or when there is no interval. The other rows are tested:
    primary rows form one family with Holm's step-down (family-wise error at ``1 - confidence_level``),
    exploratory rows and ``data_p_values`` (share changes, shift tests) another with Benjamini-Hochberg
    (false discovery rate). A row with ``p_adjusted < alpha`` is ``regressed`` when the difference goes the
    metric's harmful way, else ``improved``.

    Returns
    -------
    rows : DataFrame
        :data:`ROW_COLUMNS`.
    data_adjusted : ndarray
        ``p_adjusted`` of each data test (NaN: not tested).
    multiplicity : dict
        ``comparison.json`` ``multiplicity``.
    """
    rows = rows.copy()
    for column in ("old", "new", "difference", "ci_low", "ci_high", "p_value", *VALUE_CI_COLUMNS):
        if column in rows.columns:
            rows[column] = pd.to_numeric(rows[column], errors="coerce").astype(float)
    for column in ("n_old", "n_new"):
        rows[column] = pd.to_numeric(rows[column], errors="coerce").fillna(0).astype(np.int64)
    width = rows["ci_high"] - rows["ci_low"]
    insufficient = ((rows["n_old"] < min_group_size) | (rows["n_new"] < min_group_size)
                    | ~np.isfinite(width) | (width > max_ci_width * np.sqrt(2)) | rows["p_value"].isna())
    insufficient = insufficient.to_numpy(dtype=bool)
    rows["insufficient_evidence"] = insufficient
    alpha = round(1.0 - confidence_level, 12)  # 0.05, not 0.050000000000000044
    rows, data_adjusted, summary = adjust_comparison(rows, data_p_values, insufficient=insufficient,
                                                     primary_metric=primary_metric, alpha=alpha)
    adjusted = rows["p_adjusted"].to_numpy(dtype=float)
    higher = rows["metric"].map(lambda m: HIGHER_IS_BETTER.get(m, True)).to_numpy(dtype=bool)
    worse = np.where(higher, rows["difference"] < 0, rows["difference"] > 0)
    significant = np.nan_to_num(adjusted, nan=1.0) < alpha
    verdict = np.where(insufficient, INSUFFICIENT,
                       np.where(significant & worse, REGRESSED, np.where(significant, IMPROVED, NO_EVIDENCE)))
    rows["verdict"] = verdict
    rows = rows[list(ROW_COLUMNS)]
    return rows, data_adjusted, summarise(summary, rows, data_adjusted)
