"""One pipeline: an input adapter, the registered analysis steps, one ``audit.json`` assembly.

Two input adapters produce a :class:`Prepared` (the per-image table of kept rows and a probabilities
source): :func:`prepare_images` (images + a model or predictions: ``run``) and
:func:`audit.pipeline.labels_input.prepare_labels` (labels + probabilities only: ``label-noise``). Then
:func:`audit.pipeline.steps.run_steps` runs every step the inputs allow, each isolated (one that raises
becomes an ``errors`` entry and the run goes on) and timed once, and :func:`assemble` builds ``audit.json``
the same way for both. Every input left out is a counted :class:`~audit.types.SkipEntry`.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from audit import __version__
from audit.config import AuditConfig
from audit.errors import AuditError, InputError
from audit.schema import SCHEMA_VERSION  # noqa: F401 - also re-exported as audit.pipeline.SCHEMA_VERSION
from audit.pipeline.memory import release_memory
from audit.types import Dataset, SkipEntry

ERROR_ALL_IMAGES_SKIPPED = ("no image of {source} could be read ({n} skipped; first: {first}): check the paths "
                            "and files")
ERROR_UNKNOWN_PIXEL_GROUP = ("--group-by names {column!r}, which is not a pixel group attribute; the engine "
                             "computes: {available}")
ERROR_SINGLE_CLASS_LEFT = ("only one class ({name!r}) is left after skipping unreadable images: an audit needs "
                           "at least two classes")

#: progress(stage, done, total): called from the pipeline so the CLI (tqdm) and app (st.progress) can show it.
Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass
class AuditResult:
    """Everything an audit computed, ready for the writer.

    Attributes
    ----------
    audit : dict
        The content of ``audit.json``.
    images : DataFrame
        ``images.parquet``.
    group_metrics : DataFrame
        ``group_metrics.parquet``.
    probabilities : ndarray, chunk source or None
        ``probabilities.npy`` (float32, N x K): an array, or for a matrix the per-image stage kept on disk
        (large runs) a :class:`~audit.io.arrays.NpyChunkSource` (``shape``, and called: an iterator of row
        chunks), which :func:`audit.folder.write_audit_folder` streams.
    embeddings : ndarray or None
        Penultimate-layer embeddings (not written to the contract files; kept in the cache).
    """

    audit: dict
    images: pd.DataFrame
    group_metrics: pd.DataFrame
    probabilities: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict:
    """Versions of Python and the packages whose behaviour decides the numbers."""
    from importlib import metadata

    versions = {"python": platform.python_version(), "imagefair": __version__}
    for name in ("numpy", "pandas", "scipy", "scikit-learn", "fairlearn", "torch", "onnxruntime", "pillow",
                 "pyarrow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _has_at_least(source, n: int) -> bool:
    """Cheap guess whether ``source`` (a folder, or a manifest) holds at least ``n`` images: counts files of a
    folder until ``n``, or lines in the first MB of a file. Only decides whether worker processes start early."""
    path = Path(source)
    try:
        if path.is_dir():
            count = 0
            for _root, _dirs, files in os.walk(path):
                count += len(files)
                if count >= n:
                    return True
            return False
        if not path.is_file():  # never open a FIFO or a device here: it could block before the loader refuses it
            return False
        with open(path, "rb") as handle:
            head = handle.read(1 << 20)
        return len(head) == 1 << 20 or head.count(b"\n") >= n
    except (OSError, TypeError, ValueError):
        return False


def start_executor(config: AuditConfig):
    """The executor of the per-image stage, its worker processes already starting when the data looks large
    enough to use them (so their start-up overlaps reading the manifest and loading the model)."""
    from audit.pipeline.executors import make_executor
    from audit.pipeline.perimage import SHARD_IMAGES

    executor = make_executor(config.executor, workers=config.workers, ray_address=config.ray_address)
    if hasattr(executor, "prestart") and _has_at_least(config.data, 2 * SHARD_IMAGES):
        executor.prestart()
    return executor


def run_per_image_stage(dataset: Dataset, *, config: AuditConfig, progress: Progress, model=None,
                        classes=None, executor=None):
    """The per-image stage of ``run``: one read and one decode per image, sharded, on the configured executor.

    Returns
    -------
    kept : DataFrame
        The dataset rows that decoded, with ``content_hash``, the ``image_*`` attributes (binned too) and
        hash columns used by the data-quality analysis.
    skipped : list of SkipEntry
    probabilities, embeddings : ndarray or None
        Model outputs in the dataset's class order (``classes``), when ``model`` is given.
    info : dict
        What ran (executor, workers, images decoded and read from the cache, cache key).
    """
    from audit.analysis.image_properties import bin_image_properties
    from audit.model.cache import default_cache_dir
    from audit.pipeline.executors import make_executor
    from audit.pipeline.perimage import StageSpec, cleanup, feature_key, output_key, run_stage

    own_executor = executor is None
    if own_executor:
        executor = make_executor(config.executor, workers=config.workers, ray_address=config.ray_address)
    preprocessing = model.preprocessing.to_dict() if model is not None else None
    if model is not None and not model.classes:
        from audit.errors import ModelError
        from audit.model.inference import ERROR_NO_MODEL_CLASSES

        raise ModelError(ERROR_NO_MODEL_CLASSES)
    workers = getattr(executor, "workers", None) or 1
    spec = StageSpec(max_pixels=config.max_pixels, model_path=config.model if model is not None else None,
                     arch=config.arch, preprocess_file=config.preprocess_file, batch_size=config.batch_size,
                     feature_key=feature_key(max_pixels=config.max_pixels),
                     output_key=output_key(model_sha256=model.sha256, preprocessing=preprocessing)
                     if model is not None else None,
                     threads=1 if (workers > 1 or config.executor == "ray") else 0)
    store_root = None
    if config.use_cache:
        store_root = (Path(config.cache_dir) if config.cache_dir else default_cache_dir()) / "store"
    try:
        result = run_stage(dataset.table, spec=spec, executor=executor, store_root=store_root, progress=progress,
                           n_classes=len(model.classes) if model is not None else None, model=model)
    finally:
        if own_executor and hasattr(executor, "close") and config.executor == "local":
            executor.close()
    try:
        kept = bin_image_properties(result.kept)
        probabilities = embeddings = None
        if model is not None and len(kept):
            from audit.model.inference import align_to_dataset, load_class_map

            class_map = load_class_map(config.class_map_file) if config.class_map_file else None
            if class_map is None and tuple(model.classes) == tuple(classes):
                probabilities = result.raw_probabilities  # already in the dataset's order (maybe on disk)
            else:
                probabilities = align_to_dataset(result.raw_probabilities, model_classes=model.classes,
                                                 dataset_classes=tuple(classes), class_map=class_map)
            embeddings = result.embeddings
    finally:
        cleanup(result)
    info = {**executor.describe(), "shards": result.n_shards, "images_decoded": result.n_decoded,
            "images_from_cache": result.n_from_cache, "cache": bool(config.use_cache),
            "model_s": result.extra.get("model_s", 0.0), "forward_s": result.extra.get("forward_s", 0.0)}
    return kept, result.skipped, probabilities, embeddings, info, (spec.output_key if model is not None else None)


@dataclass
class Prepared:
    """What an input adapter hands the steps.

    Attributes
    ----------
    kind : str
        ``"run"`` or ``"label-noise"`` (``audit.json`` ``kind``).
    dataset : Dataset
        The loaded table (all rows that passed loading) and its group attributes.
    kept : DataFrame
        One row per image that is audited, in ``probabilities.npy`` order.
    classes : tuple of str
    class_order_source : str
    probabilities : ndarray, chunk source or None
    embeddings : ndarray or None
    prediction_columns : PredictionColumns or None
        Per-image prediction columns already computed (chunk sources).
    model_info : dict or None
        ``audit.json`` ``model``.
    skipped : list of SkipEntry
    durations : dict
        Seconds per input stage (``load_dataset``, ``read_images``, ``model``...).
    source, root : str or None
        ``dataset.source`` and ``dataset.root`` of ``audit.json``.
    label_column : str
    data_hash : str
    label_noise_source : tuple or None
        ``(source, description)`` of the probabilities, when not "the model's own probabilities".
    """

    kind: str
    dataset: Dataset
    kept: pd.DataFrame
    classes: tuple
    class_order_source: str
    probabilities: object = None
    embeddings: np.ndarray | None = None
    prediction_columns: object = None
    model_info: dict | None = None
    skipped: list = field(default_factory=list)
    durations: dict = field(default_factory=dict)
    source: str | None = None
    root: str | None = None
    label_column: str = "label"
    data_hash: str = ""
    label_noise_source: tuple | None = None
    stage_info: dict | None = None


def check_pixel_groups(config: AuditConfig) -> None:
    """``--group-by`` names of pixel groups must be groups the engine computes (checked before any decode)."""
    if not config.group_by:
        return
    from audit.analysis.image_properties import GROUP_COLUMNS
    from audit.pipeline.steps import PIXEL_GROUP_BOOLEAN

    engine_groups = list(GROUP_COLUMNS) + list(PIXEL_GROUP_BOOLEAN)
    unknown = [c for c in config.group_by if c.startswith("image_") and c not in engine_groups]
    if unknown:
        raise InputError(ERROR_UNKNOWN_PIXEL_GROUP.format(column=unknown[0], available=", ".join(engine_groups)))


def prepare_images(config: AuditConfig, *, progress: Progress) -> Prepared:
    """Input adapter of ``run``: manifest -> decoded images -> model outputs or predictions."""
    clock = time.perf_counter()
    executor = start_executor(config)
    try:
        return _prepare_images(config, progress=progress, executor=executor, clock=clock)
    finally:
        if hasattr(executor, "close") and config.executor == "local":
            executor.close()


def _prepare_images(config: AuditConfig, *, progress: Progress, executor, clock: float) -> Prepared:
    from audit.io.manifest import load_dataset

    progress("reading the manifest", 0, 1)
    # Pixel attributes (image_*) are computed by the engine and always analysed; only metadata columns are
    # looked up in the manifest.
    metadata_group_by = [c for c in config.group_by if not c.startswith("image_")] if config.group_by else None
    check_pixel_groups(config)
    # --label-column consensus: the manifest's label column is read as the given label; the consensus of
    # --annotations replaces it before the analyses (audit.annotation_audit.apply_annotations)
    dataset = load_dataset(config.data, label_column="label" if config.label_column == "consensus" else
                           config.label_column, group_by=metadata_group_by,
                           attributes_file=config.attributes_file, data_root=config.data_root)
    classes = tuple(dataset.classes)
    class_order_source = dataset.class_order_source
    model = None
    if config.model:
        from audit.model.inference import load_model

        model = load_model(config.model, arch=config.arch, preprocess_file=config.preprocess_file)
        if not config.class_map_file and model.classes:
            from audit.io.manifest import check_labels_in

            check_labels_in(dataset, model.classes, label_column=config.label_column)  # before any image is read
        # A model whose classes include every class of the data (e.g. a 10-class model audited on a subset)
        # defines the class order, so its probabilities need no mapping; absent classes count as empty.
        if (not config.class_map_file and model.classes and set(classes) <= set(model.classes)
                and len(set(model.classes)) == len(model.classes)):
            classes = tuple(model.classes)
            class_order_source = "model"
    durations = {"load_dataset": round(time.perf_counter() - clock, 3)}
    stage_start = time.perf_counter()
    kept, decode_skips, probabilities, embeddings, stage_info, key = run_per_image_stage(
        dataset, config=config, progress=progress, model=model, classes=classes, executor=executor)
    release_memory()  # what assembling the per-image table used, before the steps add their own peaks
    durations["read_images"] = round(time.perf_counter() - stage_start, 3)
    skipped = list(dataset.skipped) + decode_skips
    if len(kept) == 0:
        first = skipped[0] if skipped else None
        raise InputError(ERROR_ALL_IMAGES_SKIPPED.format(
            source=config.data, n=len(skipped), first=f"{first.path}: {first.reason}" if first else "-"))
    if kept["label"].nunique() < 2:
        raise InputError(ERROR_SINGLE_CLASS_LEFT.format(name=str(kept["label"].iloc[0])))

    model_info = None
    stage_start = time.perf_counter()
    if config.model:
        # inference ran inside the per-image stage, on the same decoded pixels (one decode per image)
        model_info = {"source": str(Path(config.model).resolve()), "kind": model.kind, "sha256": model.sha256,
                      "arch": config.arch, "classes": list(model.classes) if model.classes else None,
                      "preprocessing": model.preprocessing.to_dict(),
                      "preprocessing_source": getattr(model, "preprocessing_source", None),
                      "class_map": str(Path(config.class_map_file).resolve()) if config.class_map_file else None,
                      "has_embeddings": embeddings is not None, "cache_key": key,
                      "from_cache": bool(config.use_cache) and stage_info["images_decoded"] == 0}
    elif config.predictions:
        from audit.model.predictions import load_predictions

        loaded = load_predictions(config.predictions, table=kept, classes=classes, kind=config.predictions_kind,
                                  root=dataset.root, n_source_rows=len(dataset.table) + len(dataset.skipped))
        probabilities = np.asarray(loaded.probabilities, dtype=np.float32)
        model_info = {"source": str(Path(config.predictions).resolve()), "kind": "predictions",
                      "sha256": _sha256_file(config.predictions), "predictions_kind": loaded.kind_used,
                      "message": loaded.message, "has_embeddings": False, "from_cache": False}
    durations["model"] = round(time.perf_counter() - stage_start, 3)
    data_hash = hashlib.sha256("\n".join(f"{i}\t{h}\t{l}" for i, h, l in zip(
        kept["id"], kept["content_hash"], kept["label"])).encode()).hexdigest()
    prepared = Prepared(kind="run", dataset=dataset, kept=kept, classes=classes, class_order_source=class_order_source,
                    probabilities=probabilities, embeddings=embeddings, model_info=model_info, skipped=skipped,
                    durations=durations, source=str(Path(config.data).resolve()), root=str(dataset.root),
                    label_column=config.label_column, data_hash=data_hash)
    prepared.stage_info = stage_info
    return prepared


def analyse(prepared: Prepared, *, config: AuditConfig, progress: Progress, started: datetime,
            clock: float) -> AuditResult:
    """Run the registered steps on what an adapter prepared and assemble ``audit.json`` (both adapters)."""
    from audit.pipeline.steps import run_steps

    annotations = None
    if getattr(config, "annotations_file", None):
        from audit.annotation_audit import apply_annotations

        start = time.perf_counter()
        prepared, annotations = apply_annotations(prepared, config=config)
        prepared.durations["load_annotations"] = round(time.perf_counter() - start, 3)
    bundle = run_steps(prepared.kept, classes=prepared.classes, dataset=prepared.dataset,
                       probabilities=prepared.probabilities, embeddings=prepared.embeddings, config=config,
                       progress=progress, n_skipped=len(prepared.skipped),
                       prediction_columns=prepared.prediction_columns,
                       label_noise_source=prepared.label_noise_source, annotations=annotations)
    images = bundle.images
    if prepared.kind == "label-noise":  # no image files: the contract's path column is empty
        images = images.drop(columns=["path"]).copy()
        images.insert(1, "path", None)
    dataset, kept = prepared.dataset, prepared.kept
    durations = dict(prepared.durations)
    durations.update(bundle.durations)
    audit = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "imagefair", "version": __version__},
        "kind": prepared.kind,
        "classes": list(prepared.classes),
        "dataset": {
            "source": prepared.source, "kind": dataset.kind, "root": prepared.root,
            "data_root": (str(Path(config.data_root).resolve()) if getattr(config, "data_root", None)
                          else None),
            "n_images": int(len(kept)), "n_rows": int(len(dataset.table) + len(dataset.skipped)),
            "n_skipped": len(prepared.skipped), "n_classes": len(prepared.classes),
            "class_order_source": prepared.class_order_source,
            "label_column": prepared.label_column,
            "splits": sorted(kept["split"].dropna().astype(str).unique().tolist()) if "split" in kept else [],
            "group_attributes": list(dataset.group_attributes),
            "pixel_attributes": bundle.pixel_group_attributes,
            "constant_attributes": bundle.constant_attributes,
            "metadata_columns": list(dataset.metadata_columns),
            "notes": list(dataset.notes),
        },
        "model": prepared.model_info,
        "metrics": bundle.metrics,
        "analyses": bundle.sections,
        "errors": bundle.errors,
        "findings": [f["text"] for f in bundle.findings],
        "finding_details": bundle.findings,
        "provenance": {
            "data_hash": prepared.data_hash,
            "model_sha256": prepared.model_info["sha256"] if prepared.model_info else None,
            "preprocessing": prepared.model_info.get("preprocessing") if prepared.model_info else None,
            "settings": config.settings(),
            "seed": config.seed,
            "min_group_size": config.min_group_size,
            "versions": package_versions(),
            "platform": platform.platform(),
            "command": " ".join(sys.argv) if sys.argv else None,
            "started_at": started.isoformat(timespec="seconds"),
            "per_image_stage": prepared.stage_info,
            "steps_from_cache": bundle.steps_from_cache,
        },
        "skipped": [entry.to_dict() for entry in prepared.skipped],
    }
    if config.policy_file:
        from audit.policy import evaluate_policy, load_policy

        start = time.perf_counter()
        policy = load_policy(config.policy_file)  # loaded once: the verdict and the thresholds it used
        audit["verdict"] = evaluate_policy(audit, bundle.group_metrics, policy).to_dict()
        audit["policy"] = policy.to_dict()  # the thresholds the verdict used, for views that draw them
        durations["policy"] = round(time.perf_counter() - start, 3)
    finished = datetime.now(timezone.utc)
    # Every stage is timed once and the stages do not overlap, so their sum never exceeds duration_s.
    audit["provenance"].update({"finished_at": finished.isoformat(timespec="seconds"),
                                "duration_s": round(time.perf_counter() - clock, 3),
                                "stage_durations_s": durations})
    probabilities = prepared.probabilities
    if isinstance(probabilities, np.memmap):
        from audit.io.arrays import chunk_source_of

        # an on-disk matrix (large runs) goes to the writer as a chunk stream with a shape: written with file
        # reads, so writing probabilities.npy never maps the whole matrix into this process
        probabilities = chunk_source_of(probabilities)
    return AuditResult(audit=audit, images=images, group_metrics=bundle.group_metrics,
                       probabilities=probabilities, embeddings=prepared.embeddings,
                       extra={"files": bundle.files})


def run_audit(config: AuditConfig, *, progress: Progress | None = None) -> AuditResult:
    """Run a full audit (images + labels, optionally a model or predictions).

    Parameters
    ----------
    config : AuditConfig
        What to audit and how.
    progress : callable, optional
        ``progress(stage, done, total)``.

    Returns
    -------
    AuditResult

    Raises
    ------
    InputError
        Input that makes the whole audit impossible (no readable image, one class, a bad model file...).
    """
    progress = progress or _no_progress
    config.check()
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    prepared = prepare_images(config, progress=progress)
    return analyse(prepared, config=config, progress=progress, started=started, clock=clock)
