"""Issue 12 item 2: the CLI reads manifests with absolute paths and symlinked stores; ``--data-root DIR``
confines reads, and a refusal names the option (contract, "Data root")."""
from __future__ import annotations

import json
import os

import pandas as pd

from audit.io.manifest import ERROR_DATA_ROOT, ERROR_EMPTY_DATASET, SKIP_OUTSIDE_DATA_ROOT
from tests.app.synthetic_audit import build_dataset
from tests.helpers import run_cli


def _absolute_manifest(tmp_path, n_images=40):
    """Images in a store folder; the manifest elsewhere lists their absolute paths, half through symlinks."""
    files = build_dataset(tmp_path / "store", n_images=n_images, seed=11)
    frame = pd.read_csv(files["manifest"])
    links = tmp_path / "project" / "links"
    links.mkdir(parents=True)
    paths = []
    for i, relative in enumerate(frame["path"]):
        target = tmp_path / "store" / relative
        if i % 2:
            os.symlink(target, links / target.name)  # like DVC / git-annex / the Hugging Face cache
            paths.append(str(links / target.name))
        else:
            paths.append(str(target))
    frame["path"] = paths
    manifest = tmp_path / "project" / "manifest.csv"
    frame.to_csv(manifest, index=False)
    return manifest, files


def test_absolute_paths_and_symlinks_are_audited(tmp_path):
    manifest, files = _absolute_manifest(tmp_path)
    out = tmp_path / "out"
    done = run_cli("run", "--data", str(manifest), "--predictions", files["predictions"], "--out", str(out),
                   "--quiet", "--no-cache", "--n-bootstrap", "20")
    assert done.returncode == 0, done.stderr
    audit = json.loads((out / "audit.json").read_text())
    assert audit["dataset"]["n_images"] == 40 and audit["skipped"] == []
    assert audit["dataset"]["data_root"] is None


def test_data_root_confines_reads_and_the_refusal_names_the_option(tmp_path):
    manifest, files = _absolute_manifest(tmp_path)
    done = run_cli("run", "--data", str(manifest), "--predictions", files["predictions"], "--out",
                   str(tmp_path / "out"), "--quiet", "--no-cache", "--data-root", str(tmp_path / "project"))
    assert done.returncode == 2
    # every image lies outside --data-root (the symlinks resolve into the store): one line naming the option
    message = ERROR_EMPTY_DATASET.format(path=str(manifest), n_skipped=40, reasons="40 outside --data-root")
    assert done.stderr.strip().splitlines() == [f"error: {message}"]
    assert "--data-root" in SKIP_OUTSIDE_DATA_ROOT
    # a --data-root holding the store reads them all
    out = tmp_path / "out2"
    done = run_cli("run", "--data", str(manifest), "--predictions", files["predictions"], "--out", str(out),
                   "--quiet", "--no-cache", "--n-bootstrap", "20", "--data-root", str(tmp_path))
    assert done.returncode == 0, done.stderr
    audit = json.loads((out / "audit.json").read_text())
    assert audit["dataset"]["n_images"] == 40
    assert audit["dataset"]["data_root"] == str(tmp_path.resolve())


def test_data_root_must_be_a_folder(tmp_path):
    manifest, files = _absolute_manifest(tmp_path, n_images=10)
    missing = tmp_path / "nope"
    done = run_cli("run", "--data", str(manifest), "--out", str(tmp_path / "out"), "--quiet", "--data-root",
                   str(missing))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {ERROR_DATA_ROOT.format(path=missing)}"]
