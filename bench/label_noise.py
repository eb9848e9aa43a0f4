"""Benchmark: streaming confident learning (ours) vs cleanlab's ``filter.find_label_issues``.

Usage::

    python bench/label_noise.py --json bench/results/label_noise.json          # 50k x 10, 300k x 1000, 1.28M x 1000
    python bench/label_noise.py --json /tmp/quick.json --quick                 # small sizes

For every case synthetic probabilities (a model with known accuracy on labels flipped symmetrically at
10 %) are written to a ``.npy`` file in a temporary directory. Each implementation then runs in a fresh
subprocess on that same file; its peak resident memory is the ``ru_maxrss`` that ``os.wait4`` reports for
that subprocess (cleanlab's worker processes included, as the largest of them). The data are written
by a separate subprocess so that the parent's own memory high-water mark, which Linux hands down to
forked children, stays small.

* ours: ``estimate_label_noise`` on ``npy_chunk_source(path)`` -- streams the file, three passes;
  ``ours_s`` includes reading the file each pass.
* cleanlab: ``np.load(path)`` then ``find_label_issues(labels, pred_probs)`` (default settings);
  ``cleanlab_s`` is the ``find_label_issues`` call alone, ``cleanlab_load_s`` the load.

``jaccard`` compares the two flagged sets. Output format: ``contract.md`` "Benchmark JSON".
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FULL_CASES = [(50_000, 10), (300_000, 1000), (1_280_000, 1000)]
QUICK_CASES = [(20_000, 10), (30_000, 200)]
NOISE = 0.10


def write_case(directory: Path, n: int, k: int, *, seed: int = 0, chunk_rows: int = 16_384):
    """Write labels.npy (int64) and probabilities.npy (float32, N x K) without holding N x K in memory."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    flip = rng.random(n) < NOISE
    labels = true.copy()
    labels[flip] = (true[flip] + rng.integers(1, k, int(flip.sum()))) % k
    np.save(directory / "labels.npy", labels)
    np.save(directory / "true_labels.npy", true)
    path = directory / "probabilities.npy"
    handle = open(path, "wb")
    np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": (n, k)})
    # Logit boost tuned so top-1 accuracy on the true class is roughly 80-90 %.
    boost = np.float32(3.0 if k <= 10 else 4.0)
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        logits = rng.standard_normal((stop - start, k), dtype=np.float32)
        logits[np.arange(stop - start), true[start:stop]] += boost
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        handle.write(logits.astype("<f4", copy=False).tobytes())
    handle.close()
    return path


def worker(kind: str, directory: Path) -> None:
    if kind.startswith("write:"):
        _, n, k = kind.split(":")
        write_case(directory, int(n), int(k))
        return
    labels = np.load(directory / "labels.npy")
    path = directory / "probabilities.npy"
    result = {}
    if kind == "ours":
        sys.path.insert(0, str(ROOT))
        from audit.analysis.label_noise import estimate_label_noise
        from audit.io.arrays import npy_chunk_source, read_npy_header

        shape, _, _ = read_npy_header(path)
        start = time.perf_counter()
        estimate = estimate_label_noise(labels, npy_chunk_source(path), n_classes=shape[1])
        result["seconds"] = time.perf_counter() - start
        flagged = np.flatnonzero(estimate.is_label_issue)
        result["noise_rate"] = estimate.noise_rate
    else:
        import warnings

        from cleanlab.filter import find_label_issues

        warnings.simplefilter("ignore")
        start = time.perf_counter()
        probabilities = np.load(path)
        result["load_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        mask = find_label_issues(labels, probabilities)
        result["seconds"] = time.perf_counter() - start
        flagged = np.flatnonzero(mask)
    np.save(directory / f"flagged_{kind}.npy", flagged)
    (directory / f"result_{kind}.json").write_text(json.dumps(result))


def run_child(kind: str, directory: Path) -> dict:
    # Linux copies the parent's memory high-water mark into a forked child (and exec keeps it in
    # ru_maxrss), so this parent never holds large arrays: data are written by another subprocess.
    process = subprocess.Popen([sys.executable, __file__, "--worker", kind, "--dir", str(directory)])
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{kind} worker failed with exit code {process.returncode}")
    result = json.loads((directory / f"result_{kind}.json").read_text())
    result["peak_mb"] = usage.ru_maxrss / 1024.0  # Linux: kilobytes
    return result


def machine() -> dict:
    from _machine import machine_info  # bench/ is on sys.path when a script here runs

    return machine_info("numpy", "cleanlab")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke test)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # ours | cleanlab | write:N:K
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.dir)
        return 0
    if args.json is None:
        parser.error("--json PATH is required")
    cases = []
    for n, k in (QUICK_CASES if args.quick else FULL_CASES):
        with tempfile.TemporaryDirectory(prefix="bench_label_noise_") as tmp:
            directory = Path(tmp)
            start = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--worker", f"write:{n}:{k}", "--dir", str(directory)],
                           check=True)
            print(f"[{n} x {k}] data written in {time.perf_counter() - start:.1f} s", flush=True)
            ours = run_child("ours", directory)
            print(f"[{n} x {k}] ours {ours['seconds']:.2f} s, {ours['peak_mb']:.0f} MB", flush=True)
            reference = run_child("cleanlab", directory)
            print(f"[{n} x {k}] cleanlab {reference['seconds']:.2f} s, {reference['peak_mb']:.0f} MB", flush=True)
            a = set(np.load(directory / "flagged_ours.npy").tolist())
            b = set(np.load(directory / "flagged_cleanlab.npy").tolist())
            jaccard = len(a & b) / len(a | b) if (a | b) else 1.0
            cases.append({
                "n": n, "k": k, "noise": NOISE,
                "ours_s": round(ours["seconds"], 3), "cleanlab_s": round(reference["seconds"], 3),
                "cleanlab_load_s": round(reference["load_seconds"], 3),
                "ours_peak_mb": round(ours["peak_mb"], 1), "cleanlab_peak_mb": round(reference["peak_mb"], 1),
                "jaccard": jaccard, "n_flagged_ours": len(a), "n_flagged_cleanlab": len(b),
                "estimated_noise_rate": round(ours["noise_rate"], 5),
                "ours_input": "npy file streamed (npy_chunk_source)",
                "cleanlab_input": "np.load then find_label_issues (default settings)",
            })
            print(json.dumps(cases[-1]), flush=True)
    output = {"machine": machine(), "cases": cases}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(output, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
