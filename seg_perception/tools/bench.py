"""`seg-perception bench`: speed, measured (not tested).

    seg-perception bench pipeline   per-stage times and fps of the node's pipeline on a
                                    1920x1080 stream (default)
    seg-perception bench backends   latency per backend / precision / size / batch (issue #3)
    seg-perception bench grid       occupancy-grid lookup-table build and per-frame time
    seg-perception bench node       bare inference vs the whole node over DDS (issue #7)
    seg-perception bench overload   a camera at twice the node's capacity for 60 s
    seg-perception bench soak       10 minutes at camera rate, the node's memory curve
    seg-perception bench cameras    one node with N cameras vs N single-camera nodes (issue #16)
    seg-perception bench fleet      process-bags on Ray with 1..N workers vs process-bag in a loop
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Dict, List

from .support.common import parse_size, percentiles_ms


def add_arguments(p: argparse.ArgumentParser) -> None:
    _pipeline_args(p)  # `seg-perception bench [options]` is the pipeline benchmark
    sub = p.add_subparsers(dest="bench", metavar="WHAT")
    _pipeline_args(sub.add_parser("pipeline", help="per-stage times of the node's pipeline (default)"))
    from .bench_backends import add_arguments as backend_args

    backend_args(sub.add_parser("backends", help="latency per backend and precision"))
    from .bench_node import add_arguments as node_args

    node_args(sub)  # node, overload, soak (issue #7)
    from .bench_cameras import add_arguments as camera_args

    camera_args(sub)
    from .bench_fleet import add_arguments as fleet_args

    fleet_args(sub)
    grid = sub.add_parser("grid", help="occupancy grid lookup table and per-frame time")
    grid.add_argument("grid_args", nargs=argparse.REMAINDER, help="options of bench_grid (see --help)")
    p.set_defaults(bench=None)


def _pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="1920x1080", help="camera frame size WxH")
    p.add_argument("--frames", type=int, default=60, help="timed frames")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--params-file", default=None, help="node params file (default: the shipped one)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE")
    p.add_argument("--no-publish", dest="publish", action="store_false",
                   help="skip the publish stage (rclpy publish to a matched subscriber)")
    p.add_argument("--json", default="", help="also write the results as JSON here")


def run(args) -> int:
    if args.bench == "backends":
        from .bench_backends import run as run_backends

        return run_backends(args)
    if args.bench in ("node", "overload", "soak"):
        from .bench_node import run as run_node

        return run_node(args)
    if args.bench == "cameras":
        from .bench_cameras import run as run_cameras

        result = run_cameras(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        return 0
    if args.bench == "fleet":
        from .bench_fleet import run as run_fleet

        run_fleet(args)
        return 0
    if args.bench == "grid":
        from .bench_grid import main as grid_main

        return grid_main(args.grid_args)
    return bench_pipeline(args)


def bench_pipeline(args) -> int:
    """The node's pipeline on sample frames, every output wanted and turned into messages, plus
    the publish of all outputs through rclpy to a subscriber in this process (over Fast DDS, as
    the node does)."""
    from ..core.finish import Finisher
    from ..core.outputs import OUTPUTS
    from ..core.pipeline import StageTimer, build_pipeline
    from ..core.sample import SampleCamera
    from ..ros.conversions import frame_from_msg
    from ..ros.outputs import OutputMessages
    from ..ros.sample_stream import camera_info_msg, frame_msg, pose_parameters, render_frames
    from .support.common import node_config

    w, h = parse_size(args.size)
    cam = SampleCamera(width=w, height=h)
    xyz, rpy = pose_parameters(cam)
    cfg = node_config(args.params_file, [f"camera_pose.xyz:={list(xyz)}", f"camera_pose.rpy:={list(rpy)}"]
                      + list(args.param))  # validated as the node would
    frames = [frame_msg(rgb, i * 100_000_000) for i, rgb in enumerate(render_frames(cam, 4))]
    info = camera_info_msg(cam)
    stages: Dict[str, List[float]] = {}
    totals: List[float] = []
    grid_errors: List[str] = []  # of the timed frames: a grid that did not run is no grid time
    with build_pipeline(cfg) as pipeline:
        finisher = Finisher([""], cfg.grid)
        messages = OutputMessages()
        peer, pubs = _bench_publishers(OUTPUTS) if args.publish else (None, {})
        try:
            for i in range(args.warmup + args.frames):
                if pipeline.grid is not None:  # with every frame, as a camera sends it
                    pipeline.grid.set_camera_info(info)
                t0 = time.perf_counter()
                timer = StageTimer()
                res = pipeline.process(frame_from_msg(frames[i % len(frames)], timer), timer)
                outcome = finisher.finish("", res, OUTPUTS)
                messages.build(outcome, OUTPUTS, publish=(lambda n, m: pubs[n].publish(m)) if pubs else None)
                timer.times.setdefault("publish", 0.0)
                total = time.perf_counter() - t0
                if i >= args.warmup:
                    if outcome.grid is not None and outcome.grid.error:
                        grid_errors.append(outcome.grid.error)
                    totals.append(total)
                    for k, v in timer.times.items():
                        stages.setdefault(k, []).append(v)
        finally:
            if peer is not None:
                peer.close()
        if grid_errors:
            print(f"seg-perception bench: the grid did not run on {len(grid_errors)} of {args.frames} timed "
                  f"frames ({grid_errors[0]}); its stage time would be that of a skipped grid, so nothing "
                  "is reported. Set grid.enabled:=false to leave the grid out.", file=sys.stderr)
            return 1
        backend = pipeline.segmenter.backend
        result = {
            "what": "node pipeline (core.pipeline + ros.outputs) per frame, all outputs, in one process",
            "frame": f"{w}x{h} rgb8", "frames": args.frames, "backend": backend.describe(),
            "model": pipeline.model_path,
            "model_input": f"{backend.info.input_width}x{backend.info.input_height}",
            "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
            "stages_ms": {k: percentiles_ms(v) for k, v in stages.items()},
            "total_ms": percentiles_ms(totals),
            "fps": 1e3 / percentiles_ms(totals)["median"],
        }
    _print_pipeline_report(result, stages)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def _bench_publishers(outputs):
    """A participant publishing every output to its own subscriber, reliable as the node does."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from ..ros.outputs import output_type
    from ..ros.participant import Participant

    peer = Participant("seg_bench", int(os.environ.get("ROS_DOMAIN_ID", "0")))
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {}
    for name in outputs:
        kind = output_type(name)
        pubs[name] = peer.node.create_publisher(kind, f"/seg_bench/{name}", qos)
        peer.node.create_subscription(kind, f"/seg_bench/{name}", lambda m: None, qos)
    end = time.monotonic() + 10
    while time.monotonic() < end and any(p.get_subscription_count() == 0 for p in pubs.values()):
        time.sleep(0.05)
    return peer, pubs


def _print_pipeline_report(result, stages) -> None:
    from ..core.pipeline import STAGES

    order = list(STAGES)
    print(f"pipeline benchmark: {result['frame']} frames, model {os.path.basename(result['model'])} "
          f"(input {result['model_input']}), {result['backend']}, {result['frames']} frames")
    print(f"{'stage':<12}{'median ms':>11}{'p90 ms':>9}{'p99 ms':>9}{'share':>8}")
    med_total = result["total_ms"]["median"]
    for k in order + sorted(set(stages) - set(order)):
        if k in result["stages_ms"]:
            s = result["stages_ms"][k]
            print(f"{k:<12}{s['median']:>11.2f}{s['p90']:>9.2f}{s['p99']:>9.2f}{s['median'] / med_total:>8.0%}")
    t = result["total_ms"]
    print(f"{'total':<12}{t['median']:>11.2f}{t['p90']:>9.2f}{t['p99']:>9.2f}")
    print(f"frames per second: {result['fps']:.1f} (1 / median total)")
