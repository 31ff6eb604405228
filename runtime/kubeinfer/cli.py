"""``kubeinfer`` command line: one entry point, one subcommand per component.

Each subcommand lives next to the code it runs, in a module exposing
``add_arguments(parser)`` and ``run(args) -> int``. Those modules keep their heavy imports
inside ``run`` so that ``kubeinfer --help`` stays fast and nothing is built at import time.
The base install carries only the specification's dependencies; each component needs its
extra (``serve`` for the data plane, ``operator`` for the operator). A component whose
extra is missing is refused with one line naming the ``pip install`` that adds it, before
anything is imported, so an operator image without the data plane says so plainly.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import NamedTuple

#: top-level modules of the ``serve`` extra that every data-plane component imports
DATA_PLANE = ("numpy", "fastapi", "uvicorn", "grpc", "tritonclient", "orjson", "prometheus_client",
              "httpx", "httptools", "hpack", "pydantic_settings")


class Subcommand(NamedTuple):
    module: str
    help: str
    #: the extra that installs what ``needs`` names
    extra: str
    #: top-level modules that must be importable (found, not imported, before dispatch)
    needs: tuple[str, ...]


SUBCOMMANDS: dict[str, Subcommand] = {
    "serve": Subcommand("kubeinfer.runtime.cli", "serve one model over the KServe v2 / Triton protocol",
                        "serve", DATA_PLANE),
    "route": Subcommand("kubeinfer.router.cli", "serve an ensemble of models as one v2 model", "serve", DATA_PLANE),
    "fetch": Subcommand("kubeinfer.fetch.cli", "download a model repository from a URI", "serve", ("httpx",)),
    "operator": Subcommand("kubeinfer.operator.cli", "run the Kubernetes operator", "operator",
                           ("kopf", "lightkube", "pydantic_settings")),
}


def missing(name: str) -> list[str]:
    """The modules subcommand ``name`` needs that are not installed."""
    return [m for m in SUBCOMMANDS[name].needs if importlib.util.find_spec(m) is None]


def install_hint(name: str) -> str:
    return f"pip install 'kubeinfer[{SUBCOMMANDS[name].extra}]'"


def build_parser(available: dict[str, object]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubeinfer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in available.items():
        helptext = SUBCOMMANDS[name].help
        if missing(name):
            helptext += f" (not installed: {install_hint(name)})"
        p = sub.add_parser(name, help=helptext, description=helptext)
        module.add_arguments(p)  # type: ignore[attr-defined]
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # import only the chosen component (all of them for --help)
    chosen = [argv[0]] if argv and argv[0] in SUBCOMMANDS else list(SUBCOMMANDS)
    if len(chosen) == 1 and (absent := missing(chosen[0])):
        print(f"kubeinfer {chosen[0]} needs the '{SUBCOMMANDS[chosen[0]].extra}' extra (missing: "
              f"{', '.join(absent)}); install it with: {install_hint(chosen[0])}", file=sys.stderr)
        return 2
    available = {}
    for name in chosen:
        module_name = SUBCOMMANDS[name].module
        try:
            available[name] = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # a component not installed in this image (e.g. the operator in a runtime image)
            if exc.name and (module_name + ".").startswith(exc.name + "."):
                continue
            raise
    args = build_parser(available).parse_args(argv)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
