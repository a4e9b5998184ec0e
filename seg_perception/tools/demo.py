"""`seg-perception demo`: the node on the project's own sample drive, end to end.

Writes the sample drive as a rosbag2 (the ray-cast street scene with CameraInfo and the camera's
pose; `seg-perception sample-bag`), starts camera_seg_node as its own process (exactly as
`ros2 run` would, with the shipped params file, on the bag's clock), replays the bag into it over
real ROS 2 from this process with its recorded timing (`seg-perception replay`), subscribes to
every output and /diagnostics, saves pictures of what came back and prints a summary. The
drive's /tf_static gives the node the camera's mount where tf2_ros is installed (camera_pose.source
auto; the parameters the demo passes are the same pose, for a machine without it). Exit status
0 only when every output arrived. ``--rig``: four cameras (config/multi_camera.yaml's rig), one
node, the surround grid.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Dict

import numpy as np

from ..core.parameters import NODE_NAME
from ..core.sample import RIG_CAMERAS, SampleCamera


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_output", help="folder for the bag, pictures and summary.json")
    p.add_argument("--bag", default="", help="replay this bag instead of writing the sample drive "
                   "(camera on /camera/image_raw and /camera/camera_info)")
    p.add_argument("--width", type=int, default=1280, help="sample drive frame width")
    p.add_argument("--height", type=int, default=720, help="sample drive frame height")
    p.add_argument("--frames", type=int, default=40, help="sample drive frames (10 Hz)")
    p.add_argument("--params-file", default=None, help="node params file (default: the shipped one)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra node parameter, as in --ros-args -p")
    p.add_argument("--domain-id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", "42")))
    p.add_argument("--rig", action="store_true", help="the four-camera sample drive (front, left, right, rear) "
                   "into one node with config/multi_camera.yaml: the surround grid")


def run(args) -> int:
    from .support.common import checked_overrides
    from .support.node_process import NodeProcess

    rig = bool(getattr(args, "rig", False))
    params_file = args.params_file or (_multi_camera_params() if rig else None)
    checked_overrides(args.param, params_file)  # before the drive is written: a bad -p is refused at once
    os.makedirs(args.out, exist_ok=True)
    bag, cam = _input_bag(args)
    node = NodeProcess(params_file, _node_parameters(cam, args.param, rig),
                       {} if rig else {"image": "/camera/image_raw", "camera_info": "/camera/camera_info"},
                       {"ROS_DOMAIN_ID": str(args.domain_id), "PYTHONUNBUFFERED": "1",
                        "ROS_AUTOMATIC_DISCOVERY_RANGE": os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")},
                       log_path=os.path.join(args.out, "node.log"))
    print("starting: " + " ".join(node.cmd), flush=True)
    sent, counts, last, diags = _replay_into(node, bag, args.domain_id, rig)
    status, latency = _diagnostics(diags)
    summary = {"bag": bag, "camera": f"{cam.width}x{cam.height} rgb8 at {cam.rate:g} Hz", "frames_published": sent,
               "outputs_received": counts, "latency_median_ms": latency, "diagnostics": status}
    ok = all(last.values())
    if ok:
        summary.update(_save_pictures(args.out, last, rig))
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))
    seg = next((v for k, v in status.items() if k.endswith("segmentation")), {})
    print(f"\nframes published {sent}; outputs received {counts}; node processed "
          f"{seg.get('frames processed', '?')}, dropped {seg.get('frames dropped', '?')}, "
          f"median latency {latency} ms (receipt to outputs published)")
    grid = next((v for k, v in status.items() if k.endswith("drivable grid")), {})
    if grid.get("camera pose"):  # TF from the drive's /tf_static where tf2_ros is installed
        print(f"camera pose: {grid['camera pose']}")
    if ok:
        print(f"pictures and summary in {os.path.abspath(args.out)}/ (demo.png shows them side by side)")
        return 0
    print(f"some outputs never arrived; node log: {node.log_path}", file=sys.stderr)
    return 1


def _input_bag(args):
    """(bag path, its camera): the sample drive written now, or the user's bag."""
    if args.bag:
        return args.bag, SampleCamera()
    from .sample_bag import write_sample_bag

    bag = os.path.join(args.out, "sample_drive")
    rig = bool(getattr(args, "rig", False))
    print(f"writing the sample drive: {args.frames} frames {args.width}x{args.height}"
          f"{' x 4 cameras' if rig else ''} -> {bag}", flush=True)
    info = write_sample_bag(bag, frames=args.frames, width=args.width, height=args.height, overwrite=True,
                            rig=rig)
    return bag, info["camera"]


def _multi_camera_params() -> str:
    from .support.node_process import shipped_params_file

    return os.path.join(os.path.dirname(shipped_params_file()), "multi_camera.yaml")


def _node_parameters(cam, extra, rig: bool = False):
    from ..ros.sample_stream import pose_parameters

    # the sample drive records its odometry: the demo shows the drivable map growing too
    common = ["use_sim_time:=true", "map.enabled:=true"]
    if rig:  # the rig's poses are the params file's
        return common + extra
    xyz, rpy = pose_parameters(cam)
    return common + [f"camera_pose.xyz:={xyz}", f"camera_pose.rpy:={rpy}"] + extra


class _Outputs:
    """Every output of the node and /diagnostics, subscribed reliable as RViz does; keeps the
    last two messages of each output (memory stays flat) and the stamps seen."""

    def __init__(self, peer, rig: bool = False) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import OccupancyGrid
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from ..core.outputs import GRID_OUTPUT, IMAGE_OUTPUTS
        from ..ros.map_output import MAP_OUTPUT

        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        # with the rig: the front camera's image outputs, the others' overlays, the surround grid
        ns = f"/{NODE_NAME}/front/" if rig else f"/{NODE_NAME}/"
        self.topics = {n: f"{ns}{n}" for n in IMAGE_OUTPUTS}
        self.topics.update({GRID_OUTPUT: f"/{NODE_NAME}/{GRID_OUTPUT}", MAP_OUTPUT: f"/{NODE_NAME}/{MAP_OUTPUT}"})
        # every camera's own grid: it comes back only once that camera's image and CameraInfo
        # both reached the node
        self.grids = [GRID_OUTPUT]
        if rig:
            self.topics.update({f"{c}/overlay": f"/{NODE_NAME}/{c}/overlay" for c in RIG_CAMERAS[1:]})
            self.grids = [f"{c}/{GRID_OUTPUT}" for c in RIG_CAMERAS]
            self.topics.update({g: f"/{NODE_NAME}/{g}" for g in self.grids})
        self.names = tuple(self.topics)
        self.received: Dict[str, list] = {n: [] for n in self.names}
        self.seen: Dict[str, set] = {n: set() for n in self.names}
        self.diags: list = []
        self.lock = threading.Lock()
        for name, topic in self.topics.items():
            kind = OccupancyGrid if name in (GRID_OUTPUT, MAP_OUTPUT, *self.grids) else Image
            peer.create_subscription(kind, topic, self._keep(name), reliable)
        peer.create_subscription(DiagnosticArray, "/diagnostics", self.diags.append, 10)

    def _keep(self, name):
        def cb(msg):
            with self.lock:
                self.received[name].append(msg)
                del self.received[name][:-2]
                self.seen[name].add(msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec)
        return cb

    def grids_arrived(self) -> bool:
        with self.lock:
            return all(self.seen[g] for g in self.grids)

    def snapshot(self):
        """({output: stamps seen}, {output: last message or None})."""
        with self.lock:
            return ({n: len(s) for n, s in self.seen.items()},
                    {n: (msgs[-1] if msgs else None) for n, msgs in self.received.items()})


def _replay_into(node, bag: str, domain_id: int, rig: bool = False):
    """Replay ``bag`` into the started node from this process; (image frames sent, output
    counts, last output messages, diagnostics arrays). Stops the node."""
    from ..ros.participant import Participant
    from .replay import Player
    from .sample_bag import rig_topics

    # this process is the camera: no DDS profile of ours (like a camera driver)
    os.environ.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    participant = Participant("seg_demo", domain_id)
    outputs = _Outputs(participant.node, rig)
    player = None
    try:
        player = Player(bag, context=participant.context, log=lambda text: None)
        cameras = RIG_CAMERAS if rig else ("",)
        image_topic = rig_topics(cameras[0])["image"]
        # every camera's image and CameraInfo matched to the node's subscriptions: with input_qos
        # auto the node subscribes each once it has seen its publisher, and matching between
        # processes took seconds here now and then (CameraInfo sent before it was lost, all of the
        # short drive's: no grid)
        inputs = [rig_topics(c)[k] for c in cameras for k in ("image", "camera_info")]
        end = time.monotonic() + 30.0
        while time.monotonic() < end and node.alive():
            if player.wait_for_subscribers(inputs, timeout=0.5) == [] and all(
                    participant.node.count_publishers(t) for t in outputs.topics.values()):
                break
        # matched is not yet receiving: the drive's first messages until every camera's grid
        # comes back (same stamps as the drive's first frame: nothing extra in the outputs)
        if not player.prime(outputs.grids_arrived, timeout=30.0):
            print("warning: no drivable grid came back from the node's first frames; replaying anyway",
                  flush=True)
        print(f"replaying {bag} into the node ...", flush=True)
        player.play(1)
        player.flush()
        sent = player.published.get(image_topic, 0)
        time.sleep(1.5)
        counts, last = outputs.snapshot()
    finally:
        if player is not None:
            player.close()
        node.stop()
        participant.close()
    return sent, counts, last, outputs.diags


def _diagnostics(diags):
    """({status name: level, message and values}, median latency of the last status while
    frames flowed (the final one comes after them))."""
    status = {}
    latency = "n/a"
    for arr in diags:
        for st in arr.status:
            if st.name.endswith("segmentation") or st.name.endswith("grid"):
                status[st.name] = {"level": int.from_bytes(st.level, "little"), "message": st.message,
                                   **{kv.key: kv.value for kv in st.values}}
                value = status[st.name].get("latency median (ms)")
                if value not in (None, "n/a"):
                    latency = value
    return status, latency


def _save_pictures(out: str, last, rig: bool = False) -> Dict[str, object]:
    """Each output as a PNG and demo.png side by side; the grid's and masks' figures."""
    from ..core.outputs import IMAGE_OUTPUTS, MASK_OUTPUTS
    from ..ros.conversions import image_to_array
    from .support import pictures

    imgs = {n: image_to_array(last[n]) for n in IMAGE_OUTPUTS}
    g = last["drivable_grid"]
    cells = np.frombuffer(g.data, np.int8).reshape(g.info.height, g.info.width)
    grid_rgb = pictures.grid_picture(cells)
    for n, arr in imgs.items():
        pictures.save_rgb(os.path.join(out, f"{n}.png"), arr)
    pictures.save_rgb(os.path.join(out, "drivable_grid.png"), grid_rgb)
    m = last["drivable_map"]
    map_cells = np.frombuffer(m.data, np.int8).reshape(m.info.height, m.info.width)
    map_rgb = pictures.map_picture(map_cells)
    pictures.save_rgb(os.path.join(out, "drivable_map.png"), map_rgb)
    grid_title = "~/drivable_grid (4 cameras fused, 60 m)" if rig else "~/drivable_grid (top view, 40 m)"
    top = pictures.composite([imgs["overlay"], grid_rgb, map_rgb],
                             ["~/front/overlay" if rig else "~/overlay", grid_title, "~/drivable_map (odom, 60 m)"],
                             height=480)
    if rig:
        others = RIG_CAMERAS[1:]
        bottom = pictures.composite([image_to_array(last[f"{c}/overlay"]) for c in others],
                                    [f"~/{c}/overlay" for c in others], height=240)
    else:
        bottom = pictures.composite([imgs[n] for n in MASK_OUTPUTS], [f"~/{n}" for n in MASK_OUTPUTS], height=240)
    pictures.save_rgb(os.path.join(out, "demo.png"), pictures.stack_rows([top, bottom], width=1280))
    return {"grid": {"cells": int(cells.size), "drivable": int((cells == 0).sum()),
                     "not_drivable": int((cells == 100).sum()), "unknown": int((cells < 0).sum()),
                     "frame": g.header.frame_id, "resolution_m": g.info.resolution},
            "map": {"cells": int(map_cells.size), "known": int((map_cells >= 0).sum()),
                    "drivable": int(((map_cells >= 0) & (map_cells <= 35)).sum()),
                    "not_drivable": int((map_cells >= 65).sum()), "frame": m.header.frame_id},
            "mask_share": {n: float((imgs[n] == 255).mean()) for n in MASK_OUTPUTS}}
