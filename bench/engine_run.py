"""Wall time and peak memory of ``python -m audit run`` on the sample and on the CIFAR-10 test JPEGs,
first run (empty inference cache) and cached run.

Usage: python bench/engine_run.py --json bench/results/engine_run.json [--skip-cifar]
Each run is a fresh subprocess; peak memory is its maximum resident set size (``ru_maxrss``), read with
``os.wait4`` so it belongs to that process alone. There is no peer tool for a whole audit; the figures are
the ones issue 3's closing note asks for.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def machine() -> dict:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg()[0]}


def run_once(arguments: list[str]) -> tuple[float, float]:
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "audit", "run", *arguments, "--quiet"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"run failed: {process.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss / 1024.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, metavar="PATH")
    parser.add_argument("--skip-cifar", action="store_true")
    args = parser.parse_args()
    cases = [("sample", ["--data", str(REPO / "sample_data" / "manifest.csv"), "--model",
                         str(REPO / "sample_data" / "model.onnx")], 540)]
    cifar = SHARED / "cifar10-test-jpeg" / "test"
    if not args.skip_cifar and cifar.is_dir():
        cases.append(("cifar10-test-jpeg resnet20", ["--data", str(cifar), "--model",
                      str(SHARED / "resnet-cifar10-akamaster" / "resnet20-12fca82f.th"), "--arch", "cifar_resnet20"],
                      10000))
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, arguments, n in cases:
            cache = Path(scratch) / f"cache-{len(results)}"
            for label in ("first", "cached"):
                out = Path(scratch) / f"out-{len(results)}-{label}"
                seconds, peak = run_once([*arguments, "--out", str(out), "--cache-dir", str(cache)])
                audit = json.loads((out / "audit.json").read_text())
                results.append({"case": name, "run": label, "n_images": n, "wall_s": round(seconds, 2),
                                "peak_mb": round(peak, 1), "from_cache": audit["model"]["from_cache"],
                                "stage_durations_s": audit["provenance"]["stage_durations_s"]})
                print(json.dumps(results[-1]))
    payload = {"machine": machine(), "cases": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
