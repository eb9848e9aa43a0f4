"""The annotations step of an audit (issue 16): glue between the reader, the analysis and the pipeline.

:func:`prepare_annotations` runs before the analysis steps (bad input is exit 2, skipped rows are counted, and
with ``--label-column consensus`` the consensus becomes the label under audit, so every other analysis audits
it); :func:`annotation_outputs` runs as a registered step and returns the section, the ``images.parquet``
columns, the ``group_metrics`` rows and the ``annotators.parquet`` table.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.types import SkipEntry

ERROR_CONSENSUS_STREAMED = ("--label-column consensus: {n} images have no annotation (first: {first!r}); with "
                            "predictions streamed from a large file every image needs at least one label; add "
                            "labels for them or audit the given labels (leave out --label-column consensus)")
REASON_NO_ANNOTATION = "no annotation, and --label-column consensus audits the consensus label"
NOTE_UNANNOTATED = ("{n} images have no annotation: they keep their given label and have n_annotations = 0 (no "
                    "consensus)")
NOTE_STREAMED = ("the model's probabilities were streamed in chunks (too large to hold), so the consensus and the "
                 "majority-vote tie breaks do not use them (crowdlab falls back to dawid_skene)")
METRIC_DESCRIPTION = {"annotation_agreement": {
    "higher_is_better": True,
    "description": "Krippendorff's alpha (nominal) of the annotators' labels over the group's images with two or "
                   "more labels (class rows: the class-vs-rest recoding; annotator rows: pairs involving the "
                   "annotator); percentile interval of a Poisson bootstrap of images."}}


@dataclass
class PreparedAnnotations:
    """The images (possibly relabelled by consensus), their probabilities, the coded annotations and skips."""

    images: pd.DataFrame
    probabilities: object
    annotations: object  # audit.analysis.annotations.Annotations
    consensus: object | None
    skipped: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    layout: str = "long"
    source: str = ""


def prepare_annotations(images: pd.DataFrame, *, classes, config, probabilities=None,
                        root: str | None = None) -> PreparedAnnotations:
    """Read ``config.annotations_file`` against ``images`` (``id`` and ``path`` columns, table order).

    With ``config.label_column == "consensus"`` the consensus (``config.consensus_method``) replaces
    ``label`` (the previous label kept as ``given_label``) and images without annotation are skipped (their
    rows of ``probabilities`` dropped too).
    """
    from audit.analysis.annotations import Annotations
    from audit.io.annotations import load_annotations

    loaded = load_annotations(config.annotations_file, ids=images["id"].astype(str).tolist(),
                              paths=images["path"].astype(str).tolist() if "path" in images else None,
                              classes=classes, root=root)
    annotations = Annotations(**loaded.arrays())
    skipped = list(loaded.skipped)
    notes = []
    consensus = None
    dense = probabilities if isinstance(probabilities, np.ndarray) else None
    if getattr(config, "label_column", "label") == "consensus":
        labelled = annotations.labelled
        if not labelled.all():
            missing = np.flatnonzero(~labelled)
            if probabilities is not None and dense is None:
                raise InputError(ERROR_CONSENSUS_STREAMED.format(n=len(missing),
                                                                 first=str(images["id"].iloc[missing[0]])))
            for position in missing:
                row = images["row"].iloc[position] if "row" in images else position
                skipped.append(SkipEntry(row=int(row) if row is not None and not pd.isna(row) else None,
                                         path=str(images["path"].iloc[position]) if "path" in images
                                         else str(images["id"].iloc[position]), reason=REASON_NO_ANNOTATION))
            keep = np.flatnonzero(labelled)
            remap = np.full(len(images), -1, dtype=np.int64)
            remap[keep] = np.arange(len(keep))
            images = images.iloc[keep].reset_index(drop=True)
            if dense is not None:
                probabilities = dense = dense[keep]
            annotations = Annotations(item=remap[annotations.item], annotator=annotations.annotator,
                                      label=annotations.label, n_items=len(keep),
                                      annotators=annotations.annotators, n_classes=annotations.n_classes,
                                      seconds=annotations.seconds)
        images = images.copy()
        if "label" in images:
            images["given_label"] = images["label"].astype(object)
        label, consensus = _consensus_labels(annotations, config=config, probabilities=dense)
        images["label"] = np.array(classes, dtype=object)[label]
    elif not annotations.labelled.all():
        notes.append(NOTE_UNANNOTATED.format(n=int((~annotations.labelled).sum())))
    return PreparedAnnotations(images=images, probabilities=probabilities, annotations=annotations,
                               consensus=consensus, skipped=skipped, notes=notes, layout=loaded.layout,
                               source=loaded.source)


def _consensus_labels(annotations, *, config, probabilities):
    from audit.analysis.annotations import estimate_consensus

    result = estimate_consensus(annotations, method=config.consensus_method, probabilities=probabilities,
                                seed=config.seed)
    return result.label, result


@dataclass
class AnnotationOutputs:
    section: dict
    image_columns: dict
    group_rows: pd.DataFrame
    annotators: pd.DataFrame
    metrics: dict


def annotation_outputs(prepared: PreparedAnnotations, *, classes, groups: pd.DataFrame | None, probabilities,
                       config) -> AnnotationOutputs:
    """Run :func:`audit.analysis.annotations.compute_annotation_audit` with the audit's settings."""
    from audit.analysis._table import GROUP_METRIC_COLUMNS
    from audit.analysis.annotations import compute_annotation_audit

    dense = probabilities if isinstance(probabilities, np.ndarray) else None
    method = config.consensus_method
    notes = list(prepared.notes)
    if probabilities is not None and dense is None:
        notes.append(NOTE_STREAMED)
        if method == "crowdlab":
            method = "dawid_skene"
    result = compute_annotation_audit(prepared.annotations, classes=classes, groups=groups, probabilities=dense,
                                      method=method, confidence_level=config.confidence_level,
                                      n_bootstrap=config.n_bootstrap, seed=config.seed,
                                      min_group_size=config.min_group_size, max_ci_width=config.max_ci_width,
                                      correction=config.correction)
    section = dict(result.section)
    section["source"] = prepared.source
    section["layout"] = prepared.layout
    section["n_rows_skipped"] = sum(1 for s in prepared.skipped if s.path == prepared.source)
    section["label_under_audit"] = "consensus" if getattr(config, "label_column", "") == "consensus" else "given"
    if notes:
        section["notes"] = notes
    image_columns = {c: result.per_image[c].to_numpy() for c in result.per_image.columns}
    rows = result.group_metrics.copy()
    # issue 13's audit-wide multiplicity: every tested annotation row is exploratory (false discovery rate
    # across the audit's exploratory rows); the columns beyond the contract's are kept where the table has them
    rows["scope"] = np.where(rows["p_value"].notna() & ~rows["insufficient_evidence"], "exploratory", "")
    wanted = dict.fromkeys((*GROUP_METRIC_COLUMNS, "scope", "p_value", "p_adjusted"))  # ordered, no repeats
    rows = rows[[c for c in wanted if c in rows.columns]]
    return AnnotationOutputs(section=section, image_columns=image_columns, group_rows=rows,
                             annotators=result.annotators, metrics=dict(METRIC_DESCRIPTION))


def apply_annotations(prepared, *, config):
    """Read the annotations for what an input adapter prepared (``audit.pipeline.core.Prepared``), before the
    analysis steps: skipped rows are appended to ``prepared.skipped``; with ``--label-column consensus`` the
    labels become the consensus and unlabelled images (their probabilities and embeddings too) are left out.

    Returns
    -------
    prepared, PreparedAnnotations
    """
    kept = prepared.kept.copy()
    kept["_position"] = np.arange(len(kept))
    result = prepare_annotations(kept, classes=prepared.classes, config=config,
                                 probabilities=prepared.probabilities, root=prepared.root)
    positions = result.images["_position"].to_numpy()
    result.images = result.images.drop(columns=["_position"])
    prepared.kept = result.images
    prepared.probabilities = result.probabilities
    if prepared.embeddings is not None and len(positions) != len(prepared.embeddings):
        prepared.embeddings = prepared.embeddings[positions]
    prepared.skipped = list(prepared.skipped) + list(result.skipped)
    return prepared, result


def annotation_step_parts(context) -> AnnotationOutputs:
    """What the registered ``annotations`` step (``audit.pipeline.steps``) contributes: computed from
    ``context.annotations`` with the audit's compared group attributes and probabilities."""
    groups = context.groups[context.compared] if context.compared else None
    return annotation_outputs(context.annotations, classes=context.classes, groups=groups,
                              probabilities=context.probabilities, config=context.config)
