"""Runs every analysis on the decoded data set and assembles the contract tables.

Called by :func:`audit.pipeline.run_audit` (full audits) and :func:`audit.label_noise_audit.run_label_noise_audit`
(labels + probabilities only). Each analysis is isolated by ``runner``: a failure becomes an ``errors`` entry.

Probabilities come either as an in-memory ``(N, K)`` array (every analysis as usual) or, for predictions too
large to hold, as a *chunk source* (a callable returning a fresh iterator of consecutive ``(rows, K)``
chunks, see :mod:`audit.io.arrays`) plus the per-image :class:`PredictionColumns`. Then label noise is
estimated in bounded memory from the chunks and group performance runs on the per-image predictions:
every metric except ``top_k_accuracy`` and ``expected_calibration_error``, which
:func:`~audit.analysis.group_performance.compute_group_performance` computes only from an in-memory matrix;
the ``group_performance`` section says so (``settings.notes`` and ``skipped_metrics``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from audit.analysis._groups import group_labels, iter_group_keys
from audit.analysis._table import VERDICT_INSUFFICIENT, coerce_group_metrics, empty_group_metrics
from audit.findings import compose_findings

#: Metrics of group_metrics.parquet that are not model metrics, and their direction.
BASE_METRICS = {
    "share": {"higher_is_better": None, "description": "Fraction of all images in the group (representation); "
              "Wilson interval."},
    "estimated_noise_rate": {"higher_is_better": False, "description": "Fraction of the group's images flagged "
                             "as label issues by confident learning (the flagged set has the size of the "
                             "estimated number of label errors); Wilson interval."},
}

PIXEL_GROUP_BOOLEAN = ("image_is_grayscale",)

#: Metrics of ``group_performance`` that need the whole probability matrix in memory.
PROBABILITY_METRICS = ("top_k_accuracy", "expected_calibration_error")
#: ``group_performance`` note when the probabilities were streamed (``{n}`` images x ``{k}`` classes).
NOTE_STREAMED_SCORES = ("the probabilities were streamed in chunks to keep memory bounded; top_k_accuracy and "
                        "expected_calibration_error come from each image's confidence and label rank, computed "
                        "chunk by chunk (the same values as from the whole matrix)")
NOTE_STREAMED_PROBABILITIES = ("top_k_accuracy and expected_calibration_error not computed: the probabilities "
                               "({n} x {k} values) were streamed in chunks to keep memory bounded, and these "
                               "metrics need the whole matrix in memory; every other metric uses the per-image "
                               "predictions")

ERROR_COLUMNS_LENGTH = ("prediction columns have {found} rows but there are {expected} images: compute them "
                        "from the same probabilities, one row per image in table order")
ERROR_NEEDS_COLUMNS = ("probabilities given as a chunk source need their per-image columns "
                       "(PredictionColumns.from_chunks(source, labels))")


@dataclass(frozen=True)
class PredictionColumns:
    """Per-image model outputs computed chunk by chunk, so the ``(N, K)`` matrix need not be in memory.

    Attributes
    ----------
    predicted : ndarray (N,) of int64
        Most probable class (``argmax`` of the row, first maximum on ties).
    confidence : ndarray (N,)
        Probability of the predicted class (the row's maximum), in the probabilities' dtype.
    label_probability : ndarray (N,)
        Probability of the given label.
    """

    predicted: np.ndarray
    confidence: np.ndarray
    label_probability: np.ndarray
    label_rank: np.ndarray | None = None

    @staticmethod
    def of_chunk(chunk: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(predicted, confidence, label_probability, label_rank)`` of one ``(rows, K)`` chunk and its labels;
        ``label_rank`` = number of classes more probable than the label (for top-k accuracy)."""
        predicted = chunk.argmax(axis=1)
        confidence = chunk.max(axis=1)
        label_probability = chunk[np.arange(chunk.shape[0]), labels]
        label_rank = (chunk > label_probability[:, None]).sum(axis=1)
        return predicted, confidence, label_probability, label_rank

    @classmethod
    def from_chunks(cls, source, labels) -> "PredictionColumns":
        """One pass over a chunk source (see :mod:`audit.io.arrays`); ``labels`` = class index per image."""
        labels = np.asarray(labels, dtype=np.int64)
        n = labels.shape[0]
        predicted = np.empty(n, dtype=np.int64)
        label_rank = np.empty(n, dtype=np.int64)
        confidence = label_probability = None
        start = 0
        for chunk in source():
            stop = start + chunk.shape[0]
            if stop > n:
                raise ValueError(ERROR_COLUMNS_LENGTH.format(found=f"more than {n}", expected=n))
            columns = cls.of_chunk(chunk, labels[start:stop])
            if confidence is None:
                confidence = np.empty(n, dtype=columns[1].dtype)
                label_probability = np.empty(n, dtype=columns[2].dtype)
            (predicted[start:stop], confidence[start:stop], label_probability[start:stop],
             label_rank[start:stop]) = columns
            start = stop
        if start != n:
            raise ValueError(ERROR_COLUMNS_LENGTH.format(found=start, expected=n))
        return cls(predicted=predicted, confidence=confidence, label_probability=label_probability,
                   label_rank=label_rank)


@dataclass
class AnalysisBundle:
    sections: dict
    images: pd.DataFrame
    group_metrics: pd.DataFrame
    metrics: dict
    findings: list
    pixel_group_attributes: list = field(default_factory=list)
    constant_attributes: list = field(default_factory=list)


def pixel_group_columns(frame: pd.DataFrame) -> list[str]:
    """The binned pixel attributes that act as group attributes (``image_*_group``, ``image_is_grayscale``)."""
    columns = [c for c in frame.columns if c.startswith("image_") and c.endswith("_group")]
    columns += [c for c in PIXEL_GROUP_BOOLEAN if c in frame.columns]
    return columns


def run_analyses(kept: pd.DataFrame, *, classes, dataset, probabilities, embeddings, config, runner,
                 progress, n_skipped: int = 0, prediction_columns: PredictionColumns | None = None
                 ) -> AnalysisBundle:
    """Run every analysis the inputs allow; return sections, tables, metric directions and findings.

    ``probabilities``: None (no model), an ``(N, K)`` array, or a chunk source (callable returning a fresh
    iterator of ``(rows, K)`` chunks, in table order) for matrices too large for memory; with a chunk source
    give ``prediction_columns`` (computed in the same pass that validated the chunks; computed here with one
    extra pass otherwise). A chunk source is read only by the label-noise engine; group performance then
    leaves out the metrics that need the whole matrix (:data:`PROBABILITY_METRICS`) and says so.
    """
    classes = tuple(classes)
    class_index = {name: i for i, name in enumerate(classes)}
    labels = kept["label"].astype(str)
    label_codes = labels.map(class_index).to_numpy(dtype=np.int64)
    pixel_groups = pixel_group_columns(kept)
    # Pixel groups are always analysed, unless --group-by names some of them: then exactly those.
    # (the names were checked against the engine's pixel groups before any image was read).
    named_pixel = [c for c in (getattr(config, "group_by", None) or ()) if c.startswith("image_")]
    if named_pixel:
        pixel_groups = [c for c in named_pixel if c in pixel_groups]
    group_attributes = list(dataset.group_attributes) + pixel_groups
    groups = pd.DataFrame({a: group_labels(kept[a].map(lambda v: None if v is None else str(v))
                                           if a in PIXEL_GROUP_BOOLEAN else kept[a]).to_numpy()
                           for a in group_attributes}, index=range(len(kept)))
    # An attribute with a single group (e.g. every image 128 px wide) says something about composition but
    # nothing about differences between groups: it is described, not compared or intersected.
    constant = [a for a in group_attributes if groups[a].nunique() < 2]
    compared = [a for a in group_attributes if a not in constant]
    depth = config.max_intersection_depth
    sections: dict = {}
    tables: list[pd.DataFrame] = []
    metrics = dict(BASE_METRICS)
    images = kept.copy()

    # -- composition ---------------------------------------------------------------------------------------
    from audit.analysis.associations import compute_associations
    from audit.analysis.distribution import (compute_attribute_distribution, compute_class_distribution,
                                             load_reference_proportions)

    progress("analysing composition", 0, 1)
    result = runner("class_distribution", compute_class_distribution, labels, classes=classes,
                    splits=kept["split"] if "split" in kept else None)
    if result is not None:
        sections["class_distribution"] = result.to_dict()

    reference = None
    if config.reference_file:
        from audit.io.tables import read_table

        reference = load_reference_proportions(read_table(config.reference_file), path=config.reference_file,
                                               attributes=group_attributes)
    result = runner("attribute_distribution", compute_attribute_distribution, groups, attributes=group_attributes,
                    compared_attributes=compared,
                    min_group_size=config.min_group_size, max_ci_width=config.max_ci_width,
                    confidence_level=config.confidence_level, max_depth=depth, reference=reference)
    if result is not None:
        sections["attribute_distribution"] = result.to_dict()
        tables.append(result.table)

    result = runner("associations", compute_associations, labels, classes=classes,
                    groups={a: groups[a] for a in compared}, alpha=1 - config.confidence_level,
                    correction=config.correction)
    if result is not None:
        sections["associations"] = result.to_dict()

    # -- model-based analyses -------------------------------------------------------------------------------
    if probabilities is not None:
        streamed = not isinstance(probabilities, np.ndarray) and callable(probabilities)
        if streamed:
            if prediction_columns is None:
                prediction_columns = PredictionColumns.from_chunks(probabilities, label_codes)
            if len(prediction_columns.predicted) != len(kept):
                raise ValueError(ERROR_COLUMNS_LENGTH.format(found=len(prediction_columns.predicted),
                                                             expected=len(kept)))
            predicted = np.asarray(prediction_columns.predicted, dtype=np.int64)
            confidence = np.asarray(prediction_columns.confidence)
            label_probability = np.asarray(prediction_columns.label_probability)
            label_rank = prediction_columns.label_rank
            streamed_note = NOTE_STREAMED_PROBABILITIES.format(n=len(kept), k=len(classes))
        else:
            predicted = probabilities.argmax(axis=1)
            confidence = probabilities.max(axis=1)
            label_probability = probabilities[np.arange(len(kept)), label_codes]
            label_rank = None
            streamed_note = None
        images["prediction"] = np.array(classes, dtype=object)[predicted]
        images["confidence"] = confidence.astype(float)
        images["label_probability"] = label_probability.astype(float)
        progress("estimating label noise", 0, 1)
        runner("label_noise", _label_noise, images, sections, tables, label_codes=label_codes, probabilities=probabilities,
                     embeddings=embeddings, classes=classes, groups=groups[compared], config=config, runner=runner)
        progress("measuring performance by group", 0, 1)
        runner("group_performance", _group_performance, sections, tables, metrics, label_codes=label_codes, predicted=predicted,
                           probabilities=None if streamed else probabilities, classes=classes, groups=groups[compared],
                           config=config, runner=runner, streamed_note=streamed_note,
                           confidence=confidence if streamed else None, label_rank=label_rank)
        from audit.analysis.calibration import compute_reliability_by_group

        reliability = runner("calibration", compute_reliability_by_group, label_codes == predicted,
                             images["confidence"].to_numpy(dtype=float), groups=groups[compared])
        if reliability is not None:
            sections["calibration"] = reliability.to_dict()

    # -- data quality ---------------------------------------------------------------------------------------
    if "content_hash" in kept.columns:
        progress("checking data quality", 0, 1)
        _data_quality(images, sections, tables, metrics, embeddings=embeddings, classes=classes,
                      groups=groups[compared],
                      config=config, runner=runner)

    group_metrics = coerce_group_metrics(pd.concat(tables, ignore_index=True)) if tables else empty_group_metrics()
    # Contract: verdict is insufficient_data exactly when insufficient_evidence is true, on every row
    # (including `all` rows of a data set smaller than min_group_size).
    group_metrics.loc[group_metrics["insufficient_evidence"], "verdict"] = VERDICT_INSUFFICIENT
    group_metrics.loc[(~group_metrics["insufficient_evidence"])
                      & (group_metrics["verdict"] == VERDICT_INSUFFICIENT), "verdict"] = ""
    findings = compose_findings(sections, group_metrics, n_skipped=n_skipped, classes=classes)
    images = _finish_images(images)
    return AnalysisBundle(sections=sections, images=images, group_metrics=group_metrics, metrics=metrics,
                          findings=findings, pixel_group_attributes=pixel_groups, constant_attributes=constant)


def _label_noise(images, sections, tables, *, label_codes, probabilities, embeddings, classes, groups, config,
                 runner):
    """Confident learning on ``probabilities`` (an array or a chunk source; the engine streams either)."""
    from audit.analysis.label_noise import estimate_label_noise, estimate_noise_rate_by_group

    source = "model"
    noise_probabilities = probabilities
    probe_note = None
    if embeddings is not None:
        from audit.analysis.probe import compute_out_of_sample_probabilities

        # lbfgs is exact but slow beyond a few thousand images (62 s for CIFAR's 10,000 x 64 here); the
        # chunked mini-batch fit reaches the same held-out accuracy in well under a second.
        method = "lbfgs" if len(label_codes) <= 2000 else "sgd"
        probe = runner("label_noise_probe", compute_out_of_sample_probabilities, embeddings, label_codes,
                       n_classes=len(classes), seed=config.seed, method=method)
        if probe is not None and config.label_noise_source == "probe":
            noise_probabilities, source = np.asarray(probe, dtype=np.float32), "probe"
        elif probe is not None:
            probe_note = runner("label_noise_probe", estimate_label_noise, label_codes, np.asarray(probe),
                                n_classes=len(classes), confidence_level=config.confidence_level)
    result = runner("label_noise", estimate_label_noise, label_codes, noise_probabilities, n_classes=len(classes),
                    score_method=getattr(config, "label_score_method", "self_confidence"),
                    confidence_level=config.confidence_level)
    if result is None:
        return
    section = result.to_dict(classes)
    section["source"] = source
    section["source_description"] = (
        "the model's own probabilities" if source == "model" else
        "out-of-sample probabilities of a K-fold logistic-regression probe on the model's embeddings")
    if probe_note is not None:
        section["probe_cross_check"] = {"noise_rate": float(probe_note.noise_rate),
                                        "n_label_issues": int(probe_note.n_label_issues),
                                        "description": "the same estimate from out-of-sample probabilities of a "
                                                       "K-fold logistic-regression probe on the embeddings"}
    sections["label_noise"] = section
    images["label_score"] = np.asarray(result.label_score, dtype=float)
    images["is_label_issue"] = np.asarray(result.is_label_issue, dtype=bool)
    images["suggested_label"] = np.array(classes, dtype=object)[np.asarray(result.suggested_label)]
    # 1 = most suspect; empty for images not flagged. Rows keep the probabilities.npy order (contract).
    rank = np.full(len(images), np.nan)
    rank[np.asarray(result.ranking, dtype=np.int64)] = np.arange(1, len(result.ranking) + 1)
    images["label_issue_rank"] = pd.array(np.where(np.isnan(rank), None, rank), dtype="Int64")
    group_dict = {name: labels for name, labels in iter_group_keys(groups, list(groups.columns),
                                                                   max_depth=config.max_intersection_depth)}
    table = runner("label_noise_by_group", estimate_noise_rate_by_group, np.asarray(result.is_label_issue),
                   label_codes, group_dict, classes=classes, confidence_level=config.confidence_level,
                   min_group_size=config.min_group_size, max_ci_width=config.max_ci_width)
    if table is not None:
        tables.append(table)


def _group_performance(sections, tables, metrics, *, label_codes, predicted, probabilities, classes, groups,
                       config, runner, streamed_note: str | None = None, confidence=None, label_rank=None):
    """Per-group performance; ``streamed_note`` (probabilities streamed, so ``probabilities`` is None) replaces
    the "no probabilities" note and lists the metrics left out under ``skipped_metrics``."""
    from audit.analysis.group_performance import compute_group_performance

    result = runner("group_performance", compute_group_performance, label_codes, predicted, classes=classes,
                    groups=groups, probabilities=probabilities, confidence=confidence, label_rank=label_rank,
                    max_depth=config.max_intersection_depth,
                    min_group_size=config.min_group_size, max_ci_width=config.max_ci_width,
                    confidence_level=config.confidence_level, n_bootstrap=config.n_bootstrap, seed=config.seed,
                    correction=config.correction)
    if result is not None:
        section = result.to_dict()
        metrics.update(section.pop("metrics", {}))
        if streamed_note is not None and confidence is not None:
            settings = section.setdefault("settings", {})
            settings["notes"] = list(settings.get("notes", [])) + [NOTE_STREAMED_SCORES]
        elif streamed_note is not None:
            settings = section.setdefault("settings", {})
            notes = [note for note in settings.get("notes", []) if not str(note).startswith("no probabilities")]
            settings["notes"] = notes + [streamed_note]
            section["skipped_metrics"] = {"metrics": list(PROBABILITY_METRICS), "reason": streamed_note}
        sections["group_performance"] = section
        tables.append(result.table)
    from audit.analysis.slices import find_weak_slices

    slices = runner("weak_slices", find_weak_slices, label_codes == predicted, groups=groups,
                    min_slice_size=config.min_group_size, alpha=1 - config.confidence_level,
                    correction=config.correction)
    if slices is not None:
        sections["weak_slices"] = slices.to_dict()


def _data_quality(images, sections, tables, metrics, *, embeddings, classes, groups, config, runner):
    from audit.analysis.data_quality import find_data_quality_issues
    # Pixel-attribute groups are defined by the same properties as the defects (dark images are in the
    # dark group by construction), so issue concentration is measured over metadata attributes only.
    metadata = [c for c in groups.columns if not c.startswith("image_")]
    group_dict = {name: labels for name, labels in iter_group_keys(groups, metadata, max_depth=1)}
    from audit.analysis.data_quality import HASH_COLUMNS, PROPERTY_COLUMNS

    needed = [c for c in ("id", "label", "split", "content_hash", *PROPERTY_COLUMNS) if c in images.columns]
    frame = images[needed].copy()
    for name in HASH_COLUMNS:
        if f"image_{name}" in images.columns:
            frame[name] = images[f"image_{name}"].to_numpy()
    result = runner("data_quality", find_data_quality_issues, frame, embeddings=embeddings,
                    group_labels=group_dict, classes=classes, confidence_level=config.confidence_level,
                    min_group_size=config.min_group_size, max_ci_width=config.max_ci_width,
                    correction=config.correction)
    if result is None:
        return
    sections["data_quality"] = result.to_dict()
    for column in result.per_image.columns:
        images[column] = result.per_image[column].to_numpy()
    tables.append(result.group_table)
    for issue in sorted({m for m in result.group_table["metric"].unique()}):
        metrics.setdefault(issue, {"higher_is_better": False,
                                   "description": f"Fraction of the group's images with the issue "
                                                  f"{issue.split(':', 1)[-1]}; Wilson interval."})


def _finish_images(images: pd.DataFrame) -> pd.DataFrame:
    """Order columns as the contract lists them and drop working columns."""
    images = images.drop(columns=[c for c in ("row",) if c in images.columns])
    first = [c for c in ("id", "path", "content_hash", "label", "split") if c in images.columns]
    rest = [c for c in images.columns if c not in first]
    images = images[first + rest]
    for column in images.columns:
        if images[column].dtype == object:
            non_null = images[column].dropna()
            if len(non_null) and non_null.map(lambda v: isinstance(v, (bool, np.bool_))).all():
                continue
            images[column] = images[column].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v))
                                                else str(v))
    return images.reset_index(drop=True)
