"""All-or-nothing comparison folders (issue 15): ``compare --out DIR`` writes comparison.json and
image_changes.parquet as one generation with audit/folder.py's machinery (run id in both files, a lock against
a concurrent compare, leftovers cleaned); the reader refuses a folder mixing two runs; comparison folders of
plain files (before generations) are still read."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import audit.folder as af
from audit.cli import main
from audit.compare.folder import (CHANGES_FILE, COMPARISON_FILE, ERROR_MIXED_COMPARISON, load_comparison_folder)
from audit.errors import InputError
from tests.compare.builders import planted_pair

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    old, new, _ = planted_pair(tmp_path_factory.mktemp("cmp_folder"), n=400, drop=0.1, seed=5)
    return old, new


def _compare_args(pair, out: Path, seed: int = 0):
    old, new = pair
    return ["compare", str(old), str(new), "--out", str(out), "--n-bootstrap", "20", "--seed", str(seed)]


def _one_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def _start_paused(pair, out: Path, seed: int, pause: float) -> subprocess.Popen:
    """``compare`` in a subprocess that pauses after each file written (audit/folder.py's test hook)."""
    env = {**os.environ, "IMAGEFAIR_TEST_PAUSE_AFTER_WRITE": str(pause), "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "audit", *_compare_args(pair, out, seed)], cwd=REPO, env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)


def _wait_for_writes(process: subprocess.Popen, count: int) -> list[str]:
    seen = []
    for line in process.stderr:
        if line.startswith("imagefair-test: wrote"):
            seen.append(line.split()[-1])
            if len(seen) == count:
                break
    return seen


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    process.stderr.close()


def test_compare_writes_one_generation_with_the_run_id_in_both_files(pair, tmp_path):
    out = tmp_path / "cmp"
    assert main(_compare_args(pair, out)) == 0
    generation = af.current_generation(out)
    assert generation is not None and generation.parent.name == af.GENERATIONS_DIR
    run_id = json.loads((out / COMPARISON_FILE).read_text())["run_id"]
    assert generation.name == run_id
    for name in (COMPARISON_FILE, CHANGES_FILE):
        assert os.readlink(out / name) == f"{af.CURRENT_LINK}/{name}"
    assert af.parquet_run_id(out / CHANGES_FILE) == run_id
    record = json.loads((generation / af.GENERATION_FILE).read_text())
    assert record["run_id"] == run_id and set(record["files"]) == {COMPARISON_FILE, CHANGES_FILE}
    assert load_comparison_folder(out).run_id == run_id
    # a second compare switches generations; a report beside the files is kept
    (out / "report.md").write_text("earlier report")
    assert main(_compare_args(pair, out, seed=1)) == 0
    assert load_comparison_folder(out).run_id != run_id
    assert (out / "report.md").read_text() == "earlier report"
    assert len(list((out / af.GENERATIONS_DIR).iterdir())) <= 1 + af.KEEP_PREVIOUS_GENERATIONS


@pytest.mark.parametrize("kill_after", [1, 2, 3])
def test_kill_9_between_file_writes_leaves_one_complete_comparison(pair, tmp_path, kill_after):
    """Writes: image_changes.parquet, comparison.json, then the switch of ``.current`` (3, killed before the
    top-level links are refreshed). The reader sees the earlier comparison before the switch, the new one
    after, never a mix; the next compare cleans what the killed one left."""
    out = tmp_path / "killed"
    assert main(_compare_args(pair, out)) == 0
    before = load_comparison_folder(out).run_id
    process = _start_paused(pair, out, seed=1, pause=3)
    try:
        written = _wait_for_writes(process, kill_after)
    finally:
        _stop(process)
    assert written == [CHANGES_FILE, COMPARISON_FILE, af.CURRENT_LINK][:kill_after]
    loaded = load_comparison_folder(out)
    if kill_after < 3:
        assert loaded.run_id == before
    else:
        assert loaded.run_id != before
    assert af.parquet_run_id(af.current_generation(out) / CHANGES_FILE) == loaded.run_id
    assert len(loaded.image_changes) == 400
    assert main(_compare_args(pair, out, seed=2)) == 0
    assert len(list((out / af.GENERATIONS_DIR).iterdir())) <= 1 + af.KEEP_PREVIOUS_GENERATIONS
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp") or ".tmp-" in p.name]


def test_two_concurrent_compares_into_one_folder(pair, tmp_path, capsys):
    """The second compare into a folder being written is refused at once (one line naming the writer); the
    first one's comparison is the one read afterwards."""
    out = tmp_path / "busy"
    process = _start_paused(pair, out, seed=1, pause=4)
    try:
        assert _wait_for_writes(process, 1) == [CHANGES_FILE]
        capsys.readouterr()
        assert main(_compare_args(pair, out, seed=2)) == 2
        assert _one_line(capsys) == "error: " + af.ERROR_FOLDER_LOCKED.format(path=out, pid=process.pid)
        rest = process.stderr.read()
        assert process.wait(timeout=120) == 0, rest
    finally:
        if process.poll() is None:
            _stop(process)
        else:
            process.stderr.close()
    loaded = load_comparison_folder(out)
    assert loaded.run_id == af.current_generation(out).name
    assert loaded.comparison["settings"]["seed"] == 1
    # the lock died with its process: the next compare goes through
    assert main(_compare_args(pair, out, seed=2)) == 0


def test_reader_refuses_a_mixed_comparison_folder(pair, tmp_path, capsys):
    first, second, mixed = tmp_path / "first", tmp_path / "second", tmp_path / "mixed"
    assert main(_compare_args(pair, first)) == 0
    assert main(_compare_args(pair, second, seed=1)) == 0
    mixed.mkdir()
    (mixed / COMPARISON_FILE).write_bytes((first / COMPARISON_FILE).read_bytes())
    (mixed / CHANGES_FILE).write_bytes((second / CHANGES_FILE).read_bytes())
    first_id = load_comparison_folder(first).run_id
    second_id = load_comparison_folder(second).run_id
    expected = ERROR_MIXED_COMPARISON.format(path=mixed, file=CHANGES_FILE, found=second_id, expected=first_id)
    with pytest.raises(InputError) as info:
        load_comparison_folder(mixed)
    assert str(info.value) == expected
    capsys.readouterr()
    assert main(["report", str(mixed), "--format", "md"]) == 2
    assert _one_line(capsys) == "error: " + expected
    assert not (mixed / "report.md").exists()


def _make_plain(folder: Path) -> None:
    """Turn a comparison folder into one written before generations: plain files, no run id, schema 1.0
    (share rows and shift tests without a family, no multiplicity summary)."""
    generation = af.current_generation(folder)
    comparison = json.loads((generation / COMPARISON_FILE).read_text())
    del comparison["run_id"], comparison["multiplicity"]
    comparison["schema_version"] = "1.0"
    for row in comparison["data"]["class_shares"] + comparison["data"]["group_shares"]:
        del row["scope"], row["p_adjusted"]
    for test in comparison["data"]["shift_tests"]:
        del test["scope"]
    changes = pd.read_parquet(generation / CHANGES_FILE)
    for name in (COMPARISON_FILE, CHANGES_FILE):
        (folder / name).unlink()
    (folder / af.CURRENT_LINK).unlink()
    shutil.rmtree(folder / af.GENERATIONS_DIR)
    (folder / af.LOCK_FILE).unlink()
    (folder / COMPARISON_FILE).write_text(json.dumps(comparison, indent=2))
    changes.to_parquet(folder / CHANGES_FILE, index=False)


def test_plain_comparison_folder_of_an_earlier_version_is_read_and_upgraded(pair, tmp_path, capsys):
    out = tmp_path / "plain"
    assert main(_compare_args(pair, out)) == 0
    _make_plain(out)
    loaded = load_comparison_folder(out)
    assert loaded.run_id is None and len(loaded.image_changes) == 400
    assert loaded.comparison["schema_version"] == "1.0" and loaded.comparison["multiplicity"] is None
    assert {r["scope"] for r in loaded.comparison["data"]["group_shares"]} == {""}
    capsys.readouterr()
    assert main(["report", str(out), "--format", "md"]) == 0
    assert (out / "report.md").is_file()
    (out / ".comparison.json.abc123.tmp").write_text("{")  # left by a killed write of an earlier version
    assert main(_compare_args(pair, out, seed=1)) == 0
    assert (out / COMPARISON_FILE).is_symlink() and load_comparison_folder(out).run_id
    assert not (out / ".comparison.json.abc123.tmp").exists()
    assert (out / "report.md").is_file()


def test_failed_compare_into_a_new_folder_leaves_nothing(pair, tmp_path, monkeypatch, capsys):
    import errno

    out = tmp_path / "never"

    def failing(path, payload, run_id):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(af, "_write_payload", failing)
    capsys.readouterr()
    assert main(_compare_args(pair, out)) == 2
    from audit.compare.folder import ERROR_OUT_NOT_WRITABLE

    assert _one_line(capsys) == "error: " + ERROR_OUT_NOT_WRITABLE.format(path=out, reason="No space left on device")
    assert not out.exists()


def test_report_out_never_replaces_a_fifo(pair, tmp_path, capsys):
    from audit.io.atomic import ERROR_NOT_REGULAR

    out = tmp_path / "cmp"
    assert main(_compare_args(pair, out)) == 0
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    capsys.readouterr()
    assert main(["report", str(out), "--format", "md", "--out", str(fifo)]) == 2
    assert _one_line(capsys) == "error: " + ERROR_NOT_REGULAR.format(path=fifo)
    assert fifo.is_fifo()
