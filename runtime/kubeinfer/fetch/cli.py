"""``kubeinfer fetch <uri> <dest-dir>``: the model init container's command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", help="http(s)://, s3://, gs://, pvc://<claim>/<path> or a local path")
    parser.add_argument("dest", type=Path, help="model directory to create or replace")
    parser.add_argument(
        "--file-version",
        type=int,
        default=None,
        metavar="N",
        help="when the URI names one (non-archive) model file, put it under <dest>/N/",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file (config.pbtxt/.yaml/.json) that replaces the repository's",
    )
    parser.add_argument(
        "--pvc-root", type=Path, default=Path("/mnt/pvc"), help="where pvc://<claim> is mounted (<root>/<claim>)"
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def run(args: argparse.Namespace) -> int:
    from kubeinfer.fetch.archive import UnsafeArchive
    from kubeinfer.fetch.core import FetchError, fetch

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        fetch(args.uri, args.dest, file_version=args.file_version, config=args.config, pvc_root=args.pvc_root)
    except (FetchError, UnsafeArchive) as exc:
        logging.getLogger("kubeinfer.fetch").error("%s", exc)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubeinfer fetch", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
