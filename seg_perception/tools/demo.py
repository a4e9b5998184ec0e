"""`seg-perception demo`: the node on the project's own sample camera stream, end to end.

Starts camera_seg_node as its own process (exactly as `ros2 run` would, with the shipped params
file), publishes the sample street scene as sensor_msgs/Image + CameraInfo over real ROS 2 from
this process, subscribes to every output and /diagnostics, saves pictures of what came back and
prints a summary. Exit status 0 only when every output arrived.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List

import numpy as np

from ..core.sample import SampleCamera


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_output", help="folder for pictures and summary.json")
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--frames", type=int, default=8, help="distinct sample frames rendered (cycled)")
    p.add_argument("--seconds", type=float, default=8.0, help="how long the camera streams")
    p.add_argument("--rate", type=float, default=10.0, help="camera frame rate, Hz")
    p.add_argument("--params-file", default=None, help="node params file (default: the shipped one)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra node parameter, as in --ros-args -p")
    p.add_argument("--domain-id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", "42")))


def _params_file(arg) -> str:
    if arg:
        return arg
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidates = [os.path.join(here, "config", "camera_seg.yaml")]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(os.path.join(get_package_share_directory("seg_perception"), "config", "camera_seg.yaml"))
    except Exception:  # not installed through colcon
        pass
    for c in candidates:
        if os.path.isfile(c):
            return c
    raise SystemExit("cannot find config/camera_seg.yaml; pass --params-file")


def _node_command() -> List[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "camera_seg_node")
    if not os.path.exists(exe):
        exe = shutil.which("camera_seg_node") or ""
    return [exe] if exe else [sys.executable, "-m", "seg_perception.ros.node"]


def run(args) -> int:
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import OccupancyGrid
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from ..ros.conversions import image_to_array
    from ..ros.participant import Participant
    from ..ros.processing import IMAGE_OUTPUTS
    from ..ros.sample_stream import camera_info_msg, frame_msg, pose_parameters, render_frames
    from . import pictures

    os.makedirs(args.out, exist_ok=True)
    cam = SampleCamera(width=args.width, height=args.height, rate=args.rate)
    print(f"rendering {args.frames} sample frames at {cam.width}x{cam.height} ...", flush=True)
    frames = render_frames(cam, args.frames)

    env = dict(os.environ, ROS_DOMAIN_ID=str(args.domain_id), PYTHONUNBUFFERED="1",
               ROS_AUTOMATIC_DISCOVERY_RANGE=os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"))
    xyz, rpy = pose_parameters(cam)
    cmd = _node_command() + ["--ros-args", "--params-file", _params_file(args.params_file),
                             "-p", f"camera_pose.xyz:={xyz}", "-p", f"camera_pose.rpy:={rpy}",
                             "-r", "image:=/camera/image_raw", "-r", "camera_info:=/camera/camera_info"]
    for extra in args.param:
        cmd += ["-p", extra]
    log_path = os.path.join(args.out, "node.log")
    print("starting: " + " ".join(cmd), flush=True)
    node_proc = subprocess.Popen(cmd, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)

    # this process is the camera: no DDS profile of ours (like a camera driver)
    os.environ.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    participant = Participant("seg_demo_camera", args.domain_id)
    peer = participant.node
    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    received: Dict[str, list] = {n: [] for n in IMAGE_OUTPUTS + ("drivable_grid",)}
    diags: list = []
    lock = threading.Lock()

    def keep(name):
        def cb(msg):
            with lock:
                received[name].append(msg)
                del received[name][:-3]  # keep memory flat
        return cb

    for name in IMAGE_OUTPUTS:
        peer.create_subscription(Image, f"/camera_seg/{name}", keep(name), reliable)
    peer.create_subscription(OccupancyGrid, "/camera_seg/drivable_grid", keep("drivable_grid"), reliable)
    peer.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diags.append(m), 10)
    img_pub = peer.create_publisher(Image, "/camera/image_raw", reliable)
    info_pub = peer.create_publisher(CameraInfo, "/camera/camera_info", reliable)
    counts = {n: 0 for n in received}
    try:
        end = time.monotonic() + 30.0
        while img_pub.get_subscription_count() == 0 and time.monotonic() < end:
            if node_proc.poll() is not None:
                break
            time.sleep(0.1)
        print(f"streaming {args.seconds:.0f} s at {args.rate:.0f} Hz ...", flush=True)
        t0 = time.monotonic()
        sent = 0
        seen = {n: set() for n in received}
        while time.monotonic() - t0 < args.seconds and node_proc.poll() is None:
            stamp = time.time_ns()
            info_pub.publish(camera_info_msg(cam, stamp))
            img_pub.publish(frame_msg(frames[sent % len(frames)], stamp))
            sent += 1
            time.sleep(max(0.0, t0 + sent / args.rate - time.monotonic()))
            with lock:
                for n, msgs in received.items():
                    seen[n].update(m.header.stamp.sec * 10 ** 9 + m.header.stamp.nanosec for m in msgs)
        time.sleep(1.0)
        with lock:
            for n, msgs in received.items():
                seen[n].update(m.header.stamp.sec * 10 ** 9 + m.header.stamp.nanosec for m in msgs)
            counts = {n: len(s) for n, s in seen.items()}
            last = {n: (msgs[-1] if msgs else None) for n, msgs in received.items()}
    finally:
        node_proc.send_signal(signal.SIGINT)
        try:
            node_proc.wait(10)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        participant.close()

    status = {}
    for arr in diags:
        for st in arr.status:
            if st.name.endswith("segmentation") or st.name.endswith("grid"):
                status[st.name] = {"level": int.from_bytes(st.level, "little"), "message": st.message,
                                   **{kv.key: kv.value for kv in st.values}}
    summary = {"camera": f"{cam.width}x{cam.height} rgb8 at {args.rate:g} Hz", "frames_published": sent,
               "outputs_received": counts, "diagnostics": status}
    ok = all(last.values())
    if ok:
        rgb = frames[0]
        imgs = {n: image_to_array(last[n]) for n in IMAGE_OUTPUTS}
        g = last["drivable_grid"]
        cells = np.frombuffer(g.data, np.int8).reshape(g.info.height, g.info.width)
        grid_rgb = pictures.grid_picture(cells)
        for n, arr in imgs.items():
            pictures.save_rgb(os.path.join(args.out, f"{n}.png"), arr)
        pictures.save_rgb(os.path.join(args.out, "drivable_grid.png"), grid_rgb)
        pictures.save_rgb(os.path.join(args.out, "camera.png"), rgb)
        panel = pictures.composite(
            [imgs["overlay"], imgs["road_mask"], imgs["pedestrian_mask"], imgs["parking_mask"], grid_rgb],
            ["overlay", "road_mask", "pedestrian_mask", "parking_mask", "drivable_grid (top view)"])
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
          f"median latency {seg.get('latency median (ms)', '?')} ms")
    if ok:
        print(f"pictures and summary in {os.path.abspath(args.out)}/ (demo.png shows them side by side)")
        return 0
    print(f"some outputs never arrived; node log: {log_path}", file=sys.stderr)
    return 1
