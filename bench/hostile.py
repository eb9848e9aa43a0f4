"""Hostile-input benchmarks of issue 11, each in fresh subprocesses (`python -m audit run ...`).

    python bench/hostile.py --json bench/results/hostile.json [--cases identical,bombs,kill9] [--trials 20]

Cases
-----
identical  4,000 identical 16x16 PNGs audited end to end (`run --data manifest.csv`); target < 30 s. The
           baseline is the same command on 4,000 *different* random 16x16 PNGs (same machine, same call).
bombs      64 one-bit 6000x6600 PNGs (~5 kB each, 2.5 G pixels in all) audited end to end; peak RSS of the
           fresh subprocess (ru_maxrss of the child); target < 2 GB. Each image is under the 40 M pixel cap,
           so all are decoded: the pixel budget of decode-ahead is what bounds memory.
kill9      `--trials` runs into one folder, each killed with SIGKILL right after its k-th file write
           (k cycles 1..5: four contract files, then the switch), using the test hook
           IMAGEFAIR_TEST_PAUSE_AFTER_WRITE; after each kill the folder is read with load_audit_folder and
           checked: one run id across audit.json, every Parquet file and generation.json. Counts mixed folders
           (target 0).

Data are generated under a temporary folder and deleted afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._machine import machine_info  # noqa: E402


def _png(pixels) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _one_bit_bomb(width: int, height: int) -> bytes:
    raw = zlib.compress((b"\x00" + b"\x00" * ((width + 7) // 8)) * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def _dataset(folder: Path, payloads) -> Path:
    import pandas as pd

    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for k, data in enumerate(payloads):
        name = f"images/i{k:05d}.png"
        (folder / name).write_bytes(data)
        rows.append({"path": name, "label": ("cat", "dog")[k % 2], "site": ("a", "b", "c")[k % 3]})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def _run_measured(args: list[str], env=None) -> dict:
    """Run ``python -m audit ARGS`` in a fresh subprocess; wall time and the child's peak RSS."""
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run([sys.executable, "-m", "audit", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": round(seconds, 2), "peak_mb": round(peak_kb / 1024, 1) if peak_kb > before else None,
            "exit_code": done.returncode, "stderr_tail": done.stderr.strip().splitlines()[-1:] }


def case_identical(tmp: Path) -> dict:
    import numpy as np

    same = _png(np.full((16, 16, 3), 120, dtype=np.uint8))
    manifest = _dataset(tmp / "identical", [same] * 4000)
    load_before = [round(v, 2) for v in os.getloadavg()]
    ours = _run_measured(["run", "--data", str(manifest), "--out", str(tmp / "out_identical"), "--quiet",
                          "--no-cache"])
    rng = np.random.default_rng(0)
    different = _dataset(tmp / "different", [_png(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
                                             for _ in range(4000)])
    base = _run_measured(["run", "--data", str(different), "--out", str(tmp / "out_different"), "--quiet",
                          "--no-cache"])
    audit = json.loads((tmp / "out_identical" / "audit.json").read_text())
    return {"name": "identical_4000_16x16", "n_images": 4000, "ours_s": ours["seconds"],
            "ours_exit_code": ours["exit_code"], "n_images_audited": audit["dataset"]["n_images"],
            "distinct_random_images_s": base["seconds"], "target_s": 30,
            "load_average_before": load_before, "load_average_after": [round(v, 2) for v in os.getloadavg()]}


def case_bombs(tmp: Path) -> dict:
    bomb = _one_bit_bomb(6000, 6600)
    manifest = _dataset(tmp / "bombs", [bomb] * 64)
    total_bytes = sum(p.stat().st_size for p in (tmp / "bombs" / "images").iterdir())
    # a fresh interpreter per measurement: RUSAGE_CHILDREN of a helper process holds only that child's peak
    code = ("import resource, subprocess, sys, time, json; t = time.perf_counter(); "
            "r = subprocess.run([sys.executable, '-m', 'audit', 'run', '--data', sys.argv[1], '--out', sys.argv[2], "
            "'--quiet', '--no-cache'], capture_output=True, text=True); "
            "print(json.dumps({'s': time.perf_counter() - t, 'rc': r.returncode, "
            "'peak_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, 'err': r.stderr[-300:]}))")
    done = subprocess.run([sys.executable, "-c", code, str(manifest), str(tmp / "out_bombs")], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    result = json.loads(done.stdout.strip().splitlines()[-1])
    audit = json.loads((tmp / "out_bombs" / "audit.json").read_text()) if result["rc"] == 0 else {}
    return {"name": "bombs_64_one_bit_6000x6600", "n_images": 64, "files_kb": round(total_bytes / 1024, 1),
            "pixels_total": 64 * 6000 * 6600, "ours_s": round(result["s"], 2),
            "ours_peak_mb": round(result["peak_kb"] / 1024, 1), "exit_code": result["rc"],
            "n_images_audited": (audit.get("dataset") or {}).get("n_images"),
            "n_skipped": (audit.get("dataset") or {}).get("n_skipped"), "target_peak_mb": 2048,
            "stderr_tail": result["err"].strip().splitlines()[-1:] if result["rc"] else []}


def case_kill9(tmp: Path, trials: int) -> dict:
    import numpy as np

    from audit.folder import GENERATION_FILE, current_generation, load_audit_folder, parquet_run_id

    rng = np.random.default_rng(1)
    manifest = _dataset(tmp / "kill", [_png(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(60)])
    table = __import__("pandas").read_csv(manifest)
    for seed in (0, 1):  # two prediction files, so consecutive runs differ
        probabilities = rng.dirichlet(np.ones(2), size=len(table))
        __import__("pandas").DataFrame({"id": table["path"], "cat": probabilities[:, 0],
                                        "dog": probabilities[:, 1]}).to_csv(tmp / f"p{seed}.csv", index=False)
    out = tmp / "out_kill"
    base = ["run", "--data", str(manifest), "--out", str(out), "--quiet", "--no-cache"]
    first = subprocess.run([sys.executable, "-m", "audit", *base, "--predictions", str(tmp / "p0.csv")], cwd=REPO,
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert first.returncode == 0, first.stderr
    mixed = unreadable = switched = 0
    outcomes = []
    for trial in range(trials):
        kill_after = 1 + trial % 5
        env = {**os.environ, "PYTHONPATH": str(REPO), "IMAGEFAIR_TEST_PAUSE_AFTER_WRITE": "30"}
        before = load_audit_folder(out, reviews=False).audit["run_id"]
        process = subprocess.Popen([sys.executable, "-m", "audit", *base, "--predictions",
                                    str(tmp / f"p{(trial + 1) % 2}.csv")], cwd=REPO, env=env,
                                   stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        seen = 0
        for line in process.stderr:
            if line.startswith("imagefair-test: wrote"):
                seen += 1
                if seen == kill_after:
                    process.send_signal(signal.SIGKILL)
                    break
        process.wait(timeout=120)
        try:
            loaded = load_audit_folder(out, reviews=False)
            run_id = loaded.audit["run_id"]
            generation = current_generation(out)
            ids = {parquet_run_id(generation / name) for name in ("images.parquet", "group_metrics.parquet")}
            ids.add(json.loads((generation / GENERATION_FILE).read_text())["run_id"])
            ids.add(json.loads((out / "audit.json").read_text())["run_id"])  # through the top-level link
            is_mixed = ids != {run_id}
        except Exception as error:  # noqa: BLE001 - counted: a folder no reader accepts
            unreadable += 1
            outcomes.append({"trial": trial, "killed_after_write": kill_after, "error": str(error)[:200]})
            continue
        mixed += int(is_mixed)
        switched += int(run_id != before)
        outcomes.append({"trial": trial, "killed_after_write": kill_after, "mixed": is_mixed,
                         "new_run_visible": run_id != before})
    return {"name": "kill9_between_file_writes", "trials": trials, "mixed_folders": mixed,
            "unreadable_folders": unreadable, "new_run_visible": switched, "target_mixed": 0, "trials_detail": outcomes}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--cases", default="identical,bombs,kill9")
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args(argv)
    cases = []
    with tempfile.TemporaryDirectory(prefix="imagefair-hostile-") as folder:
        tmp = Path(folder)
        for name in args.cases.split(","):
            start = time.perf_counter()
            if name == "identical":
                cases.append(case_identical(tmp))
            elif name == "bombs":
                cases.append(case_bombs(tmp))
            elif name == "kill9":
                cases.append(case_kill9(tmp, args.trials))
            print(f"{name}: {json.dumps(cases[-1])[:400]} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    out = Path(args.json)
    previous = json.loads(out.read_text()) if out.exists() else {"cases": []}
    kept = [c for c in previous.get("cases", []) if c["name"] not in {c2["name"] for c2 in cases}]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine_info("numpy", "PIL", "pandas"), "cases": kept + cases},
                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
