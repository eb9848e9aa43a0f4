"""The per-image stage: each file read and decoded once, in shards, results on disk.

For every image the stage computes, from the same decoded pixels: the content hash (sha256 of the file's
bytes), the pixel attributes (:mod:`audit.analysis.image_properties`), the perceptual hashes
(:mod:`audit.analysis.hashing`) and, with a model, the model input and the model's raw outputs. It runs
over *shards* (consecutive runs of :data:`SHARD_IMAGES` manifest rows); a shard is the unit of work of
every executor (:mod:`audit.pipeline.executors`: in-process, worker processes, Ray). Shard boundaries and
batches do not depend on the executor or the number of workers, so every executor computes the same
numbers.

Each shard's results are written as soon as it is done to a content-addressed store
(:class:`FeatureStore`): per-image features to Parquet parts keyed by the settings that shape them,
model outputs to ``.npy`` parts keyed by the model file's sha256 and its preprocessing, each row keyed by
the image's content hash. Memory on the map side is bounded by a shard; the reduce side
(:func:`collect`) reads back compact columns and assembles the probabilities on disk when they are large.
With the cache on, the store *is* the feature cache: a re-run (same files, any manifest order, other
attributes, groups or policy) finds every image by its content hash and decodes nothing; a killed run
leaves its finished shards reusable. With ``use_cache=False`` the store lives in a temporary folder that is
deleted after the run.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from audit.io.scratch import make_scratch_dir
from audit.types import SkipEntry

if TYPE_CHECKING:  # the map side (worker processes) never imports pandas: it starts faster without
    import pandas as pd

#: Manifest rows per shard (the unit of work and of memory on the map side).
SHARD_IMAGES = 512

#: Bumped whenever a stored feature changes meaning or computation, so old parts stop matching.
FEATURES_VERSION = 2
#: Bumped whenever stored model outputs change format.
OUTPUTS_VERSION = 1

#: Skip reason of an image whose worker process died while reading it (a crash in a decoder).
SKIP_WORKER_DIED = "the worker process died while reading this image (crash in a decoder); it was left out"
#: Skip reason of an image whose content changed between the cache check and the decode.
SKIP_CHANGED = "the file changed while it was being read; rerun the audit"

#: Above this many values (images x classes) the assembled probabilities live in an on-disk array.
IN_MEMORY_PROBABILITIES = 50_000_000


@dataclass(frozen=True)
class StageSpec:
    """What a worker needs to process a shard (picklable; sent once to each worker).

    Attributes
    ----------
    max_pixels : int
        Pixel cap (images above are skipped).
    model_path, arch, preprocess_file : str or None
        The model to run (each worker loads its own copy), or None.
    batch_size : int
        Images per model call (batches never cross a shard, so they are the same on every executor).
    feature_key, output_key : str
        Store keys of the features and of the model outputs (:func:`feature_key`, :func:`output_key`).
    threads : int
        Inference threads per worker.
    """

    max_pixels: int
    model_path: str | None = None
    arch: str | None = None
    preprocess_file: str | None = None
    batch_size: int = 128
    feature_key: str = ""
    output_key: str | None = None
    threads: int = 1


@dataclass
class ShardTask:
    """One shard: positions in the table, paths and manifest rows (for skip entries)."""

    shard: int
    positions: list
    paths: list
    rows: list


@dataclass
class ShardOutput:
    """What a worker returns for one shard (small: no pixels).

    Attributes
    ----------
    shard : int
    positions : ndarray of int64
        Table position of every image of the shard.
    content_hashes : list of str or None
        sha256 of each file (None when it was skipped before hashing).
    skip_reasons : list of str or None
        Why an image was left out (None when kept).
    features : dict of str to ndarray, or None
        Columns ``content_hash`` + pixel attributes + perceptual hashes of the images computed here (cache
        misses), one value per image (:func:`as_frame` makes the DataFrame on the reduce side).
    probabilities, embeddings : ndarray or None
        Raw model outputs (model class order) of the rows of ``features``.
    n_decoded : int
        Images decoded (cache misses).
    model_s, forward_s : float
        Seconds spent on the model's part of the shard: preparing its input batches and running them
        (``model_s``), and of that the runtime's forward calls alone (``forward_s``).
    """

    shard: int
    positions: np.ndarray
    content_hashes: list
    skip_reasons: list
    features: dict | None = None
    probabilities: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    n_decoded: int = 0
    model_s: float = 0.0
    forward_s: float = 0.0


def feature_key(*, max_pixels: int) -> str:
    """Store key of per-image features: what shapes them (the feature version; the pixel cap only decides
    skips, which are never stored, but is kept for safety)."""
    from audit.analysis.hashing import HASH_NAMES
    from audit.analysis.image_properties import PROPERTY_COLUMNS

    header = {"version": FEATURES_VERSION, "properties": list(PROPERTY_COLUMNS), "hashes": list(HASH_NAMES),
              "max_pixels": int(max_pixels)}
    return hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()[:32]


def output_key(*, model_sha256: str, preprocessing: dict) -> str:
    """Store key of model outputs: the model file's sha256 and its preprocessing."""
    header = {"version": OUTPUTS_VERSION, "model_sha256": model_sha256, "preprocessing": preprocessing}
    return hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode()).hexdigest()[:32]


def plan_shards(table: pd.DataFrame, *, shard_images: int = SHARD_IMAGES) -> list[ShardTask]:
    """Cut the table into consecutive shards (the same cut for every executor)."""
    paths = [str(p) for p in table["path"].tolist()]
    rows = table["row"].tolist() if "row" in table.columns else list(range(len(paths)))
    tasks = []
    for shard, start in enumerate(range(0, len(paths), shard_images)):
        stop = min(start + shard_images, len(paths))
        tasks.append(ShardTask(shard=shard, positions=list(range(start, stop)), paths=paths[start:stop],
                               rows=rows[start:stop]))
    return tasks


# -- the store ------------------------------------------------------------------------------------------------
class FeatureStore:
    """Content-addressed parts on disk: ``features/<key>/<part>.parquet`` and ``outputs/<key>/<part>.*``.

    A part is written atomically (arrays first, then its Parquet index under a temporary name renamed into
    place), so a present ``.parquet`` means a whole part; anything unreadable is ignored (a miss).
    """

    def __init__(self, root: str | os.PathLike, *, feature_key: str, output_key: str | None,
                 keep_features: bool = True):
        self.root = Path(root)
        #: False for the temporary store of a run without cache: its features are kept in memory by the run,
        #: so writing them would only cost time (model outputs are still written: they are assembled from here)
        self.keep_features = keep_features
        self.feature_dir = self.root / "features" / feature_key
        self.output_dir = self.root / "outputs" / output_key if output_key else None

    # writing ----------------------------------------------------------------------------------------------
    def write(self, output: ShardOutput) -> None:
        """Store the features (and model outputs) a worker computed for one shard."""
        writes_outputs = self.output_dir is not None and output.probabilities is not None
        if not (self.keep_features or writes_outputs):
            return  # the temporary store of a run without cache and without a model: nothing to keep
        features = as_frame(output.features)
        if features is None or len(features) == 0:
            return
        part = f"{uuid.uuid4().hex}"
        if self.keep_features:
            self.feature_dir.mkdir(parents=True, exist_ok=True)
            _write_parquet_atomic(self.feature_dir / f"{part}.parquet", features)
        if writes_outputs:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            _write_npy_atomic(self.output_dir / f"{part}.probabilities.npy", output.probabilities)
            if output.embeddings is not None:
                _write_npy_atomic(self.output_dir / f"{part}.embeddings.npy", output.embeddings)
            _write_parquet_atomic(self.output_dir / f"{part}.parquet",
                                  features[["content_hash"]].reset_index(drop=True))

    # reading ----------------------------------------------------------------------------------------------
    def _parts(self, folder: Path | None) -> list[Path]:
        if folder is None or not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix == ".parquet" and not p.name.startswith("."))

    def known_hashes(self) -> frozenset:
        """Content hashes with both features and (with a model) outputs stored: an image whose hash is here
        needs no decode."""
        features = set(_hash_column(self._parts(self.feature_dir)))
        if self.output_dir is None:
            return frozenset(features)
        return frozenset(features & set(_hash_column(self._parts(self.output_dir))))

    def read_features(self, hashes: np.ndarray) -> pd.DataFrame:
        """Feature rows for ``hashes`` (in that order; a hash may repeat).

        Every part is read once and the wanted rows are picked in one pass over all of them (filtering each
        part against the whole set of wanted hashes costs parts x N: hours at a million images)."""
        import pandas as pd

        found = self.find_features(hashes)
        if not len(found):
            return pd.DataFrame({"content_hash": pd.Series(hashes, dtype=object)})
        return found.set_index("content_hash").reindex(pd.Index(hashes, name="content_hash")).reset_index()

    def find_features(self, hashes: np.ndarray) -> pd.DataFrame:
        """The stored feature rows of those of ``hashes`` that are in the store, one row per hash (its first
        copy), in no particular order. The parts that gave rows are marked as used (their modification time:
        ``imagefair cache clear --older-than`` keeps what recent runs read)."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from audit.pipeline.cache_admin import touch

        tables, paths = [], []
        for part in self._parts(self.feature_dir):
            try:
                tables.append(pq.read_table(part))
            except Exception:  # noqa: BLE001 - an unreadable part is a miss
                continue
            paths.append(part)
        if not tables:
            return pd.DataFrame({"content_hash": pd.Series([], dtype=object)})
        sizes = np.array([t.num_rows for t in tables], dtype=np.int64)
        table = pa.concat_tables(tables, promote_options="default")
        del tables  # the parts are in ``table`` now: one copy in memory
        wanted = pa.array(pd.unique(np.asarray(hashes, dtype=object)), type=pa.string())
        mask = pc.is_in(table["content_hash"], value_set=wanted)
        hits = np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)
        for number in np.unique(np.repeat(np.arange(len(paths)), sizes)[hits]):
            touch(paths[int(number)])
        del hits
        table = table.filter(mask)
        found = table.to_pandas()
        del table
        return found.loc[~found["content_hash"].duplicated()].reset_index(drop=True)

    def read_outputs(self, hashes: np.ndarray, *, out: np.ndarray, embeddings_out=None) -> np.ndarray:
        """Fill ``out[i]`` with the stored probabilities of ``hashes[i]``; return a mask of rows found.

        One index over the hashes of every part, one lookup of all ``hashes`` in it, then each part's rows
        are copied in one fancy-indexed read (linear in the number of images, whatever the number of parts).
        """
        import pandas as pd

        from audit.pipeline.cache_admin import touch

        parts, part_hashes = [], []
        for part in self._parts(self.output_dir):
            try:
                values = _part_hashes(part)
                shape = np.load(part.with_suffix(".probabilities.npy"), mmap_mode="r", allow_pickle=False).shape
            except Exception:  # noqa: BLE001 - an unreadable part is a miss
                continue
            if len(shape) != 2 or shape[0] != len(values) or shape[1] != out.shape[1]:
                continue
            parts.append(part)
            part_hashes.append(values)
        found = np.zeros(len(hashes), dtype=bool)
        if not parts:
            return found
        sizes = np.array([len(v) for v in part_hashes], dtype=np.int64)
        part_of = np.repeat(np.arange(len(parts)), sizes)
        row_of = np.concatenate([np.arange(n) for n in sizes])
        index = pd.Index(np.concatenate(part_hashes))
        first = ~index.duplicated()  # a hash stored twice: its first copy
        index, part_of, row_of = index[first], part_of[first], row_of[first]
        position = index.get_indexer(pd.Index(hashes))
        take = np.flatnonzero(position >= 0)
        if not len(take):
            return found
        by_part = part_of[position[take]]
        order = np.argsort(by_part, kind="stable")
        take, by_part = take[order], by_part[order]
        bounds = np.flatnonzero(np.diff(by_part)) + 1
        for rows, number in zip(np.split(take, bounds), by_part[np.r_[0, bounds]]):
            source_rows = row_of[position[rows]]
            part = parts[int(number)]
            try:
                probabilities = np.load(part.with_suffix(".probabilities.npy"), mmap_mode="r", allow_pickle=False)
                block = np.asarray(probabilities[source_rows])
                if embeddings_out is not None:
                    embeddings = np.load(part.with_suffix(".embeddings.npy"), mmap_mode="r", allow_pickle=False)
                    embeddings_out[rows] = embeddings[source_rows]
            except Exception:  # noqa: BLE001 - an unreadable part is a miss
                continue
            out[rows] = block
            found[rows] = True
            touch(part)  # used now (see find_features)
        return found

    def embedding_width(self) -> int | None:
        for part in self._parts(self.output_dir):
            path = part.with_suffix(".embeddings.npy")
            if path.is_file():
                try:
                    return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[1])
                except Exception:  # noqa: BLE001
                    continue
        return None


def _part_hashes(part: Path) -> np.ndarray:
    """The ``content_hash`` column of one stored part (object array; raises when the part is unreadable)."""
    import pyarrow.parquet as pq

    return pq.read_table(part, columns=["content_hash"]).column("content_hash").to_numpy(zero_copy_only=False)


def _hash_column(parts: list[Path]) -> list[str]:
    values: list = []
    for part in parts:
        try:
            values.append(_part_hashes(part))
        except Exception:  # noqa: BLE001 - an unreadable part is a miss
            continue
    return np.concatenate(values).tolist() if values else []


def _write_parquet_atomic(path: Path, frame: pd.DataFrame) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        frame.to_parquet(temporary, index=False)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_npy_atomic(path: Path, array: np.ndarray) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


class KnownHashes:
    """The content hashes already in the store, as a sorted array in a file that worker processes map.

    A frozenset pickled to every worker costs some 100 MB a worker at a million images; here a worker maps the
    file (the page cache shares it) and looks a hash up by binary search. Pickling sends only the path.
    """

    def __init__(self, path: str):
        self.path = str(path)
        self._values = None

    @classmethod
    def write(cls, hashes, folder: str | os.PathLike) -> "KnownHashes":
        values = np.array(sorted(hashes), dtype="S64")
        path = Path(folder) / "known-hashes.npy"
        with open(path, "wb") as handle:
            np.save(handle, values, allow_pickle=False)
        return cls(str(path))

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.path, self._values = state["path"], None

    @property
    def values(self) -> np.ndarray:
        if self._values is None:
            self._values = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return self._values

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __contains__(self, content_hash) -> bool:
        key = str(content_hash).encode("ascii")
        values = self.values
        position = int(np.searchsorted(values, key))
        return position < values.shape[0] and values[position] == key


# -- the map side (runs in a worker) --------------------------------------------------------------------------
class ShardProcessor:
    """Processes shards in one worker: holds the model (loaded once) and the set of stored content hashes."""

    def __init__(self, spec: StageSpec, known: frozenset = frozenset(), *, model=None):
        self.spec = spec
        self.known = known
        self._model = model

    @property
    def model(self):
        if self._model is None and self.spec.model_path:
            if self.spec.threads:
                os.environ["IMAGEFAIR_NUM_THREADS"] = str(self.spec.threads)
            from audit.model.inference import load_model

            self._model = load_model(self.spec.model_path, arch=self.spec.arch,
                                     preprocess_file=self.spec.preprocess_file)
        return self._model

    def __call__(self, task: ShardTask) -> ShardOutput:
        with _one_blas_thread():
            return self._process(task)

    def _process(self, task: ShardTask) -> ShardOutput:
        from audit.io.images import ImageSkip, read_image

        n = len(task.paths)
        hashes: list = [None] * n
        reasons: list = [None] * n
        images: list = []      # pixels kept for the model
        pending: list = []     # decoded images whose features are not computed yet
        pending_pixels = 0
        frames: list = []
        n_decoded = 0
        for index, path in enumerate(task.paths):
            _fault_injection(path)
            if self.known:
                content_hash = _hash_file(path)
                if content_hash is not None and content_hash in self.known:
                    hashes[index] = content_hash
                    continue
            try:
                decoded = read_image(path, max_pixels=self.spec.max_pixels)
            except ImageSkip as skip:
                reasons[index] = skip.reason
                continue
            hashes[index] = decoded.content_hash
            n_decoded += 1
            pending.append(decoded)
            pending_pixels += decoded.width * decoded.height
            if self.spec.model_path:
                images.append(decoded.rgb)
            # features are computed a batch at a time (stacked by size), memory bounded by the pixels held
            if pending_pixels >= FEATURE_BATCH_PIXELS:
                frames.append(_feature_columns(pending))
                pending, pending_pixels = [], 0
        if pending:
            frames.append(_feature_columns(pending))
        features = concat_columns(frames)
        probabilities = embeddings = None
        model_s = forward_s = 0.0
        if self.spec.model_path and images:
            from audit.model.sidecar import preprocess_batch

            model = self.model
            started = time.perf_counter()
            outputs, embedded = [], []
            # batches never cross a shard, so they are the same on every executor
            for start in range(0, len(images), self.spec.batch_size):
                batch = preprocess_batch(images[start:start + self.spec.batch_size], model.preprocessing)
                clock = time.perf_counter()
                batch_probabilities, batch_embeddings = model.predict(batch)
                forward_s += time.perf_counter() - clock
                outputs.append(batch_probabilities)
                if batch_embeddings is not None:
                    embedded.append(batch_embeddings)
            probabilities = np.concatenate(outputs).astype(np.float32)
            embeddings = np.concatenate(embedded).astype(np.float32) if embedded else None
            model_s = time.perf_counter() - started
        return ShardOutput(shard=task.shard, positions=np.asarray(task.positions, dtype=np.int64),
                           content_hashes=hashes, skip_reasons=reasons, features=features,
                           probabilities=probabilities, embeddings=embeddings, n_decoded=n_decoded,
                           model_s=model_s, forward_s=forward_s)


#: Decoded pixels held before their features are computed together (bounds the memory of a shard without a
#: model: about 3 bytes a pixel, plus the float work arrays of one stack).
FEATURE_BATCH_PIXELS = 16_000_000


_BLAS = []  # the threadpoolctl controller of this process, found once (finding the libraries takes ~5 ms)


class _one_blas_thread:
    """Numpy's BLAS on one thread while a shard is processed: the products of a stack are small, and BLAS
    threads spinning beside worker processes (or other programs) on a busy machine cost more than they give."""

    def __enter__(self):
        self.limits = None
        if not _BLAS:
            try:
                from threadpoolctl import ThreadpoolController

                _BLAS.append(ThreadpoolController())
            except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
                _BLAS.append(None)
        if _BLAS[0] is not None:
            self.limits = _BLAS[0].limit(limits=1, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self.limits is not None:
            self.limits.restore_original_limits()
        return False


def _feature_columns(decoded: list) -> dict:
    """``content_hash``, the pixel attributes and the perceptual hashes (``image_`` prefixed) of decoded images,
    computed for the whole list at once: a dict of columns."""
    from audit.analysis.hashing import HASH_NAMES, compute_perceptual_hashes_batch
    from audit.analysis.image_properties import PROPERTY_COLUMNS, compute_image_properties_batch

    rgb = [image.rgb for image in decoded]
    columns = {"content_hash": np.array([image.content_hash for image in decoded], dtype=object)}
    properties = compute_image_properties_batch(rgb, [image.mode for image in decoded])
    columns.update((name, properties[name]) for name in PROPERTY_COLUMNS)
    # prefixed like every engine-computed column, so a manifest column named "phash" cannot collide
    hashes = compute_perceptual_hashes_batch(rgb)
    columns.update((f"image_{name}", hashes[name]) for name in HASH_NAMES)
    return columns


def concat_columns(parts: list) -> dict | None:
    """One dict of feature columns from several (None when there is none or no rows)."""
    parts = [part for part in parts if part is not None and len(part["content_hash"])]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def as_frame(columns: dict | None):
    """The DataFrame of a dict of feature columns (None stays None)."""
    if columns is None:
        return None
    import pandas as pd

    return pd.DataFrame(columns)


def _hash_file(path: str) -> str | None:
    """sha256 of a file's bytes (None when it cannot be read: the decode path names the problem)."""
    from audit.io.images import MAX_FILE_BYTES, read_whole

    try:
        with open(path, "rb", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_FILE_BYTES:
                return None
            data = read_whole(handle, size)
    except OSError:
        return None
    if not data or len(data) > MAX_FILE_BYTES:
        return None
    return hashlib.sha256(data).hexdigest()


def _fault_injection(path: str) -> None:
    """Test hook: ``IMAGEFAIR_TEST_CRASH_ON=<file name>`` kills the worker process reading that file, as a
    crashing decoder would (used by the tests of worker death; never set it otherwise)."""
    target = os.environ.get("IMAGEFAIR_TEST_CRASH_ON")
    if target and os.path.basename(path) == target and os.environ.get("IMAGEFAIR_WORKER") == "1":
        os._exit(70)


# -- the reduce side ------------------------------------------------------------------------------------------
@dataclass
class StageResult:
    """The per-image stage of a whole table, assembled in table order.

    Attributes
    ----------
    kept : DataFrame
        Rows that decoded, with ``content_hash``, pixel attributes and perceptual hash columns.
    skipped : list of SkipEntry
    raw_probabilities : ndarray or None
        ``(n_kept, K)`` float32 model outputs (model class order), in memory or an on-disk memmap.
    embeddings : ndarray or None
    n_decoded, n_from_cache : int
    """

    kept: pd.DataFrame
    skipped: list
    raw_probabilities: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    n_decoded: int = 0
    n_from_cache: int = 0
    n_shards: int = 0
    work_dir: Path | None = None
    extra: dict = field(default_factory=dict)


def run_stage(table: pd.DataFrame, *, spec: StageSpec, executor, store_root: str | os.PathLike | None,
              progress=None, n_classes: int | None = None, work_dir: str | os.PathLike | None = None,
              model=None) -> StageResult:
    """Run the per-image stage over ``table`` with ``executor`` and assemble the results.

    Parameters
    ----------
    table : DataFrame
        The loaded manifest (``path``, ``row``...).
    spec : StageSpec
    executor : object
        ``executor.map(processor_factory, tasks)`` yields :class:`ShardOutput` (any order);
        see :mod:`audit.pipeline.executors`.
    store_root : path or None
        Feature cache folder; None = a temporary store deleted by :func:`cleanup`.
    n_classes : int, optional
        Model outputs per image (known from the model's class list), for the on-disk array.
    """
    temporary = None
    if store_root is None:
        temporary = make_scratch_dir("stage", dir=work_dir)
    try:
        return _run_stage(table, spec=spec, executor=executor, store_root=temporary or store_root,
                          temporary=temporary, progress=progress, n_classes=n_classes, work_dir=work_dir,
                          model=model)
    except BaseException:
        if temporary is not None:  # an error or an interrupt mid-stage: the temporary store goes now
            shutil.rmtree(temporary, ignore_errors=True)
        raise


def _run_stage(table: pd.DataFrame, *, spec: StageSpec, executor, store_root, temporary, progress, n_classes,
               work_dir, model) -> StageResult:
    import pandas as pd

    store = FeatureStore(store_root, feature_key=spec.feature_key, output_key=spec.output_key,
                         keep_features=temporary is None)
    known = store.known_hashes()
    tasks = plan_shards(table, shard_images=SHARD_IMAGES)
    n = len(table)
    content_hashes = np.empty(n, dtype=object)
    reasons = np.empty(n, dtype=object)
    n_decoded = 0
    model_s = forward_s = 0.0
    done = 0
    if progress is not None:
        progress("reading images", 0, n)
    computed = []  # feature columns computed in this run (arrays), kept so they need not be read back
    for output in executor.map(spec, known, tasks, model=model):
        store.write(output)
        if output.features is not None and len(output.features["content_hash"]):
            computed.append(output.features)
        content_hashes[output.positions] = output.content_hashes
        reasons[output.positions] = output.skip_reasons
        n_decoded += output.n_decoded
        model_s += output.model_s
        forward_s += output.forward_s
        done += len(output.positions)
        if progress is not None:
            progress("reading images", done, n)
    keep = np.array([r is None for r in reasons], dtype=bool)
    rows = table["row"].tolist() if "row" in table.columns else list(range(n))
    paths = table["path"].tolist()
    skipped = [SkipEntry(None if rows[i] is None else int(rows[i]), str(paths[i]), reasons[i])
               for i in np.flatnonzero(~keep)]
    kept = table.loc[keep].reset_index(drop=True)
    kept_hashes = np.asarray(content_hashes[keep], dtype=object)  # of str: every kept image was hashed
    features, n_missing = _features_in_order(store, computed, kept_hashes)
    if len(kept) and n_missing:
        raise RuntimeError(f"{n_missing} images have no stored features (the feature store at "
                           f"{store.root} was changed during the run)")
    kept = pd.concat([kept, features], axis=1)
    del features
    raw = embeddings = None
    if spec.output_key and len(kept):
        k = n_classes
        if k is None:
            raise ValueError("n_classes is needed to assemble model outputs")
        shape = (len(kept), k)
        if shape[0] * shape[1] > IN_MEMORY_PROBABILITIES:
            folder = make_scratch_dir("probabilities", dir=work_dir)
            path = folder / "probabilities.npy"
            created = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
            del created  # unmapped: the header is written, the data are zeros
            # each part is written through a fresh map that is closed at once: a map of the whole file kept
            # open would keep every written page resident (the matrix is 5 GB at 1.28M images x 1,000 classes)
            filling = _RowsOnDisk(path, shape)
            raw = np.load(path, mmap_mode="r", allow_pickle=False)  # a handle: its pages are read by no one
            # the on-disk array is deleted with the last reference to it (after the audit folder is written)
            weakref.finalize(raw, shutil.rmtree, str(folder), True)
            result_dir = folder
        else:
            raw = np.zeros(shape, dtype=np.float32)
            result_dir = None
        width = store.embedding_width()
        embeddings = np.zeros((len(kept), width), dtype=np.float32) if width else None
        found = store.read_outputs(kept_hashes, out=raw if result_dir is None else filling, embeddings_out=embeddings)
        if not found.all():
            raise RuntimeError(f"{int((~found).sum())} images have no stored model outputs (the feature store at "
                               f"{store.root} was changed during the run)")
    else:
        result_dir = None
    return StageResult(kept=kept, skipped=skipped, raw_probabilities=raw, embeddings=embeddings,
                       n_decoded=n_decoded, n_from_cache=int(keep.sum()) - n_decoded, n_shards=len(tasks),
                       work_dir=temporary, extra={"probabilities_dir": result_dir, "model_s": round(model_s, 3),
                                               "forward_s": round(forward_s, 3)})


class _RowsOnDisk:
    """``out`` of :meth:`FeatureStore.read_outputs` for a ``.npy`` file: each assignment maps the file, writes
    the rows and unmaps it, so written pages are the page cache's, not this process's resident memory."""

    def __init__(self, path: Path, shape: tuple):
        self.path = path
        self.shape = shape

    def __setitem__(self, rows, values) -> None:
        target = np.load(self.path, mmap_mode="r+", allow_pickle=False)
        target[rows] = values
        del target  # the last reference: unmapped now (the written data stay in the file)


def _features_in_order(store: FeatureStore, computed: list, hashes: np.ndarray) -> tuple[pd.DataFrame, int]:
    """The feature frame of ``hashes`` (in that order; a hash may repeat; ``content_hash`` first) from the
    columns computed in this run (``computed``, dicts of arrays; emptied here) and, for the others (cache
    hits), the store; and the number of ``hashes`` found in neither (their rows are missing values).

    Each column is gathered once from one array of the distinct rows, so the frame is built with about two
    copies of the features in memory (at 1.28M images the features are about 0.4 GB)."""
    import pandas as pd

    wanted = pd.Index(hashes)
    have = concat_columns(computed)
    computed.clear()
    missing = wanted.unique() if have is None else wanted.unique().difference(pd.Index(have["content_hash"]))
    if len(missing):
        stored = store.find_features(missing.to_numpy(dtype=object))
        if len(stored):
            stored_columns = {name: stored[name].to_numpy() for name in stored.columns}
            del stored
            if have is None:
                have = stored_columns
            else:
                have = {name: np.concatenate([have[name], stored_columns[name]]) if name in stored_columns
                        else have[name] for name in have}
            del stored_columns
    if have is None:
        return pd.DataFrame({"content_hash": pd.Series(hashes, dtype=object)}), len(hashes)
    index = pd.Index(have["content_hash"])
    first = ~index.duplicated()  # a hash stored twice: its first copy
    if not first.all():
        have = {name: values[first] for name, values in have.items()}
        index = index[first]
    position = index.get_indexer(wanted)
    found = position >= 0
    columns = {"content_hash": pd.Index(hashes, name="content_hash")}
    for name in list(have):
        values = have.pop(name)
        if name == "content_hash":
            continue
        if found.all():
            columns[name] = values[position]
        else:  # the rows of hashes found nowhere are missing values, as a reindex makes them
            columns[name] = pd.Series(values).reindex(position).to_numpy()
    frame = pd.DataFrame({name: np.asarray(values) if name != "content_hash" else values
                          for name, values in columns.items()})
    return frame, int((~found).sum())


def cleanup(result: StageResult) -> None:
    """Delete the temporary store of a run without cache (the on-disk probabilities stay until the end)."""
    if result.work_dir is not None:
        shutil.rmtree(result.work_dir, ignore_errors=True)
