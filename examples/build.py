#!/usr/bin/env python3
"""Build every example model repository under examples/models/ (idempotent).

Each example model directory that has a ``build.py`` gets its generated files
(``1/model.onnx`` and friends) written by running that script. A model is skipped
when its outputs already exist and are newer than its ``build.py``; ``--force``
rebuilds anyway. Takes seconds (the digits classifier is trained on the spot).

Usage:
    python examples/build.py                 # all examples
    python examples/build.py digits mlp      # some of them
    python examples/build.py --force         # rebuild even if up to date
Needs numpy, onnx and scikit-learn (``pip install -e '.[onnx,examples]'``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

MODELS = Path(__file__).resolve().parent / "models"
# files each build.py writes, relative to its model directory (checked for staleness)
OUTPUTS = {
    "digits": ["1/model.onnx", "samples.json", "request.json"],
    "classification": ["1/model.onnx"],  # labels.txt is committed; written only if missing
    "mlp": ["1/model.onnx"],
    "iris_sklearn": ["1/model.joblib"],  # 1/model.py is committed
}


def examples() -> list[str]:
    return sorted(p.parent.name for p in MODELS.glob("*/build.py"))


def up_to_date(name: str) -> bool:
    script = MODELS / name / "build.py"
    outputs = [MODELS / name / o for o in OUTPUTS.get(name, ["1/model.onnx"])]
    built = [o.stat().st_mtime for o in outputs if o.exists()]
    return len(built) == len(outputs) and min(built) >= script.stat().st_mtime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="examples to build (default: all)")
    ap.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = ap.parse_args(argv)
    known = examples()
    names = args.names or known
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown example(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for name in names:
        if not args.force and up_to_date(name):
            print(f"{name}: up to date")
            continue
        t0 = time.monotonic()
        # a subprocess per script: no __pycache__ inside the model repository, no shared state
        rc = subprocess.run([sys.executable, str(MODELS / name / "build.py")]).returncode
        if rc != 0:
            print(f"{name}: build failed (exit {rc})", file=sys.stderr)
            return rc
        print(f"{name}: built in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
