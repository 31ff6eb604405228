"""The fetch pipeline: resolve the source, stage it, unwrap, apply the config, rename.

Data flow: URI -> a source in :mod:`kubeinfer.fetch.sources` writes files (or one archive)
into a staging directory next to ``dest`` -> archives are extracted by
:mod:`kubeinfer.fetch.archive` -> a lone top-level directory is unwrapped -> the config
override replaces the repository's config file -> the staging directory is renamed to
``dest`` (the previous content, if any, is removed only after the rename).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from kubeinfer.fetch import sources
from kubeinfer.fetch.archive import extract, is_archive
from kubeinfer.fetch.progress import Progress

log = logging.getLogger("kubeinfer.fetch")
CONFIG_FILES = ("config.pbtxt", "config.yaml", "config.yml", "config.json")


class FetchError(RuntimeError):
    """The model could not be fetched; the message says from where and why."""


def _unwrap(content: Path) -> None:
    """An archive of ``mymodel/`` (one non-numeric top-level directory) holds the model dir."""
    entries = list(content.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink() and not entries[0].name.isdigit():
        inner = entries[0]
        moved = content.parent / (content.name + ".unwrap")
        inner.rename(moved)
        content.rmdir()
        moved.rename(content)


def _place_config(content: Path, config: Path) -> None:
    for name in CONFIG_FILES:
        (content / name).unlink(missing_ok=True)
    shutil.copyfile(config, content / config.name)
    log.info("model config from %s", config)


def _download(uri: str, staging: Path, pvc_root: Path, progress: Progress) -> sources.Fetched:
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        return sources.http(uri, staging, progress)
    if scheme == "s3":
        return sources.s3(parsed.netloc, parsed.path.lstrip("/"), staging, progress)
    if scheme == "gs":
        return sources.gcs(parsed.netloc, parsed.path.lstrip("/"), staging, progress)
    if scheme == "pvc":
        return sources.local(pvc_root / parsed.netloc / parsed.path.lstrip("/"), staging, progress)
    if scheme in ("", "file"):
        return sources.local(Path(parsed.path if scheme else uri), staging, progress)
    raise FetchError(f"unsupported URI scheme '{scheme}://' in {uri}")


def fetch(
    uri: str,
    dest: Path,
    *,
    file_version: int | None = None,
    config: Path | None = None,
    pvc_root: Path = Path("/mnt/pvc"),
) -> Path:
    """Fetch ``uri`` into ``dest`` (a model directory); returns ``dest``."""
    dest = Path(dest).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if config is not None and not config.is_file():
        raise FetchError(f"config file {config} does not exist")
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=dest.parent))
    try:
        downloads = staging / "downloads"
        content = staging / "content"
        downloads.mkdir()
        content.mkdir()
        progress = Progress(uri)
        try:
            files, single = _download(uri, downloads, pvc_root, progress)
        except sources.SourceError as exc:
            raise FetchError(str(exc)) from None
        progress.done()
        if single and is_archive(files[0].name):
            log.info("extracting %s", files[0].name)
            extract(files[0], content)
            _unwrap(content)
        elif single:
            where = content / str(file_version) if file_version else content
            where.mkdir(parents=True, exist_ok=True)
            files[0].rename(where / files[0].name)
        else:
            for entry in downloads.iterdir():
                entry.rename(content / entry.name)
        if config is not None:
            _place_config(content, config)
        if not any(content.iterdir()):
            raise FetchError(f"{uri}: nothing to fetch (empty)")
        old = None
        if dest.exists() or dest.is_symlink():
            old = staging / "previous"
            dest.rename(old)
        content.rename(dest)
        log.info("model ready in %s", dest)
        return dest
    finally:
        shutil.rmtree(staging, ignore_errors=True)
