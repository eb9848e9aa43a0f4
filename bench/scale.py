"""Scale benchmark (issue 14): the per-image stage, inference, the feature cache and the executors.

Usage::

    python bench/scale.py --json bench/results/scale.json [--cases cifar,10k,100k,1.28M,executors] [--workers N]

Cases (each figure in seconds / MB; every run of ``python -m audit run`` is a fresh subprocess whose peak
RSS is read with ``os.wait4``: the largest process of the run's process tree, which with worker processes
is the parent or one worker, not their sum; the JSON says so):

- ``cifar``: the per-image stage (decode, content hash, pixel attributes, perceptual hashes; no model) on
  the 10,000 CIFAR-10 test JPEGs (``../shared/data``) with ``--workers 1`` and with all cores (alternating,
  three times each; medians), against the bare single-process ``PIL.Image.open(path).convert("RGB")`` loop
  over the same files and the same loop split over all cores (what the machine gives a trivially parallel
  job), run in the same invocation before and after the audits (the machine is shared).
- ``10k``, ``100k``, ``1.28M``: generated ImageFolder-like data under ``bench/.cache/scale/`` (never in
  git): JPEG q90, sizes 64-256 px (32-64 px for 1.28M), 1,000 classes, two attributes in a manifest, and a
  small ONNX model with 1,000 outputs (a 3x3 conv, 2 x 2 pooling, linear; input 32 x 32). For each: first run (empty
  cache) and cached run wall time (per-image results and analysis steps from the caches), a re-run with other
  groups (per-image results cached, analyses recomputed), peak RSS, images/s, per-stage times from
  ``audit.json``; and in the same invocation the bare baselines: the single-process PIL decode loop and the
  bare onnxruntime forward over the same preprocessed batches of 128 (decode and preprocessing outside the
  timer), compared with the forward calls inside the pipeline (``per_image_stage.forward_s``; the input
  preparation inside the pipeline is reported apart, ``model_input_and_forward_images_per_s``).
- ``executors``: local vs Ray (a local instance, start-up time reported and excluded) at 10k, no cache.

The machine is shared: ``os.getloadavg()`` is recorded before and after every case.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CACHE = REPO / "bench" / ".cache" / "scale"
CIFAR = REPO.parent / "shared" / "data" / "cifar10-test-jpeg" / "test"
SIZES = {"10k": 10_000, "100k": 100_000, "1.28M": 1_280_000}


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def machine() -> dict:
    from bench._machine import machine_info

    info = machine_info("numpy", "PIL", "onnxruntime", "ray")
    info["load_average_at_start"] = load()
    return info


# -- data ---------------------------------------------------------------------------------------------------------
def build_model(folder: Path) -> Path:
    """A small ONNX model with 1,000 outputs and 64-d embeddings (16 channels pooled over 2 x 2 regions; fixed
    seed) and its model.json. (The first version pooled over the whole image: 16-d embeddings nearly equal for
    every image, so the embedding near-duplicate search linked them all.)"""
    path = folder / "model1000-v2.onnx"
    if path.is_file():
        return path
    import warnings

    import torch

    warnings.simplefilter("ignore")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
            self.linear = torch.nn.Linear(64, 1000)

        def forward(self, x):
            features = torch.nn.functional.avg_pool2d(torch.relu(self.conv(x)), 8).flatten(1)
            return self.linear(features), features

    folder.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(Net().eval(), torch.zeros(1, 3, 32, 32), str(path), input_names=["x"],
                      output_names=["logits", "embeddings"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}, "embeddings": {0: "n"}}, dynamo=False)
    sidecar = {"classes": [f"c{i:03d}" for i in range(1000)], "input_size": [32, 32], "center_crop": 1.0,
               "channel_order": "RGB", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "output": "logits"}
    (folder / "model1000-v2.json").write_text(json.dumps(sidecar))
    return path


def build_data(n: int, *, small: bool) -> Path:
    """ImageFolder-like JPEGs and a manifest (path,label,site,camera); reused when already built.

    Every image is its own pattern: a 4 x 4 grid of random colours, resized, plus pixel noise (sigma 24), so
    images are as distinct as photographs for the perceptual hashes and the model's embeddings; one image in
    100 is a resized copy of the one before it with new noise (planted near-duplicates, as in real data sets).
    The first version of this generator drew every image from 32 patterns differing only in colour (thousands
    of near-duplicates of each other, whose pairs grow with the square of N); tiles without noise left the
    corner crops nearly flat, and their hashes linked most images.
    """
    import numpy as np
    from PIL import Image

    folder = CACHE / f"data-v4-{n}"
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    rng = np.random.default_rng(n)
    low, high = (32, 64) if small else (64, 256)
    lines = ["path,label,site,camera"]
    tile = None
    for i in range(n):
        label = f"c{i % 1000:03d}"
        width, height = (int(v) for v in rng.integers(low, high + 1, 2))
        if i % 100 != 99 or tile is None:  # else: the previous image's pattern again, at another size
            tile = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        pixels = np.asarray(tile.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
        pixels += rng.normal(0, 24, pixels.shape).astype(np.float32)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        relative = f"images/{i // 1000:04d}/{i:07d}.jpg"
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, quality=90)
        lines.append(f"{relative},{label},{'abcd'[i % 4]},{'xyz'[(i // 7) % 3]}")
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


# -- measuring ------------------------------------------------------------------------------------------------------
def run_cli(arguments: list[str], out: Path) -> dict:
    """One ``python -m audit run`` in a fresh subprocess: wall time, peak RSS (MB), its audit.json."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "audit", "run", *arguments, "--out", str(out), "--quiet"],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"run failed: {process.stderr.read().decode()[-2000:]}")
    audit = json.loads((out / "audit.json").read_text())
    stages = audit["provenance"]["stage_durations_s"]
    # cpu_s: user + system time of the run and of the worker processes it reaped (less sensitive to a busy machine)
    return {"wall_s": round(seconds, 3), "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1),
            "n_images": audit["dataset"]["n_images"], "images_per_s": round(audit["dataset"]["n_images"] / seconds, 1),
            "per_image_stage_s": stages.get("read_images"), "load_dataset_s": stages.get("load_dataset"),
            "analyses_s": round(sum(v for k, v in stages.items()
                                    if k not in ("read_images", "load_dataset", "model")), 3),
            "stage": audit["provenance"].get("per_image_stage"), "stage_durations_s": stages,
            "steps_from_cache": audit["provenance"].get("steps_from_cache", [])}


def bare_decode(paths: list[str]) -> float:
    from PIL import Image

    start = time.perf_counter()
    for path in paths:
        Image.open(path).convert("RGB")
    return round(time.perf_counter() - start, 3)


def bare_forward(paths: list[str], model_path: Path, *, batch_size: int = 128, limit: int | None = None) -> dict:
    """onnxruntime forward alone over the same preprocessed batches (decode + preprocessing not timed)."""
    import numpy as np
    from PIL import Image

    from audit.model.inference import load_model
    from audit.model.sidecar import preprocess_batch

    model = load_model(str(model_path))
    seconds = 0.0
    n = 0
    paths = paths[:limit] if limit else paths
    for start in range(0, len(paths), batch_size):
        images = [np.asarray(Image.open(p).convert("RGB")) for p in paths[start:start + batch_size]]
        batch = preprocess_batch(images, model.preprocessing)
        clock = time.perf_counter()
        model.predict(batch)
        seconds += time.perf_counter() - clock
        n += len(images)
    return {"bare_forward_s": round(seconds, 3), "n": n, "images_per_s": round(n / seconds, 1)}


def manifest_paths(manifest: Path) -> list[str]:
    import csv

    with open(manifest, newline="") as handle:
        return [str(manifest.parent / row["path"]) for row in csv.DictReader(handle)]


# -- cases ----------------------------------------------------------------------------------------------------------
def _decode_share(paths: list[str]) -> float:
    return bare_decode(paths)


def bare_decode_parallel(paths: list[str], workers: int) -> float:
    """The bare decode loop split over ``workers`` processes (started beforehand, not timed): how much this
    machine gives a trivially parallel job, the ceiling of the per-image stage's speed-up."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(abs, range(workers))  # started and imported
        start = time.perf_counter()
        pool.map(_decode_share, [paths[i::workers] for i in range(workers)])
        return round(time.perf_counter() - start, 3)


def case_cifar(workers: int, scratch: Path, *, repeats: int = 3) -> dict:
    import statistics

    paths = sorted(str(p) for p in CIFAR.glob("*/*.jpg"))
    case = {"name": "cifar10-test-jpeg per-image stage", "n_images": len(paths), "load_average_before": load(),
            "repeats": repeats}
    # The machine is shared and noisy: the bare loops run before and after the audits, and the audits with
    # 1 and with all workers alternate `repeats` times; ratios use medians.
    before = bare_decode(paths)
    parallel_before = bare_decode_parallel(paths, workers)
    runs: dict = {1: [], workers: []}
    for _ in range(repeats):
        for w in (1, workers):
            runs[w].append(run_cli(["--data", str(CIFAR), "--no-cache", "--workers", str(w)], scratch / f"cifar-{w}"))
    after = bare_decode(paths)
    parallel_after = bare_decode_parallel(paths, workers)
    for w, label in ((1, "workers_1"), (workers, f"workers_{workers}")):
        stages = [r["per_image_stage_s"] for r in runs[w]]
        case[label] = runs[w][stages.index(sorted(stages)[len(stages) // 2])]  # the median run, whole
        case[f"{label}_stage_s_runs"] = stages
    case["bare_decode_runs_s"] = [before, after]
    case["bare_decode_s"] = round((before + after) / 2, 3)
    case[f"bare_decode_{workers}_processes_runs_s"] = [parallel_before, parallel_after]
    one = statistics.median(case["workers_1_stage_s_runs"])
    many = statistics.median(case[f"workers_{workers}_stage_s_runs"])
    case["stage_workers_1_over_bare_decode"] = round(one / case["bare_decode_s"], 2)
    case[f"speedup_workers_{workers}_over_1"] = round(one / many, 2)
    case[f"speedup_bare_decode_{workers}_processes"] = round(
        case["bare_decode_s"] / ((parallel_before + parallel_after) / 2), 2)
    case["load_average_after"] = load()
    return case


def case_size(label: str, workers: int, scratch: Path) -> dict:
    n = SIZES[label]
    started = time.perf_counter()
    manifest = build_data(n, small=(n > 100_000))
    model = build_model(CACHE)
    case = {"name": f"synthetic {label}", "n_images": n, "classes": 1000,
            "image_sizes_px": "32-64" if n > 100_000 else "64-256", "generate_s": round(time.perf_counter() - started, 1),
            "load_average_before": load()}
    paths = manifest_paths(manifest)
    case["bare_decode_s"] = bare_decode(paths if n <= 100_000 else paths[:100_000])
    case["bare_decode_n"] = min(n, 100_000)
    case["bare_forward"] = bare_forward(paths, model, limit=None if n <= 100_000 else 100_000)
    cache = scratch / f"cache-{label}"
    arguments = ["--data", str(manifest), "--model", str(model), "--workers", str(workers),
                 "--cache-dir", str(cache)]
    case["first"] = run_cli(arguments, scratch / f"out-{label}-first")
    case["cached"] = run_cli(arguments, scratch / f"out-{label}-cached")
    case["cached_over_first"] = round(case["cached"]["wall_s"] / case["first"]["wall_s"], 3)
    # not a target, for honesty: a re-run with other groups reads the per-image results from the cache but
    # recomputes every analysis that depends on the groups
    # (at 10k only: above, it would double the case's time)
    if n <= SIZES["10k"]:
        case["groups_changed"] = run_cli(arguments + ["--group-by", "site"], scratch / f"out-{label}-groups")
        case["groups_changed_over_first"] = round(case["groups_changed"]["wall_s"] / case["first"]["wall_s"], 3)
    case["first_s_per_image"] = round(case["first"]["wall_s"] / n, 6)
    stage = case["first"]["stage"] or {}
    workers_used = max(1, stage.get("workers") or 1)
    if stage.get("forward_s"):
        # the runtime's forward calls inside the pipeline (input preparation excluded, as in the bare loop),
        # summed over the workers, which run at the same time (one model copy and one thread each)
        case["forward_in_pipeline_s"] = stage["forward_s"]
        case["inference_in_pipeline_images_per_s"] = round(n / (stage["forward_s"] / workers_used), 1)
        case["inference_in_pipeline_over_bare"] = round(
            case["inference_in_pipeline_images_per_s"] / case["bare_forward"]["images_per_s"], 3)
    if stage.get("model_s"):
        # with the preparation of the model input (resize, normalisation) included
        case["model_input_and_forward_images_per_s"] = round(n / (stage["model_s"] / workers_used), 1)
    case["load_average_after"] = load()
    return case


def case_executors(workers: int, scratch: Path) -> dict:
    manifest = build_data(SIZES["10k"], small=False)
    model = build_model(CACHE)
    case = {"name": "executors at 10k (no cache)", "n_images": SIZES["10k"], "load_average_before": load()}
    base = ["--data", str(manifest), "--model", str(model), "--no-cache", "--workers", str(workers)]
    case["local"] = run_cli(base + ["--executor", "local"], scratch / "exec-local")
    case["ray"] = run_cli(base + ["--executor", "ray"], scratch / "exec-ray")
    ray_startup = (case["ray"]["stage"] or {}).get("startup_s", 0.0)
    local_startup = (case["local"]["stage"] or {}).get("startup_s", 0.0)
    case["ray_startup_s"] = ray_startup
    case["ray_over_local_excluding_startup"] = round(
        (case["ray"]["wall_s"] - ray_startup) / (case["local"]["wall_s"] - local_startup), 3)
    case["load_average_after"] = load()
    return case


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, metavar="PATH")
    parser.add_argument("--cases", default="cifar,10k,executors", help="comma list of cifar,10k,100k,1.28M,executors")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    cases = []
    out_path = Path(args.json)
    previous = json.loads(out_path.read_text()) if out_path.is_file() else {}
    kept = {c["name"]: c for c in previous.get("cases", [])}
    with tempfile.TemporaryDirectory(prefix="imagefair-scale-") as scratch:
        scratch = Path(scratch)
        for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
            print(f"case {name} ...", file=sys.stderr, flush=True)
            if name == "cifar":
                if not CIFAR.is_dir():
                    print("  skipped: ../shared/data/cifar10-test-jpeg absent", file=sys.stderr)
                    continue
                case = case_cifar(args.workers, scratch)
            elif name == "executors":
                case = case_executors(args.workers, scratch)
            else:
                case = case_size(name, args.workers, scratch)
            case["workers"] = args.workers
            case["peak_rss_note"] = "peak RSS of the largest process of the run (parent or one worker)"
            ten_k = kept.get("synthetic 10k") if name != "10k" else case
            if name in SIZES and name != "10k" and ten_k and ten_k.get("first_s_per_image"):
                # the linearity target: time per image against the 10k case's (kept from an earlier
                # invocation when not run in this one: the JSON says which, by its machine and load figures)
                case["first_s_per_image_over_10k"] = round(case["first_s_per_image"] / ten_k["first_s_per_image"], 3)
                case["ten_k_case_from_this_invocation"] = "10k" in [c.strip() for c in args.cases.split(",")]
            cases.append(case)
            kept[case["name"]] = case
            result = {"machine": machine(), "cases": list(kept.values())}
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(result, indent=2) + "\n")  # after every case: a late kill keeps the rest
            print(json.dumps(case, indent=1)[:1500], file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
