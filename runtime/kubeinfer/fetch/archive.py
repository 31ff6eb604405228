"""Archive extraction that cannot write outside its target directory.

Every member is checked before anything is written: absolute names, ``..`` components,
links pointing outside the target, device files and FIFOs are refused with
:class:`UnsafeArchive` naming the member. tar extraction then also runs with Python's
``data`` filter where available, as a second line of defence.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")


class UnsafeArchive(ValueError):
    """An archive member would land outside the target directory (or is not a plain file)."""


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _check_name(name: str, archive: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"{archive}: member '{name}' has an absolute path")
    if ".." in path.parts:
        raise UnsafeArchive(f"{archive}: member '{name}' escapes the target directory ('..')")
    return path


def _inside(target: Path, member: PurePosixPath, link: str) -> bool:
    if os.path.isabs(link):
        return False
    resolved = os.path.normpath(os.path.join(str(target), str(member.parent), link))
    root = os.path.normpath(str(target))
    return resolved == root or resolved.startswith(root + os.sep)


def _extract_tar(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            path = _check_name(m.name, archive.name)
            if m.issym() or m.islnk():
                link = m.linkname if m.issym() else os.path.relpath(m.linkname, str(path.parent) or ".")
                if m.islnk():
                    _check_name(m.linkname, archive.name)
                if not _inside(target, path, link):
                    raise UnsafeArchive(f"{archive.name}: link '{m.name}' -> '{m.linkname}' points outside the target")
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchive(f"{archive.name}: member '{m.name}' is not a regular file or directory")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(target, members=members, filter="data")
        else:  # pragma: no cover - Python without extraction filters
            tar.extractall(target, members=members)


def _extract_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_name(info.filename, archive.name)
            mode = info.external_attr >> 16
            if mode and stat.S_ISLNK(mode):
                raise UnsafeArchive(f"{archive.name}: member '{info.filename}' is a symbolic link")
        for info in infos:
            dest = target.joinpath(*_check_name(info.filename, archive.name).parts)
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dest, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)


def extract(archive: Path, target: Path) -> None:
    """Extract ``archive`` into the existing directory ``target``."""
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            _extract_zip(archive, target)
        else:
            _extract_tar(archive, target)
    except (tarfile.TarError, zipfile.BadZipFile) as exc:
        raise UnsafeArchive(f"{archive.name}: not a readable archive: {exc}") from None
