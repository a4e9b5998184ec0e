"""Benchmarks of the running node (issue #7): throughput against bare inference, overload, and
a long run's memory. Commands anyone can rerun; numbers, not pass/fail:

    seg-perception bench node       (a) bare inference fps vs (b) the node's fps over DDS
    seg-perception bench overload   a camera at twice the node's capacity for 60 s
    seg-perception bench soak       10 minutes at camera rate; the node's memory curve

The camera side runs in this process; by default with the shipped Fast DDS profile (64 MB
shared memory), as the README advises for a 1080p camera driver: on Fast DDS defaults the
camera's sending side delays and loses 1080p frames, and the node then waits for frames instead
of working (--camera-profile none measures exactly that). The node is camera_seg_node in its own
process with the shipped params file. Outputs are subscribed raw (serialized) so this process
spends little CPU on them: only the stamp is read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Dict, List

import numpy as np

from ..core.pipeline import STAGES, WAITS
from .support.bench_harness import OUTPUT_NAMES, Harness, NodeUnderTest
from .support.common import parse_size, percentiles_ms

def add_common(p: argparse.ArgumentParser, seconds: float) -> None:
    p.add_argument("--size", default="1920x1080", help="camera frame size WxH (rgb8)")
    p.add_argument("--seconds", type=float, default=seconds, help="measured duration")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    p.add_argument("--params-file", default=None, help="node params file (default: the shipped one)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra node parameter")
    p.add_argument("--domain-id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", "57")))
    p.add_argument("--camera-profile", choices=("shipped", "none"), default="shipped",
                   help="Fast DDS profile of the camera side: the shipped one (64 MB shared memory) "
                        "or none (Fast DDS defaults)")
    p.add_argument("--json", default="", help="also write the results as JSON here")


def bare_inference(args, seconds: float) -> Dict[str, float]:
    """(a) the configured model and backend alone, frames already at the model's input size,
    with the node's thread budget (num_threads from the same parameters)."""
    from ..core.sample import SampleCamera, render_frame
    from ..core.segmenter import Segmenter
    from ..core.threads import inference_threads
    from ..core import resources
    from .support.common import node_config

    cfg = node_config(args.params_file, args.param)
    threads = inference_threads(cfg.model.num_threads)
    w, h = parse_size(args.size)
    rgb = render_frame(0, SampleCamera(width=w, height=h))[0]
    with Segmenter.from_file(cfg.model.path or resources.DEFAULT_MODEL, cfg.model.backend,
                             num_threads=threads) as seg:
        x = seg.fit_for(h, w).to_model(rgb).copy()
        for _ in range(3):
            seg.infer_model_input(x)
        times = []
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            t0 = time.perf_counter()
            seg.infer_model_input(x)
            times.append(time.perf_counter() - t0)
        desc = seg.backend.describe()
    med = statistics.median(times)
    return {"fps": len(times) / sum(times), "median_ms": med * 1e3, "frames": len(times), "backend": desc,
            "threads": threads, "model_input": f"{x.shape[1]}x{x.shape[0]}"}


def _as_fast_as_it_takes(h: "Harness", seconds: float, warmup: float, first: int, depth: int = 2):
    """Feed the node as fast as it takes frames: two in flight (one in the network, one waiting),
    the next sent as soon as one completes (all outputs arrived); a frame overtaken by a newer one
    was dropped by the node. Returns (completion times after warm-up, frames not completed)."""
    in_flight: List[int] = []
    i = first
    t_measure = time.monotonic() + warmup
    done_times: List[float] = []
    lost = 0
    while time.monotonic() < t_measure + seconds:
        while len(in_flight) < depth:
            in_flight.append(h.publish(i))
            i += 1
        done = h.wait_any_complete(in_flight, timeout=3.0)
        if done is None:
            lost += len(in_flight)
            in_flight.clear()
            continue
        t_done = max(h.arrivals[n][done] for n in OUTPUT_NAMES)
        if t_done >= t_measure:
            done_times.append(t_done)
        lost += sum(1 for s in in_flight if s < done)
        in_flight = [s for s in in_flight if s > done]
    return done_times, lost


def run_node_throughput(args) -> Dict[str, object]:
    print(f"(a) bare inference for {args.seconds:.0f} s ...", flush=True)
    bare = bare_inference(args, args.seconds)
    print(f"    {bare['fps']:.1f} fps ({bare['median_ms']:.1f} ms median, {bare['backend']})", flush=True)
    node = NodeUnderTest(args)
    h = Harness(args.domain_id, node.cam, args.camera_profile)
    try:
        if not h.wait_ready():
            raise SystemExit(f"the node did not come up; log: {node.log_path}")
        print(f"(b) node over DDS, {node.cam.width}x{node.cam.height} rgb8, every output subscribed, "
              f"{args.warmup:.0f} s warm-up + {args.seconds:.0f} s ...", flush=True)
        t0 = time.monotonic()
        done_times, lost = _as_fast_as_it_takes(h, args.seconds, args.warmup, 0, args.in_flight)
        busy = h.diag_median("network busy (%)", t0 + args.warmup + 1.0, time.monotonic())
        inference_ms = h.diag_median("stage inference (ms)", t0 + args.warmup + 1.0, time.monotonic())
        time.sleep(1.5)
        diag = h.last_diag()
    finally:
        h.close()
        node.stop()
    fps = len(done_times) / args.seconds
    stages = {k[len("stage "):-len(" (ms)")]: float(v) for k, v in diag.items() if k.startswith("stage ")}
    result = {"bare": bare, "node": {"fps": fps, "frames": len(done_times), "not_completed": lost,
                                     "camera_profile": args.camera_profile,
                                     "frame": f"{node.cam.width}x{node.cam.height} rgb8",
                                     "stages_ms_median": stages,
                                     "latency_median_ms": diag.get("latency median (ms)"),
                                     "network_busy_percent_median": busy,
                                     "inference_ms_median": inference_ms},
              "ratio": fps / bare["fps"] if bare["fps"] else float("nan")}
    print()
    print(f"bare inference : {bare['fps']:6.1f} fps  ({bare['backend']}, input {bare['model_input']}, "
          f"threads {bare['threads'] or 'default'})")
    print(f"node over DDS  : {fps:6.1f} fps  ({result['node']['frame']}, all outputs subscribed, "
          f"camera Fast DDS profile: {args.camera_profile})")
    print(f"node / bare    : {result['ratio']:6.2f}")
    if busy is not None and inference_ms is not None:
        print(f"network busy   : {busy:6.1f} % of the time in the node; {inference_ms:.1f} ms per frame there, "
              f"{bare['median_ms']:.1f} ms bare (medians over the run)")
    if stages:
        print("node stages (median ms, from /diagnostics; inference and output threads overlap):")
        for k in STAGES + WAITS:
            if k in stages:
                print(f"  {k:<17}{stages[k]:8.2f}")
    return result


def run_overload(args) -> Dict[str, object]:
    node = NodeUnderTest(args)
    h = Harness(args.domain_id, node.cam, args.camera_profile)
    try:
        if not h.wait_ready():
            raise SystemExit(f"the node did not come up; log: {node.log_path}")
        # capacity: as fast as it takes frames (two in flight), after a warm-up
        done_times, _ = _as_fast_as_it_takes(h, 8.0, args.warmup, 0)
        capacity = len(done_times) / 8.0
        rate = args.factor * capacity
        print(f"node capacity ~{capacity:.1f} fps; publishing at {rate:.1f} Hz for {args.seconds:.0f} s ...",
              flush=True)
        stamps = []
        t_start = time.monotonic()
        while time.monotonic() - t_start < args.seconds:
            stamps.append(h.publish(10 ** 6 + len(stamps)))
            time.sleep(max(0.0, t_start + len(stamps) / rate - time.monotonic()))
        busy = h.diag_median("network busy (%)", t_start + 1.0, time.monotonic())
        # the network's time under this load, over the whole run (one window's median is noisy)
        inference_ms = h.diag_median("stage inference (ms)", t_start + 1.0, time.monotonic())
        time.sleep(2.0)
        diag = h.last_diag()
        with h.lock:
            sent = dict(h.sent)
            masks = dict(h.arrivals["road_mask"])
    finally:
        h.close()
        node.stop()
    if inference_ms is None:
        inference_ms = float(diag.get("stage inference (ms)", "nan"))
    result = _overload_result(args.seconds, stamps, sent, masks, t_start, inference_ms)
    result.update({"capacity_fps": capacity, "publish_rate_hz": rate,
                   "dropped_reported": int(diag.get("frames dropped", "0")),
                   "network_busy_percent_median": busy})
    _print_overload(result)
    return result


def _overload_result(seconds: float, stamps: List[int], sent: Dict[int, float],
                     masks: Dict[int, float], t_start: float, inference_ms: float) -> Dict[str, object]:
    """Latency (image stamp -> road_mask received) of the frames that got through, overall and
    over the first and last 10 s (a growing queue shows as a rising latency)."""
    lat = [(masks[s] - sent[s]) for s in stamps if s in masks]
    t_of = [sent[s] - t_start for s in stamps if s in masks]
    lat_ms = np.array(lat) * 1e3
    first = lat_ms[np.array(t_of) < 10.0]
    last = lat_ms[np.array(t_of) > seconds - 10.0]
    q = percentiles_ms(lat)
    latency = {"p50": q["median"], "p90": q["p90"], "p99": q["p99"], "max": float(lat_ms.max())}
    return {"published": len(stamps), "processed": len(lat), "latency_ms": latency,
            "latency_p50_first_10s_ms": float(np.median(first)) if first.size else None,
            "latency_p50_last_10s_ms": float(np.median(last)) if last.size else None,
            "inference_ms_median": inference_ms,
            "p99_over_inference": latency["p99"] / inference_ms if inference_ms else None}


def _print_overload(result: Dict[str, object]) -> None:
    print(f"published {result['published']} frames at {result['publish_rate_hz']:.1f} Hz, masks for "
          f"{result['processed']}; node reports {result['dropped_reported']} dropped in total")
    L = result["latency_ms"]
    print(f"image stamp -> road_mask received: p50 {L['p50']:.0f} ms, p90 {L['p90']:.0f}, p99 {L['p99']:.0f}, "
          f"max {L['max']:.0f}; node's inference under this load {result['inference_ms_median']:.0f} ms "
          f"(median over the run); p99 / inference = {result['p99_over_inference']:.2f} (target <= 2.5)")
    if result["network_busy_percent_median"] is not None:
        print(f"network busy {result['network_busy_percent_median']:.1f} % of the time (median of /diagnostics)")
    print(f"latency p50 first 10 s {result['latency_p50_first_10s_ms']:.0f} ms, last 10 s "
          f"{result['latency_p50_last_10s_ms']:.0f} ms (a growing queue would show here)")


def run_soak(args) -> Dict[str, object]:
    node = NodeUnderTest(args)
    h = Harness(args.domain_id, node.cam, args.camera_profile)
    curve = []
    errors = 0
    try:
        if not h.wait_ready():
            raise SystemExit(f"the node did not come up; log: {node.log_path}")
        print(f"{args.seconds / 60:.0f} min at {args.rate:g} Hz, {node.cam.width}x{node.cam.height} ...", flush=True)
        t_start = time.monotonic()
        k = 0
        next_sample = t_start
        while time.monotonic() - t_start < args.seconds and node.proc.poll() is None:
            h.publish(k)
            k += 1
            now = time.monotonic()
            if now >= next_sample:
                curve.append((now - t_start, node.rss_mb()))
                next_sample += args.sample_every
                d = h.last_diag()
                if d.get("level") == "2":
                    errors += 1
                if len(curve) % 30 == 1:
                    print(f"  {curve[-1][0]:6.0f} s  RSS {curve[-1][1]:7.1f} MB  processed "
                          f"{d.get('frames processed', '?')} dropped {d.get('frames dropped', '?')}", flush=True)
            time.sleep(max(0.0, t_start + k / args.rate - time.monotonic()))
        diag = h.last_diag()
    finally:
        h.close()
        code = node.stop()
    t = np.array([c[0] for c in curve])
    rss = np.array([c[1] for c in curve])
    after = rss[t >= args.warmup]
    base = float(after[:5].mean()) if after.size >= 5 else float("nan")
    end = float(after[-5:].mean()) if after.size >= 5 else float("nan")
    result = {"seconds": args.seconds, "rate_hz": args.rate, "published": k,
              "received": int(diag.get("frames received", "0")),
              "processed": int(diag.get("frames processed", "0")), "dropped": int(diag.get("frames dropped", "0")),
              "failed": int(diag.get("frames failed", "0")), "error_statuses": errors, "exit_code": code,
              "rss_mb_after_warmup": base, "rss_mb_end": end, "rss_growth": (end - base) / base,
              "curve": [[float(a), float(b)] for a, b in curve]}
    print(f"RSS after {args.warmup:.0f} s warm-up {base:.1f} MB, at the end {end:.1f} MB: growth "
          f"{100 * result['rss_growth']:+.2f}% (target < 5%); frames published {k}, received by the node "
          f"{result['received']}, processed {result['processed']}, "
          f"failed {result['failed']}, ERROR statuses {errors}, exit code {code}")
    if args.plot:
        _plot(curve, args.plot, args.warmup)
        print(f"memory curve: {args.plot}")
    return result


def _plot(curve, path: str, warmup: float) -> None:
    import cv2

    W, H, m = 900, 360, 50
    img = np.full((H, W, 3), 255, np.uint8)
    t = np.array([c[0] for c in curve])
    r = np.array([c[1] for c in curve])
    lo, hi = float(r.min()) * 0.98, float(r.max()) * 1.02
    xs = m + (t - t.min()) / max(t.max() - t.min(), 1e-9) * (W - 2 * m)
    ys = H - m - (r - lo) / max(hi - lo, 1e-9) * (H - 2 * m)
    cv2.rectangle(img, (m, m), (W - m, H - m), (0, 0, 0), 1)
    xw = m + (warmup - t.min()) / max(t.max() - t.min(), 1e-9) * (W - 2 * m)
    cv2.line(img, (int(xw), m), (int(xw), H - m), (180, 180, 180), 1)
    pts = np.stack([xs, ys], 1).astype(np.int32)
    cv2.polylines(img, [pts], False, (200, 60, 20), 2)
    cv2.putText(img, f"node RSS (MB) over {t.max():.0f} s; grey line: end of warm-up", (m, 30),
                cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"{hi:.0f}", (5, m + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.putText(img, f"{lo:.0f}", (5, H - m), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.imwrite(path, img)


def add_arguments(sub) -> None:
    node = sub.add_parser("node", help="(a) bare inference vs (b) the whole node over DDS")
    add_common(node, 20.0)
    node.add_argument("--in-flight", type=int, default=2,
                      help="frames sent ahead of completed ones (2: one in the network, one waiting)")
    over = sub.add_parser("overload", help="camera at twice the node's capacity")
    add_common(over, 60.0)
    over.add_argument("--factor", type=float, default=2.0, help="publish rate / node capacity")
    soak = sub.add_parser("soak", help="a long run at camera rate; memory curve")
    add_common(soak, 600.0)
    soak.set_defaults(warmup=60.0)
    soak.add_argument("--rate", type=float, default=10.0, help="camera rate, Hz")
    soak.add_argument("--sample-every", type=float, default=2.0, help="seconds between RSS samples")
    soak.add_argument("--plot", default="soak_memory.png", help="PNG of the memory curve ('' for none)")


def run(args) -> int:
    fn = {"node": run_node_throughput, "overload": run_overload, "soak": run_soak}[args.bench]
    result = fn(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0
