"""``imagefair cache info | clear`` (audit.pipeline.cache_admin): what the cache holds, deleting all of it or
what no run used for some days, never anything outside its layout; a run marks what it reads as used."""
import os
import time
from pathlib import Path

import pytest

from audit.cli_cache import MESSAGE_CLEARED, MESSAGE_NO_CACHE
from audit.config import AuditConfig
from audit.errors import InputError
from audit.pipeline import run_audit
from audit.pipeline.cache_admin import (AREAS, ERROR_OLDER_THAN, INCOMPLETE_AGE_S, cache_usage, check_older_than,
                                        clear_cache)
from tests.helpers import write_manifest_dataset
from tests.test_pipeline import _write_torchscript_model

DAY = 86400.0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache-admin-data")
    manifest = write_manifest_dataset(folder, n_per_cell=6)  # 24 images
    model = _write_torchscript_model(folder, ["cat", "dog"])
    return manifest, model


def _run(data, cache: Path):
    manifest, model = data
    return run_audit(AuditConfig(data=str(manifest), model=str(model), n_bootstrap=20, cache_dir=str(cache)))


def _area(areas, name):
    return next(a for a in areas if a.name == name)


def _files(folder: Path) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}


def _age_everything(folder: Path, seconds: float) -> None:
    old = time.time() - seconds
    for path in folder.rglob("*"):
        os.utime(path, (old, old), follow_symlinks=False)


def test_info_counts_what_a_run_wrote(data, tmp_path):
    cache = tmp_path / "cache"
    _run(data, cache)
    areas = cache_usage(cache)
    assert [a.name for a in areas] == list(AREAS)
    features, outputs, steps = (_area(areas, n) for n in ("features", "model outputs", "analysis steps"))
    # one shard of 24 images: one features part, one outputs part (index + probabilities + embeddings)
    assert features.entries == 1 and outputs.entries == 1 and steps.entries >= 3
    on_disk = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    assert sum(a.bytes for a in areas) == on_disk
    assert _area(areas, "incomplete writes").entries == 0
    assert all(a.oldest <= a.newest <= time.time() for a in areas if a.entries)


def test_clear_older_than_keeps_what_a_run_just_used(data, tmp_path):
    cache = tmp_path / "cache"
    first = _run(data, cache)
    _age_everything(cache, 40 * DAY)
    # a cached re-run reads every part and step entry: they are marked as used now
    again = _run(data, cache)
    assert again.audit["provenance"]["per_image_stage"]["images_from_cache"] == len(first.images)
    assert again.audit["provenance"]["steps_from_cache"]
    before = _files(cache)
    result = clear_cache(cache, older_than_days=30)
    assert result.total_entries == 0 and _files(cache) == before
    # 40 days later nothing has been used: everything goes
    result = clear_cache(cache, older_than_days=30, now=time.time() + 40 * DAY)
    usage = cache_usage(cache)
    assert result.total_entries >= 5 and all(a.entries == 0 for a in usage)
    assert _files(cache) == set()
    # and the next run recomputes everything, with the same findings
    third = _run(data, cache)
    assert third.audit["provenance"]["per_image_stage"]["images_decoded"] == len(first.images)
    assert third.audit["provenance"]["steps_from_cache"] == []
    assert third.audit["findings"] == first.audit["findings"]


def test_clear_deletes_only_the_cache_layout(data, tmp_path):
    cache = tmp_path / "cache"
    _run(data, cache)
    mine = [cache / "notes.txt", cache / "store" / "features" / "README", cache / "steps" / "keep.json",
            cache / "store" / "outputs" / "not-a-key" / "0123456789abcdef0123456789abcdef.parquet"]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the user's")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("x")
    key_dir = next(p for p in (cache / "store" / "features").iterdir() if p.is_dir())
    (key_dir / ("f" * 32 + ".parquet")).symlink_to(outside / "precious.txt")  # a link is never followed
    (cache / "steps" / "ab").mkdir()
    (cache / "steps" / "ab" / ("ab" + "0" * 62)).symlink_to(outside, target_is_directory=True)
    result = clear_cache(cache)
    assert result.total_entries >= 5
    assert all(p.read_text() == "the user's" for p in mine)
    assert (outside / "precious.txt").read_text() == "x"
    assert all(a.entries == 0 for a in cache_usage(cache))


def test_interrupted_writes_are_cleared_once_old(data, tmp_path):
    cache = tmp_path / "cache"
    _run(data, cache)
    key_dir = next((cache / "store" / "outputs").iterdir())
    orphan = key_dir / ("e" * 32 + ".probabilities.npy")   # arrays whose index was never written
    temporary = key_dir / f".{'d' * 32}.parquet.{'1' * 32}.tmp"
    step_temporary = cache / "steps" / "cd" / ".cdcdcdcdcdcdcdcd.x1y2.tmp"
    step_temporary.mkdir(parents=True)
    for path in (orphan, temporary, step_temporary / "entry.json"):
        path.write_bytes(b"partial")
    assert _area(cache_usage(cache), "incomplete writes").entries == 0  # young: maybe a write in progress
    old = time.time() - 2 * INCOMPLETE_AGE_S
    for path in (orphan, temporary, step_temporary):
        os.utime(path, (old, old))
    assert _area(cache_usage(cache), "incomplete writes").entries == 3
    result = clear_cache(cache, older_than_days=365)
    assert result.entries == {"incomplete writes": 3}
    assert not orphan.exists() and not temporary.exists() and not step_temporary.exists()
    assert _area(cache_usage(cache), "model outputs").entries == 1  # the recent entries stay


@pytest.mark.parametrize("value", ["x", "-1", "nan", "inf", ""])
def test_older_than_must_be_days(value):
    with pytest.raises(InputError) as info:
        check_older_than(value)
    assert str(info.value) == ERROR_OLDER_THAN.format(value=value)
    assert check_older_than("0.5") == 0.5 and check_older_than(None) is None


def _cli(capsys, *args):
    from audit.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_info_and_clear(data, tmp_path, capsys):
    cache = tmp_path / "cache"
    _run(data, cache)
    code, out, err = _cli(capsys, "cache", "info", "--cache-dir", str(cache))
    assert code == 0 and err == ""
    assert f"cache at {cache}" in out and "features" in out and "model outputs" in out
    code, out, err = _cli(capsys, "cache", "clear", "--cache-dir", str(cache), "--older-than", "1")
    assert code == 0 and out.splitlines()[0].startswith(MESSAGE_CLEARED.format(entries="0", size="0 B", path=cache))
    code, out, err = _cli(capsys, "cache", "clear", "--cache-dir", str(cache))
    assert code == 0 and "deleted" in out and all(a.entries == 0 for a in cache_usage(cache))
    code, out, err = _cli(capsys, "cache", "clear", "--cache-dir", str(cache), "--older-than", "soon")
    assert code == 2 and err.strip() == "error: " + ERROR_OLDER_THAN.format(value="soon")
    missing = tmp_path / "nowhere"
    code, out, err = _cli(capsys, "cache", "info", "--cache-dir", str(missing))
    assert code == 0 and out.strip() == MESSAGE_NO_CACHE.format(path=missing)
