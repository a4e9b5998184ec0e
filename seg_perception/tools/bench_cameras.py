"""`seg-perception bench cameras`: one node serving N cameras against N single-camera nodes on the
same machine, in one run (issue #16). Numbers, not pass/fail:

  capacity   every camera publishes faster than the node(s) can take (saturation, 30 Hz a
             camera by default): frames processed per second, summed over the cameras
  overload   every camera at (factor x capacity / N) Hz: per-camera latency (image stamp ->
             labels received) p50/p99, frames each camera got through (fairness)
  memory     resident memory of the node process(es), summed, sampled during the overload

Each setup gets the same parameters (the shipped params file, -p overrides), the sample street
camera's frames and pose, and the same subscribed outputs (labels and drivable_grid of every
camera, raw: this process reads only the stamp). ``--repeat N`` runs N pairs, the setups taking
turns at going first, and gives each ratio's min / median / max and how often it met its target.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Dict, List, Optional, Tuple

from ..core.parameters import NODE_NAME
from ..core.pipeline import WAITS
from .support.bench_harness import stamp_ns
from .support.common import checked_overrides, parse_size, percentiles_ms
from .support.node_process import NodeProcess

MEASURED = ("labels", "drivable_grid")
# a frame's way through the node, from the stages and waits in its diagnostics
PATH = ((WAITS[0], (WAITS[0],)), ("prepare", ("convert", "preprocess")), (WAITS[1], (WAITS[1],)),
        ("inference", ("inference",)), (WAITS[2], (WAITS[2],)),
        ("outputs", ("postprocess", "overlay", "grid", "to_msg", "publish")))


def add_arguments(sub) -> None:
    p = sub.add_parser("cameras", help="one node with N cameras vs N single-camera nodes")
    p.add_argument("--cameras", type=int, default=4, help="cameras (N)")
    p.add_argument("--size", default="1280x720", help="camera frame size WxH (rgb8)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per phase")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    p.add_argument("--factor", type=float, default=2.0, help="overload: total publish rate / capacity")
    p.add_argument("--saturate-hz", type=float, default=30.0,
                   help="per-camera rate of the capacity phase: well above what either setup takes")
    p.add_argument("--params-file", default=None, help="node params file (default: the shipped one)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE")
    p.add_argument("--domain-id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", "58")))
    p.add_argument("--only", choices=("one", "many"), default=None, help="measure one setup only")
    p.add_argument("--repeat", type=int, default=1,
                   help="pairs of runs, the setups alternating which goes first: this machine's "
                        "run-to-run spread (about 20%%) needs several to tell a ratio from noise")
    p.add_argument("--json", default="", help="also write the results as JSON here")


class Rig:
    """N sample cameras publishing into the node(s) and the arrival time of every output."""

    def __init__(self, domain_id: int, n: int, size: str, output_ns: List[str]) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from ..core.resources import FASTDDS_PROFILE
        from ..core.sample import SampleCamera
        from ..ros.dds_profile import PROFILE_VARS
        from ..ros.outputs import output_type
        from ..ros.participant import Participant
        from ..ros.sample_stream import camera_info_msg, frame_msg, render_frames

        for var in PROFILE_VARS:  # the camera side with the shipped profile, as the README advises
            os.environ.pop(var, None)
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = FASTDDS_PROFILE
        w, h = parse_size(size)
        self.cam = SampleCamera(width=w, height=h)
        self.names = [f"cam{i}" for i in range(n)]
        frames = render_frames(self.cam, 4)
        self.msgs = [frame_msg(rgb, 0) for rgb in frames]
        self.info = camera_info_msg(self.cam)
        self.part = Participant("seg_bench_cameras", domain_id)
        node = self.part.node
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.lock = threading.Condition()
        self.sent: Dict[str, Dict[int, float]] = {c: {} for c in self.names}
        self.got: Dict[str, Dict[str, Dict[int, float]]] = {c: {o: {} for o in MEASURED} for c in self.names}
        self.stages: List[Tuple[str, float]] = []  # (stage, ms) of every camera status, as they come
        self.pubs = {}
        for c, ns in zip(self.names, output_ns):
            self.pubs[c] = (node.create_publisher(Image, f"/{c}/image_raw", qos),
                            node.create_publisher(CameraInfo, f"/{c}/camera_info", qos))
            for o in MEASURED:
                kind = output_type(o)
                node.create_subscription(kind, f"{ns}/{o}", self._arrived(c, o), qos, raw=True)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._diag, 10)
        self.frame = 0
        self.frames_per_run: Optional[float] = None  # the one node's, from its diagnostics

    def _arrived(self, cam: str, output: str):
        def cb(raw) -> None:
            with self.lock:
                self.got[cam][output][stamp_ns(raw)] = time.monotonic()
                self.lock.notify_all()
        return cb

    def _diag(self, msg) -> None:
        for st in msg.status:
            for kv in st.values:
                if kv.key.startswith("stage ") and kv.key.endswith(" (ms)"):
                    with self.lock:
                        self.stages.append((kv.key[len("stage "):-len(" (ms)")], float(kv.value)))
                elif kv.key == "frames per network run (mean)":
                    self.frames_per_run = float(kv.value)

    def publish(self, cam: str) -> None:
        img, info = self.pubs[cam]
        msg = self.msgs[self.frame % len(self.msgs)]
        self.frame += 1
        stamp = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10 ** 9)
        self.info.header.stamp = msg.header.stamp
        info.publish(self.info)
        with self.lock:
            self.sent[cam][stamp] = time.monotonic()
        img.publish(msg)

    def complete(self, cam: str) -> Dict[int, float]:
        """stamp -> when the last measured output of that frame arrived."""
        with self.lock:
            both = set(self.got[cam][MEASURED[0]]).intersection(*(self.got[cam][o] for o in MEASURED[1:]))
            return {s: max(self.got[cam][o][s] for o in MEASURED) for s in both}

    def wait_ready(self, timeout: float = 90.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for c in self.names:
                if not self.complete(c):
                    self.publish(c)
            if all(self.complete(c) for c in self.names):
                return True
            time.sleep(0.3)
        return False

    def run(self, rate_hz: float, seconds: float, on_tick=None) -> float:
        """Every camera at ``rate_hz`` (staggered) for ``seconds``; returns the start time."""
        t0 = time.monotonic()
        period = 1.0 / rate_hz
        k = 0
        while time.monotonic() - t0 < seconds:
            for i, c in enumerate(self.names):
                due = t0 + k * period + i * period / len(self.names)
                time.sleep(max(0.0, due - time.monotonic()))
                self.publish(c)
            k += 1
            if on_tick is not None:
                on_tick()
        return t0

    def close(self) -> None:
        self.part.close()


def _start(setup: str, args, cam) -> List[NodeProcess]:
    env = {"ROS_DOMAIN_ID": str(args.domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    xyz, rpy = list(cam.pose_xyz), list(cam.pose_rpy)
    names = [f"cam{i}" for i in range(args.cameras)]
    if setup == "one":
        params = checked_overrides([f"cameras:=[{', '.join(names)}]"] + list(args.param), args.params_file)
        for c in names:
            params += [f"{c}.camera_pose.xyz:={xyz}", f"{c}.camera_pose.rpy:={rpy}"]
        return [NodeProcess(args.params_file, params, env=env, log_path=f"/tmp/seg_bench_cameras_one_{os.getpid()}.log")]
    return [NodeProcess(args.params_file, [f"camera_pose.xyz:={xyz}", f"camera_pose.rpy:={rpy}"] + checked_overrides(args.param, args.params_file),
                        {"image": f"/{c}/image_raw", "camera_info": f"/{c}/camera_info", "__node": f"{NODE_NAME}_{i}"},
                        env, log_path=f"/tmp/seg_bench_cameras_{c}_{os.getpid()}.log")
            for i, c in enumerate(names)]


def saturation_warning(capacity_fps: float, cameras: int, offered_hz: float) -> str:
    """Why a capacity figure may be the cameras' rate, not the node's ("" when it is not): more
    than 0.8 of what each camera offered was processed."""
    per_camera = capacity_fps / max(1, cameras)
    if per_camera <= 0.8 * offered_hz:
        return ""
    return (f"{per_camera:.1f} frames/s per camera at {offered_hz:.0f} Hz offered: the capacity phase "
            "may not have saturated the node(s); raise --saturate-hz")


def measure(setup: str, args) -> Dict[str, object]:
    from ..core.sample import SampleCamera

    w, h = parse_size(args.size)
    names = [f"cam{i}" for i in range(args.cameras)]
    out_ns = ([f"/{NODE_NAME}/{c}" for c in names] if setup == "one"
              else [f"/{NODE_NAME}_{i}" for i in range(args.cameras)])
    nodes = _start(setup, args, SampleCamera(width=w, height=h))
    rig = Rig(args.domain_id, args.cameras, args.size, out_ns)
    rss: List[float] = []
    try:
        if not rig.wait_ready():
            raise SystemExit(f"{setup}: the node(s) did not come up; logs: {[n.log_path for n in nodes]}")
        # capacity: every camera faster than the node(s) take frames
        rig.run(args.saturate_hz, args.warmup)
        mark = {c: len(rig.complete(c)) for c in names}
        rig.run(args.saturate_hz, args.seconds)
        time.sleep(1.0)
        capacity = sum(len(rig.complete(c)) - mark[c] for c in names) / args.seconds
        warning = saturation_warning(capacity, args.cameras, args.saturate_hz)
        if warning:
            print(f"  warning: {warning}", flush=True)
        # overload: factor x capacity in all, each camera its share
        rate = max(args.factor * capacity / args.cameras, 0.2)
        rig.run(rate, args.warmup)
        with rig.lock:
            n_stages = len(rig.stages)
        last_rss = [0.0]

        def sample_rss() -> None:
            if time.monotonic() - last_rss[0] > 1.0:
                last_rss[0] = time.monotonic()
                rss.append(sum(n.rss_mb() for n in nodes))
        t0 = rig.run(rate, args.seconds, sample_rss)
        time.sleep(2.0)
        with rig.lock:
            stage_values: Dict[str, List[float]] = {}
            for stage, ms in rig.stages[n_stages:]:
                stage_values.setdefault(stage, []).append(ms)
            sent = {c: {s: t for s, t in rig.sent[c].items() if t >= t0} for c in names}
    finally:
        rig.close()
        for n in nodes:
            n.stop(timeout=15.0)
    per_camera = {}
    for c in names:
        done = rig.complete(c)
        lat = [done[s] - t for s, t in sent[c].items() if s in done]
        q = percentiles_ms(lat) if lat else {"median": None, "p99": None}
        per_camera[c] = {"published": len(sent[c]), "processed": len(lat),
                         "p50_ms": q["median"], "p99_ms": q["p99"]}
    return {"setup": setup, "processes": len(nodes), "capacity_fps": capacity, "overload_rate_hz_per_camera": rate,
            "per_camera": per_camera, "rss_mb_total": statistics.median(rss) if rss else None,
            "inference_ms_median": (statistics.median(stage_values["inference"])
                                    if stage_values.get("inference") else None),
            "stages_ms_median": {k: statistics.median(v) for k, v in stage_values.items()},
            "frames_per_network_run": rig.frames_per_run}


def report(r: Dict[str, object]) -> None:
    label = "one node, all cameras" if r["setup"] == "one" else f"{r['processes']} single-camera nodes"
    rss = "n/a" if r["rss_mb_total"] is None else f"{r['rss_mb_total']:.0f}"
    print(f"{label}: {r['capacity_fps']:.1f} frames/s processed in all; memory {rss} MB "
          f"(RSS, summed); inference {r['inference_ms_median'] or float('nan'):.0f} ms per network run (median)"
          + (f", {r['frames_per_network_run']:.2f} frames per run" if r["frames_per_network_run"] else ""))
    st = r["stages_ms_median"]
    if st:  # where a frame's time goes in the node, at 2x overload
        parts = [(label, sum(st[k] for k in keys if k in st)) for label, keys in PATH if any(k in st for k in keys)]
        print("  a frame in the node (medians, ms): " + ", ".join(f"{label} {ms:.1f}" for label, ms in parts))
    for c, v in r["per_camera"].items():
        p50 = "n/a" if v["p50_ms"] is None else f"{v['p50_ms']:.0f}"
        p99 = "n/a" if v["p99_ms"] is None else f"{v['p99_ms']:.0f}"
        print(f"  {c}: at {r['overload_rate_hz_per_camera']:.1f} Hz, {v['processed']}/{v['published']} frames "
              f"through, latency p50 {p50} ms, p99 {p99} ms")


def compare(one: Dict[str, object], many: Dict[str, object]) -> Dict[str, Optional[float]]:
    """The targets' ratios of one pair of runs: throughput and memory of the one node over the
    N nodes', and the one node's worst camera p99 over its median network run."""
    p99 = [v["p99_ms"] for v in one["per_camera"].values() if v["p99_ms"] is not None]
    inf: Optional[float] = one["inference_ms_median"]
    return {"throughput_ratio": one["capacity_fps"] / many["capacity_fps"] if many["capacity_fps"] else None,
            "memory_ratio": (one["rss_mb_total"] / many["rss_mb_total"]
                             if one["rss_mb_total"] and many["rss_mb_total"] else None),
            "one_p99_over_inference": max(p99) / inf if p99 and inf else None}


TARGETS = {"throughput_ratio": ("throughput", ">= 1.0", lambda v: v >= 1.0),
           "memory_ratio": ("memory", "<= 0.5", lambda v: v <= 0.5),
           "one_p99_over_inference": ("one node's worst camera p99 / inference", "<= 2.5", lambda v: v <= 2.5)}


def summarize(pairs: List[Dict[str, Optional[float]]]) -> Dict[str, Dict[str, object]]:
    """Per ratio over the pairs: every value, min, median, max, and in how many the target was met."""
    out = {}
    for key, (_, _, met) in TARGETS.items():
        values = [p[key] for p in pairs if p.get(key) is not None]
        out[key] = {"values": values, "min": min(values, default=None), "max": max(values, default=None),
                    "median": statistics.median(values) if values else None,
                    "met": sum(1 for v in values if met(v))}
    return out


def _fmt(v: Optional[float], fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def run(args) -> Dict[str, object]:
    setups = [s for s in ("one", "many") if not args.only or args.only == s]
    pairs: List[Dict[str, object]] = []
    for k in range(max(1, args.repeat)):
        results: Dict[str, object] = {}
        # pairs alternate which setup goes first: neither always meets a fresher machine
        for setup in (setups if k % 2 == 0 else setups[::-1]):
            print(f"{f'pair {k + 1}/{args.repeat}: ' if args.repeat > 1 else ''}measuring: "
                  f"{'one node with' if setup == 'one' else 'one node per camera,'} {args.cameras} "
                  f"cameras at {args.size} ...", flush=True)
            results[setup] = measure(setup, args)
            report(results[setup])
        if len(results) == 2:
            results.update(compare(results["one"], results["many"]))
            print(f"one node / {args.cameras} nodes: throughput {_fmt(results['throughput_ratio'], '.2f')}x "
                  f"(target >= 1.0), memory {_fmt(results['memory_ratio'], '.2f')}x (target <= 0.5); one node's "
                  f"worst camera p99 / inference {_fmt(results['one_p99_over_inference'], '.2f')} (target <= 2.5)",
                  flush=True)
        pairs.append(results)
    if args.repeat <= 1:
        return pairs[0]
    summary = summarize(pairs) if len(setups) == 2 else {}
    if summary:
        print(f"over {len(pairs)} pairs (min / median / max, target met in):")
        for key, (label, target, _) in TARGETS.items():
            v = summary[key]
            print(f"  {label}: {_fmt(v['min'], '.2f')} / {_fmt(v['median'], '.2f')} / {_fmt(v['max'], '.2f')} "
                  f"(target {target}: met in {v['met']} of {len(v['values'])})")
    return {"pairs": pairs, "summary": summary}
