"""``kubeinfer operator``: run the kopf operator as a process.

Settings come from the environment (``KUBEINFER_OPERATOR_*``, see
:class:`~kubeinfer.operator.settings.OperatorSettings`) and these flags, which win.
Credentials: in-cluster service account, else ``--kubeconfig`` / ``$KUBECONFIG``.
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n", "--namespace", action="append", dest="namespaces", default=None,
        help="namespace to watch (repeatable; default: the whole cluster)",
    )
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or in-cluster)")
    parser.add_argument("--runtime-image", default=None, help="default image of runtime pods")
    parser.add_argument("--resync-seconds", type=float, default=None, help="re-apply every model this often")
    parser.add_argument("--liveness", default=None, help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--log-level", default="INFO")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from kubeinfer.operator.handlers import run_operator
    from kubeinfer.operator.k8s import KubeApi
    from kubeinfer.operator.settings import OperatorSettings

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per request otherwise
    overrides = {
        k: v
        for k, v in {
            "namespaces": args.namespaces,
            "runtime_image": args.runtime_image,
            "resync_seconds": args.resync_seconds,
        }.items()
        if v is not None
    }
    settings = OperatorSettings(**overrides)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf's own login reads it too
    kubeconfig = os.environ.get("KUBECONFIG")
    in_cluster = os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token")

    async def main() -> None:
        api = KubeApi.connect(settings.field_manager, None if in_cluster and not args.kubeconfig else kubeconfig)
        await run_operator(settings, api, liveness=args.liveness)

    asyncio.run(main())
    return 0
