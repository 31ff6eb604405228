"""Builders for model directories and (well-formed or hostile) archives."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

CONFIG = 'name: "digits"\nmax_batch_size: 8\n'


def model_dir(root: Path, name: str = "digits") -> Path:
    d = root / name
    (d / "1").mkdir(parents=True)
    (d / "config.pbtxt").write_text(CONFIG)
    (d / "labels.txt").write_text("zero\none\n")
    (d / "1" / "model.onnx").write_bytes(b"\x08\x07onnx-bytes" * 1000)
    return d


def tar_of(src: Path, out: Path, arcname: str | None = None) -> Path:
    with tarfile.open(out, "w:gz" if out.name.endswith("gz") else "w") as tar:
        tar.add(src, arcname=arcname if arcname is not None else src.name)
    return out


def zip_of(src: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for f in sorted(src.rglob("*")):
            zf.write(f, f.relative_to(src.parent))
    return out


def hostile_tar(out: Path, kind: str) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        def add(name: str, data: bytes = b"pwned", **attrs) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for k, v in attrs.items():
                setattr(info, k, v)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)

        add("model/config.pbtxt", b'name: "m"')
        if kind == "dotdot":
            add("model/../../evil.txt")
        elif kind == "absolute":
            add(str(out.parent / "abs-evil.txt"))
        elif kind == "symlink-out":
            add("model/link", b"", type=tarfile.SYMTYPE, linkname="../../..")
            add("model/link/evil.txt")
        elif kind == "symlink-abs":
            add("model/etc", b"", type=tarfile.SYMTYPE, linkname="/etc")
        elif kind == "hardlink-out":
            add("model/hard", b"", type=tarfile.LNKTYPE, linkname="../../outside.txt")
        elif kind == "device":
            add("model/dev", b"", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        elif kind == "symlink-chain":
            add("model/a", b"", type=tarfile.SYMTYPE, linkname=".")
            add("model/b", b"", type=tarfile.SYMTYPE, linkname="a/..")
            add("model/c", b"", type=tarfile.SYMTYPE, linkname="b/..")
            add("model/c/evil.txt")
    return out


def hostile_zip(out: Path, kind: str) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("model/config.pbtxt", 'name: "m"')
        if kind == "dotdot":
            zf.writestr("model/../../evil.txt", "pwned")
        elif kind == "absolute":
            zf.writestr("/abs-evil.txt", "pwned")
        elif kind == "symlink":
            info = zipfile.ZipInfo("model/link")
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return out
