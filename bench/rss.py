"""Memory of the serving processes while they are under load, from /proc (stdlib only).

``sample``: every INTERVAL s (1), for each watched port that has a listener (``ss -ltnpH``), take
the listening process's session (the benchmark starts every server with ``setsid``, so the
session holds all of the server's processes: workers of a process pool, Ray's actors, which
have process groups of their own) and, while a load generator is running against that port
(a ``wrk`` or ``perf_analyzer`` process whose command line names it), write one JSON line with
VmRSS and VmHWM of every process of that session (less --exclude-comm: by default the
``tee`` with which bench/servers/kubeinfer/serve.sh copies its log). Runs until SIGTERM/SIGINT or until
``--until-pid`` exits.

``report``: the samples as a markdown table, one row per server x transport x model x body:
per process the highest VmRSS seen under load and its VmHWM (peak since process start), and
the totals (the highest sum of VmRSS over the processes in one sample; the sum of VmHWM).

  rss.py sample --targets kubeinfer=8100,kubeinfer=8101,triton=8000 --out rss.jsonl
  rss.py report rss.jsonl > rss.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

LOADGENS = ("wrk", "perf_analyzer")


def listeners() -> dict[int, int]:
    """port -> pid of a process listening on it (TCP)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False).stdout
    found: dict[int, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        port = parts[3].rsplit(":", 1)[-1]
        m = re.search(r"pid=(\d+)", line)
        if port.isdigit() and m:
            found.setdefault(int(port), int(m.group(1)))
    return found


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(comm, pgid, sid) from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    comm = s[s.index("(") + 1 : s.rindex(")")]
    rest = s[s.rindex(")") + 2 :].split()
    return comm, int(rest[2]), int(rest[3])


def _status(pid: int) -> dict[str, int]:
    vals: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    vals[key] = int(val.split()[0])  # kB
    except OSError:
        pass
    return vals


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            items = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return {}
    return dict(i.split("=", 1) for i in items if "=" in i)


def _opt(argv: list[str], *names: str) -> str | None:
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(n + "=") and n.startswith("--"):
                return a.split("=", 1)[1]
    return None


def loads() -> dict[int, dict]:
    """port -> what loads it: the running wrk / perf_analyzer processes, from their argv."""
    found: dict[int, dict] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _stat(int(name))
        if st is None or st[0] not in LOADGENS:
            continue
        argv = _cmdline(int(name))
        if st[0] == "wrk":
            url = next((a for a in argv if a.startswith("http")), "")
            m = re.match(r"https?://[^/:]+:(\d+)/v2/models/([^/]+)/", url)
            if not m:
                continue
            enc = "bin" if "BENCH_HLEN" in _environ(int(name)) else "json"
            found[int(m.group(1))] = {"tool": "wrk", "transport": "http", "model": m.group(2),
                                      "enc": enc, "conc": int(_opt(argv, "-c") or 0)}
        else:
            url = _opt(argv, "-u") or ""
            port = url.rsplit(":", 1)[-1]
            if not port.isdigit():
                continue
            conc = (_opt(argv, "--concurrency-range") or "0").split(":")[0]
            found[int(port)] = {"tool": "perf_analyzer", "transport": _opt(argv, "-i") or "http",
                                "model": _opt(argv, "-m") or "?", "enc": "protobuf" if _opt(argv, "-i") == "grpc" else "?",
                                "conc": int(conc) if conc.isdigit() else 0}
    return found


def session_processes(sid: int, exclude: frozenset[str] = frozenset()) -> list[dict]:
    procs = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        st = _stat(pid)
        if st is None or st[2] != sid or st[0] in exclude:
            continue
        mem = _status(pid)
        if "VmRSS" not in mem:  # kernel threads, zombies
            continue
        argv = _cmdline(pid)
        procs.append({"pid": pid, "pgid": st[1], "comm": st[0], "rss_kb": mem["VmRSS"],
                      "hwm_kb": mem.get("VmHWM", 0), "cmd": shlex.join(argv)[:200]})
    return sorted(procs, key=lambda p: p["pid"])


def sample(args: argparse.Namespace) -> int:
    targets: dict[int, str] = {}
    for item in args.targets.split(","):
        label, _, port = item.rpartition("=")
        targets[int(port)] = label or port
    exclude = frozenset(c for c in args.exclude_comm.split(",") if c)
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with open(args.out, "a") as out:
        while not stop:
            if args.until_pid and not os.path.exists(f"/proc/{args.until_pid}"):
                break
            t0 = time.monotonic()
            load = loads()
            if any(p in targets for p in load):
                lst = listeners()
                for port, what in load.items():
                    if port not in targets or port not in lst:
                        continue
                    st = _stat(lst[port])
                    if st is None:
                        continue
                    procs = session_processes(st[2], exclude)
                    rec = {"t": round(time.time(), 3), "label": targets[port], "port": port, "sid": st[2],
                           **what, "procs": procs}
                    out.write(json.dumps(rec) + "\n")
                out.flush()
            time.sleep(max(0.0, args.interval - (time.monotonic() - t0)))
    return 0


def _mib(kb: int) -> str:
    return f"{kb / 1024:.0f}"


def report(args: argparse.Namespace) -> int:
    groups: dict[tuple, dict] = {}
    for path in args.files:
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for line in lines:
            if not line.strip():
                continue
            r = json.loads(line)
            key = (r["label"], r["port"], r["transport"], r["model"], r["enc"])
            g = groups.setdefault(key, {"procs": {}, "total_rss": 0, "samples": 0, "concs": set()})
            g["samples"] += 1
            g["concs"].add(r["conc"])
            g["total_rss"] = max(g["total_rss"], sum(p["rss_kb"] for p in r["procs"]))
            for p in r["procs"]:
                cur = g["procs"].setdefault(p["pid"], {"comm": p["comm"], "rss_kb": 0, "hwm_kb": 0})
                cur["rss_kb"] = max(cur["rss_kb"], p["rss_kb"])
                cur["hwm_kb"] = max(cur["hwm_kb"], p["hwm_kb"])
    print("Memory of every process of the server's session while it was under load "
          "(MiB; VmRSS = highest sampled, VmHWM = peak since process start; "
          "total VmRSS = highest sum over one sample):\n")
    print("| server | port | transport | model | body | conc | samples | processes | "
          "per process VmRSS / VmHWM (comm pid) | total VmRSS | total VmHWM |")
    print("|---|---:|---|---|---|---|---:|---:|---|---:|---:|")
    for (label, port, transport, model, enc), g in groups.items():
        procs = g["procs"]
        per = "<br>".join(f"{_mib(p['rss_kb'])} / {_mib(p['hwm_kb'])} ({p['comm']} {pid})"
                          for pid, p in sorted(procs.items()))
        body = {"bin": "binary", "json": "JSON"}.get(enc, enc)
        concs = ",".join(str(c) for c in sorted(g["concs"]))
        print(f"| {label} | {port} | {transport} | {model} | {body} | {concs} | {g['samples']} | {len(procs)} | "
              f"{per} | {_mib(g['total_rss'])} | {_mib(sum(p['hwm_kb'] for p in procs.values()))} |")
    if not groups:
        print("(no samples)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="sub", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--targets", required=True, help="LABEL=PORT,... (the servers' listening ports)")
    s.add_argument("--out", required=True, help="JSON lines, appended")
    s.add_argument("--interval", type=float, default=1.0, help="seconds between samples (1)")
    s.add_argument("--exclude-comm", default="tee",
                   help="process names left out (default tee: serve.sh's copy of its log, not the server)")
    s.add_argument("--until-pid", type=int, default=0, help="stop when this process exits")
    r = sub.add_parser("report")
    r.add_argument("files", nargs="+")
    a = ap.parse_args()
    return sample(a) if a.sub == "sample" else report(a)


if __name__ == "__main__":
    sys.exit(main())
