"""`seg-perception bench fleet`: bags/s and frames/s of process-bags on an embedded Ray with 1..N
workers against `process-bag` run once per bag in a loop (what a script would do), over the same
generated drives; and, from the measured per-bag cost, what more machines would give.

Each way runs as its own process (the commands as a person types them), in turn, --repeats
times; the median wall time is reported. The scaling estimate assumes what this machine shows:
a worker's per-bag time stays the same on another machine of its kind, and a cluster pays Ray's
start and one model load per worker once.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List


def add_arguments(sub) -> None:
    p = sub.add_parser("fleet", help="process-bags on Ray (1..N workers) vs process-bag in a loop")
    p.add_argument("--bags", type=int, default=6, help="generated drives (default 6)")
    p.add_argument("--frames", type=int, default=50, help="frames per drive (default 50, 10 Hz)")
    p.add_argument("--size", default="640x360", help="frame size WxH (default 640x360)")
    p.add_argument("--workers", default="1,2", help="worker counts to run (default 1,2)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each way, in turn (default 3)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="a node parameter for every run (e.g. model:=...)")
    p.add_argument("--keep", help="keep the drives and results in this folder")
    p.add_argument("--json", default="", help="also write the results as JSON here")


def _cli() -> str:
    return os.path.join(os.path.dirname(sys.executable), "seg-perception")


def _timed(argv: List[str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr[-2000:]}")
    return time.perf_counter() - t0


def run(args) -> Dict[str, object]:
    from .support.common import parse_size

    width, height = parse_size(args.size)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    root = args.keep or tempfile.mkdtemp(prefix="bench_fleet_")
    drives = os.path.join(root, "drives")
    params = [x for p in args.param for x in ("-p", p)]
    try:
        if os.path.isdir(drives):
            shutil.rmtree(drives)
        os.makedirs(drives)
        for i in range(args.bags):
            subprocess.run([_cli(), "sample-bag", os.path.join(drives, f"drive{i}"), "--frames", str(args.frames),
                            "--width", str(width), "--height", str(height), "--start", str(1_700_000_000 + 600 * i)],
                           check=True, capture_output=True)
        bags = sorted(os.path.join(drives, d) for d in os.listdir(drives))
        frames = args.bags * args.frames
        ways = {"process-bag loop": None, **{f"process-bags {w} worker(s)": w for w in workers}}
        times: Dict[str, List[float]] = {k: [] for k in ways}
        per_bag: Dict[str, List[float]] = {k: [] for k in ways if ways[k]}
        for r in range(args.repeats):
            for name, w in ways.items():
                out = os.path.join(root, f"out_{r}_{w or 'loop'}")
                shutil.rmtree(out, ignore_errors=True)
                if w is None:
                    t0 = time.perf_counter()
                    for i, bag in enumerate(bags):
                        _timed([_cli(), "process-bag", bag, "--out", os.path.join(out, f"b{i}"), "--quiet", *params])
                    times[name].append(time.perf_counter() - t0)
                else:
                    times[name].append(_timed([_cli(), "process-bags", drives, "--out", out, "--workers", str(w),
                                               "--quiet", *params]))
                    per_bag[name] += [json.load(open(os.path.join(out, d, "result.json")))["seconds"]
                                      for d in os.listdir(out) if os.path.isfile(os.path.join(out, d, "result.json"))]
                print(f"run {r + 1}/{args.repeats} {name}: {times[name][-1]:.1f} s", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    rows = {}
    for name, ts in times.items():
        t = statistics.median(ts)
        rows[name] = {"seconds": t, "runs": ts, "bags_per_s": args.bags / t, "frames_per_s": frames / t}
        if name in per_bag and per_bag[name]:
            rows[name]["bag_seconds_median"] = statistics.median(per_bag[name])
    result = {"bags": args.bags, "frames_per_bag": args.frames, "size": args.size, "cpus": os.cpu_count(),
              "params": args.param, "ways": rows, "scaling": _scaling(rows, workers, args.bags)}
    _print(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


def _scaling(rows: Dict[str, Dict[str, float]], workers: List[int], bags: int) -> Dict[str, object]:
    """From the run with one worker: its per-bag time c (in the worker) and fixed cost F (Ray's
    start and the model load: wall time minus bags x c); a machine like this one with W workers
    adds W / c_W bags/s, where c_W is the per-bag time with W workers here (they share cores)."""
    one = rows.get("process-bags 1 worker(s)")
    if not one or "bag_seconds_median" not in one:
        return {}
    c1 = one["bag_seconds_median"]
    fixed = max(0.0, one["seconds"] - bags * c1)
    best = max((w for w in workers if f"process-bags {w} worker(s)" in rows), default=1)
    cw = rows[f"process-bags {best} worker(s)"].get("bag_seconds_median", c1)
    per_machine = best / cw
    return {"bag_seconds_1_worker": c1, "fixed_seconds": fixed, "workers_per_machine": best,
            "bag_seconds_at_that": cw, "bags_per_s_per_machine": per_machine,
            "estimate": {f"{n} machine(s)": {"bags_per_s": n * per_machine,
                                             "hours_for_1000_bags": (fixed + 1000 / (n * per_machine)) / 3600}
                         for n in (1, 2, 4, 8)}}


def _print(r: Dict[str, object]) -> None:
    print(f"{r['bags']} drives x {r['frames_per_bag']} frames {r['size']}, {r['cpus']} CPUs"
          + (f", {' '.join(r['params'])}" if r["params"] else ""))
    for name, row in r["ways"].items():
        extra = f", {row['bag_seconds_median']:.2f} s per bag in a worker" if "bag_seconds_median" in row else ""
        print(f"  {name:<26} {row['seconds']:7.1f} s  {row['bags_per_s']:.3f} bags/s  "
              f"{row['frames_per_s']:.1f} frames/s{extra}")
    s = r["scaling"]
    if s:
        print(f"  per bag {s['bag_seconds_1_worker']:.2f} s with one worker, fixed cost {s['fixed_seconds']:.1f} s "
              f"(Ray's start, the model load); {s['workers_per_machine']} workers a machine: "
              f"{s['bags_per_s_per_machine']:.3f} bags/s each machine")
        for n, e in s["estimate"].items():
            print(f"    {n}: {e['bags_per_s']:.3f} bags/s, 1000 such bags in {e['hours_for_1000_bags']:.2f} h")
