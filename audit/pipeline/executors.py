"""Executors of the per-image stage: the same shards, in-process, in local worker processes, or on Ray.

Every executor has ``map(spec, known, tasks)`` yielding one :class:`~audit.pipeline.perimage.ShardOutput`
per :class:`~audit.pipeline.perimage.ShardTask`; the reduce side does not care which one ran. Shards and
model batches are cut the same way everywhere, so the results are the same (``images.parquet`` identical,
probabilities equal to float rounding of the runtime).

- :class:`LocalExecutor` with ``workers=1``: in the calling process. With ``workers > 1``: that many
  worker processes (``spawn``, so a model loaded in the parent is never forked), each with its own model
  copy and one inference thread; at most two shards per worker in flight (memory bounded by shards).
  A worker process that dies (a crash inside a decoder) does not lose its shard: the shard is re-run one
  image per task in fresh processes, and the image that kills its process becomes a counted skip
  (:data:`~audit.pipeline.perimage.SKIP_WORKER_DIED`).
- :class:`RayExecutor`: the shards as a Ray Dataset, ``map_batches`` over an actor pool whose actors hold
  the model (loaded once per actor); without an address it starts a local Ray instance and stops it
  afterwards, with ``auto`` or ``HOST:PORT`` it joins a running cluster (``ray start --head``). Results come
  back to the driver through Ray's object store, so the cluster needs no shared file system for them (the
  image files themselves must be readable at the same paths on every node).
"""
from __future__ import annotations

import json
import os
import time
from collections import deque

from audit.errors import InputError
from audit.pipeline.perimage import (SKIP_WORKER_DIED, ShardOutput, ShardProcessor, ShardTask, as_frame,
                                     concat_columns)

ERROR_RAY_MISSING = ("--executor ray needs the ray package, which is not installed: pip install 'imagefair[ray]' "
                     "(or pip install 'ray[data]'), or use --executor local")
ERROR_RAY_UNREACHABLE = ("cannot reach the Ray cluster at {address}: {reason}; start it with `ray start --head` "
                         "(or check the address), or leave out --ray-address to start a local Ray instance")
ERROR_WORKERS = "--workers must be a positive integer, got {value!r}"
ERROR_EXECUTOR = "--executor must be local or ray, got {value!r}"

EXECUTORS = ("local", "ray")


def default_workers() -> int:
    """All cores of this machine (``os.sched_getaffinity`` where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def make_executor(name: str = "local", *, workers: int | None = None, ray_address: str | None = None):
    """The executor named by ``--executor`` (``local`` or ``ray``)."""
    if name not in EXECUTORS:
        raise InputError(ERROR_EXECUTOR.format(value=name))
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise InputError(ERROR_WORKERS.format(value=workers))
    if name == "ray":
        return RayExecutor(workers=workers, address=ray_address)
    return LocalExecutor(workers=workers or default_workers())


# -- local ------------------------------------------------------------------------------------------------------
_PROCESSORS: dict = {}  # in a worker process: (spec, known) -> its ShardProcessor (one at a time)


def _init_worker(environment: dict) -> None:
    """Worker start: the caller's ``IMAGEFAIR_*`` settings, then the imports a shard needs (done while the
    caller still loads the manifest, when the pool was started early)."""
    os.environ.update(environment)
    os.environ["IMAGEFAIR_WORKER"] = "1"
    import audit.analysis.hashing  # noqa: F401
    import audit.analysis.image_properties  # noqa: F401
    import audit.io.images  # noqa: F401
    import audit.model.sidecar  # noqa: F401
    from PIL import Image
    from scipy.sparse import _sparsetools  # noqa: F401 - the resizes of the hashes (imported on first use)

    from audit.pipeline.perimage import _one_blas_thread

    Image.init()  # every decoder plugin now, not on the first file
    with _one_blas_thread():  # finds the BLAS libraries once (threadpoolctl)
        pass


def _run_in_worker(spec, known, task: ShardTask) -> ShardOutput:
    key = (spec, getattr(known, "path", None))
    processor = _PROCESSORS.get(key)
    if processor is None:
        _PROCESSORS.clear()
        if spec.threads:
            os.environ["IMAGEFAIR_NUM_THREADS"] = str(spec.threads)
        processor = _PROCESSORS[key] = ShardProcessor(spec, known)
    return processor(task)


def _ready() -> bool:
    return True


class _main_module_hidden:
    """Hide ``__main__``'s ``__spec__`` and ``__file__`` while worker processes start (spawn would re-run it)."""

    def __enter__(self):
        import sys

        self.main = sys.modules.get("__main__")
        self.saved = {}
        for name in ("__spec__", "__file__"):
            if self.main is not None and name in vars(self.main):
                self.saved[name] = vars(self.main)[name]
        if self.main is not None:
            self.main.__spec__ = None
            vars(self.main).pop("__file__", None)
        return self

    def __exit__(self, *exc):
        if self.main is not None:
            for name, value in self.saved.items():
                setattr(self.main, name, value)
        return False


class LocalExecutor:
    """The per-image stage on this machine: in-process (``workers=1``) or in worker processes.

    :meth:`prestart` starts the worker processes early (the pipeline calls it before reading the manifest),
    so their start-up and imports overlap the manifest and model loading instead of delaying the first shard.
    """

    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = int(workers)
        self.startup_s = 0.0
        self._started = None  # (pool, ready futures) of prestart()
        self._retiring: list = []  # pools told to stop whose processes may still be exiting (joined by close())

    def describe(self) -> dict:
        return {"executor": "local", "workers": self.workers, "startup_s": round(self.startup_s, 3)}

    def prestart(self) -> None:
        """Start the worker processes now, without waiting for them (no-op with one worker)."""
        if self.workers > 1 and self._started is None:
            self._started = self._start_pool(self.workers)

    def close(self) -> None:
        """Stop worker processes started by :meth:`prestart` and not used, and wait for the processes of
        finished maps to exit."""
        if self._started is not None:
            self._started[0].shutdown(wait=True, cancel_futures=True)
            self._started = None
        while self._retiring:
            self._retiring.pop().shutdown(wait=True)

    def map(self, spec, known, tasks, *, model=None):
        tasks = list(tasks)
        # one shard (a small data set) is not worth starting processes for
        if min(self.workers, len(tasks)) <= 1:
            self.close()
            processor = ShardProcessor(spec, known, model=model)
            for task in tasks:
                yield processor(task)
            return
        yield from self._map_processes(spec, known, tasks)

    @staticmethod
    def _start_pool(workers):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        environment = {k: v for k, v in os.environ.items() if k.startswith("IMAGEFAIR_")}
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(environment,))
        # Start every worker now, with the main module hidden: a spawned process would otherwise re-import
        # the caller's main script (a user script without a __main__ guard, or the Streamlit runner).
        with _main_module_hidden():
            ready = [pool.submit(_ready) for _ in range(workers)]
        return pool, ready

    def _pool(self, workers):
        """A pool of ``workers`` started processes: the one :meth:`prestart` began, or a new one."""
        started = time.perf_counter()
        if self._started is not None and workers == self.workers:
            (pool, ready), self._started = self._started, None
        else:
            self.close()
            pool, ready = self._start_pool(workers)
        for future in ready:
            future.result()
        self.startup_s += time.perf_counter() - started  # what the stage waited for its workers
        return pool

    def _map_processes(self, spec, known, tasks):
        import shutil
        from concurrent.futures.process import BrokenProcessPool

        from audit.io.scratch import make_scratch_dir
        from audit.pipeline.perimage import KnownHashes

        folder = None
        if known:  # the workers map one sorted file instead of unpickling a set each
            folder = make_scratch_dir("known")
            known = KnownHashes.write(known, folder)
        pending_tasks = deque(tasks)
        broken: list[ShardTask] = []
        pool = self._pool(min(self.workers, max(1, len(tasks))))
        try:
            in_flight: deque = deque()
            while pending_tasks or in_flight:
                while pending_tasks and len(in_flight) < 2 * self.workers:
                    task = pending_tasks.popleft()
                    in_flight.append((task, pool.submit(_run_in_worker, spec, known, task)))
                task, future = in_flight.popleft()
                try:
                    yield future.result()
                except BrokenProcessPool:
                    # a worker died: this shard and every shard in flight are re-run below, image by image
                    broken.append(task)
                    broken.extend(t for t, _ in in_flight)
                    in_flight.clear()
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = self._pool(min(self.workers, max(1, len(pending_tasks))))
            for task in broken:
                yield self._isolate(spec, known, task)
        finally:
            # The workers are told to stop without waiting for them: their exit (interpreter teardown, about
            # 0.2 s) overlaps what the caller does with the results; close() waits for them.
            pool.shutdown(wait=False, cancel_futures=True)
            self._retiring.append(pool)
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    def _isolate(self, spec, known, task: ShardTask) -> ShardOutput:
        """Re-run a shard whose worker died, one image per task; an image that kills its process is skipped."""
        import numpy as np
        import pandas as pd
        from concurrent.futures.process import BrokenProcessPool

        parts: list[ShardOutput] = []
        pool = self._pool(1)
        try:
            for position, path, row in zip(task.positions, task.paths, task.rows):
                single = ShardTask(shard=task.shard, positions=[position], paths=[path], rows=[row])
                try:
                    parts.append(pool.submit(_run_in_worker, spec, known, single).result())
                except BrokenProcessPool:
                    parts.append(ShardOutput(shard=task.shard, positions=np.array([position], dtype=np.int64),
                                             content_hashes=[None], skip_reasons=[SKIP_WORKER_DIED]))
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = self._pool(1)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return _merge(task.shard, parts)


def _merge(shard: int, parts: list[ShardOutput]) -> ShardOutput:
    import numpy as np

    features = concat_columns([p.features for p in parts])
    probabilities = [p.probabilities for p in parts if p.probabilities is not None]
    embeddings = [p.embeddings for p in parts if p.embeddings is not None]
    return ShardOutput(
        shard=shard, positions=np.concatenate([p.positions for p in parts]),
        content_hashes=[h for p in parts for h in p.content_hashes],
        skip_reasons=[r for p in parts for r in p.skip_reasons],
        features=features,
        probabilities=np.concatenate(probabilities) if probabilities else None,
        embeddings=np.concatenate(embeddings) if embeddings else None,
        n_decoded=sum(p.n_decoded for p in parts), model_s=sum(p.model_s for p in parts),
        forward_s=sum(p.forward_s for p in parts))


# -- ray --------------------------------------------------------------------------------------------------------
def _import_ray():
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError(ERROR_RAY_MISSING) from None
    import ray

    return ray


class _RayShardActor:
    """An actor of the pool: one :class:`ShardProcessor` (the model loaded once per actor)."""

    def __init__(self, spec, known):
        os.environ["IMAGEFAIR_WORKER"] = "1"
        if spec.threads:
            os.environ["IMAGEFAIR_NUM_THREADS"] = str(spec.threads)
        self.processor = ShardProcessor(spec, known)

    def __call__(self, batch: dict) -> dict:
        import pickle  # noqa: F401 - results travel as Arrow columns, never pickled by us
        import numpy as np

        outputs = {"shard": [], "positions": [], "content_hashes": [], "skip_reasons": [], "features": [],
                   "probabilities": [], "embeddings": [], "n_decoded": [], "model_s": [],
                   "forward_s": []}
        for shard, positions, paths, rows in zip(batch["shard"], batch["positions"], batch["paths"], batch["rows"]):
            task = ShardTask(shard=int(shard), positions=[int(p) for p in positions], paths=json.loads(str(paths)),
                             rows=[None if r is None or r < 0 else int(r) for r in rows])
            output = self.processor(task)
            outputs["shard"].append(output.shard)
            outputs["positions"].append(output.positions)
            outputs["content_hashes"].append(np.array(["" if h is None else h for h in output.content_hashes]))
            outputs["skip_reasons"].append(np.array(["" if r is None else r for r in output.skip_reasons]))
            outputs["features"].append(_frame_to_bytes(as_frame(output.features)))
            outputs["probabilities"].append(_array_to_bytes(output.probabilities))
            outputs["embeddings"].append(_array_to_bytes(output.embeddings))
            outputs["n_decoded"].append(output.n_decoded)
            outputs["model_s"].append(output.model_s)
            outputs["forward_s"].append(output.forward_s)
        return {key: _column(values) for key, values in outputs.items()}


def _column(values):
    import numpy as np

    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


def _frame_to_bytes(frame) -> bytes:
    """A features frame as Parquet bytes (typed, no pickle)."""
    if frame is None:
        return b""
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _frame_from_bytes(data: bytes):
    if not data:
        return None
    import io

    import pandas as pd

    return pd.read_parquet(io.BytesIO(data))


def _columns_from_bytes(data: bytes) -> dict | None:
    frame = _frame_from_bytes(data)
    return None if frame is None else {name: frame[name].to_numpy() for name in frame.columns}


def _array_to_bytes(array) -> bytes:
    if array is None:
        return b""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _array_from_bytes(data: bytes):
    if not data:
        return None
    import io

    import numpy as np

    return np.load(io.BytesIO(data), allow_pickle=False)


def _output_from_batch(batch, i: int) -> ShardOutput:
    import numpy as np

    return ShardOutput(shard=int(batch["shard"][i]), positions=np.asarray(batch["positions"][i], dtype=np.int64),
                       content_hashes=[h or None for h in batch["content_hashes"][i].tolist()],
                       skip_reasons=[r or None for r in batch["skip_reasons"][i].tolist()],
                       features=_columns_from_bytes(batch["features"][i]),
                       probabilities=_array_from_bytes(batch["probabilities"][i]),
                       embeddings=_array_from_bytes(batch["embeddings"][i]),
                       n_decoded=int(batch["n_decoded"][i]), model_s=float(batch["model_s"][i]),
                       forward_s=float(batch["forward_s"][i]))


#: Seconds to wait for a TCP connection to the cluster's head before giving up (Ray itself waits minutes).
CONNECT_TIMEOUT_S = 5.0


def _check_reachable(address: str) -> None:
    """Fail fast (one line) when the cluster's head does not answer: Ray would retry for minutes."""
    import socket

    resolved = address
    if address == "auto":
        resolved = os.environ.get("RAY_ADDRESS", "")
        if not resolved:
            try:
                with open(os.path.join(os.environ.get("RAY_TMPDIR", "/tmp"), "ray", "ray_current_cluster")) as handle:
                    resolved = handle.read().strip()
            except OSError:
                resolved = ""
        if not resolved:
            raise InputError(ERROR_RAY_UNREACHABLE.format(address=address, reason="no running Ray cluster found on "
                                                                                   "this machine"))
    if resolved.startswith("ray://"):
        resolved = resolved[len("ray://"):]
    host, _, port = resolved.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(ERROR_RAY_UNREACHABLE.format(address=address, reason="expected auto or HOST:PORT"))
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InputError(ERROR_RAY_UNREACHABLE.format(address=address, reason=f"{resolved}: {reason}")) from None


class RayExecutor:
    """The per-image stage on Ray Data (a local instance, or a cluster given by ``address``)."""

    name = "ray"

    def __init__(self, *, workers: int | None = None, address: str | None = None):
        self.workers = workers
        self.address = address
        self._ray = _import_ray()
        self._started = False
        self.startup_s = 0.0

    def describe(self) -> dict:
        return {"executor": "ray", "workers": self.workers, "ray_address": self.address,
                "startup_s": round(self.startup_s, 3)}

    def _connect(self):
        ray = self._ray
        if ray.is_initialized():
            return
        kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if self.address:
            _check_reachable(self.address)
            try:
                ray.init(address=self.address, **kwargs)
                self._started = True  # our connection: ray.shutdown() disconnects it, the cluster keeps running
            except Exception as error:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError by version
                reason = " ".join(str(error).split())[:300] or type(error).__name__
                raise InputError(ERROR_RAY_UNREACHABLE.format(address=self.address, reason=reason)) from None
        else:
            # workers of the instance we start import the same imagefair as this process
            package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)
            ray.init(num_cpus=self.workers or None, runtime_env={"env_vars": {"PYTHONPATH": path}}, **kwargs)
            self._started = True

    def close(self):
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False

    def map(self, spec, known, tasks, *, model=None):
        import numpy as np

        ray = self._ray
        started = time.perf_counter()
        self._connect()
        self.startup_s += time.perf_counter() - started
        try:
            tasks = list(tasks)
            if not tasks:
                return
            resources = ray.cluster_resources()
            size = self.workers or max(1, int(resources.get("CPU", 1)))
            size = max(1, min(size, len(tasks)))
            items = [{"shard": t.shard, "positions": np.asarray(t.positions, dtype=np.int64),
                      "paths": json.dumps(t.paths),  # a string column (Arrow has no object arrays)
                      "rows": np.asarray([-1 if r is None else int(r) for r in t.rows], dtype=np.int64)}
                     for t in tasks]
            context = ray.data.DataContext.get_current()
            context.execution_options.preserve_order = True
            for name, value in (("enable_progress_bars", False), ("print_on_execution_start", False),
                                ("enable_auto_log_stats", False)):
                if hasattr(context, name):
                    setattr(context, name, value)
            import logging

            for name in ("ray", "ray.data"):
                logging.getLogger(name).setLevel(logging.WARNING)
            dataset = ray.data.from_items(items, override_num_blocks=len(items))
            try:
                from ray.data import ActorPoolStrategy

                compute = {"compute": ActorPoolStrategy(size=size)}
            except ImportError:  # pragma: no cover - older Ray
                compute = {"concurrency": size}
            mapped = dataset.map_batches(_RayShardActor, batch_size=1, num_cpus=1, batch_format="numpy",
                                         fn_constructor_kwargs={"spec": spec, "known": known},
                                         max_restarts=0, max_task_retries=0, **compute)
            done: set = set()
            try:
                for batch in mapped.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=2):
                    for i in range(len(batch["shard"])):
                        output = _output_from_batch(batch, i)
                        done.add(output.shard)
                        yield output
            except Exception as error:  # noqa: BLE001 - an actor died (a crash in a decoder) or the task failed
                if isinstance(error, (KeyboardInterrupt, InputError)):
                    raise
                # the shards not received are re-run here one image per process: an image that kills its
                # process becomes a counted skip, the others are kept (as on the local executor)
                local = LocalExecutor(workers=1)
                for task in tasks:
                    if task.shard not in done:
                        yield local._isolate(spec, known, task)
        finally:
            self.close()
