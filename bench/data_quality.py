"""Benchmark: data-quality checks (ours) vs CleanVision, and the near-duplicate search at a million hashes.

Usage::

    python bench/data_quality.py --json bench/results/data_quality.json
    python bench/data_quality.py --json /tmp/quick.json --quick      # 2,000 images, 100,000 hashes

Cases (each implementation in a fresh subprocess):

* ``cifar10_test_jpeg``: the 10,000 CIFAR-10 test JPEGs in ``../shared/data/cifar10-test-jpeg/test``
  (skipped when absent).

  - ours: the engine's per-image stage as ``run`` runs it (:func:`audit.pipeline.perimage.run_stage` on the
    local executor with all cores, no cache: each file read once, sha256 of its bytes, decoded once, pixel
    attributes and perceptual hashes computed in batches), then
    :func:`audit.analysis.data_quality.find_data_quality_issues` (default settings, no embeddings).
    ``ours_s`` is all of it, from file names to result (worker start-up included).
  - CleanVision: ``Imagelab(filepaths=...).find_issues()`` with its default checks (dark, light,
    odd_aspect_ratio, low_information, exact_duplicates, near_duplicates, blurry, grayscale, odd_size:
    the same issues as ours, outliers excepted) and its default ``n_jobs`` (all cores, worker processes).
    ``cleanvision_s`` is the constructor plus ``find_issues``.
  - ``*_peak_mb``: the ``ru_maxrss`` that ``os.wait4`` reports for the subprocess (for CleanVision the
    largest of the main process and its workers); ``*_peak_tree_mb``: the largest sum of resident memory
    over the subprocess and all its descendants, sampled every 20 ms from /proc.
* ``hash_search_1m``: 1,000,000 synthetic 64-bit hashes (uniformly random) of which ``n_planted`` are
  copies of other hashes with 1..``max_distance`` random bits flipped. Only
  :func:`audit.analysis.near_duplicates.find_near_duplicate_pairs` is timed (``ours_s``); ``recall`` is the
  share of planted pairs found (1 by construction: the pigeonhole guarantee), ``n_pairs`` all pairs found
  (planted plus random hashes that happen to be that close). Run at several ``max_distance`` values: the
  cost grows quickly with it (module docstring of near_duplicates).
* ``hash_links``: the whole hash-link step of ``find_data_quality_issues`` (both multi-index searches,
  whole/centre on 2n stacked pHashes and whole/corner on 5n, each radius lowered to fit the default
  ``max_hash_comparisons``) on 1,000,000 images with all 18 hash columns uniformly random, of which
  ``n_planted`` are planted crops (whole-image hashes = a corner crop's hashes of the source with 3 random
  bit flips per hash). Reports time, peak memory, the radii used and the share of planted pairs linked.

Output format: ``contract.md`` "Benchmark JSON".
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-test-jpeg" / "test"
N_HASHES = 1_000_000
N_PLANTED = 50_000
RADII = (4, 5, 6)


def cifar_files(limit: int | None) -> list[str]:
    files = sorted(str(p) for p in CIFAR.glob("*/*.jpg"))
    return files[:limit] if limit else files


def run_ours_images(files: list[str]) -> dict:
    """The engine as ``run`` uses it: the per-image stage (one read and decode per file, content hash, pixel
    attributes and perceptual hashes computed in batches) on the local executor with all cores and no cache,
    then :func:`audit.analysis.data_quality.find_data_quality_issues` as the pipeline's data-quality step calls it."""
    sys.path.insert(0, str(ROOT))
    import pandas as pd

    from audit.analysis.data_quality import HASH_COLUMNS, PROPERTY_COLUMNS, find_data_quality_issues
    from audit.io.images import MAX_PIXELS
    from audit.pipeline.executors import LocalExecutor, default_workers
    from audit.pipeline.perimage import StageSpec, cleanup, feature_key, run_stage

    start = time.perf_counter()
    table = pd.DataFrame({"path": files, "row": range(len(files)), "id": files,
                          "label": [Path(f).parent.name for f in files]})
    spec = StageSpec(max_pixels=MAX_PIXELS, feature_key=feature_key(max_pixels=MAX_PIXELS))
    stage = run_stage(table, spec=spec, executor=LocalExecutor(workers=default_workers()), store_root=None)
    cleanup(stage)
    decoded = time.perf_counter()
    kept = stage.kept
    frame = kept[["id", "label", "content_hash", *PROPERTY_COLUMNS]].copy()
    for name in HASH_COLUMNS:
        frame[name] = kept[f"image_{name}"].to_numpy()
    result = find_data_quality_issues(frame)
    end = time.perf_counter()
    return {"seconds": end - start, "per_image_pass_s": decoded - start, "detection_s": end - decoded,
            "workers": default_workers(),
            "issues": result.summary["issues"], "n_duplicate_sets": result.summary["n_duplicate_sets"]}


def run_cleanvision(files: list[str]) -> dict:
    import warnings

    warnings.simplefilter("ignore")
    from cleanvision import Imagelab

    start = time.perf_counter()
    lab = Imagelab(filepaths=files, verbose=False)
    lab.find_issues(verbose=False)
    seconds = time.perf_counter() - start
    summary = lab.issue_summary
    return {"seconds": seconds,
            "issues": {str(r["issue_type"]): int(r["num_images"]) for _, r in summary.iterrows()}}


def run_hash_search(n: int, n_planted: int, max_distance: int, seed: int = 0) -> dict:
    sys.path.insert(0, str(ROOT))
    from audit.analysis.near_duplicates import find_near_duplicate_pairs

    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2 ** 63, size=n, dtype=np.int64).astype(np.uint64) ^ (
        rng.integers(0, 2, size=n).astype(np.uint64) << np.uint64(63))
    copies = np.arange(n - n_planted, n)
    sources = rng.choice(n - n_planted, size=n_planted, replace=False)
    flips = rng.integers(1, max_distance + 1, size=n_planted) if max_distance > 0 else np.zeros(n_planted, int)
    masks = np.zeros(n_planted, dtype=np.uint64)
    for k in range(max(max_distance, 0)):
        bit = rng.integers(0, 64, size=n_planted).astype(np.uint64)
        # draw distinct bits per row by rejection: re-draw where the bit is already set
        for _ in range(64):
            taken = (masks >> bit) & np.uint64(1)
            redo = (taken == 1)
            if not redo.any():
                break
            bit[redo] = rng.integers(0, 64, size=int(redo.sum())).astype(np.uint64)
        use = flips > k
        masks[use] |= np.uint64(1) << bit[use]
    hashes[copies] = hashes[sources] ^ masks
    start = time.perf_counter()
    found = find_near_duplicate_pairs(hashes, max_distance=max_distance)
    seconds = time.perf_counter() - start
    key = set((found.i * n + found.j).tolist())
    planted = np.minimum(sources, copies) * n + np.maximum(sources, copies)
    recall = float(np.mean([p in key for p in planted.tolist()]))
    return {"seconds": seconds, "recall": recall, "n_pairs": len(found), "n_candidates": found.n_candidates}


def run_link_search(n: int, n_planted: int, seed: int = 0) -> dict:
    """The whole hash-link step of find_data_quality_issues (both searches, radius narrowing) on n images."""
    sys.path.insert(0, str(ROOT))
    from audit.analysis import data_quality
    from audit.analysis.hashing import HASH_NAMES

    rng = np.random.default_rng(seed)
    hashes = {name: rng.integers(0, 2 ** 63, size=n, dtype=np.int64).astype(np.uint64) ^ (
        rng.integers(0, 2, size=n).astype(np.uint64) << np.uint64(63)) for name in HASH_NAMES}
    # Planted crops: the copy's whole-image hashes are a corner crop's hashes of its source, 1-3 bits apart.
    copies = np.arange(n - n_planted, n)
    sources = rng.choice(n - n_planted, size=n_planted, replace=False)
    corner = rng.integers(0, 4, size=n_planted)
    for kind in ("phash", "dhash", "chash"):
        stacked = np.stack([hashes[f"{kind}_{c}"][sources] for c in ("nw", "ne", "sw", "se")])
        flipped = stacked[corner, np.arange(n_planted)]
        for _ in range(3):
            flipped ^= np.uint64(1) << rng.integers(0, 64, size=n_planted).astype(np.uint64)
        hashes[kind][copies] = flipped
    settings = {"phash_max_distance": data_quality.DEFAULT_PHASH_MAX_DISTANCE,
                "dhash_max_distance": data_quality.DEFAULT_DHASH_MAX_DISTANCE,
                "chash_max_distance": data_quality.DEFAULT_CHASH_MAX_DISTANCE,
                "corner_phash_max_distance": data_quality.DEFAULT_CORNER_PHASH_MAX_DISTANCE,
                "corner_dhash_max_distance": data_quality.DEFAULT_CORNER_DHASH_MAX_DISTANCE,
                "corner_chash_max_distance": data_quality.DEFAULT_CORNER_CHASH_MAX_DISTANCE,
                "max_hash_comparisons": data_quality.DEFAULT_MAX_HASH_COMPARISONS}
    start = time.perf_counter()
    i, j, _, radius, corner_radius, _ = data_quality._hash_links(hashes, settings)
    seconds = time.perf_counter() - start
    key = set((i * n + j).tolist())
    planted = np.minimum(sources, copies) * n + np.maximum(sources, copies)
    recall = float(np.mean([p in key for p in planted.tolist()]))
    return {"seconds": seconds, "recall": recall, "n_pairs": int(i.size), "phash_search_distance": radius,
            "corner_phash_search_distance": corner_radius}


def worker(args) -> None:
    spec = json.loads(Path(args.spec).read_text())
    if spec["kind"] == "ours":
        result = run_ours_images(spec["files"])
    elif spec["kind"] == "cleanvision":
        result = run_cleanvision(spec["files"])
    elif spec["kind"] == "link_search":
        result = run_link_search(spec["n"], spec["n_planted"])
    else:
        result = run_hash_search(spec["n"], spec["n_planted"], spec["max_distance"])
    Path(args.out).write_text(json.dumps(result))


def _tree_rss_mb(root_pid: int) -> float:
    """Sum of resident memory of ``root_pid`` and all its descendants, from /proc (0 when unreadable)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def run_child(spec: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_dq_") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        env = dict(os.environ, TQDM_DISABLE="1")  # CleanVision's progress bars
        process = subprocess.Popen([sys.executable, __file__, "--worker", "--spec", str(spec_path),
                                    "--out", str(out_path)], env=env)
        peak_tree = [0.0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak_tree[0] = max(peak_tree[0], _tree_rss_mb(process.pid))
                done.wait(0.02)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        done.set()
        sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"{spec['kind']} worker failed with exit code {process.returncode}")
        result = json.loads(out_path.read_text())
    result["peak_mb"] = usage.ru_maxrss / 1024.0  # Linux: kilobytes
    result["peak_tree_mb"] = peak_tree[0]
    return result


def machine() -> dict:
    from _machine import machine_info  # bench/ is on sys.path when a script here runs

    return machine_info("numpy", "cleanvision", "PIL", "faiss")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="2,000 images and 100,000 hashes (a smoke test)")
    parser.add_argument("--cases", default="cifar,hash_search,hash_links",
                        help="comma list of cifar, hash_search, hash_links (cases not run keep their previous "
                             "results in the JSON)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.json is None:
        parser.error("--json PATH is required")
    wanted = {c.strip() for c in args.cases.split(",") if c.strip()}
    cases = []
    if "cifar" not in wanted:
        pass
    elif CIFAR.is_dir():
        files = cifar_files(2000 if args.quick else None)
        load_before = _load()
        ours = run_child({"kind": "ours", "files": files})
        print(f"[cifar {len(files)}] ours {ours['seconds']:.1f} s, {ours['peak_mb']:.0f} MB", flush=True)
        theirs = run_child({"kind": "cleanvision", "files": files})
        print(f"[cifar {len(files)}] cleanvision {theirs['seconds']:.1f} s, {theirs['peak_mb']:.0f} MB", flush=True)
        cases.append({
            "case": "cifar10_test_jpeg", "n": len(files),
            "ours_s": round(ours["seconds"], 3), "cleanvision_s": round(theirs["seconds"], 3),
            "ours_peak_mb": round(ours["peak_mb"], 1), "cleanvision_peak_mb": round(theirs["peak_mb"], 1),
            "ours_peak_tree_mb": round(ours["peak_tree_mb"], 1),
            "cleanvision_peak_tree_mb": round(theirs["peak_tree_mb"], 1),
            "ours_per_image_pass_s": round(ours["per_image_pass_s"], 3),
            "ours_detection_s": round(ours["detection_s"], 3),
            "speedup": round(theirs["seconds"] / ours["seconds"], 2),
            "ours_issues": ours["issues"], "ours_n_duplicate_sets": ours["n_duplicate_sets"],
            "cleanvision_issues": theirs["issues"], "ours_workers": ours["workers"],
            "load_average_before": load_before, "load_average_after": _load(),
        })
    else:
        print(f"skipping the CIFAR-10 case: {CIFAR} is absent", flush=True)
    n = 100_000 if args.quick else N_HASHES
    n_planted = n // 20
    for radius in (RADII if "hash_search" in wanted else ()):
        search = run_child({"kind": "hash_search", "n": n, "n_planted": n_planted, "max_distance": radius})
        print(f"[hashes {n}, max_distance {radius}] {search['seconds']:.1f} s, {search['peak_mb']:.0f} MB, "
              f"recall {search['recall']:.3f}", flush=True)
        cases.append({
            "case": "hash_search", "n": n, "n_planted": n_planted, "max_distance": radius,
            "ours_s": round(search["seconds"], 3), "ours_peak_mb": round(search["peak_mb"], 1),
            "recall": search["recall"], "n_pairs": search["n_pairs"], "n_candidates": search["n_candidates"],
        })
    if "hash_links" in wanted:
        _links_case(cases, n, n_planted)
    payload = _merge_previous(args.json, {"machine": machine(), "cases": cases})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _merge_previous(path: Path, payload: dict) -> dict:
    """Keep the previous results of the kinds of case not run this time."""
    try:
        previous = json.loads(path.read_text()).get("cases", [])
    except (OSError, ValueError):
        previous = []
    ran = {case["case"] for case in payload["cases"]}
    payload["cases"] = [case for case in previous if case.get("case") not in ran] + payload["cases"]
    return payload


def _links_case(cases: list, n: int, n_planted: int) -> None:
    links = run_child({"kind": "link_search", "n": n, "n_planted": n_planted})
    print(f"[links {n} images] {links['seconds']:.1f} s, {links['peak_mb']:.0f} MB, radii "
          f"{links['phash_search_distance']} / {links['corner_phash_search_distance']}, "
          f"recall {links['recall']:.3f}", flush=True)
    cases.append({
        "case": "hash_links", "n": n, "n_planted": n_planted, "ours_s": round(links["seconds"], 3),
        "ours_peak_mb": round(links["peak_mb"], 1), "recall": links["recall"], "n_pairs": links["n_pairs"],
        "phash_search_distance": links["phash_search_distance"],
        "corner_phash_search_distance": links["corner_phash_search_distance"],
    })


if __name__ == "__main__":
    sys.exit(main())
