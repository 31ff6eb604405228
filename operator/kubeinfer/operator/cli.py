"""``kubeinfer operator``: run the kopf operator as a process.

Settings come from the environment (``KUBEINFER_OPERATOR_*``, see
:class:`~kubeinfer.operator.settings.OperatorSettings`) and these flags, which win.
Credentials: in-cluster service account, else ``--kubeconfig`` / ``$KUBECONFIG``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubeinfer.operator.settings import OperatorSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n", "--namespace", action="append", dest="namespaces", default=None,
        help="namespace to watch (repeatable; default: the whole cluster)",
    )
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or in-cluster)")
    parser.add_argument("--runtime-image", default=None, help="default image of runtime pods")
    parser.add_argument("--resync-seconds", type=float, default=None, help="re-apply every model this often")
    parser.add_argument("--leader-election", action="store_true", default=None,
                        help="act only while holding the leader Lease (run more than one replica)")
    parser.add_argument("--liveness", default=None, help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--log-level", default=None,
                        help="DEBUG, INFO, WARNING, ERROR (default: $KUBEINFER_LOG_LEVEL, else INFO)")


def settings_from(args: argparse.Namespace) -> OperatorSettings | None:
    """The environment's settings with the flags given on top; None (said on stderr) when
    a value is invalid."""
    from pydantic import ValidationError

    from kubeinfer.operator.settings import OperatorSettings

    overrides = {
        k: v
        for k, v in {
            "namespaces": args.namespaces,
            "runtime_image": args.runtime_image,
            "resync_seconds": args.resync_seconds,
            "log_level": args.log_level,
            "leader_election": args.leader_election,
        }.items()
        if v is not None
    }
    try:
        return OperatorSettings(**overrides)
    except ValidationError as exc:
        for err in exc.errors():
            print(f"kubeinfer operator: {'.'.join(map(str, err['loc']))}: {err['msg']}", file=sys.stderr)
        return None


def configure_logging(level: str) -> None:
    import logging

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("httpx2").setLevel(max(logging.WARNING, logging.getLevelName(level)))  # a line per request


def run(args: argparse.Namespace) -> int:
    import asyncio

    from kubeinfer.operator.handlers import LeadershipLost, run_operator
    from kubeinfer.operator.k8s import KubeApi

    settings = settings_from(args)
    if settings is None:
        return 2
    configure_logging(settings.log_level)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf's own login reads it too
    kubeconfig = os.environ.get("KUBECONFIG")
    in_cluster = os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token")

    async def main() -> None:
        api = KubeApi.connect(settings.field_manager, None if in_cluster and not args.kubeconfig else kubeconfig)
        await run_operator(settings, api, liveness=args.liveness)

    try:
        asyncio.run(main())
    except LeadershipLost as exc:
        print(f"kubeinfer operator: {exc}; exiting so that another replica leads", file=sys.stderr)
        return 1
    return 0
