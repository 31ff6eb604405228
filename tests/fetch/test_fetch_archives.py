"""Hostile archives never write outside the target, and leave no partial model behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeinfer.fetch import UnsafeArchive, fetch
from tests.fetch.fetch_helpers import hostile_tar, hostile_zip

TAR_KINDS = ["dotdot", "absolute", "symlink-out", "symlink-abs", "hardlink-out", "device", "symlink-chain"]


def _outside_untouched(tmp_path: Path) -> None:
    for name in ("evil.txt", "abs-evil.txt", "outside.txt"):
        assert not list(tmp_path.rglob(name)), f"{name} was written"
        assert not (tmp_path.parent / name).exists()


@pytest.mark.parametrize("kind", TAR_KINDS)
def test_hostile_tar_refused(http_root, tmp_path, kind):
    base, root = http_root
    hostile_tar(root / "evil.tar.gz", kind)
    with pytest.raises((UnsafeArchive, Exception)) as info:
        fetch(f"{base}/evil.tar.gz", tmp_path / "models" / "m")
    assert "evil.tar.gz" in str(info.value) or "outside" in str(info.value) or "link" in str(info.value).lower()
    assert not (tmp_path / "models" / "m").exists()
    assert list((tmp_path / "models").iterdir()) == []
    _outside_untouched(tmp_path)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_hostile_zip_refused(http_root, tmp_path, kind):
    base, root = http_root
    hostile_zip(root / "evil.zip", kind)
    with pytest.raises(UnsafeArchive):
        fetch(f"{base}/evil.zip", tmp_path / "models" / "m")
    assert list((tmp_path / "models").iterdir()) == []
    _outside_untouched(tmp_path)


def test_not_an_archive(http_root, tmp_path):
    base, root = http_root
    (root / "junk.tar.gz").write_bytes(b"definitely not gzip")
    with pytest.raises(UnsafeArchive, match="not a readable archive"):
        fetch(f"{base}/junk.tar.gz", tmp_path / "m")
