"""audit.io.scratch: working folders are named after their process, and a killed run's are swept."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit.io.scratch import make_scratch_dir, sweep_stale


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_new_folder_sweeps_the_folders_of_processes_that_are_gone(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f"imagefair-probabilities-{dead}-ab12_x"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "probabilities.npy").write_bytes(b"x" * 1000)
    alive = tmp_path / f"imagefair-known-{os.getppid()}-cd34"  # a running process (the test's parent)
    alive.mkdir()
    own = tmp_path / f"imagefair-stage-{os.getpid()}-ef56"  # this process: in use
    own.mkdir()
    other = [tmp_path / "imagefair-stage-abc123", tmp_path / f"imagefair-known-{dead}-x.txt",
             tmp_path / f"not-imagefair-known-{dead}-gh78"]
    other[0].mkdir()
    other[1].write_text("a file, not a working folder")
    other[2].mkdir()

    made = make_scratch_dir("stage", dir=tmp_path)

    assert made.is_dir() and made.parent == tmp_path
    assert made.name.startswith(f"imagefair-stage-{os.getpid()}-")
    assert not stale.exists()
    assert alive.is_dir() and own.is_dir()
    assert all(path.exists() for path in other)
    assert sweep_stale(tmp_path) == []  # nothing left to sweep; the new folder belongs to this process


def test_a_killed_run_leaves_a_folder_the_next_run_removes(tmp_path):
    """A process killed with SIGKILL cannot delete its folder; the next process's first folder does."""
    code = ("import os, sys; from audit.io.scratch import make_scratch_dir; "
            "print(make_scratch_dir('known', dir=sys.argv[1]), flush=True); os.kill(os.getpid(), 9)")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert run.returncode == -9
    left = tmp_path / os.path.basename(run.stdout.strip())
    assert left.is_dir()
    make_scratch_dir("known", dir=tmp_path)
    assert not left.exists()


def test_scratch_names_are_checked():
    with pytest.raises(ValueError):
        make_scratch_dir("../x")


def test_an_error_in_the_stage_removes_its_temporary_store(tmp_path):
    """A run without cache whose per-image stage fails (or is interrupted) deletes its temporary store at once."""
    import pandas as pd

    from audit.pipeline.perimage import StageSpec, feature_key, run_stage

    class Failing:
        def map(self, spec, known, tasks, *, model=None):
            yield from ()
            raise KeyboardInterrupt

    table = pd.DataFrame({"path": [str(tmp_path / "a.png")], "row": [0]})
    spec = StageSpec(max_pixels=10**6, feature_key=feature_key(max_pixels=10**6), output_key=None)
    with pytest.raises(KeyboardInterrupt):
        run_stage(table, spec=spec, executor=Failing(), store_root=None, work_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
