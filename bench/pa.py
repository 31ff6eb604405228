"""Helpers of bench/grpc.sh around Triton's perf_analyzer (run with venv-pa's python).

  pa.py inputs PAYLOADS MODEL OUT.json     the harness's fixed request tensor as perf_analyzer --input-data
  pa.py check HOST:PORT MODEL PAYLOADS     one gRPC ModelInfer, OUTPUT0 compared with the in-process reference
  pa.py drain HOST:PORT MODEL PAYLOADS     wait until the server has finished what the warm-up left
  pa.py record --csv F ... --out R.jsonl   perf_analyzer's CSV (-f) as one JSON line
  pa.py report R.jsonl                     the gRPC cells as a markdown table
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys


def inputs(a: argparse.Namespace) -> int:
    with open(os.path.join(a.payloads, f"{a.model}.json.body")) as f:
        body = json.load(f)
    out = {}
    for t in body["inputs"]:
        # perf_analyzer's shapes leave out the batch dimension of a batching model (-b 1)
        out[t["name"]] = {"content": t["data"], "shape": t["shape"][1:]}
    with open(a.out, "w") as f:
        json.dump({"data": [out]}, f)
    return 0


def check(a: argparse.Namespace) -> int:
    import numpy as np
    import tritonclient.grpc as grpcclient

    with open(os.path.join(a.payloads, f"{a.model}.json.body")) as f:
        body = json.load(f)
    ref = np.load(os.path.join(a.payloads, f"{a.model}.ref.npy"))
    client = grpcclient.InferenceServerClient(a.url)
    try:
        ins = []
        for t in body["inputs"]:
            arr = np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
            i = grpcclient.InferInput(t["name"], list(arr.shape), "FP32")
            i.set_data_from_numpy(arr)
            ins.append(i)
        res = client.infer(a.model, ins, outputs=[grpcclient.InferRequestedOutput("OUTPUT0")], client_timeout=120)
        got = res.as_numpy("OUTPUT0")
    finally:
        client.close()
    ok = got is not None and got.shape == ref.shape and np.allclose(got, ref, rtol=1e-3, atol=1e-4)
    err = float(np.max(np.abs(got - ref))) if got is not None and got.shape == ref.shape else None
    if not getattr(a, "quiet", False):
        print(f"CHECK {'OK' if ok else 'FAIL'} grpc://{a.url} {a.model}: shape {None if got is None else got.shape} "
              f"max_abs_err {err}")
    return 0 if ok else 1


def drain(a: argparse.Namespace) -> int:
    """Wait until the server has finished what the warm-up left queued: one more request over
    gRPC, which the server's FIFO batcher answers only after the work queued ahead of it."""
    import time

    t0 = time.monotonic()
    a.quiet = True
    rc = check(a)
    print(f"  (drained: a probe request took {time.monotonic() - t0:.1f} s{'' if rc == 0 else ', and FAILED'})")
    return 0


def record(a: argparse.Namespace) -> int:
    rec = {"label": a.label, "transport": "grpc", "url": a.url, "model": a.model, "conc": a.conc,
           "window_ms": a.window_ms, "tool": "perf_analyzer", "cmd": a.cmd}
    rows = []
    if a.csv and os.path.exists(a.csv):
        with open(a.csv) as f:
            rows = [r for r in csv.DictReader(f) if r.get("Concurrency", "").strip().isdigit()]
    if a.rc != 0 or not rows:
        rec["error"] = a.error or f"perf_analyzer rc={a.rc}, no CSV row (see raw/)"
    else:
        r = rows[-1]
        num = {k.strip(): float(v) for k, v in r.items() if k and v not in (None, "") and _isnum(v)}
        rec.update(pa=num, infer_s=num.get("Inferences/Second"),
                   p50_ms=_ms(num.get("p50 latency")), p90_ms=_ms(num.get("p90 latency")),
                   p99_ms=_ms(num.get("p99 latency")), avg_ms=_ms(num.get("Avg latency")))
    passes = _passes(a.text)
    if passes:
        rec["pass_infer_s"] = passes
        merged = passes[-3:]  # perf_analyzer reports the last 3 windows merged
        if min(merged) > 0:
            rec["spread_pct"] = round((max(merged) / min(merged) - 1) * 100, 1)
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    if "error" in rec:
        print(f"  -> {rec['error']}")
    else:
        print(f"  -> {rec['infer_s']:.1f} infer/s, p50 {rec['p50_ms']} ms, p99 {rec['p99_ms']} ms, "
              f"windows {passes} (spread {rec.get('spread_pct')} %)")
    return 0


def _passes(path: str) -> list[float]:
    """Throughput of each measurement window ("Pass [n] throughput: X infer/sec", printed with -v)."""
    if not path or not os.path.exists(path):
        return []
    with open(path, errors="replace") as f:
        return [float(m.group(1)) for m in re.finditer(r"Pass \[\d+\] throughput: ([0-9.]+) infer/sec", f.read())]


def _isnum(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000.0, 3)


def report(a: argparse.Namespace) -> int:
    recs = []
    with open(a.results) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    print("### Over gRPC (perf_analyzer; infer/s = samples/s, every request is batch 1)\n")
    print("| server | model | conc | infer/s | p50 ms | p99 ms | windows | window spread % | note |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in recs:
        if "error" in r:
            print(f"| {r['label']} | {r['model']} | {r['conc'] or '-'} | - | - | - | - | - | {r['error']} |")
        else:
            spread = r.get("spread_pct")
            print(f"| {r['label']} | {r['model']} | {r['conc']} | {r['infer_s']:.1f} | {r['p50_ms']:.2f} | "
                  f"{r['p99_ms']:.2f} | {len(r.get('pass_infer_s', []))} | {'-' if spread is None else spread} |  |")
    if not recs:
        print("| (no results) | | | | | | | | |")
    print("\nwindows = measurement windows run; perf_analyzer reports the last 3 merged; window spread = "
          "max/min - 1 of those 3 windows' throughput (its per-window lines, -v)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="sub", required=True)
    p = sub.add_parser("inputs")
    p.add_argument("payloads")
    p.add_argument("model")
    p.add_argument("out")
    p = sub.add_parser("check")
    p.add_argument("url", help="HOST:PORT of the gRPC endpoint")
    p.add_argument("model")
    p.add_argument("payloads")
    p = sub.add_parser("drain")
    p.add_argument("url", help="HOST:PORT of the gRPC endpoint")
    p.add_argument("model")
    p.add_argument("payloads")
    p = sub.add_parser("record")
    for opt in ("--label", "--url", "--model", "--csv", "--text", "--out", "--cmd", "--error"):
        p.add_argument(opt, default="")
    p.add_argument("--conc", type=int, required=True)
    p.add_argument("--window-ms", type=int, default=0)
    p.add_argument("--rc", type=int, default=0)
    p = sub.add_parser("report")
    p.add_argument("results")
    a = ap.parse_args()
    return {"inputs": inputs, "check": check, "drain": drain, "record": record, "report": report}[a.sub](a)


if __name__ == "__main__":
    sys.exit(main())
