"""Sources: each copies what a URI names into a staging directory and returns the paths.

A single object (one file, possibly an archive) lands as ``staging/<basename>``; a prefix
or directory lands as a tree under ``staging``. Object keys are checked like archive
members: nothing is written outside ``staging``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlparse

from kubeinfer.fetch.progress import Progress

CHUNK = 1 << 20
GCS_API = "https://storage.googleapis.com"


# (paths written, whether the URI named one object rather than a directory/prefix)
Fetched = tuple[list[Path], bool]


class SourceError(RuntimeError):
    """The source could not be read; the message names it."""


def _safe_relative(key: str, prefix: str) -> Path:
    rel = PurePosixPath(key[len(prefix):].lstrip("/"))
    if not rel.parts or rel.is_absolute() or ".." in rel.parts:
        raise SourceError(f"refusing object key '{key}': it would land outside the target")
    return Path(*rel.parts)


def _basename(path: str, fallback: str = "model") -> str:
    name = PurePosixPath(unquote(path)).name
    return name if name not in ("", ".", "..") else fallback


def http(uri: str, staging: Path, progress: Progress) -> Fetched:
    import httpx

    out = staging / _basename(urlparse(uri).path)
    try:
        with httpx.stream("GET", uri, follow_redirects=True, timeout=httpx.Timeout(30.0, read=300.0)) as resp:
            if resp.status_code != 200:
                raise SourceError(f"GET {uri}: HTTP {resp.status_code}")
            size = resp.headers.get("content-length")
            progress.start_file(out.name, int(size) if size and size.isdigit() else None)
            with open(out, "wb") as f:
                for chunk in resp.iter_bytes(CHUNK):
                    f.write(chunk)
                    progress.add(len(chunk))
    except httpx.HTTPError as exc:
        raise SourceError(f"GET {uri}: {exc}") from None
    return [out], True


def s3(bucket: str, key: str, staging: Path, progress: Progress) -> Fetched:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT") or None
    client = boto3.client("s3", endpoint_url=endpoint)
    try:
        if key and not key.endswith("/"):
            try:
                head = client.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                    raise
            else:
                out = staging / _basename(key)
                _s3_get(client, bucket, key, out, head.get("ContentLength"), progress)
                return [out], True
        prefix = key if not key or key.endswith("/") else key + "/"
        written = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue  # a "directory" placeholder
                out = staging / _safe_relative(obj["Key"], prefix)
                out.parent.mkdir(parents=True, exist_ok=True)
                _s3_get(client, bucket, obj["Key"], out, obj.get("Size"), progress)
                written.append(out)
    except (BotoCoreError, ClientError) as exc:
        raise SourceError(f"s3://{bucket}/{key}: {exc}") from None
    if not written:
        raise SourceError(f"s3://{bucket}/{key}: no such object or prefix")
    return written, False


def _s3_get(client, bucket: str, key: str, out: Path, size: int | None, progress: Progress) -> None:
    progress.start_file(f"s3://{bucket}/{key}", size)
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    with open(out, "wb") as f:
        for chunk in body.iter_chunks(CHUNK):
            f.write(chunk)
            progress.add(len(chunk))


def gcs(bucket: str, key: str, staging: Path, progress: Progress) -> Fetched:
    """Public (anonymous) objects through the GCS JSON API; private buckets need
    credentials this fetcher does not implement (copy them to s3:// or a PVC instead).
    ``STORAGE_EMULATOR_HOST`` points it at an emulator, as Google's clients do."""
    import httpx

    api = os.environ.get("STORAGE_EMULATOR_HOST", GCS_API).rstrip("/")
    base = f"{api}/storage/v1/b/{quote(bucket, safe='')}/o"
    try:
        with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, read=300.0)) as client:
            names: list[str] = []
            if key and not key.endswith("/"):
                if client.get(f"{base}/{quote(key, safe='')}").status_code == 200:
                    names = [key]
            single = bool(names)
            prefix = key if not key or key.endswith("/") else key + "/"
            token = None
            while not single:
                params = {"prefix": prefix, **({"pageToken": token} if token else {})}
                listing = client.get(base, params=params)
                if listing.status_code != 200:
                    raise SourceError(f"gs://{bucket}/{key}: listing failed: HTTP {listing.status_code}")
                body = listing.json()
                names += [i["name"] for i in body.get("items", []) if not i["name"].endswith("/")]
                token = body.get("nextPageToken")
                if not token:
                    break
            if not names:
                raise SourceError(f"gs://{bucket}/{key}: no such object or prefix")
            written = []
            for name in names:
                out = staging / (_basename(name) if single else _safe_relative(name, prefix))
                out.parent.mkdir(parents=True, exist_ok=True)
                with client.stream("GET", f"{base}/{quote(name, safe='')}", params={"alt": "media"}) as resp:
                    if resp.status_code != 200:
                        raise SourceError(f"gs://{bucket}/{name}: HTTP {resp.status_code}")
                    size = resp.headers.get("content-length")
                    progress.start_file(f"gs://{bucket}/{name}", int(size) if size and size.isdigit() else None)
                    with open(out, "wb") as f:
                        for chunk in resp.iter_bytes(CHUNK):
                            f.write(chunk)
                            progress.add(len(chunk))
                written.append(out)
            return written, single
    except httpx.HTTPError as exc:
        raise SourceError(f"gs://{bucket}/{key}: {exc}") from None


def local(path: Path, staging: Path, progress: Progress) -> Fetched:
    """A file or directory on a mounted volume (pvc://) or inside the image."""
    if path.is_file():
        out = staging / path.name
        progress.start_file(str(path), path.stat().st_size)
        shutil.copyfile(path, out)
        progress.add(out.stat().st_size)
        return [out], True
    if path.is_dir():
        progress.start_file(str(path), None)
        written = []
        for entry in path.iterdir():
            target = staging / entry.name
            if entry.is_dir():
                shutil.copytree(entry, target)
            else:
                shutil.copyfile(entry, target)
            written.append(target)
        progress.add(sum(f.stat().st_size for f in staging.rglob("*") if f.is_file()))
        if not written:
            raise SourceError(f"{path}: the directory is empty")
        return written, False
    raise SourceError(f"{path}: no such file or directory")
