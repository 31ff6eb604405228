"""The namespace package layout: kubeinfer spans two roots; stdlib operator stays itself.
The extras: each component says which one it needs."""

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_import_operator_is_the_standard_library():
    code = "import operator, kubeinfer.operator, kubeinfer.runtime; print(operator.__file__); print(operator.itemgetter)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "site-packages" not in out.splitlines()[0]
    assert out.splitlines()[0].endswith("/operator.py")
    assert "kubeinfer" not in out.splitlines()[0]


def test_kubeinfer_spans_runtime_and_operator_roots():
    import kubeinfer

    roots = sorted(p.rstrip("/").split("/")[-2] for p in kubeinfer.__path__)
    assert roots == ["operator", "runtime"]


def test_cli_help_lists_components():
    out = subprocess.run([sys.executable, "-m", "kubeinfer.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for sub in ("serve", "route", "fetch", "operator"):
        assert sub in out


# -- extras: the base install is kubeinfer.spec; each component names the extra it needs ------

BLOCKED = "import sys\nfor m in {mods!r}: sys.modules[m] = None  # as if not installed\n" \
          "from kubeinfer.cli import main\nsys.exit(main({argv!r}))\n"


def run_cli_without(mods, argv):
    code = BLOCKED.format(mods=tuple(mods), argv=list(argv))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.parametrize("command", ["serve", "route"])
def test_data_plane_commands_without_the_serve_extra_say_how_to_install_it(command):
    proc = run_cli_without(["numpy", "grpc", "tritonclient"], [command, "--help"])
    assert proc.returncode == 2
    assert proc.stdout == ""
    line, = proc.stderr.splitlines()
    assert f"kubeinfer {command}" in line and "numpy, grpc, tritonclient" in line
    assert line.endswith("pip install 'kubeinfer[serve]'")


def test_operator_runs_without_the_serve_extra():
    from kubeinfer.cli import DATA_PLANE, SUBCOMMANDS

    serve_only = sorted(set(DATA_PLANE) - set(SUBCOMMANDS["operator"].needs))
    proc = run_cli_without(serve_only, ["operator", "--help"])
    assert proc.returncode == 0, proc.stderr
    assert "--namespace" in proc.stdout
    proc = run_cli_without(serve_only, ["--help"])
    assert proc.returncode == 0, proc.stderr
    assert "(not installed: pip install 'kubeinfer[serve]')" in " ".join(proc.stdout.split())  # wrapped


def test_operator_without_its_extra_says_how_to_install_it():
    proc = run_cli_without(["kopf"], ["operator"])
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("pip install 'kubeinfer[operator]'")


def _names(requirements):
    return {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", r).group()).lower() for r in requirements}


def test_cli_checks_the_modules_of_the_extras_pyproject_declares():
    """What ``kubeinfer.cli`` looks for is what the extras install (module -> distribution)."""
    from kubeinfer.cli import SUBCOMMANDS

    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dists = importlib.metadata.packages_distributions()
    for name in ("serve", "operator"):
        declared = _names(r for r in optional[SUBCOMMANDS[name].extra] if not r.startswith("kubeinfer["))
        provided = {m: _names(dists[m]) for m in SUBCOMMANDS[name].needs}
        assert all(p & declared for p in provided.values()), (name, provided)  # no stray module
        assert declared <= set().union(*provided.values()), name  # every requirement checked


def test_base_dependencies_are_the_specs():
    base = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert _names(base) == {"pydantic", "protobuf", "pyyaml"}
