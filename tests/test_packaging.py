"""The namespace package layout: kubeinfer spans two roots; stdlib operator stays itself."""

import subprocess
import sys


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
