"""``kubeinfer fetch``: bring a model directory from a URI into a local directory.

What the operator's init container runs before the runtime starts. Sources:
``http(s)://`` (a file or a .tar/.tar.gz/.tgz/.zip archive), ``s3://bucket/key-or-prefix``
(boto3; endpoint from ``AWS_ENDPOINT_URL`` or ``S3_ENDPOINT``), ``gs://bucket/prefix``
(public objects through the GCS JSON API), ``pvc://<claim>/<path>`` (the claim is mounted
under ``--pvc-root``) and plain paths. Everything is staged next to the destination and
renamed into place, so a reader sees the old directory or the complete new one.
"""

from kubeinfer.fetch.archive import UnsafeArchive, extract
from kubeinfer.fetch.core import FetchError, fetch

__all__ = ["FetchError", "UnsafeArchive", "extract", "fetch"]
