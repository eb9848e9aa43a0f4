"""Tests of audit.io.archives.extract_zip: normal extraction and every unsafe archive."""
from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from audit.errors import InputError
from audit.io import archives as ar
from audit.io.archives import extract_zip


def _zip(path: Path, entries, compression=zipfile.ZIP_DEFLATED) -> Path:
    """entries: list of (name, bytes) or (ZipInfo, bytes)."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return path


def _refused(message: str, zip_path: Path, dest: Path, **kwargs) -> None:
    with pytest.raises(InputError) as caught:
        extract_zip(zip_path, dest, **kwargs)
    assert str(caught.value) == message
    _assert_nothing_left(dest)


def _assert_nothing_left(dest: Path) -> None:
    assert not dest.exists() or not any(dest.iterdir())
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.")]


def test_extracts_files_and_folders(tmp_path):
    archive = _zip(tmp_path / "data.zip", [("cat/", b""), ("cat/a.png", b"A" * 10), ("dog/b.png", b"B"),
                                           ("./dog/c.png", b"C")])
    dest = tmp_path / "out"
    files = extract_zip(archive, dest)
    assert files == [dest / "cat" / "a.png", dest / "dog" / "b.png", dest / "dog" / "c.png"]
    assert (dest / "cat" / "a.png").read_bytes() == b"A" * 10
    assert (dest / "dog" / "c.png").read_bytes() == b"C"
    _assert_nothing_left_besides(dest)


def _assert_nothing_left_besides(dest: Path) -> None:
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(".")] == []


def test_extracts_into_an_existing_empty_folder(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    assert extract_zip(_zip(tmp_path / "d.zip", [("a.txt", b"x")]), dest) == [dest / "a.txt"]


def test_destination_not_empty(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(InputError) as caught:
        extract_zip(_zip(tmp_path / "d.zip", [("a.txt", b"x")]), dest)
    assert str(caught.value) == ar.ERROR_DEST_EXISTS.format(dest=dest)
    assert (dest / "keep.txt").read_text() == "mine"


def test_missing_and_invalid_archives(tmp_path):
    missing = tmp_path / "missing.zip"
    _refused(ar.ERROR_ZIP_NOT_FOUND.format(path=str(missing)), missing, tmp_path / "out")
    fake = tmp_path / "fake.zip"
    fake.write_text("not a zip")
    _refused(ar.ERROR_NOT_A_ZIP.format(path=str(fake), detail="File is not a zip file"), fake, tmp_path / "out")


@pytest.mark.parametrize("name, why", [("../evil.txt", "goes up a folder ('..')"),
                                       ("a/../../evil.txt", "goes up a folder ('..')"),
                                       ("a\\..\\..\\evil.txt", "goes up a folder ('..')"),
                                       ("/etc/evil.txt", "is absolute"),
                                       ("\\evil.txt", "is absolute"),
                                       ("C:/evil.txt", "starts with a drive letter"),
                                       ("C:evil.txt", "starts with a drive letter")])
def test_path_traversal_is_refused(tmp_path, name, why):
    info = zipfile.ZipInfo("placeholder")
    info.filename = name  # ZipInfo normalises some names; set the raw one as an attacker would
    archive = _zip(tmp_path / "evil.zip", [("ok.txt", b"fine"), (info, b"x")])
    _refused(ar.ERROR_UNSAFE_NAME.format(path=str(archive), name=name, why=why), archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_symlink_is_refused(tmp_path):
    info = zipfile.ZipInfo("link.png")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip(tmp_path / "link.zip", [(info, b"/etc/passwd")])
    _refused(ar.ERROR_SYMLINK.format(path=str(archive), name="link.png"), archive, tmp_path / "out")


def test_encrypted_member_is_refused(tmp_path):
    archive = _zip(tmp_path / "enc.zip", [("secret.png", b"x")], compression=zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # general purpose flags
        data[data.index(signature) + offset] |= 0x1  # bit 0: encrypted
    archive.write_bytes(bytes(data))
    _refused(ar.ERROR_ENCRYPTED.format(path=str(archive), name="secret.png"), archive, tmp_path / "out")


def test_duplicate_names_are_refused(tmp_path):
    with pytest.warns(UserWarning):
        archive = _zip(tmp_path / "dup.zip", [("a.png", b"1"), ("a.png", b"2")])
    _refused(ar.ERROR_DUPLICATE_NAME.format(path=str(archive), name="a.png"), archive, tmp_path / "out")


def test_too_many_files(tmp_path):
    archive = _zip(tmp_path / "many.zip", [("d/", b"")] + [(f"d/{i}.txt", b"x") for i in range(4)])
    # issue 11: folders count against the cap like files (4 files + the folder d = 5 entries)
    _refused(ar.ERROR_TOO_MANY_ENTRIES.format(path=str(archive), n_files=3, n_dirs=1, limit=3), archive,
             tmp_path / "out", max_files=3)
    _refused(ar.ERROR_TOO_MANY_ENTRIES.format(path=str(archive), n_files=4, n_dirs=1, limit=4), archive,
             tmp_path / "out", max_files=4)
    assert len(extract_zip(archive, tmp_path / "out", max_files=5)) == 4


def test_folder_entries_count_against_the_cap(tmp_path):
    """The defect: a 30 MB zip of 300,000 folder entries made 300k inodes (only files were counted)."""
    archive = _zip(tmp_path / "dirs.zip", [(f"f{i}/", b"") for i in range(50)] + [("a/b/c/d/x.txt", b"x")])
    _refused(ar.ERROR_TOO_MANY_ENTRIES.format(path=str(archive), n_files=0, n_dirs=21, limit=20), archive,
             tmp_path / "out", max_files=20)
    # folders implied by a file's path count too
    deep = _zip(tmp_path / "deep.zip", [("/".join(f"d{i}" for i in range(30)) + "/x.txt", b"x")])
    _refused(ar.ERROR_TOO_MANY_ENTRIES.format(path=str(deep), n_files=1, n_dirs=30, limit=20), deep,
             tmp_path / "out", max_files=20)


def test_too_long_entry_name_is_one_message(tmp_path):
    name = "a" * 300 + ".png"
    archive = _zip(tmp_path / "long.zip", [(name, b"x")])
    _refused(ar.ERROR_UNSAFE_NAME.format(path=str(archive), name=name, why="has a name longer than 255 bytes"),
             archive, tmp_path / "out")


def test_declared_size_above_the_cap(tmp_path):
    archive = _zip(tmp_path / "big.zip", [("a.bin", b"x" * 60), ("b.bin", b"y" * 60)])
    _refused(ar.ERROR_TOO_LARGE.format(path=str(archive), size=120, limit=100), archive, tmp_path / "out",
             max_total_bytes=100)


def test_highly_compressed_member_is_a_zip_bomb(tmp_path):
    archive = _zip(tmp_path / "bomb.zip", [("zeros.bin", bytes(4 << 20))])
    info = zipfile.ZipFile(archive).getinfo("zeros.bin")
    ratio = info.file_size / info.compress_size
    _refused(ar.ERROR_RATIO.format(path=str(archive), what="the entry 'zeros.bin'", ratio=ratio, limit=200),
             archive, tmp_path / "out")


def test_many_small_highly_compressed_members_are_a_zip_bomb(tmp_path):
    archive = _zip(tmp_path / "bombs.zip", [(f"{i}.bin", bytes(200_000)) for i in range(10)])
    infos = zipfile.ZipFile(archive).infolist()
    ratio = sum(i.file_size for i in infos) / sum(i.compress_size for i in infos)
    _refused(ar.ERROR_RATIO.format(path=str(archive), what="the archive", ratio=ratio, limit=200), archive,
             tmp_path / "out")


def test_small_compressible_files_are_fine(tmp_path):
    archive = _zip(tmp_path / "small.zip", [("a.txt", bytes(50_000)), ("b.png", bytes(range(256)) * 4)])
    assert len(extract_zip(archive, tmp_path / "out")) == 2


def test_member_lying_about_its_size_is_refused(tmp_path):
    archive = _zip(tmp_path / "liar.zip", [("a.bin", b"x" * 1000)], compression=zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed size fields
        start = data.index(signature) + offset
        data[start:start + 4] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    dest = tmp_path / "out"
    with pytest.raises(InputError) as caught:
        extract_zip(archive, dest)
    assert str(caught.value).startswith(f"Archive {archive}: the entry 'a.bin' ")
    _assert_nothing_left(dest)
