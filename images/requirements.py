"""Print the project's requirements for the given extras, one per line, from pyproject.toml.

The image builder stage uses it to build the dependency wheels from pyproject.toml alone,
before the source is copied, so that a source change does not rebuild them (layer cache).
Usage: python3 requirements.py pyproject.toml onnx,operator ["extra-req>=1 other-req" ...]
"""

import sys
import tomllib


def main() -> None:
    path, extras, *more = sys.argv[1:]
    with open(path, "rb") as fh:
        project = tomllib.load(fh)["project"]
    name = project["name"]
    optional = project.get("optional-dependencies", {})
    reqs = list(project.get("dependencies", []))
    todo = [e.strip() for e in extras.split(",") if e.strip()]
    seen: set[str] = set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        if extra not in optional:
            sys.exit(f"unknown extra {extra!r}; pyproject.toml has {sorted(optional)}")
        seen.add(extra)
        for req in optional[extra]:
            if req.startswith(name + "["):  # self-reference: kubeinfer[onnx,operator]
                todo += req[len(name) + 1 : req.index("]")].split(",")
            else:
                reqs.append(req)
    more = [r for arg in more for r in arg.split()]  # "boto3>=1.34 foo" -> two
    print("\n".join(dict.fromkeys(reqs + more)))


if __name__ == "__main__":
    main()
