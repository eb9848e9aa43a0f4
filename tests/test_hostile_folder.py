"""All-or-nothing audit folders (issue 11, item 3): one generation per run switched atomically, the run id
in every file, readers refuse mixed folders, one run at a time per folder, leftovers of killed runs cleaned,
``report --out`` never replaces something that is not a regular file."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import audit.folder as af
from audit.cli import main
from audit.errors import InputError
from tests.helpers import REPO, write_manifest_dataset, write_predictions_csv


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("folder_data")
    manifest = write_manifest_dataset(folder, n_per_cell=4, size=16)
    write_predictions_csv(manifest, folder / "preds.csv", accuracy_by_group={"a": 0.9, "b": 0.6})
    write_predictions_csv(manifest, folder / "preds2.csv", accuracy_by_group={"a": 0.5, "b": 0.5}, seed=7)
    return folder


def _run_args(data: Path, out: Path, predictions="preds.csv"):
    return ["run", "--data", str(data / "manifest.csv"), "--predictions", str(data / predictions), "--out",
            str(out), "--quiet", "--no-cache"]


def _one_line(capsys, code_expected=2) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_run_writes_one_generation_with_the_run_id_everywhere(data, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(_run_args(data, out)) == 0
    generation = af.current_generation(out)
    assert generation is not None and generation.parent.name == af.GENERATIONS_DIR
    audit = json.loads((out / "audit.json").read_text())
    run_id = audit["run_id"]
    assert generation.name == run_id
    for name in ("images.parquet", "group_metrics.parquet"):
        assert os.readlink(out / name) == f"{af.CURRENT_LINK}/{name}"
        assert af.parquet_run_id(out / name) == run_id
    record = json.loads((generation / af.GENERATION_FILE).read_text())
    assert record["run_id"] == run_id and set(record["files"]) >= {"audit.json", "probabilities.npy"}
    loaded = af.load_audit_folder(out)
    assert loaded.audit["run_id"] == run_id
    # a re-run switches to a new generation; reviews and other files stay
    (out / "reviews.sqlite").write_bytes(b"")
    assert main(_run_args(data, out, "preds2.csv")) == 0
    assert af.load_audit_folder(out, reviews=False).audit["run_id"] != run_id
    assert (out / "reviews.sqlite").exists()
    assert len(list((out / af.GENERATIONS_DIR).iterdir())) <= 1 + af.KEEP_PREVIOUS_GENERATIONS


def test_readers_refuse_a_mixed_folder(data, tmp_path):
    """The defect: audit.json of one run beside images.parquet of another was accepted."""
    first, second, mixed = tmp_path / "first", tmp_path / "second", tmp_path / "mixed"
    assert main(_run_args(data, first)) == 0
    assert main(_run_args(data, second, "preds2.csv")) == 0
    mixed.mkdir()
    for name in ("audit.json", "group_metrics.parquet", "probabilities.npy"):
        (mixed / name).write_bytes((first / name).read_bytes())
    (mixed / "images.parquet").write_bytes((second / "images.parquet").read_bytes())
    with pytest.raises(InputError) as info:
        af.load_audit_folder(mixed)
    first_id = json.loads((first / "audit.json").read_text())["run_id"]
    second_id = json.loads((second / "audit.json").read_text())["run_id"]
    assert str(info.value) == af.ERROR_MIXED_FOLDER.format(path=mixed, file="images.parquet", found=second_id,
                                                           expected=first_id)
    code = main(["gate", str(mixed), "--policy", str(REPO / "policy.example.toml")])
    assert code == 2


def test_second_concurrent_run_is_refused(data, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    holder = os.open(out / af.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(holder, b"4242", 0)
        capsys.readouterr()
        assert main(_run_args(data, out)) == 2
        assert _one_line(capsys) == "error: " + af.ERROR_FOLDER_LOCKED.format(path=out, pid="4242")
        assert not (out / "audit.json").exists()
    finally:
        os.close(holder)
    assert main(_run_args(data, out)) == 0


def test_failed_run_into_a_new_folder_leaves_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,klass\na.png,cat\n")
    out = tmp_path / "never"
    assert main(["run", "--data", str(bad), "--out", str(out), "--quiet"]) == 2
    assert not out.exists()


def test_leftovers_of_a_killed_run_are_cleaned(data, tmp_path):
    out = tmp_path / "left"
    assert main(_run_args(data, out)) == 0
    stale = out / af.GENERATIONS_DIR / "19990101T000000-dead"
    stale.mkdir()
    (stale / "images.parquet").write_bytes(b"half")
    (out / ".audit.json.abc123.tmp").write_text("{")
    (out / f"{af.CURRENT_LINK}.tmp-99999").symlink_to("nowhere")
    assert main(_run_args(data, out)) == 0
    assert not stale.exists()
    assert not (out / ".audit.json.abc123.tmp").exists()
    assert not (out / f"{af.CURRENT_LINK}.tmp-99999").is_symlink()


def test_full_disk_keeps_the_previous_run(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "full"
    assert main(_run_args(data, out)) == 0
    before = af.load_audit_folder(out, reviews=False).audit["run_id"]
    real = af._write_payload
    calls = []

    def failing(path, payload, run_id):
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, payload, run_id)

    monkeypatch.setattr(af, "_write_payload", failing)
    capsys.readouterr()
    assert main(_run_args(data, out, "preds2.csv")) == 2
    assert _one_line(capsys) == "error: " + af.ERROR_OUT_NOT_WRITABLE.format(path=out,
                                                                             reason="No space left on device")
    assert af.load_audit_folder(out, reviews=False).audit["run_id"] == before
    assert [p.name for p in (out / af.GENERATIONS_DIR).iterdir()] == [before]


def test_legacy_folder_is_upgraded_in_place(data, tmp_path):
    """A folder written by an earlier version (regular files, no run id) is read, then replaced by links."""
    out = tmp_path / "legacy"
    assert main(_run_args(data, out)) == 0
    generation = af.current_generation(out)
    for name in ("audit.json", "images.parquet", "group_metrics.parquet", "probabilities.npy"):
        target = out / name
        content = (generation / name).read_bytes()
        target.unlink()
        target.write_bytes(content)
    audit = json.loads((out / "audit.json").read_text())
    del audit["run_id"]
    (out / "audit.json").write_text(json.dumps(audit))
    pd.read_parquet(out / "images.parquet").to_parquet(out / "images.parquet", index=False)
    pd.read_parquet(out / "group_metrics.parquet").to_parquet(out / "group_metrics.parquet", index=False)
    (out / af.CURRENT_LINK).unlink()
    import shutil

    shutil.rmtree(out / af.GENERATIONS_DIR)
    assert "run_id" not in af.load_audit_folder(out, reviews=False).audit
    assert main(_run_args(data, out)) == 0
    assert (out / "audit.json").is_symlink()
    assert af.load_audit_folder(out, reviews=False).audit["run_id"]


def test_generic_extra_files_share_the_generation(tmp_path):
    out = tmp_path / "extra"
    run_id = af.write_generation(out, {"annotators.parquet": pd.DataFrame({"annotator": ["x"], "n": [3]}),
                                       "notes.json": {"a": 1}, "raw.bin": b"\x00\x01"})
    assert af.parquet_run_id(out / "annotators.parquet") == run_id
    assert json.loads((out / "notes.json").read_text()) == {"a": 1, "run_id": run_id}
    af.write_generation(out, {"notes.json": {"a": 2}})
    assert not (out / "annotators.parquet").exists() and not (out / "raw.bin").exists()


def test_report_out_never_replaces_a_fifo(data, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(_run_args(data, out)) == 0
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    capsys.readouterr()
    assert main(["report", str(out), "--format", "md", "--out", str(fifo)]) == 2
    from audit.io.atomic import ERROR_NOT_REGULAR

    assert _one_line(capsys) == "error: " + ERROR_NOT_REGULAR.format(path=fifo)
    assert fifo.is_fifo()


def _killed_run(data: Path, out: Path, kill_after: int, predictions: str) -> None:
    """Start ``run`` in a subprocess that pauses after each file written; kill -9 it after ``kill_after``."""
    env = {**os.environ, "IMAGEFAIR_TEST_PAUSE_AFTER_WRITE": "20", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "audit", *_run_args(data, out, predictions)], cwd=REPO,
                               env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        seen = 0
        for line in process.stderr:
            if line.startswith("imagefair-test: wrote"):
                seen += 1
                if seen == kill_after:
                    break
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)


@pytest.mark.parametrize("kill_after", [1, 4, 5])
def test_kill_9_between_file_writes_leaves_one_complete_run(data, tmp_path, kill_after):
    """Files written: probabilities.npy, images.parquet, group_metrics.parquet, audit.json, then the switch
    (5, killed before the top-level links are made): the reader sees the old run before the switch, the new
    one after, never a mix. bench/hostile.py runs 20 such trials."""
    out = tmp_path / "killed"
    assert main(_run_args(data, out)) == 0
    old = af.load_audit_folder(out, reviews=False)
    _killed_run(data, out, kill_after, "preds2.csv")
    loaded = af.load_audit_folder(out, reviews=False)
    if kill_after < 5:
        assert loaded.audit["run_id"] == old.audit["run_id"]
    else:
        assert loaded.audit["run_id"] != old.audit["run_id"]
    assert af.parquet_run_id(af.current_generation(out) / "images.parquet") == loaded.audit["run_id"]
    assert main(_run_args(data, out)) == 0  # the next run cleans what the killed one left
    generations = list((out / af.GENERATIONS_DIR).iterdir())
    assert len(generations) <= 1 + af.KEEP_PREVIOUS_GENERATIONS
