"""Summarise py-spy raw stacks (``py-spy record -f raw``): the share of samples per
function, by itself (self) and with what it calls (inclusive), threads that only wait
for work (an idle executor's ``_worker``) left out.

    python bench/profile_summary.py stacks-*.txt [--top 30]
"""

from __future__ import annotations

import argparse
import collections
import re

_FRAME = re.compile(r"(.*) \((.*?):\d+\)$")


def _name(frame: str) -> str:
    m = _FRAME.match(frame)
    return f"{m.group(1)} ({m.group(2).rsplit('/', 1)[-1]})" if m else frame


def summarise(paths: list[str], top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for path in paths:
        for line in open(path):
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            if frames[-1].split(" (")[0] == "_worker":  # an executor thread waiting for work
                idle += n
                continue
            total += n
            names = [_name(f) for f in frames]
            own[names[-1]] += n
            for name in set(names):
                incl[name] += n
    lines = [f"samples: {total} busy ({idle} idle executor samples left out), files: {len(paths)}",
             "", "self %   function"]
    lines += [f"{100 * v / total:6.1f}   {k}" for k, v in own.most_common(top)]
    lines += ["", "incl %   function"]
    lines += [f"{100 * v / total:6.1f}   {k}" for k, v in incl.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("paths", nargs="+")
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args()
    print(summarise(args.paths, args.top))


if __name__ == "__main__":
    main()
