"""The analysis steps of an audit, registered in one place (:data:`STEPS`), and the loop that runs them.

Both input adapters (images + model or predictions; labels + probabilities only, see
:mod:`audit.pipeline.inputs`) end in :func:`run_steps`. A step declares what it needs (:data:`NEEDS`) and
returns a :class:`StepOutput`: its ``audit.json`` section(s), its rows of ``group_metrics.parquet``, its
columns of ``images.parquet`` and the metrics it introduces. Each step is timed once and isolated: an
exception becomes an ``errors`` entry and the audit goes on. After the steps, the passes of
:data:`GROUP_ROW_PASSES` see every group row of the audit at once (audit-wide multiple-comparison control).

Probabilities come either as an in-memory ``(N, K)`` array (every analysis as usual) or, for predictions too
large to hold, as a *chunk source* (a callable returning a fresh iterator of consecutive ``(rows, K)``
chunks, see :mod:`audit.io.arrays`) plus the per-image :class:`PredictionColumns`. Then label noise is
estimated in bounded memory from the chunks and group performance runs on the per-image predictions:
every metric except ``top_k_accuracy`` and ``expected_calibration_error``, which
:func:`~audit.analysis.group_performance.compute_group_performance` computes only from an in-memory matrix;
the ``group_performance`` section says so (``settings.notes`` and ``skipped_metrics``).
"""
from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from audit.analysis._groups import group_labels, iter_group_keys
from audit.analysis._table import VERDICT_INSUFFICIENT, coerce_group_metrics, empty_group_metrics
from audit.analysis.label_noise import METRIC_DESCRIPTIONS as LABEL_METRIC_DESCRIPTIONS
from audit.analysis.prediction_columns import ERROR_COLUMNS_LENGTH, PredictionColumns  # noqa: F401 - re-exported
from audit.findings import compose_findings
from audit.pipeline.memory import release_memory

#: Metrics of group_metrics.parquet that are not model metrics, and their direction.
BASE_METRICS = {
    "share": {"higher_is_better": None, "description": "Fraction of all images in the group (representation); "
              "Wilson interval."},
    **LABEL_METRIC_DESCRIPTIONS,
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

ERROR_NEEDS_COLUMNS = ("probabilities given as a chunk source need their per-image columns "
                       "(PredictionColumns.from_chunks(source, labels))")


# -- the step registry ---------------------------------------------------------------------------------------
#: What a step may declare in ``needs``: ``probabilities`` (a model or predictions), ``pixels`` (the images
#: were decoded: content hashes, pixel attributes, perceptual hashes), ``embeddings`` (the model gave them).
NEEDS = ("probabilities", "pixels", "embeddings")


@dataclass
class StepOutput:
    """What one step contributes to the audit.

    Attributes
    ----------
    sections : dict
        ``audit.json`` ``analyses`` entries, by name.
    group_rows : list of DataFrame
        Rows of ``group_metrics.parquet`` (the contract's columns; coerced and checked at assembly).
    image_columns : dict
        Columns of ``images.parquet`` (one value per kept image, in table order), by name.
    metrics : dict
        ``audit.json`` ``metrics`` entries (direction and description) of metrics the step introduces.
    files : dict
        Extra tables of the audit folder by name (e.g. ``annotators``), handed to the writer.
    """

    sections: dict = field(default_factory=dict)
    group_rows: list = field(default_factory=list)
    image_columns: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One analysis of the audit, registered in :data:`STEPS`.

    Attributes
    ----------
    name : str
        Its ``errors`` / ``stage_durations_s`` name.
    function : callable
        ``function(context) -> StepOutput or None``. It reads :class:`Context` (never writes it) and returns
        what it contributes; an exception becomes an ``errors`` entry named ``name`` and the audit goes on.
    needs : tuple of str
        Inputs from :data:`NEEDS`; the step is left out when one is missing (e.g. no model).
    stage : str
        Progress label.
    enabled : callable, optional
        ``enabled(context) -> bool``: run only when it returns True (e.g. a setting was given).
    cache : bool
        Its output goes to the step cache (:mod:`audit.pipeline.step_cache`), so a re-run on identical inputs
        loads it instead of computing it. Set on the expensive steps; a cheap one (well under a second at 10k
        images) costs about as much to hash and load as to compute.
    """

    name: str
    function: Callable
    needs: tuple = ()
    stage: str = ""
    enabled: Callable | None = None
    cache: bool = False


@dataclass(frozen=True)
class GroupRowPass:
    """An audit-wide pass over all group rows, run after every step (e.g. multiple-comparison control).

    ``function(group_metrics, context) -> DataFrame`` returns the whole table (same rows, updated or added
    columns). Registered in :data:`GROUP_ROW_PASSES`; a failure is an ``errors`` entry and the table is kept.
    """

    name: str
    function: Callable


@dataclass
class Context:
    """What steps read: the kept images, groups, predictions and the settings (see :func:`run_steps`).

    Attributes
    ----------
    images : DataFrame
        One row per kept image: manifest columns, ``content_hash`` and ``image_*`` (when decoded), and the
        image columns contributed by the steps that ran before.
    classes : tuple of str
    label_codes : ndarray of int64
        Class index of each image's label.
    groups, all_groups : DataFrame
        Group label (string, ``<missing>`` for missing) of every group attribute (metadata, then pixel);
        steps that compare groups use the ``compared`` columns.
    group_attributes, compared, constant : list of str
        Every group attribute; those with at least two groups; those with one group only.
    probabilities : ndarray, chunk source or None
    predicted, confidence, label_probability, label_rank : ndarray or None
        Per-image prediction columns (None without probabilities), computed in one chunked pass.
    streamed : bool
        The adapter handed the probabilities as a chunk source (``label-noise`` on a large file: the sections
        say so).
    probability_chunks : callable or None
        A chunk source of the probabilities, whatever form they came in (for an on-disk matrix it reads the
        file, so no page stays resident): every analysis that reads the ``(N, K)`` matrix reads it through
        this, a chunk at a time.
    embeddings : ndarray or None
    config : AuditConfig
    sections : dict
        Sections of the steps that ran before (read only).
    reference : object or None
        Reference proportions (``--reference``), read and checked before any step runs (bad input = exit 2).
    label_noise_source : tuple or None
        ``(source, description)`` overriding how the label-noise section names its probabilities.
    """

    images: pd.DataFrame
    classes: tuple
    label_codes: np.ndarray
    groups: pd.DataFrame
    group_attributes: list
    compared: list
    constant: list
    config: object
    probabilities: object = None
    predicted: np.ndarray | None = None
    confidence: np.ndarray | None = None
    label_probability: np.ndarray | None = None
    label_rank: np.ndarray | None = None
    streamed: bool = False
    probability_chunks: object = None
    embeddings: np.ndarray | None = None
    sections: dict = field(default_factory=dict)
    label_noise_source: tuple | None = None
    errors: list = field(default_factory=list)
    all_groups: pd.DataFrame | None = None
    reference: object = None
    annotations: object = None
    pixel_groups: list = field(default_factory=list)

    @property
    def available(self) -> set:
        """The :data:`NEEDS` this audit can satisfy."""
        found = set()
        if self.probabilities is not None:
            found.add("probabilities")
        if "content_hash" in self.images.columns:
            found.add("pixels")
        if self.embeddings is not None:
            found.add("embeddings")
        return found

    def attempt(self, name: str, function, *args, **kwargs):
        """Run a sub-analysis of a step: a failure is an ``errors`` entry named ``name`` and returns None.

        Not timed separately (its step's time includes it), so ``stage_durations_s`` never counts twice.
        """
        try:
            return function(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - isolation is the point: the step goes on
            self.errors.append({"analysis": name, "message": _error_text(error)})
            return None


def analysis_jobs(config) -> int:
    """Worker processes an analysis may use on this machine: ``--workers`` (default all cores), at most the
    cores this process may run on (with ``--executor ray`` the workers are elsewhere; the analyses run here)."""
    from audit.pipeline.executors import default_workers

    cores = default_workers()
    workers = getattr(config, "workers", None)
    return max(1, min(cores, workers if isinstance(workers, int) and workers > 0 else cores))


def _error_text(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(error), error)).strip()


# -- the steps -----------------------------------------------------------------------------------------------
def _class_distribution_step(context: Context) -> StepOutput:
    from audit.analysis.distribution import compute_class_distribution

    images = context.images
    result = compute_class_distribution(images["label"].astype(str), classes=context.classes,
                                        splits=images["split"] if "split" in images else None)
    return StepOutput(sections={"class_distribution": result.to_dict()})


def _attribute_distribution_step(context: Context) -> StepOutput:
    from audit.analysis.distribution import compute_attribute_distribution

    config = context.config
    result = compute_attribute_distribution(
        context.all_groups, attributes=context.group_attributes, compared_attributes=context.compared,
        min_group_size=config.min_group_size, max_ci_width=config.max_ci_width,
        confidence_level=config.confidence_level, max_depth=config.max_intersection_depth,
        reference=context.reference)
    return StepOutput(sections={"attribute_distribution": result.to_dict()}, group_rows=[result.table])


def _associations_step(context: Context) -> StepOutput:
    from audit.analysis.associations import compute_associations

    config = context.config
    result = compute_associations(context.images["label"].astype(str), classes=context.classes,
                                  groups={a: context.groups[a] for a in context.compared},
                                  alpha=1 - config.confidence_level, correction=config.correction)
    return StepOutput(sections={"associations": result.to_dict()})


def _predictions_step(context: Context) -> StepOutput:
    """The per-image prediction columns (``prediction``, ``confidence``, ``label_probability``)."""
    return StepOutput(image_columns={
        "prediction": np.array(context.classes, dtype=object)[context.predicted],
        "confidence": np.asarray(context.confidence).astype(float),
        "label_probability": np.asarray(context.label_probability).astype(float)})


def _label_noise_step(context: Context) -> StepOutput | None:
    """Confident learning on the screening probabilities (``audit.analysis.screening``: the model's, a probe's
    on the embeddings, or their mean), every one read as a chunk source: the model's from
    ``context.probability_chunks``, the probe's recomputed chunk by chunk from its fitted weights, their mean
    block by block; cut into the blocks the engine cuts an in-memory matrix into, so the numbers are those of
    the whole-matrix computation while one chunk is in memory at a time."""
    from audit.analysis.label_noise import (default_chunk_rows, estimate_disagreement_rate_by_group,
                                            estimate_label_noise)
    from audit.analysis.screening import DESCRIPTIONS, choose_screening_sources, fit_probe, reblock

    config, classes, label_codes = context.config, context.classes, context.label_codes
    requested = getattr(config, "label_noise_source", "auto") or "auto"
    score_method = getattr(config, "label_score_method", "self_confidence")
    n, k = len(label_codes), len(classes)
    noise_probabilities = context.probability_chunks
    choice = None
    if not context.streamed or context.embeddings is not None:
        probe, probe_error = None, None
        if context.embeddings is not None:
            n_errors = len(context.errors)
            probe = context.attempt("label_noise_probe", fit_probe, context.embeddings, label_codes,
                                    n_classes=k, seed=config.seed, n_jobs=analysis_jobs(config))
            if probe is None and len(context.errors) > n_errors:
                probe_error = context.errors[-1]["message"]
        choice = choose_screening_sources(context.probability_chunks, label_codes, source=requested,
                                          model_columns=(context.predicted, context.label_probability),
                                          probe=probe, embeddings=context.embeddings, probe_error=probe_error,
                                          keep=_screening_keep(n, k))
        noise_probabilities = reblock(choice.probabilities, n_rows=n, chunk_rows=default_chunk_rows(k))
    elif requested in ("probe", "combined"):
        from audit.analysis.screening import ERROR_NEEDS_EMBEDDINGS

        raise ValueError(ERROR_NEEDS_EMBEDDINGS.format(source=requested))
    else:
        # streamed (label-noise on large predictions): the model's alone, recorded the same way
        from audit.analysis import screening

        reason = (screening.REASON_REQUESTED.format(source="model") if requested == "model" else
                  screening.REASON_AUTO_NO_EMBEDDINGS if context.embeddings is None else screening.REASON_AUTO_STREAMED)
        streamed_choice = {"requested": requested, "used": "model", "reason": reason,
                           "candidates": {"model": screening.score_columns(context.predicted, context.label_probability,
                                                                           label_codes)}}
    result = estimate_label_noise(label_codes, noise_probabilities, n_classes=k,
                                  score_method=score_method, confidence_level=config.confidence_level)
    section = result.to_dict(classes)
    source = choice.source if choice is not None else "model"
    section["source"] = source
    section["source_description"] = DESCRIPTIONS[source]
    if context.label_noise_source is not None and source == "model":
        section["source"], section["source_description"] = context.label_noise_source
    if choice is None:
        section["source_choice"] = streamed_choice
    else:
        section["source_choice"] = choice.to_dict()
        if source != "model" and context.predicted is not None:
            # the caveat about model accuracy goes with every model-based figure, whatever its source
            section["audited_model_error_rate"] = float(np.mean(np.asarray(context.predicted) != label_codes))
        alternatives = {}
        for name, values in choice.alternatives.items():
            other = context.attempt("label_noise_alternatives", estimate_label_noise, label_codes,
                                    reblock(values, n_rows=n, chunk_rows=default_chunk_rows(k)),
                                    n_classes=k, score_method=score_method,
                                    confidence_level=config.confidence_level)
            if other is not None:
                alternatives[name] = {"label_disagreement_rate": float(other.label_disagreement_rate),
                                      "model_error_rate": float(other.model_error_rate),
                                      "n_label_issues": int(other.n_label_issues),
                                      "description": DESCRIPTIONS[name]}
        if alternatives:
            section["alternatives"] = alternatives
    output = StepOutput(sections={"label_noise": section})
    n = len(label_codes)
    # 1 = most suspect; empty for images not flagged. Rows keep the probabilities.npy order (contract).
    rank = np.full(n, np.nan)
    rank[np.asarray(result.ranking, dtype=np.int64)] = np.arange(1, len(result.ranking) + 1)
    output.image_columns = {
        "label_score": np.asarray(result.label_score, dtype=float),
        "is_label_issue": np.asarray(result.is_label_issue, dtype=bool),
        "suggested_label": np.array(classes, dtype=object)[np.asarray(result.suggested_label)],
        "label_issue_rank": pd.array(np.where(np.isnan(rank), None, rank), dtype="Int64")}
    groups = context.groups[context.compared]
    group_dict = GroupKeys(groups, list(groups.columns), max_depth=config.max_intersection_depth)
    table = context.attempt("label_noise_by_group", estimate_disagreement_rate_by_group,
                            np.asarray(result.is_label_issue), label_codes, group_dict, classes=classes,
                            predicted=np.asarray(result.suggested_label), confidence_level=config.confidence_level,
                            min_group_size=config.min_group_size, max_ci_width=config.max_ci_width,
                            correction=config.correction)
    if table is not None:
        output.group_rows.append(table)
    return output


#: Above this many values (N x K) the probe's and the combined probabilities are kept in temporary ``.npy``
#: files for the passes of confident learning (read back a chunk at a time), below in memory (as the per-image
#: stage does with the model's: :data:`audit.pipeline.perimage.IN_MEMORY_PROBABILITIES`).
SCREENING_IN_MEMORY_VALUES = 50_000_000


def _screening_keep(n: int, k: int):
    """How the screening keeps a computed matrix between passes (see :func:`choose_screening_sources`)."""
    from audit.analysis.screening import keep_in_memory

    if n * k <= SCREENING_IN_MEMORY_VALUES:
        return keep_in_memory

    def keep_on_disk(source):
        import shutil
        import weakref

        from audit.io.arrays import save_npy_chunks
        from audit.io.scratch import make_scratch_dir

        folder = make_scratch_dir("screening")
        try:
            kept = save_npy_chunks(folder / "probabilities.npy", source, shape=(n, k))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        weakref.finalize(kept, shutil.rmtree, str(folder), True)  # deleted with the last reference
        return kept

    return keep_on_disk


class GroupKeys(Mapping):
    """The labels of every attribute and intersection (:func:`~audit.analysis._groups.iter_group_keys`) as a
    read-only mapping whose ``items()`` makes them one at a time, in the same order: an intersection's labels
    are a string per image, so all of them at once are O(N x pairs) (GBs at 1.28M images)."""

    def __init__(self, groups: pd.DataFrame, attributes: list, *, max_depth: int):
        self._groups, self._attributes, self._max_depth = groups, list(attributes), max_depth

    def items(self):
        return iter_group_keys(self._groups, self._attributes, max_depth=self._max_depth)

    def __iter__(self):
        return (name for name, _ in self.items())

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __getitem__(self, key):
        for name, labels in self.items():
            if name == key:
                return labels
        raise KeyError(key)


def _group_performance_step(context: Context) -> StepOutput:
    """Per-group performance; with streamed probabilities the metrics that need the whole matrix come from
    the per-image confidence and label rank, or are left out and listed under ``skipped_metrics``."""
    from audit.analysis.group_performance import compute_group_performance

    config = context.config
    streamed = context.streamed
    # The per-image confidence and label rank give top_k_accuracy and the calibration error exactly as the
    # matrix does (the same float32 values compared and averaged), without an (N, K) float64 copy.
    from_columns = context.confidence is not None and context.label_rank is not None
    confidence = context.confidence if (from_columns or streamed) else None
    label_rank = context.label_rank
    result = compute_group_performance(
        context.label_codes, np.asarray(context.predicted, dtype=np.int64), classes=context.classes,
        groups=context.groups[context.compared],
        probabilities=None if (from_columns or streamed) else context.probabilities,
        confidence=confidence, label_rank=label_rank, max_depth=config.max_intersection_depth,
        min_group_size=config.min_group_size, max_ci_width=config.max_ci_width,
        confidence_level=config.confidence_level, n_bootstrap=config.n_bootstrap, seed=config.seed,
        correction=config.correction, n_jobs=analysis_jobs(config))
    section = result.to_dict()
    metrics = section.pop("metrics", {})
    if streamed and confidence is not None:
        settings = section.setdefault("settings", {})
        settings["notes"] = list(settings.get("notes", [])) + [NOTE_STREAMED_SCORES]
    elif streamed:
        note = NOTE_STREAMED_PROBABILITIES.format(n=len(context.label_codes), k=len(context.classes))
        settings = section.setdefault("settings", {})
        notes = [n for n in settings.get("notes", []) if not str(n).startswith("no probabilities")]
        settings["notes"] = notes + [note]
        section["skipped_metrics"] = {"metrics": list(PROBABILITY_METRICS), "reason": note}
    return StepOutput(sections={"group_performance": section}, group_rows=[result.table], metrics=metrics)


def _weak_slices_step(context: Context) -> StepOutput:
    from audit.analysis.slices import find_weak_slices

    config = context.config
    slices = find_weak_slices(context.label_codes == np.asarray(context.predicted), groups=context.groups[context.compared],
                              min_slice_size=config.min_group_size, alpha=1 - config.confidence_level,
                              correction=config.correction)
    return StepOutput(sections={"weak_slices": slices.to_dict()})


def _calibration_step(context: Context) -> StepOutput:
    from audit.analysis.calibration import compute_reliability_by_group

    reliability = compute_reliability_by_group(context.label_codes == np.asarray(context.predicted),
                                               np.asarray(context.confidence, dtype=float),
                                               groups=context.groups[context.compared])
    return StepOutput(sections={"calibration": reliability.to_dict()})


def _annotations_step(context: Context) -> StepOutput:
    """Several labels per image (``--annotations``): consensus, annotators, agreement (audit.annotation_audit)."""
    from audit.annotation_audit import annotation_step_parts

    parts = annotation_step_parts(context)
    return StepOutput(sections={"annotations": parts.section}, group_rows=[parts.group_rows],
                      image_columns=parts.image_columns, metrics=parts.metrics, files={"annotators": parts.annotators})


def _data_quality_step(context: Context) -> StepOutput:
    from audit.analysis.data_quality import HASH_COLUMNS, PROPERTY_COLUMNS, find_data_quality_issues

    config, images = context.config, context.images
    groups = context.groups[context.compared]
    # Pixel-attribute groups are defined by the same properties as the defects (dark images are in the
    # dark group by construction), so issue concentration is measured over metadata attributes only.
    metadata = [c for c in groups.columns if not c.startswith("image_")]
    group_dict = {name: labels for name, labels in iter_group_keys(groups, metadata, max_depth=1)}
    needed = [c for c in ("id", "label", "split", "content_hash", *PROPERTY_COLUMNS) if c in images.columns]
    frame = images[needed].copy()
    for name in HASH_COLUMNS:
        if f"image_{name}" in images.columns:
            frame[name] = images[f"image_{name}"].to_numpy()
    result = find_data_quality_issues(frame, embeddings=context.embeddings, group_labels=group_dict,
                                      classes=context.classes, confidence_level=config.confidence_level,
                                      min_group_size=config.min_group_size, max_ci_width=config.max_ci_width,
                                      correction=config.correction)
    metrics = {}
    for issue in sorted({m for m in result.group_table["metric"].unique()}):
        metrics[issue] = {"higher_is_better": False,
                          "description": f"Fraction of the group's images with the issue "
                                         f"{issue.split(':', 1)[-1]}; Wilson interval."}
    return StepOutput(sections={"data_quality": result.to_dict()}, group_rows=[result.group_table],
                      image_columns={c: result.per_image[c].to_numpy() for c in result.per_image.columns},
                      metrics=metrics)


#: Every analysis of an audit, in the order they run (a step may read the sections and image columns of
#: the steps before it). To add one: write ``function(context) -> StepOutput`` and add a :class:`Step` here.
#: ``cache=True``: the output is stored in and reloaded from the step cache (audit.pipeline.step_cache).
STEPS: list[Step] = [
    Step("class_distribution", _class_distribution_step, stage="analysing composition"),
    Step("attribute_distribution", _attribute_distribution_step, stage="analysing composition", cache=True),
    Step("associations", _associations_step, stage="analysing composition"),
    Step("predictions", _predictions_step, needs=("probabilities",), stage="estimating label noise"),
    Step("label_noise", _label_noise_step, needs=("probabilities",), stage="estimating label noise", cache=True),
    Step("group_performance", _group_performance_step, needs=("probabilities",),
         stage="measuring performance by group", cache=True),
    Step("weak_slices", _weak_slices_step, needs=("probabilities",), stage="measuring performance by group"),
    Step("calibration", _calibration_step, needs=("probabilities",), stage="measuring performance by group"),
    Step("data_quality", _data_quality_step, needs=("pixels",), stage="checking data quality", cache=True),
    # not cached: the parsed annotations are not part of a key (an audit with --annotations caches no step)
    Step("annotations", _annotations_step, stage="analysing annotations",
         enabled=lambda context: context.annotations is not None),
]

#: Audit-wide passes over every group row, after all steps (in this order).
def audit_multiplicity(group_metrics: pd.DataFrame, context) -> pd.DataFrame:
    """One multiplicity story for the whole audit (issue 13): every tested row goes into the primary or the
    exploratory family (:mod:`audit.analysis.multiplicity`); the sections that quote verdicts (group
    performance, data quality) are brought in line with the final table, and ``analyses.multiplicity``
    records how many tests were made."""
    from audit.analysis.multiplicity import apply_audit_multiplicity

    config = context.config
    primary_metric = "accuracy"
    policy_file = getattr(config, "policy_file", None)
    if policy_file:
        from audit.policy import load_policy

        primary_metric = load_policy(policy_file).performance_metric or "accuracy"
    result = apply_audit_multiplicity(group_metrics, alpha=1 - config.confidence_level,
                                      correction=config.correction, primary_metric=primary_metric)
    sections = context.sections
    sections["multiplicity"] = result.to_dict()
    table = result.table
    if "group_performance" in sections:
        from audit.analysis.group_performance import refresh_worse_than_rest

        refresh_worse_than_rest(sections["group_performance"], table)
    if "data_quality" in sections:
        from audit.analysis.data_quality import concentration_findings

        section = sections["data_quality"]
        n_old = int((section.get("summary") or {}).get("n_concentration_findings", 0))
        concentrations = concentration_findings(table)
        section["findings"] = concentrations + list(section.get("findings") or [])[n_old:]
        section.setdefault("summary", {})["n_concentration_findings"] = len(concentrations)
    return table


GROUP_ROW_PASSES: list[GroupRowPass] = [GroupRowPass("multiplicity", audit_multiplicity)]


@dataclass
class AnalysisBundle:
    """What :func:`run_steps` returns: the analysed tables and sections, ready for ``audit.json``."""

    sections: dict
    images: pd.DataFrame
    group_metrics: pd.DataFrame
    metrics: dict
    findings: list
    pixel_group_attributes: list = field(default_factory=list)
    constant_attributes: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    durations: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    steps_from_cache: list = field(default_factory=list)


def pixel_group_columns(frame: pd.DataFrame) -> list[str]:
    """The binned pixel attributes that act as group attributes (``image_*_group``, ``image_is_grayscale``)."""
    columns = [c for c in frame.columns if c.startswith("image_") and c.endswith("_group")]
    columns += [c for c in PIXEL_GROUP_BOOLEAN if c in frame.columns]
    return columns


def build_context(kept: pd.DataFrame, *, classes, dataset, probabilities, embeddings, config,
                  prediction_columns: PredictionColumns | None = None, label_noise_source=None) -> Context:
    """The :class:`Context` the steps read: label codes, group labels, per-image prediction columns."""
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
    reference = None
    if getattr(config, "reference_file", None):
        from audit.analysis.distribution import load_reference_proportions
        from audit.io.tables import read_table

        reference = load_reference_proportions(read_table(config.reference_file), path=config.reference_file,
                                               attributes=group_attributes)
    # a shallow copy (pandas copy-on-write): the steps add columns to it, the caller's table is left as it is,
    # and no column is duplicated (the per-image table is hundreds of MB at 1.28M images)
    context = Context(images=kept.copy(deep=False), classes=classes, label_codes=label_codes, groups=groups,
                      group_attributes=group_attributes, compared=compared, constant=constant, config=config,
                      probabilities=probabilities, embeddings=embeddings, label_noise_source=label_noise_source,
                      all_groups=groups, pixel_groups=pixel_groups, reference=reference)
    if probabilities is not None:
        from audit.io.arrays import chunk_source_of

        streamed = not isinstance(probabilities, np.ndarray) and callable(probabilities)
        context.streamed = streamed
        # One chunked pass gives every per-image column (the same values as whole-matrix argmax/max/indexing,
        # row by row), so no step needs the matrix in memory; an on-disk matrix is read with file reads.
        context.probability_chunks = probabilities if streamed else chunk_source_of(probabilities)
        if prediction_columns is None:
            prediction_columns = PredictionColumns.from_chunks(context.probability_chunks, label_codes)
        if len(prediction_columns.predicted) != len(kept):
            raise ValueError(ERROR_COLUMNS_LENGTH.format(found=len(prediction_columns.predicted),
                                                         expected=len(kept)))
        context.predicted = np.asarray(prediction_columns.predicted, dtype=np.int64)
        context.confidence = np.asarray(prediction_columns.confidence)
        context.label_probability = np.asarray(prediction_columns.label_probability)
        context.label_rank = prediction_columns.label_rank
    return context


def run_steps(kept: pd.DataFrame, *, classes, dataset, probabilities, embeddings, config, progress,
              n_skipped: int = 0, prediction_columns: PredictionColumns | None = None,
              label_noise_source=None, steps: list[Step] | None = None, annotations=None) -> AnalysisBundle:
    """Run every registered step the inputs allow; return sections, tables, metric directions and findings.

    ``probabilities``: None (no model), an ``(N, K)`` array, or a chunk source (callable returning a fresh
    iterator of ``(rows, K)`` chunks, in table order) for matrices too large for memory; with a chunk source
    give ``prediction_columns`` (computed in the same pass that validated the chunks; computed here with one
    extra pass otherwise). A chunk source is read only by the label-noise engine; group performance then
    leaves out the metrics that need the whole matrix (:data:`PROBABILITY_METRICS`) and says so.

    Each step is timed once (``durations``, seconds) and isolated: an exception is an ``errors`` entry.
    With ``config.use_cache``, a step registered with ``cache=True`` is first looked up in the step cache
    (:mod:`audit.pipeline.step_cache`) under a key of everything it can read; a hit replaces the computation
    (its time is then the time to hash and load), a miss computes and stores the output as it returned,
    before the group-row passes update sections in place. ``steps_from_cache`` lists the hits.
    """
    from audit.pipeline.step_cache import open_step_cache

    context = build_context(kept, classes=classes, dataset=dataset, probabilities=probabilities,
                            embeddings=embeddings, config=config, prediction_columns=prediction_columns,
                            label_noise_source=label_noise_source)
    context.annotations = annotations
    cache = open_step_cache(context, config)
    steps_from_cache: list[str] = []
    tables: list[pd.DataFrame] = []
    metrics = dict(BASE_METRICS)
    durations: dict[str, float] = {}
    files: dict = {}
    available = context.available
    for step in (STEPS if steps is None else steps):
        if any(need not in available for need in step.needs):
            continue
        if step.enabled is not None and not step.enabled(context):
            continue
        progress(step.stage or step.name, 0, 1)
        start = time.perf_counter()
        key = cache.key(step) if cache is not None and step.cache else None
        loaded = cache.load(key, step.name, len(context.images)) if key is not None else None
        sections_text = None
        if loaded is not None:
            output = StepOutput(sections=loaded.sections, group_rows=loaded.group_rows,
                                image_columns=loaded.image_columns, metrics=loaded.metrics, files=loaded.files)
            sections_text = loaded.sections_text
            context.errors.extend(loaded.errors)  # what the step reported while it ran, as if it ran again
            steps_from_cache.append(step.name)
        else:
            n_errors = len(context.errors)
            try:
                output = step.function(context)
            except Exception as error:  # noqa: BLE001 - isolation is the point: the audit goes on
                context.errors.append({"analysis": step.name, "message": _error_text(error)})
                output = None
            if key is not None and output is not None:
                sections_text = _store_output(cache, key, step.name, output, context.errors[n_errors:])
        if output is not None:
            context.sections.update(output.sections)
            tables.extend(output.group_rows)
            metrics.update(output.metrics)
            files.update(output.files)
            for name, values in output.image_columns.items():
                context.images[name] = values
            if cache is not None:
                cache.note_output(step.name, output, sections_text)
        del output
        release_memory()  # what the step freed, so the next step's peak does not add to this one's
        durations[step.name] = round(time.perf_counter() - start, 3)

    group_metrics = coerce_group_metrics(pd.concat(tables, ignore_index=True)) if tables else empty_group_metrics()
    for group_pass in GROUP_ROW_PASSES:
        start = time.perf_counter()
        updated = context.attempt(group_pass.name, group_pass.function, group_metrics, context)
        if updated is not None:
            group_metrics = updated
        durations[group_pass.name] = round(time.perf_counter() - start, 3)
    # Contract: verdict is insufficient_data exactly when insufficient_evidence is true, on every row
    # (including `all` rows of a data set smaller than min_group_size).
    group_metrics.loc[group_metrics["insufficient_evidence"], "verdict"] = VERDICT_INSUFFICIENT
    group_metrics.loc[(~group_metrics["insufficient_evidence"])
                      & (group_metrics["verdict"] == VERDICT_INSUFFICIENT), "verdict"] = ""
    start = time.perf_counter()
    findings = compose_findings(context.sections, group_metrics, n_skipped=n_skipped, classes=context.classes)
    images = _finish_images(context.images)
    durations["findings"] = round(time.perf_counter() - start, 3)
    return AnalysisBundle(sections=context.sections, images=images, group_metrics=group_metrics, metrics=metrics,
                          findings=findings, pixel_group_attributes=context.pixel_groups,
                          constant_attributes=context.constant, errors=context.errors, durations=durations,
                          files=files, steps_from_cache=steps_from_cache)


def _store_output(cache, key: str, step_name: str, output: StepOutput, errors: list) -> str | None:
    """Snapshot a computed output into the step cache (now: the group-row passes mutate sections later);
    return its sections' JSON text, or None when the output cannot be stored faithfully (then it is not)."""
    from audit.pipeline.step_cache import encode_output

    try:
        encoded = encode_output(output, errors)
    except Exception:  # noqa: BLE001 - NotCacheable, or any failure of the cache: the step's output is kept as is
        return None
    cache.store(key, step_name, encoded)
    return encoded.sections_text


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
