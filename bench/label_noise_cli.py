"""Benchmark: the ``label-noise`` command end to end (read, analyse, write the audit folder) on large NPY files.

Usage::

    python bench/label_noise_cli.py --json bench/results/label_noise_cli.json     # 300k x 1000, 1.28M x 1000
    python bench/label_noise_cli.py --json /tmp/quick.json --quick                # 60k x 1000 (still streamed)

For every case a separate subprocess writes, with a seeded generator, ``labels.npy`` (int64 class indices,
10 % of them flipped uniformly to another class), ``predictions.npy`` (float32 softmax of logits with the
true class boosted, top-1 accuracy on the true class roughly 80-90 %) and ``attributes.csv`` (two group
attributes), chunk by chunk. Then ``python -m audit label-noise --labels ... --predictions ... --attributes
... --out DIR`` runs in a fresh subprocess; ``ours_s`` is its wall time and ``ours_peak_mb`` the
``ru_maxrss`` that ``os.wait4`` reports for it. The parent never holds the data (Linux hands the parent's
memory high-water mark down to forked children). The written folder is then checked with
``../shared/tools/check_audit_folder.py`` (``checker_ok``) and the flagged set compared with the true
flips (``precision``, ``recall``).

The predictions file was just written, so it is in the page cache (as after a fresh inference run); page
cache is not part of RSS. Output format: ``contract.md`` "Benchmark JSON".
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
CHECKER = ROOT.parent / "shared" / "tools" / "check_audit_folder.py"
FULL_CASES = [(300_000, 1000), (1_280_000, 1000)]
QUICK_CASES = [(60_000, 1000)]
NOISE = 0.10
SEED = 0


def write_case(directory: Path, n: int, k: int, *, seed: int = SEED, chunk_rows: int = 16_384) -> None:
    """labels.npy, true_labels.npy, predictions.npy (float32 N x K, streamed) and attributes.csv."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    flip = rng.random(n) < NOISE
    labels = true.copy()
    labels[flip] = (true[flip] + rng.integers(1, k, int(flip.sum()))) % k
    np.save(directory / "labels.npy", labels)
    np.save(directory / "true_labels.npy", true)
    boost = np.float32(3.0 if k <= 10 else 4.0)
    with open(directory / "predictions.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": (n, k)})
        for start in range(0, n, chunk_rows):
            stop = min(n, start + chunk_rows)
            logits = rng.standard_normal((stop - start, k), dtype=np.float32)
            logits[np.arange(stop - start), true[start:stop]] += boost
            logits -= logits.max(axis=1, keepdims=True)
            np.exp(logits, out=logits)
            logits /= logits.sum(axis=1, keepdims=True)
            handle.write(logits.astype("<f4", copy=False).tobytes())
    camera = np.array(["phone", "dslr", "webcam", "scanner"])[rng.integers(0, 4, n)]
    region = np.array(["north", "south", "east"])[rng.integers(0, 3, n)]
    with open(directory / "attributes.csv", "w") as handle:
        handle.write("id,camera,region\n")
        handle.writelines(f"{i},{c},{r}\n" for i, c, r in zip(range(n), camera, region))


def run_measured(command: list[str]) -> tuple[float, float, int, str]:
    """Run ``command`` in a fresh subprocess; (wall seconds, peak RSS MB, exit code, stderr tail)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.stderr.close()
    return seconds, usage.ru_maxrss / 1024.0, os.waitstatus_to_exitcode(status), stderr[-2000:]


def machine() -> dict:
    from _machine import machine_info  # bench/ is on sys.path when a script here runs

    return machine_info("numpy")


def measure_case(n: int, k: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_label_noise_cli_") as tmp:
        directory = Path(tmp)
        start = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--worker", f"write:{n}:{k}", "--dir", str(directory)],
                       check=True)
        print(f"[{n} x {k}] data written in {time.perf_counter() - start:.1f} s", flush=True)
        out = directory / "audit"
        command = [sys.executable, "-m", "audit", "label-noise", "--labels", str(directory / "labels.npy"),
                   "--predictions", str(directory / "predictions.npy"), "--attributes",
                   str(directory / "attributes.csv"), "--out", str(out)]
        seconds, peak_mb, code, stderr = run_measured(command)
        if code != 0:
            raise RuntimeError(f"label-noise exited with {code}: {stderr}")
        print(f"[{n} x {k}] label-noise {seconds:.1f} s, peak {peak_mb:.0f} MB", flush=True)
        checked = subprocess.run([sys.executable, str(CHECKER), str(out)], capture_output=True, text=True)
        audit = json.loads((out / "audit.json").read_text())
        flagged = np.flatnonzero(_read_column(out / "images.parquet", "is_label_issue"))
        flipped = np.flatnonzero(np.load(directory / "labels.npy") != np.load(directory / "true_labels.npy"))
        hits = np.intersect1d(flagged, flipped).size
        performance = audit["analyses"].get("group_performance", {})
        return {
            "n": n, "k": k, "noise": NOISE, "input_mb": round(n * k * 4 / 2**20, 1),
            "ours_s": round(seconds, 2), "ours_peak_mb": round(peak_mb, 1),
            "streamed": any("streamed in chunks" in str(note)
                            for note in performance.get("settings", {}).get("notes", [])),
            "skipped_metrics": performance.get("skipped_metrics", {}).get("metrics", []),
            "checker_ok": checked.returncode == 0, "checker_output": checked.stdout.strip()[-500:],
            "errors": audit["errors"],
            "label_disagreement_rate": round(audit["analyses"]["label_noise"]["label_disagreement_rate"], 5),
            "true_noise_rate": round(flipped.size / n, 5),
            "n_label_issues": int(flagged.size),
            "precision": round(hits / max(1, flagged.size), 4), "recall": round(hits / max(1, flipped.size), 4),
            "probabilities_npy_mb": round((out / "probabilities.npy").stat().st_size / 2**20, 1),
            "command": "python -m audit label-noise --labels labels.npy --predictions predictions.npy "
                       "--attributes attributes.csv --out DIR",
            "attributes": ["camera (4 groups)", "region (3 groups)"],
        }


def _read_column(path: Path, column: str) -> np.ndarray:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=[column]).column(column).to_numpy(zero_copy_only=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="one small (but still streamed) case")
    parser.add_argument("--cases", default=None, help="comma-separated NxK (e.g. 300000x1000) instead of the defaults")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # write:N:K
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _, n, k = args.worker.split(":")
        write_case(args.dir, int(n), int(k))
        return 0
    if args.json is None:
        parser.error("--json PATH is required")
    if args.cases:
        cases = [tuple(int(v) for v in item.lower().split("x")) for item in args.cases.split(",")]
    else:
        cases = QUICK_CASES if args.quick else FULL_CASES
    results = []
    for n, k in cases:
        results.append(measure_case(n, k))
        print(json.dumps(results[-1]), flush=True)
        output = {"machine": machine(), "cases": results}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(output, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
