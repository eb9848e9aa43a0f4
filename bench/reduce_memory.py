"""Peak memory of the reduce side of ``run``, step by step (issue 14).

Runs the input adapter of ``run`` (with a feature cache, so a re-run decodes nothing), then every analysis
step, then writes the audit folder, and records for each stage the resident memory before it and the peak
(``VmHWM``) while it ran: the peak is reset before each stage by writing ``5`` to ``/proc/self/clear_refs``
(Linux), so each figure is that stage's own peak.

    python bench/reduce_memory.py --data MANIFEST --model MODEL --store CACHE/store --json OUT.json

``--store`` is an existing feature store (``<cache-dir>/store`` of an earlier run on the same data and
model); the step cache goes to a fresh temporary folder, so every step is computed.

``--synthetic N,K`` instead measures the steps on generated data: a per-image table of ``N`` rows (labels,
two group attributes) and an ``(N, K)`` float32 probabilities ``.npy`` written to ``--scratch`` (deleted
afterwards), 64-d embeddings, handed to the steps as the image path hands them (an on-disk matrix).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def status() -> dict:
    """``VmRSS``, ``VmHWM``, ``RssAnon`` (heap) and ``RssFile`` (mapped file pages) of this process, in MB."""
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


class Recorder:
    def __init__(self):
        self.rows = []

    def measure(self, name, function, *args, **kwargs):
        import gc

        gc.collect()
        before = status()["VmRSS"]
        reset_peak()
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            after = status()
            row = {"stage": name, "rss_before_mb": round(before), "peak_mb": round(after["VmHWM"]),
                   "growth_mb": round(after["VmHWM"] - before), "rss_after_mb": round(after["VmRSS"]),
                   "anon_after_mb": round(after["RssAnon"]), "file_after_mb": round(after["RssFile"]),
                   "s": round(time.perf_counter() - start, 2)}
            self.rows.append(row)
            print(json.dumps(row), flush=True)

    def wrap(self, name, function):
        def wrapped(*args, **kwargs):
            return self.measure(name, function, *args, **kwargs)
        return wrapped


def instrument(recorder: Recorder) -> None:
    """Wrap every step, the context and the step-cache hashing with the recorder."""
    from dataclasses import replace

    from audit.pipeline import step_cache, steps

    steps.build_context = recorder.wrap("build_context", steps.build_context)
    steps.STEPS[:] = [replace(step, function=recorder.wrap(step.name, step.function)) for step in steps.STEPS]
    step_cache.StepCache._shared_digest = recorder.wrap("step_cache_key", step_cache.StepCache._shared_digest)
    steps.GROUP_ROW_PASSES[:] = [replace(p, function=recorder.wrap(p.name, p.function)) for p in steps.GROUP_ROW_PASSES]


def run_images(args, recorder: Recorder, scratch: Path) -> dict:
    from datetime import datetime, timezone

    from audit.config import AuditConfig
    from audit.folder import write_audit_folder
    from audit.pipeline.core import analyse, prepare_images

    cache = scratch / "cache"
    cache.mkdir()
    os.symlink(Path(args.store).resolve(), cache / "store")
    config = AuditConfig(data=args.data, model=args.model, cache_dir=str(cache), use_cache=True,
                         workers=args.workers, n_bootstrap=args.n_bootstrap)
    noop = lambda *a: None  # noqa: E731
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    prepared = recorder.measure("prepare_images", prepare_images, config, progress=noop)
    instrument(recorder)
    result = recorder.measure("analyse", analyse, prepared, config=config, progress=noop, started=started,
                              clock=clock)
    del prepared
    recorder.measure("write_audit_folder", write_audit_folder, scratch / "out", audit=result.audit,
                     images=result.images, group_metrics=result.group_metrics, probabilities=result.probabilities)
    return {"n_images": result.audit["dataset"]["n_images"], "n_classes": result.audit["dataset"]["n_classes"],
            "errors": result.audit["errors"],
            "images_decoded": result.audit["provenance"]["per_image_stage"]["images_decoded"],
            "images_memory_mb": round(result.images.memory_usage(deep=True).sum() / 2**20)}


def run_synthetic(args, recorder: Recorder, scratch: Path) -> dict:
    import numpy as np
    import pandas as pd

    from audit.config import AuditConfig
    from audit.pipeline.steps import run_steps
    from audit.types import Dataset

    n, k = (int(v) for v in args.synthetic.split(","))
    rng = np.random.default_rng(0)
    classes = tuple(f"c{i:04d}" for i in range(k))
    labels = rng.integers(0, k, n)
    path = scratch / "probabilities.npy"
    matrix = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, k))
    block = 16384
    for start in range(0, n, block):  # a confident model that is right about 80 % of the time
        rows = min(block, n - start)
        logits = rng.standard_normal((rows, k), dtype=np.float32)
        right = rng.random(rows) < 0.8
        target = np.where(right, labels[start:start + rows], rng.integers(0, k, rows))
        logits[np.arange(rows), target] += 6.0
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        matrix[start:start + rows] = logits
    matrix.flush()
    del matrix
    kept = pd.DataFrame({"id": [f"img{i:07d}.jpg" for i in range(n)],
                         "path": [f"/data/images/{i % 1000:03d}/img{i:07d}.jpg" for i in range(n)],
                         "label": np.array(classes, dtype=object)[labels],
                         "site": np.array(["a", "b", "c", "d"], dtype=object)[rng.integers(0, 4, n)],
                         "camera": np.array(["x", "y"], dtype=object)[rng.integers(0, 2, n)]})
    embeddings = rng.standard_normal((n, 64), dtype=np.float32)
    dataset = Dataset(table=kept, classes=classes, group_attributes=("site", "camera"), metadata_columns=(),
                      root=Path("/data"), source="synthetic", kind="csv")
    if args.probe_epochs is not None:  # the probe's memory does not depend on its epochs, its time does
        from audit.analysis import probe as probe_module

        fit = probe_module.fit_kfold_probe
        probe_module.fit_kfold_probe = lambda *a, **k: fit(*a, **{**k, "n_epochs": args.probe_epochs})
    probabilities = np.load(path, mmap_mode="r")  # as the per-image stage hands it over: an on-disk matrix
    config = AuditConfig(data=str(path), use_cache=False, n_bootstrap=args.n_bootstrap)
    instrument(recorder)
    bundle = recorder.measure("run_steps", run_steps, kept, classes=classes, dataset=dataset,
                              probabilities=probabilities, embeddings=embeddings, config=config,
                              progress=lambda *a: None)
    from audit.folder import write_npy_chunks_atomic
    from audit.io.arrays import chunk_source_of

    recorder.measure("write_probabilities_npy", write_npy_chunks_atomic, scratch / "written.npy",
                     chunk_source_of(probabilities))
    return {"n_images": n, "n_classes": k, "errors": bundle.errors, "n_bootstrap": args.n_bootstrap,
            "probe_epochs": args.probe_epochs or 10,
            "images_memory_mb": round(bundle.images.memory_usage(deep=True).sum() / 2**20)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--model")
    parser.add_argument("--store")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--synthetic", help="N,K: generated table and probabilities instead of --data")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--probe-epochs", type=int, help="--synthetic: epochs of the label-noise probe (default 10)")
    parser.add_argument("--scratch", default=tempfile.gettempdir())
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="imagefair-reduce-memory-", dir=args.scratch))
    recorder = Recorder()
    try:
        info = run_synthetic(args, recorder, scratch) if args.synthetic else run_images(args, recorder, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = {"case": info, "stages": recorder.rows, "peak_mb": max(r["peak_mb"] for r in recorder.rows)}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report["case"]), "overall peak MB", report["peak_mb"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
