"""``kubeinfer`` command line: one entry point, one subcommand per component.

Each subcommand lives next to the code it runs, in a module exposing
``add_arguments(parser)`` and ``run(args) -> int``. Those modules keep their heavy imports
inside ``run`` so that ``kubeinfer --help`` stays fast and nothing is built at import time.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("kubeinfer.runtime.cli", "serve one model over the KServe v2 / Triton protocol"),
    "route": ("kubeinfer.router.cli", "serve an ensemble of models as one v2 model"),
    "fetch": ("kubeinfer.fetch.cli", "download a model repository from a URI"),
    "operator": ("kubeinfer.operator.cli", "run the Kubernetes operator"),
}


def build_parser(available: dict[str, object]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubeinfer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in available.items():
        helptext = SUBCOMMANDS[name][1]
        p = sub.add_parser(name, help=helptext, description=helptext)
        module.add_arguments(p)  # type: ignore[attr-defined]
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # import only the chosen component (all of them for --help)
    chosen = [argv[0]] if argv and argv[0] in SUBCOMMANDS else list(SUBCOMMANDS)
    available = {}
    for name in chosen:
        module_name = SUBCOMMANDS[name][0]
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
