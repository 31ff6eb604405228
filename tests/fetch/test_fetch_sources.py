"""``kubeinfer fetch`` against real local servers: HTTP, S3 (moto), local paths and PVCs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kubeinfer.fetch import FetchError, fetch
from kubeinfer.fetch.cli import main as fetch_main
from tests.fetch.fetch_helpers import CONFIG, model_dir, tar_of, zip_of

REPO = Path(__file__).resolve().parents[2]


def assert_model(dest: Path) -> None:
    assert (dest / "config.pbtxt").read_text() == CONFIG
    assert (dest / "labels.txt").is_file()
    assert (dest / "1" / "model.onnx").stat().st_size == 12000


@pytest.mark.parametrize("archive", ["digits.tar.gz", "digits.tgz", "digits.tar", "digits.zip"])
def test_http_archive_of_model_dir(http_root, tmp_path, archive):
    base, root = http_root
    src = model_dir(tmp_path / "src")
    (zip_of if archive.endswith("zip") else tar_of)(src, root / archive)
    dest = fetch(f"{base}/{archive}", tmp_path / "models" / "digits")
    assert_model(dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["digits"]  # no staging left behind


def test_http_archive_of_contents(http_root, tmp_path):
    base, root = http_root
    src = model_dir(tmp_path / "src")
    tar_of(src, root / "flat.tar.gz", arcname=".")
    assert_model(fetch(f"{base}/flat.tar.gz", tmp_path / "m"))


def test_http_single_file_goes_under_version(http_root, tmp_path):
    base, root = http_root
    (root / "model.onnx").write_bytes(b"onnx")
    dest = fetch(f"{base}/model.onnx", tmp_path / "m", file_version=3)
    assert (dest / "3" / "model.onnx").read_bytes() == b"onnx"


def test_http_404_is_a_clear_error_and_leaves_nothing(http_root, tmp_path):
    base, _ = http_root
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(f"{base}/missing.tar.gz", tmp_path / "models" / "m")
    assert list((tmp_path / "models").iterdir()) == []


def test_refetch_replaces_atomically(http_root, tmp_path):
    base, root = http_root
    src = model_dir(tmp_path / "src")
    tar_of(src, root / "d.tar.gz")
    dest = tmp_path / "m"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    fetch(f"{base}/d.tar.gz", dest)
    assert not (dest / "stale.txt").exists()
    assert_model(dest)


def test_config_override_replaces_repository_config(http_root, tmp_path):
    base, root = http_root
    src = model_dir(tmp_path / "src")
    (src / "config.yaml").write_text("name: other\n")
    tar_of(src, root / "d.tar.gz")
    override = tmp_path / "cm" / "config.pbtxt"
    override.parent.mkdir()
    override.write_text('name: "digits"\nmax_batch_size: 4\n')
    dest = fetch(f"{base}/d.tar.gz", tmp_path / "m", config=override)
    assert (dest / "config.pbtxt").read_text() == override.read_text()
    assert not (dest / "config.yaml").exists()


def test_s3_prefix(s3, tmp_path):
    s3.create_bucket(Bucket="models")
    src = model_dir(tmp_path / "src")
    for f in src.rglob("*"):
        if f.is_file():
            s3.upload_file(str(f), "models", f"repo/digits/{f.relative_to(src).as_posix()}")
    s3.put_object(Bucket="models", Key="repo/digits-other/x", Body=b"not ours")
    assert_model(fetch("s3://models/repo/digits", tmp_path / "a"))
    assert_model(fetch("s3://models/repo/digits/", tmp_path / "b"))
    assert not (tmp_path / "a" / "x").exists()


def test_s3_archive_object(s3, tmp_path):
    s3.create_bucket(Bucket="archives")
    archive = tar_of(model_dir(tmp_path / "src"), tmp_path / "digits.tar.gz")
    s3.upload_file(str(archive), "archives", "v1/digits.tar.gz")
    assert_model(fetch("s3://archives/v1/digits.tar.gz", tmp_path / "m"))


def test_s3_missing(s3, tmp_path):
    s3.create_bucket(Bucket="empty")
    with pytest.raises(FetchError, match="no such object"):
        fetch("s3://empty/nothing", tmp_path / "m")


def test_s3_hostile_key_refused(s3, tmp_path):
    s3.create_bucket(Bucket="evil")
    s3.put_object(Bucket="evil", Key="p/../../escape.txt", Body=b"x")
    s3.put_object(Bucket="evil", Key="p/config.pbtxt", Body=b"x")
    with pytest.raises(FetchError, match="outside"):
        fetch("s3://evil/p/", tmp_path / "m")
    assert not (tmp_path / "escape.txt").exists()


def test_pvc_and_plain_path(tmp_path):
    mount = tmp_path / "pvc-root"
    model_dir(mount / "store" / "models")
    assert_model(fetch("pvc://store/models/digits", tmp_path / "a", pvc_root=mount))
    assert_model(fetch(str(mount / "store" / "models" / "digits"), tmp_path / "b"))
    with pytest.raises(FetchError, match="no such file"):
        fetch("pvc://store/missing", tmp_path / "c", pvc_root=mount)


def test_gcs_public_json_api(tmp_path, monkeypatch):
    """A minimal GCS JSON API (list + alt=media) on loopback stands in for storage.googleapis.com."""
    import http.server
    import json
    import threading
    from urllib.parse import parse_qs, unquote, urlparse

    objects = {"m/config.pbtxt": CONFIG.encode(), "m/1/model.onnx": b"onnx", "other/x": b"no"}

    class GCS(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            url = urlparse(self.path)
            query = parse_qs(url.query)
            prefix = "/storage/v1/b/bkt/o"
            name = unquote(url.path[len(prefix) + 1:]) if url.path.startswith(prefix + "/") else None
            if url.path == prefix:
                items = [{"name": k} for k in objects if k.startswith(query.get("prefix", [""])[0])]
                body, code = json.dumps({"items": items}).encode(), 200
            elif name in objects:
                body, code = (objects[name] if query.get("alt") == ["media"] else b"{}"), 200
            else:
                body, code = b"{}", 404
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), GCS)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_port}")
        dest = fetch("gs://bkt/m", tmp_path / "g")
        assert (dest / "config.pbtxt").read_text() == CONFIG
        assert (dest / "1" / "model.onnx").read_bytes() == b"onnx"
        assert not (dest / "x").exists()
        single = fetch("gs://bkt/m/1/model.onnx", tmp_path / "s", file_version=1)
        assert (single / "1" / "model.onnx").read_bytes() == b"onnx"
    finally:
        server.shutdown()
        server.server_close()


def test_cli_exit_codes(http_root, tmp_path, capsys):
    base, root = http_root
    tar_of(model_dir(tmp_path / "src"), root / "d.tar.gz")
    assert fetch_main([f"{base}/d.tar.gz", str(tmp_path / "ok")]) == 0
    assert fetch_main([f"{base}/nope.tar.gz", str(tmp_path / "bad")]) == 1


def test_cli_as_a_process_logs_progress(http_root, tmp_path):
    base, root = http_root
    tar_of(model_dir(tmp_path / "src"), root / "d.tar.gz")
    proc = subprocess.run(
        [sys.executable, "-m", "kubeinfer.cli", "fetch", f"{base}/d.tar.gz", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": f"{REPO}/runtime:{REPO}/operator", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "downloading d.tar.gz" in proc.stderr and "fetched" in proc.stderr and "model ready" in proc.stderr
    assert_model(tmp_path / "m")
