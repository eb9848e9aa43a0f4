"""Content-addressed cache of analysis-step outputs (issue 14): a re-run on identical inputs loads them.

:func:`audit.pipeline.steps.run_steps` asks a :class:`StepCache` for each step registered with
``cache=True`` (the expensive ones). The key of a step is the sha256 of everything its output can depend on:

- the step's name and function, :data:`STEP_CACHE_VERSION`, a fingerprint of the code (the bytes of every
  ``audit/**/*.py``) and the versions of the numerical packages;
- the settings (:meth:`AuditConfig.settings`, less :data:`RUNTIME_SETTINGS`, which say where and how the run
  happens, never what a step computes), the seed among them;
- every field of the :class:`~audit.pipeline.steps.Context` a step can read: classes, label codes, the group
  frames and attribute lists, the probabilities (array bytes), the per-image prediction columns, the
  embeddings, the reference proportions, the label-noise source; the current ``context.images`` (every
  column, also those added by earlier steps: pandas' row hashes, missing-value masks, names, dtypes, index);
  and the sections of the steps that ran before (their JSON text).

The parts shared by every step (probabilities, embeddings, groups...) are hashed once per run; image
columns once each, when they appear. Not cached (every step runs as before): probabilities streamed as a
chunk source (their bytes would need one more pass over the file) and audits with ``--annotations`` (their
parsed form is not hashed).

An entry is a folder ``<cache-dir>/steps/<key[:2]>/<key>/``: ``sections.json`` and ``entry.json`` (metrics,
the errors the step appended to ``context.errors`` while it ran, the column types) as JSON (NaN and
Infinity kept as tokens, so numbers round-trip exactly), group rows, extra files and image columns as
Parquet; never pickle. It is written in a temporary folder and renamed into place, so an entry is whole or
absent; an unreadable, truncated or inconsistent entry is a miss (removed, recomputed), never an error.

An output is stored only when it round-trips exactly: sections of plain JSON types (dicts with string keys,
lists or tuples, str, int, float, bool, None; numpy integers, booleans and float64 are written as the equal
Python values, tuples come back as lists), image columns as 1-D numpy or pandas arrays, group rows and files
as frames with string column names; every table is decoded again before it is written and compared value by
value and type by type (None is not NaN). Anything else is computed on every run, never approximated.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["RUNTIME_SETTINGS", "STEP_CACHE_VERSION", "EncodedOutput", "LoadedOutput", "NotCacheable", "StepCache", "code_fingerprint",
           "encode_output", "open_step_cache"]

#: Bumped whenever what is stored (or how it is keyed) changes, so old entries stop matching.
STEP_CACHE_VERSION = 1
#: Settings that never change a step's output: where the run happens, the cache itself, and the policy (its
#: multiple-comparison family and verdicts are applied after the steps, by passes that always run).
RUNTIME_SETTINGS = ("cache_dir", "use_cache", "executor", "workers", "ray_address", "batch_size", "policy_file")
#: Packages whose behaviour decides the numbers of a step (their versions are part of the code fingerprint).
_NUMERIC_PACKAGES = ("numpy", "pandas", "scipy", "scikit-learn", "fairlearn", "pyarrow")
_ENTRY_FILE = "entry.json"
_SECTIONS_FILE = "sections.json"
_IMAGE_FILE = "image_columns.parquet"

_CODE_FINGERPRINT: str | None = None


def code_fingerprint() -> str:
    """sha256 of every ``audit/**/*.py`` (relative path and bytes) and the numerical packages' versions.

    Computed once per process: an edit to the engine (or an upgrade of numpy, pandas...) makes every entry
    a miss."""
    global _CODE_FINGERPRINT
    if _CODE_FINGERPRINT is None:
        from importlib import metadata

        root = Path(__file__).resolve().parents[1]  # the audit package
        digest = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
        for name in _NUMERIC_PACKAGES:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                version = None
            digest.update(f"{name}={version}\0".encode("utf-8"))
        _CODE_FINGERPRINT = digest.hexdigest()
    return _CODE_FINGERPRINT


class NotCacheable(Exception):
    """An output (or an input) that cannot be stored or hashed faithfully: the step is computed, not cached."""


# -- hashing ---------------------------------------------------------------------------------------------------
def _digest_default(value):
    """Type-tagged JSON for the key (never for storage): numpy scalars and arrays keep their dtype."""
    if isinstance(value, np.generic):
        return ["numpy", value.dtype.str, value.item()]
    if isinstance(value, np.ndarray):
        return ["ndarray", value.dtype.str, list(value.shape), value.tolist()]
    if isinstance(value, Path):
        return ["path", str(value)]
    raise NotCacheable(f"cannot hash a {type(value).__name__}")


def _digest_of_json(value) -> str:
    text = json.dumps(value, sort_keys=False, default=_digest_default, allow_nan=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _array_digest(values) -> str:
    """Numeric arrays: their bytes, dtype and shape; anything else through pandas' hashes."""
    if values is None:
        return "none"
    if isinstance(values, np.ndarray) and values.dtype != object:
        from audit.io.arrays import NpyChunkSource, chunk_source_of

        # a memory map of a whole .npy file is read in chunks with file reads (no page of a large on-disk
        # matrix stays resident); the bytes, and so the digest, are those of the whole array
        source = chunk_source_of(values) if isinstance(values, np.memmap) else None
        if not isinstance(source, NpyChunkSource):
            values = np.ascontiguousarray(values)
        chunks = source() if isinstance(source, NpyChunkSource) else [values]
        digest = hashlib.sha256(f"{values.dtype.str}{values.shape}".encode("ascii"))
        for chunk in chunks:
            digest.update(memoryview(np.ascontiguousarray(chunk)).cast("B"))
        return digest.hexdigest()
    if isinstance(values, (np.ndarray, pd.api.extensions.ExtensionArray)) and np.ndim(values) == 1:
        return _series_digest(pd.Series(values, copy=False))
    raise NotCacheable(f"cannot hash a {type(values).__name__}")


def _series_digest(series: pd.Series) -> str:
    """Row hashes (pandas, values only), the missing-value mask (None and NaN hash alike) and the dtype."""
    try:
        hashes = pd.util.hash_pandas_object(series, index=False).to_numpy()
    except TypeError as error:  # unhashable values (lists, dicts...)
        raise NotCacheable(str(error)) from error
    digest = hashlib.sha256(str(series.dtype).encode("utf-8") + b"\0")
    digest.update(np.ascontiguousarray(hashes).tobytes())
    digest.update(np.packbits(series.isna().to_numpy(dtype=bool)).tobytes())
    if series.dtype == object:
        # pandas hashes an object column through str(): 1 and "1" would hash alike; their types do not
        digest.update("\0".join(type(v).__name__ for v in series.to_numpy()).encode("utf-8"))
    return digest.hexdigest()


def _frame_digest(frame: pd.DataFrame | None) -> str:
    if frame is None:
        return "none"
    if not isinstance(frame, pd.DataFrame):
        raise NotCacheable(f"cannot hash a {type(frame).__name__}")
    parts = [_index_digest(frame.index)]
    for position in range(frame.shape[1]):
        parts.append([str(frame.columns[position]), _series_digest(frame.iloc[:, position])])
    return _digest_of_json(parts)


def _index_digest(index: pd.Index) -> str:
    if isinstance(index, pd.RangeIndex):
        return f"range:{index.start}:{index.stop}:{index.step}"
    return "index:" + _series_digest(pd.Series(np.asarray(index, dtype=object), dtype=object))


# -- storing an output -------------------------------------------------------------------------------------------
_FAST_SCALARS = {str, int, float, bool, type(None)}


def _check_plain(value) -> None:
    """Raise :class:`NotCacheable` unless ``value`` is made of types that JSON gives back as equal values."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _FAST_SCALARS:
            continue
        if isinstance(item, dict):
            for key, inner in item.items():
                if type(key) is not str:
                    raise NotCacheable(f"a dict key of type {type(key).__name__}")
                if type(inner) not in _FAST_SCALARS:
                    stack.append(inner)
        elif isinstance(item, (list, tuple)):
            if not all(type(inner) in _FAST_SCALARS for inner in item):
                stack.extend(item)
        elif isinstance(item, (str, np.bool_, np.integer, np.float64)) or (
                isinstance(item, float) and not isinstance(item, np.floating)):
            continue
        else:
            raise NotCacheable(f"a value of type {kind.__name__}")


def _store_default(value):
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    raise NotCacheable(f"a value of type {type(value).__name__}")


def _dump(value) -> str:
    _check_plain(value)
    return json.dumps(value, default=_store_default, allow_nan=True, ensure_ascii=False, separators=(",", ":"))


def _column_kind(values) -> tuple[str, str]:
    """``("numpy" | "extension", dtype)`` of a 1-D array; anything else is not cacheable."""
    if isinstance(values, np.ndarray) and values.ndim == 1:
        return "numpy", values.dtype.str if values.dtype != object else "object"
    if isinstance(values, pd.api.extensions.ExtensionArray) and not isinstance(values, pd.arrays.NumpyExtensionArray):
        return "extension", str(values.dtype)
    raise NotCacheable(f"a column of type {type(values).__name__}")


def _to_arrow(values):
    import pyarrow as pa

    try:
        if isinstance(values, np.ndarray) and values.dtype == object:
            return pa.array(values.tolist())
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError) as error:
        raise NotCacheable(str(error)) from error


def _from_arrow(column, kind: str, dtype: str):
    if kind == "numpy" and dtype == "object":
        values = np.empty(len(column), dtype=object)
        values[:] = column.to_pylist()
        return values
    if kind == "numpy":
        if column.null_count:
            raise ValueError("a numpy column with missing values")
        return np.asarray(column.to_numpy(zero_copy_only=False)).astype(np.dtype(dtype), copy=False)
    # pandas arrays (str, Int64...) through pandas' own conversion; encode_output checked it gives them back
    return pd.Series(column.to_pandas(), copy=False).astype(dtype).array


def _same_object(left, right) -> bool:
    if type(left) is not type(right):
        return False
    try:
        return bool(left == right) or (left != left and right != right)
    except Exception:  # noqa: BLE001 - a value without a plain equality is not the same for our purpose
        return False


def _same_column(left, right) -> bool:
    """Exactly the same values and types (an object column compared value by value, None is not NaN)."""
    if type(left) is not type(right) or left.dtype != right.dtype or len(left) != len(right):
        return False
    if isinstance(left, np.ndarray):
        if left.dtype == object:
            return all(_same_object(a, b) for a, b in zip(left.tolist(), right.tolist()))
        return np.ascontiguousarray(left).tobytes() == np.ascontiguousarray(right).tobytes()
    if not bool(left.equals(right)):
        return False
    if isinstance(left.dtype, pd.StringDtype):  # strings and the dtype's one missing value: equals() is exact
        return True
    if left.dtype == object or getattr(left.dtype, "kind", "O") == "O":
        return all(_same_object(a, b) for a, b in zip(list(left), list(right)))
    return True


def _encode_columns(columns: dict) -> tuple[object, list]:
    """A Parquet-ready arrow table of 1-D columns and their spec ``[[name, kind, dtype], ...]``."""
    import pyarrow as pa

    names, arrays, spec = [], [], []
    for name, values in columns.items():
        if type(name) is not str:
            raise NotCacheable(f"a column name of type {type(name).__name__}")
        kind, dtype = _column_kind(values)
        arrow = _to_arrow(values)
        decoded = _from_arrow(arrow, kind, dtype)
        if not _same_column(values, decoded):
            raise NotCacheable(f"column {name!r} ({dtype}) does not round-trip")
        names.append(name)
        arrays.append(arrow)
        spec.append([name, kind, dtype])
    return pa.Table.from_arrays(arrays, names=names), spec


def _decode_columns(table, spec: list) -> dict:
    if table.column_names != [name for name, _, _ in spec]:
        raise ValueError("columns differ from the entry's spec")
    return {name: _from_arrow(table.column(name).combine_chunks(), kind, dtype) for name, kind, dtype in spec}


def _frame_columns(frame: pd.DataFrame) -> dict:
    if not isinstance(frame, pd.DataFrame) or not frame.columns.is_unique:
        raise NotCacheable("not a frame with unique column names")
    return {name: (frame[name].to_numpy() if isinstance(frame[name].dtype, np.dtype) else frame[name].array)
            for name in frame.columns}


def _frame_from_columns(columns: dict, *, columns_dtype: str) -> pd.DataFrame:
    frame = pd.DataFrame({name: pd.Series(values, dtype=values.dtype, copy=False) for name, values in columns.items()})
    frame.columns = pd.Index(list(columns), dtype=columns_dtype)
    return frame


def _encode_frame(frame: pd.DataFrame) -> tuple[object, dict]:
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.start != 0 or frame.index.step != 1:
        raise NotCacheable("a frame whose index is not 0..n-1")
    table, spec = _encode_columns(_frame_columns(frame))
    columns_dtype = str(frame.columns.dtype)
    decoded = _frame_from_columns(_decode_columns(table, spec), columns_dtype=columns_dtype)
    if list(decoded.dtypes.astype(str)) != list(frame.dtypes.astype(str)) or \
            decoded.columns.dtype != frame.columns.dtype or len(decoded) != len(frame):
        raise NotCacheable("a frame that does not round-trip")
    return table, {"columns": spec, "columns_dtype": columns_dtype, "n_rows": len(frame)}


@dataclass
class EncodedOutput:
    """A step's output ready to be written (and the JSON text of its sections, for later keys)."""

    sections_text: str
    entry: dict
    tables: dict = field(default_factory=dict)


def encode_output(output, errors: list) -> EncodedOutput:
    """Snapshot ``output`` (a :class:`~audit.pipeline.steps.StepOutput`) at once, before later passes mutate its
    sections; raise :class:`NotCacheable` when any part would not come back identical."""
    sections_text = _dump(output.sections)
    entry = {"metrics": json.loads(_dump(output.metrics)), "errors": json.loads(_dump(list(errors))),
             "group_rows": [], "files": {}, "image_columns": None}
    tables = {}
    for position, frame in enumerate(output.group_rows):
        name = f"group_rows_{position}.parquet"
        tables[name], spec = _encode_frame(frame)
        entry["group_rows"].append({"file": name, **spec})
    for position, (key, frame) in enumerate(output.files.items()):
        if type(key) is not str:
            raise NotCacheable("a file name that is not a string")
        name = f"file_{position}.parquet"
        tables[name], spec = _encode_frame(frame)
        entry["files"][key] = {"file": name, **spec}
    if output.image_columns:
        tables[_IMAGE_FILE], spec = _encode_columns(output.image_columns)
        lengths = {len(values) for values in output.image_columns.values()}
        entry["image_columns"] = {"file": _IMAGE_FILE, "columns": spec, "n_rows": lengths.pop() if len(lengths) == 1
                                  else None}
    return EncodedOutput(sections_text=sections_text, entry=entry, tables=tables)


def _decode_frame(folder: Path, spec: dict) -> pd.DataFrame:
    import pyarrow.parquet as pq

    table = pq.read_table(folder / spec["file"])
    frame = _frame_from_columns(_decode_columns(table, spec["columns"]), columns_dtype=spec["columns_dtype"])
    if len(frame) != spec["n_rows"]:
        raise ValueError("row count differs from the entry")
    return frame


@dataclass
class LoadedOutput:
    """A stored step output (the fields of :class:`~audit.pipeline.steps.StepOutput`), the errors the step
    appended while it ran, and its sections' JSON text."""

    sections: dict
    group_rows: list
    image_columns: dict
    metrics: dict
    files: dict
    errors: list
    sections_text: str


# -- the cache -------------------------------------------------------------------------------------------------
class StepCache:
    """Keys, loads and stores step outputs for one run (see the module docstring).

    Parameters
    ----------
    root : Path
        ``<cache-dir>/steps``.
    context : Context
        The run's context; its shared parts are hashed on the first :meth:`key`.
    """

    def __init__(self, root: Path, context):
        self.root = Path(root)
        self._context = context
        self._shared: str | None = None
        self._broken = False  # an input that cannot be hashed: nothing is cached this run
        self._columns: dict[str, str | None] = {}
        self._sections: list = []  # [step name, digest of its sections' JSON or None], in order

    # keys
    def _shared_digest(self) -> str:
        if self._shared is None:
            context = self._context
            settings = context.config.settings()
            for name in RUNTIME_SETTINGS:
                settings.pop(name, None)
            reference = context.reference
            parts = {
                "version": STEP_CACHE_VERSION, "code": code_fingerprint(), "settings": settings,
                "seed": getattr(context.config, "seed", None), "classes": list(context.classes),
                "label_codes": _array_digest(np.asarray(context.label_codes)),
                "groups": _frame_digest(context.groups), "all_groups": _frame_digest(context.all_groups),
                "group_attributes": list(context.group_attributes), "compared": list(context.compared),
                "constant": list(context.constant), "pixel_groups": list(context.pixel_groups),
                "probabilities": _array_digest(context.probabilities), "streamed": bool(context.streamed),
                "predicted": _array_digest(context.predicted), "confidence": _array_digest(context.confidence),
                "label_probability": _array_digest(context.label_probability),
                "label_rank": _array_digest(None if context.label_rank is None else np.asarray(context.label_rank)),
                "embeddings": _array_digest(context.embeddings),
                "label_noise_source": context.label_noise_source,
                "reference": _frame_digest(reference) if isinstance(reference, pd.DataFrame) or reference is None
                else _digest_of_json(reference),
            }
            self._shared = _digest_of_json(parts)
        return self._shared

    def _images_digest(self) -> str:
        images = self._context.images
        parts = [_index_digest(images.index)]
        for position, name in enumerate(images.columns):
            digest = self._columns.get(name)
            if digest is None:
                digest = self._columns[name] = _series_digest(images.iloc[:, position])
            parts.append([str(name), digest])
        return _digest_of_json(parts)

    def key(self, step) -> str | None:
        """The hex key of ``step`` (a :class:`~audit.pipeline.steps.Step`) now, or None when an input (or an
        earlier step's section) cannot be hashed: then the step is simply computed."""
        if self._broken or any(digest is None for _, digest in self._sections):
            return None
        try:
            function = getattr(step.function, "__module__", "") + "." + getattr(step.function, "__qualname__", "")
            return _digest_of_json({"step": step.name, "function": function, "shared": self._shared_digest(),
                                 "images": self._images_digest(), "sections": self._sections})
        except Exception:  # noqa: BLE001 - an input that cannot be hashed (NotCacheable or else): no caching
            self._broken = True
            return None

    def note_output(self, step_name: str, output, sections_text: str | None = None) -> None:
        """Record what a step (cached or not) added, for the keys of the steps after it: its sections' JSON and
        the digests of the image columns it set (``run_steps`` is the only writer of ``context.images``)."""
        if self._broken:
            return
        try:
            if sections_text is None:
                text = json.dumps(output.sections, default=_digest_default, allow_nan=True, separators=(",", ":"))
            else:
                text = sections_text
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        except (NotCacheable, TypeError, ValueError):
            digest = None
        self._sections.append([step_name, digest])
        for name in output.image_columns:
            self._columns.pop(name, None)  # hashed when the next key needs it

    # entries
    def _folder(self, key: str) -> Path:
        return self.root / key[:2] / key

    def load(self, key: str, step_name: str, n_images: int) -> LoadedOutput | None:
        """The entry ``key``, or None on a miss (a broken entry is removed so that the recomputed output can take
        its place)."""
        folder = self._folder(key)
        if not folder.is_dir():
            return None
        try:
            entry = json.loads((folder / _ENTRY_FILE).read_text("utf-8"))
            if entry.get("version") != STEP_CACHE_VERSION or entry.get("key") != key or entry.get("step") != step_name:
                raise ValueError("entry of another key")
            sections_text = (folder / _SECTIONS_FILE).read_text("utf-8")
            sections = json.loads(sections_text)
            metrics, errors = entry["metrics"], entry["errors"]
            if not isinstance(sections, dict) or not isinstance(metrics, dict) or not isinstance(errors, list):
                raise ValueError("malformed entry")
            group_rows = [_decode_frame(folder, spec) for spec in entry["group_rows"]]
            files = {name: _decode_frame(folder, spec) for name, spec in entry["files"].items()}
            image_columns = {}
            if entry["image_columns"] is not None:
                import pyarrow.parquet as pq

                spec = entry["image_columns"]
                if spec["n_rows"] != n_images:
                    raise ValueError("image columns of another length")
                table = pq.read_table(folder / spec["file"])
                if table.num_rows != n_images:
                    raise ValueError("image columns of another length")
                image_columns = _decode_columns(table, spec["columns"])
        except Exception:  # noqa: BLE001 - a truncated, garbled or partial entry is a miss, never an error
            shutil.rmtree(folder, ignore_errors=True)
            return None
        from audit.pipeline.cache_admin import touch

        touch(folder / _ENTRY_FILE)  # used now: `imagefair cache clear --older-than` keeps it
        return LoadedOutput(sections=sections, group_rows=group_rows, image_columns=image_columns, metrics=metrics,
                            files=files, errors=errors, sections_text=sections_text)

    def store(self, key: str, step_name: str, encoded: EncodedOutput) -> bool:
        """Write an entry atomically (a temporary folder renamed into place); False when it could not be written
        (a full disk, a read-only cache...): the run goes on without it."""
        import pyarrow.parquet as pq

        from audit.io.atomic import _umask

        folder = self._folder(key)
        temporary = None
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            temporary = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=folder.parent))
            for name, table in encoded.tables.items():
                pq.write_table(table, temporary / name)
            (temporary / _SECTIONS_FILE).write_text(encoded.sections_text, "utf-8")
            entry = {"version": STEP_CACHE_VERSION, "key": key, "step": step_name, **encoded.entry}
            (temporary / _ENTRY_FILE).write_text(json.dumps(entry, allow_nan=True, ensure_ascii=False), "utf-8")
            os.chmod(temporary, 0o777 & ~_umask())
            os.rename(temporary, folder)
            return True
        except Exception:  # noqa: BLE001 - the cache never fails a run
            # another run stored the same key meanwhile (the folder exists), or the cache cannot be written
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)
            return False


def open_step_cache(context, config) -> StepCache | None:
    """The step cache of a run, or None: ``use_cache`` off, probabilities streamed, or ``--annotations``."""
    if not getattr(config, "use_cache", False) or not hasattr(config, "settings"):
        return None
    if context.streamed or context.annotations is not None:
        return None
    from audit.model.cache import default_cache_dir

    cache_dir = getattr(config, "cache_dir", None)
    return StepCache((Path(cache_dir) if cache_dir else default_cache_dir()) / "steps", context)
