"""`seg-perception demo`: the node on the project's own sample drive, end to end.

Writes the sample drive as a rosbag2 (the ray-cast street scene with CameraInfo and the camera's
pose; `seg-perception sample-bag`), starts camera_seg_node as its own process (exactly as
`ros2 run` would, with the shipped params file, on the bag's clock), replays the bag into it over
real ROS 2 from this process with its recorded timing (`seg-perception replay`), subscribes to
every output and /diagnostics, saves pictures of what came back and prints a summary. Exit status
0 only when every output arrived.
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

from ..core.sample import SampleCamera


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


def run(args) -> int:
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import OccupancyGrid
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from ..ros.conversions import image_to_array
    from ..ros.participant import Participant
    from ..core.pipeline import IMAGE_OUTPUTS
    from ..ros.sample_stream import pose_parameters
    from .node_process import NodeProcess
    from .replay import Player
    from . import pictures

    os.makedirs(args.out, exist_ok=True)
    bag = args.bag or os.path.join(args.out, "sample_drive")
    if not args.bag:
        from .sample_bag import write_sample_bag

        print(f"writing the sample drive: {args.frames} frames {args.width}x{args.height} -> {bag}", flush=True)
        info = write_sample_bag(bag, frames=args.frames, width=args.width, height=args.height, overwrite=True)
        cam = info["camera"]
    else:
        cam = SampleCamera()

    env = {"ROS_DOMAIN_ID": str(args.domain_id), "PYTHONUNBUFFERED": "1",
           "ROS_AUTOMATIC_DISCOVERY_RANGE": os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")}
    xyz, rpy = pose_parameters(cam)
    params = ["use_sim_time:=true", f"camera_pose.xyz:={xyz}", f"camera_pose.rpy:={rpy}"] + list(args.param)
    node = NodeProcess(args.params_file, params,
                       {"image": "/camera/image_raw", "camera_info": "/camera/camera_info"}, env,
                       log_path=os.path.join(args.out, "node.log"))
    print("starting: " + " ".join(node.cmd), flush=True)

    # this process is the camera: no DDS profile of ours (like a camera driver)
    os.environ.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    participant = Participant("seg_demo", args.domain_id)
    peer = participant.node
    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    received: Dict[str, list] = {n: [] for n in IMAGE_OUTPUTS + ("drivable_grid",)}
    seen: Dict[str, set] = {n: set() for n in received}
    diags: list = []
    lock = threading.Lock()

    def keep(name):
        def cb(msg):
            with lock:
                received[name].append(msg)
                del received[name][:-2]  # keep memory flat
                seen[name].add(msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec)
        return cb

    for name in IMAGE_OUTPUTS:
        peer.create_subscription(Image, f"/camera_seg/{name}", keep(name), reliable)
    peer.create_subscription(OccupancyGrid, "/camera_seg/drivable_grid", keep("drivable_grid"), reliable)
    peer.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diags.append(m), 10)
    player = None
    sent = 0
    try:
        player = Player(bag, context=participant.context, log=lambda text: None)
        image_topic = "/camera/image_raw"
        end = time.monotonic() + 30.0
        while time.monotonic() < end and node.alive():
            if player.wait_for_subscribers([image_topic], timeout=0.5) == [] and all(
                    peer.count_publishers(f"/camera_seg/{n}") for n in received):
                break
        time.sleep(1.0)  # let the node switch its input QoS to the bag's (reliable) camera
        print(f"replaying {bag} into the node ...", flush=True)
        player.play(1)
        player.flush()
        sent = player.published.get(image_topic, 0)
        time.sleep(1.5)
        with lock:
            counts = {n: len(s) for n, s in seen.items()}
            last = {n: (msgs[-1] if msgs else None) for n, msgs in received.items()}
    finally:
        if player is not None:
            player.close()
        node.stop()
        participant.close()

    status = {}
    latency = "n/a"  # from the last status while frames flowed (the final one comes after them)
    for arr in diags:
        for st in arr.status:
            if st.name.endswith("segmentation") or st.name.endswith("grid"):
                status[st.name] = {"level": int.from_bytes(st.level, "little"), "message": st.message,
                                   **{kv.key: kv.value for kv in st.values}}
                value = status[st.name].get("latency median (ms)")
                if value not in (None, "n/a"):
                    latency = value
    summary = {"bag": bag, "camera": f"{cam.width}x{cam.height} rgb8 at {cam.rate:g} Hz", "frames_published": sent,
               "outputs_received": counts, "latency_median_ms": latency, "diagnostics": status}
    ok = all(last.values())
    if ok:
        imgs = {n: image_to_array(last[n]) for n in IMAGE_OUTPUTS}
        g = last["drivable_grid"]
        cells = np.frombuffer(g.data, np.int8).reshape(g.info.height, g.info.width)
        grid_rgb = pictures.grid_picture(cells)
        for n, arr in imgs.items():
            pictures.save_rgb(os.path.join(args.out, f"{n}.png"), arr)
        pictures.save_rgb(os.path.join(args.out, "drivable_grid.png"), grid_rgb)
        top = pictures.composite([imgs["overlay"], grid_rgb], ["~/overlay", "~/drivable_grid (top view, 40 m)"],
                                 height=480)
        bottom = pictures.composite([imgs["road_mask"], imgs["pedestrian_mask"], imgs["parking_mask"]],
                                    ["~/road_mask", "~/pedestrian_mask", "~/parking_mask"], height=240)
        panel = pictures.stack_rows([top, bottom], width=1280)
        pictures.save_rgb(os.path.join(args.out, "demo.png"), panel)
        summary["grid"] = {"cells": int(cells.size), "drivable": int((cells == 0).sum()),
                           "not_drivable": int((cells == 100).sum()), "unknown": int((cells < 0).sum()),
                           "frame": g.header.frame_id, "resolution_m": g.info.resolution}
        summary["mask_share"] = {n: float((imgs[n] == 255).mean()) for n in
                                 ("road_mask", "pedestrian_mask", "parking_mask")}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))
    seg = next((v for k, v in status.items() if k.endswith("segmentation")), {})
    print(f"\nframes published {sent}; outputs received {counts}; node processed "
          f"{seg.get('frames processed', '?')}, dropped {seg.get('frames dropped', '?')}, "
          f"median latency {latency} ms (receipt to outputs published)")
    if ok:
        print(f"pictures and summary in {os.path.abspath(args.out)}/ (demo.png shows them side by side)")
        return 0
    print(f"some outputs never arrived; node log: {node.log_path}", file=sys.stderr)
    return 1
