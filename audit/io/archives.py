"""Safe extraction of a user's zip archive (e.g. an uploaded ImageFolder).

Checks, all before a byte is written unless stated:

- every member name is a plain relative path: no ``..`` component, no absolute path (``/x``, ``\\x``),
  no drive letter (``C:``), no NUL character; backslashes count as separators;
- no symbolic links (Unix mode in ``external_attr``), no encrypted members, no name twice;
- at most ``max_files`` files; the declared uncompressed total at most ``max_total_bytes``;
- compression ratio (uncompressed / compressed) at most ``max_ratio``, for the whole archive and for each
  member of at least 1 MiB (tiny members compress absurdly well and are harmless);
- while streaming, the bytes actually written are counted: a member that inflates past its declared size,
  or a total past ``max_total_bytes``, stops the extraction (the zip header lied).

Extraction goes into a temporary folder beside ``dest`` that is renamed to ``dest`` at the end, so
``dest`` either does not exist or holds the complete archive. ``dest`` must not exist, or be an empty folder.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

from audit.errors import InputError

#: Default cap on the total uncompressed size (bytes).
MAX_TOTAL_BYTES = 2_000_000_000
#: Default cap on the number of entries: files and folders (explicit folder entries and the folders implied
#: by file paths), since each costs an inode.
MAX_FILES = 200_000
#: Longest file or folder name (bytes) and whole entry path extracted (most file systems: 255 and 4096).
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024
#: Default cap on the compression ratio.
MAX_RATIO = 200
#: Members smaller than this are not checked for their own ratio (only the archive total is).
RATIO_CHECK_MIN_BYTES = 1 << 20

_CHUNK = 1 << 16
_DRIVE = re.compile(r"^[A-Za-z]:")

ERROR_ZIP_NOT_FOUND = "Archive {path} does not exist. Check the path."
ERROR_NOT_A_ZIP = "{path} is not a valid zip archive ({detail}). Upload a .zip file."
ERROR_UNSAFE_NAME = (
    "Archive {path} holds the entry '{name}', whose path {why}. Archives must hold relative paths inside "
    "one folder; re-create the archive from the data folder.")
ERROR_SYMLINK = (
    "Archive {path} holds the symbolic link '{name}'. Links are not extracted; replace it by the file it "
    "points to.")
ERROR_ENCRYPTED = "Archive {path} holds the encrypted entry '{name}'. Upload an archive without a password."
ERROR_DUPLICATE_NAME = "Archive {path} holds the entry '{name}' twice. Re-create the archive."
ERROR_TOO_MANY_FILES = (
    "Archive {path} holds {n} files, more than the limit of {limit}. Split the data set or raise max_files.")
ERROR_TOO_MANY_ENTRIES = (
    "Archive {path} holds {n_files} files and {n_dirs} folders, more than the limit of {limit} entries (files "
    "and folders count alike). Split the data set or raise max_files.")
ERROR_TOO_LARGE = (
    "Archive {path} expands to {size} bytes, more than the limit of {limit}. Use a smaller data set or "
    "raise max_total_bytes.")
ERROR_RATIO = (
    "Archive {path}: {what} has a compression ratio of {ratio:.0f}, above the limit of {limit} (a likely "
    "zip bomb). Re-create the archive from the original files.")
ERROR_SIZE_MISMATCH = (
    "Archive {path}: the entry '{name}' expands to more than its declared {declared} bytes (a corrupt "
    "archive or a zip bomb). Re-create the archive.")
ERROR_CORRUPT_MEMBER = "Archive {path}: the entry '{name}' cannot be extracted ({detail}). Re-create the archive."
ERROR_PATH_CLASH = ("Archive {path}: the entry '{name}' cannot be extracted because a file and a folder share "
                    "its path. Re-create the archive.")
ERROR_DEST_EXISTS = "Destination {dest} already exists and is not empty. Choose a new folder."


def _unsafe_reason(name: str) -> str | None:
    if "\x00" in name:
        return "contains a NUL character"
    normalised = name.replace("\\", "/")
    if normalised.startswith("/"):
        return "is absolute"
    if _DRIVE.match(normalised):
        return "starts with a drive letter"
    parts = [p for p in normalised.split("/") if p not in ("", ".")]
    if ".." in parts:
        return "goes up a folder ('..')"
    if not parts:
        return "is empty"
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in parts):
        return f"has a name longer than {MAX_NAME_BYTES} bytes"
    if len(normalised.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return f"is longer than {MAX_PATH_BYTES} bytes"
    return None


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def extract_zip(zip_path: str | os.PathLike, dest: str | os.PathLike, *, max_total_bytes: int = MAX_TOTAL_BYTES,
                max_files: int = MAX_FILES, max_ratio: float = MAX_RATIO) -> list[Path]:
    """Extract ``zip_path`` into the new folder ``dest``, refusing anything unsafe.

    Parameters
    ----------
    zip_path : str or path
    dest : str or path
        Created by the extraction; must not exist or be an empty folder.
    max_total_bytes : int, default 2e9
        Cap on the uncompressed total, declared and actual.
    max_files : int, default 200,000
        Cap on the number of file entries (folders not counted).
    max_ratio : float, default 200
        Cap on uncompressed / compressed size (archive total, and each member of 1 MiB or more).

    Returns
    -------
    list of Path
        The extracted files (under ``dest``), in archive order.

    Raises
    ------
    InputError
        With one of this module's ``ERROR_*`` messages; nothing is left at ``dest`` then.
    """
    source = str(zip_path)
    zip_path = Path(zip_path)
    dest = Path(dest)
    if not zip_path.is_file():
        raise InputError(ERROR_ZIP_NOT_FOUND.format(path=source), source=source)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(ERROR_DEST_EXISTS.format(dest=dest), source=source)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as error:
        raise InputError(ERROR_NOT_A_ZIP.format(path=source, detail=str(error) or type(error).__name__),
                         source=source) from error
    with archive:
        members = _check_members(archive, source, max_total_bytes=max_total_bytes, max_files=max_files,
                                 max_ratio=max_ratio)
        dest.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extracting", dir=dest.parent))
        try:
            relative_files = _extract_members(archive, members, temporary, source,
                                              max_total_bytes=max_total_bytes)
            if dest.exists():
                dest.rmdir()  # empty (checked above); rename needs the name free on every platform
            os.replace(temporary, dest)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
    return [dest / relative for relative in relative_files]


def _check_members(archive: zipfile.ZipFile, source: str, *, max_total_bytes, max_files, max_ratio):
    members = []
    seen = set()
    folders: set = set()
    n_files = 0
    declared_total = 0
    compressed_total = 0
    for info in archive.infolist():
        name = info.filename
        why = _unsafe_reason(name)
        if why is not None:
            raise InputError(ERROR_UNSAFE_NAME.format(path=source, name=name, why=why), source=source)
        if _is_symlink(info):
            raise InputError(ERROR_SYMLINK.format(path=source, name=name), source=source)
        if info.flag_bits & 0x1:
            raise InputError(ERROR_ENCRYPTED.format(path=source, name=name), source=source)
        parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
        key = "/".join(parts)
        if key in seen:
            raise InputError(ERROR_DUPLICATE_NAME.format(path=source, name=name), source=source)
        seen.add(key)
        is_dir = info.is_dir() or name.endswith(("/", "\\"))
        for depth in range(1, len(parts) + (1 if is_dir else 0)):
            folders.add(parts[:depth])
        if n_files + (0 if is_dir else 1) + len(folders) > max_files:
            raise InputError(ERROR_TOO_MANY_ENTRIES.format(path=source, n_files=n_files + (0 if is_dir else 1),
                                                           n_dirs=len(folders), limit=max_files), source=source)
        if is_dir:
            members.append((info, parts, True))
            continue
        n_files += 1
        if n_files > max_files:
            n_total = sum(1 for i in archive.infolist() if not i.is_dir())
            raise InputError(ERROR_TOO_MANY_FILES.format(path=source, n=n_total, limit=max_files), source=source)
        declared_total += info.file_size
        compressed_total += info.compress_size
        if info.file_size >= RATIO_CHECK_MIN_BYTES:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > max_ratio:
                raise InputError(ERROR_RATIO.format(path=source, what=f"the entry '{name}'", ratio=ratio,
                                                    limit=max_ratio), source=source)
        members.append((info, parts, False))
    if declared_total > max_total_bytes:
        raise InputError(ERROR_TOO_LARGE.format(path=source, size=declared_total, limit=int(max_total_bytes)),
                         source=source)
    if declared_total >= RATIO_CHECK_MIN_BYTES:
        ratio = declared_total / max(compressed_total, 1)
        if ratio > max_ratio:
            raise InputError(ERROR_RATIO.format(path=source, what="the archive", ratio=ratio, limit=max_ratio),
                             source=source)
    return members


def _extract_members(archive: zipfile.ZipFile, members, root: Path, source: str, *, max_total_bytes) -> list[Path]:
    written_total = 0
    files: list[Path] = []
    for info, parts, is_dir in members:
        target = root.joinpath(*parts)
        try:
            (target if is_dir else target.parent).mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as error:  # 'a' as a file and 'a/b' as a member
            raise InputError(ERROR_PATH_CLASH.format(path=source, name=info.filename), source=source) from error
        except OSError as error:  # a name the file system refuses (too long, invalid characters...)
            raise InputError(ERROR_CORRUPT_MEMBER.format(path=source, name=info.filename,
                                                         detail=error.strerror or type(error).__name__),
                             source=source) from error
        if is_dir:
            continue
        written = 0
        try:
            with archive.open(info) as reader, open(target, "xb") as writer:
                while True:
                    chunk = reader.read(_CHUNK)
                    if not chunk:
                        break
                    written += len(chunk)
                    written_total += len(chunk)
                    if written > info.file_size:
                        raise InputError(ERROR_SIZE_MISMATCH.format(path=source, name=info.filename,
                                                                    declared=info.file_size), source=source)
                    if written_total > max_total_bytes:
                        raise InputError(ERROR_TOO_LARGE.format(path=source, size=f"more than {written_total}",
                                                                limit=int(max_total_bytes)), source=source)
                    writer.write(chunk)
        except InputError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as error:
            raise InputError(ERROR_CORRUPT_MEMBER.format(path=source, name=info.filename,
                                                         detail=str(error) or type(error).__name__),
                             source=source) from error
        files.append(Path(*parts))
    return files
