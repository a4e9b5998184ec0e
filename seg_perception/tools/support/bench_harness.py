"""The camera side of the node benchmarks (bench node, overload, soak): the node under test as
its own process on the sample camera's pose, and in this process a camera publisher, raw output
subscribers (only the stamp is read, so little CPU goes to them) and a diagnostics collector."""

from __future__ import annotations

import os
import signal
import statistics
import struct
import threading
import time
from typing import Dict, List, Optional

from ...core.parameters import NODE_NAME
from ...core.outputs import CONFIDENCE_OUTPUT, OUTPUTS
from .common import checked_overrides, parse_size
from .node_process import NodeProcess

# Every output but the confidence, which the node computes only for a subscriber (as the
# measured setups have none).
OUTPUT_NAMES = tuple(n for n in OUTPUTS if n != CONFIDENCE_OUTPUT)


def stamp_ns(raw: bytes) -> int:
    """Header stamp from a serialized message: CDR encapsulation (4 bytes), int32 sec, uint32 nsec."""
    little = raw[1] == 1
    sec, nsec = struct.unpack_from("<iI" if little else ">iI", raw, 4)
    return sec * 10 ** 9 + nsec


class NodeUnderTest(NodeProcess):
    """The node as its own process, on the sample camera's pose, fed by Harness."""

    def __init__(self, args, extra_params: Optional[List[str]] = None, log_path: str = "") -> None:
        from ...core.sample import SampleCamera

        w, h = parse_size(args.size)
        self.cam = SampleCamera(width=w, height=h)
        params = [f"camera_pose.xyz:={list(self.cam.pose_xyz)}",
                  f"camera_pose.rpy:={list(self.cam.pose_rpy)}"]
        params += checked_overrides(list(args.param) + list(extra_params or []), args.params_file)
        super().__init__(args.params_file, params,
                         {"image": "/camera/image_raw", "camera_info": "/camera/camera_info"},
                         {"ROS_DOMAIN_ID": str(args.domain_id),
                          "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},
                         log_path or f"/tmp/seg_bench_node_{os.getpid()}.log")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> Optional[int]:
        return super().stop(sig, timeout)


class Harness:
    """Camera publisher + raw output subscribers + diagnostics, in this process."""

    def __init__(self, domain_id: int, cam, camera_profile: str = "shipped") -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from ...ros.outputs import output_type
        from ...ros.participant import Participant
        from ...ros.sample_stream import camera_info_msg, render_frames

        from ...ros.dds_profile import PROFILE_VARS
        from ...core.resources import FASTDDS_PROFILE

        for var in PROFILE_VARS:  # before this process's participant exists
            os.environ.pop(var, None)
        if camera_profile == "shipped":
            os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = FASTDDS_PROFILE
        self.cam = cam
        print(f"rendering sample frames at {cam.width}x{cam.height} ...", flush=True)
        self.frames = render_frames(cam, 4)
        self.info = camera_info_msg(cam)
        self.part = Participant("seg_bench_camera", domain_id)
        node = self.part.node
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.lock = threading.Lock()
        self.arrivals: Dict[str, Dict[int, float]] = {n: {} for n in OUTPUT_NAMES}
        self.cond = threading.Condition(self.lock)
        for name in OUTPUT_NAMES:
            kind = output_type(name)
            node.create_subscription(kind, f"/{NODE_NAME}/{name}", self._arrived(name), qos, raw=True)
        self.diags: List[Dict[str, str]] = []
        node.create_subscription(DiagnosticArray, "/diagnostics", self._diag, 10)
        self.img_pub = node.create_publisher(Image, "/camera/image_raw", qos)
        self.info_pub = node.create_publisher(CameraInfo, "/camera/camera_info", qos)
        self.sent: Dict[int, float] = {}
        self._msgs = [self._image_msg(rgb) for rgb in self.frames]

    @staticmethod
    def _image_msg(rgb):
        from ...ros.sample_stream import frame_msg

        return frame_msg(rgb, 0)

    def _arrived(self, name):
        def cb(raw):
            t = time.monotonic()
            with self.cond:
                self.arrivals[name][stamp_ns(raw)] = t
                self.cond.notify_all()
        return cb

    def _diag(self, msg) -> None:
        for st in msg.status:
            if st.name.endswith("segmentation"):
                d = {kv.key: kv.value for kv in st.values}
                d["level"] = str(int.from_bytes(st.level, "little"))
                d["message"] = st.message
                d["_t"] = time.monotonic()
                with self.lock:
                    self.diags.append(d)

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Discovery done and one frame through the whole node (model loaded, input QoS settled)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.img_pub.get_subscription_count() and all(
                    self.part.node.count_publishers(f"/{NODE_NAME}/{n}") for n in OUTPUT_NAMES):
                break
            time.sleep(0.1)
        i = 0
        while time.monotonic() < end:
            if self.wait_complete(self.publish(i), timeout=0.5):
                return True
            i += 1
        return False

    def publish(self, i: int) -> int:
        msg = self._msgs[i % len(self._msgs)]
        stamp = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10 ** 9)
        self.info.header.stamp = msg.header.stamp
        self.info_pub.publish(self.info)
        t = time.monotonic()
        self.img_pub.publish(msg)
        with self.lock:
            self.sent[stamp] = t
        return stamp

    def complete(self, stamp: int) -> bool:
        return all(stamp in a for a in self.arrivals.values())

    def wait_complete(self, stamp: int, timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self.cond:
            while not self.complete(stamp):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def wait_any_complete(self, stamps: List[int], timeout: float) -> Optional[int]:
        """The newest of ``stamps`` whose outputs have all arrived (waits up to ``timeout``)."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                done = [s for s in stamps if self.complete(s)]
                if done:
                    return max(done)
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def last_diag(self) -> Dict[str, str]:
        with self.lock:
            return dict(self.diags[-1]) if self.diags else {}

    def diag_median(self, key: str, t0: float, t1: float) -> Optional[float]:
        """Median of a value of the node's diagnostics that arrived in [t0, t1] (each covers the
        diagnostics period before it), e.g. 'network busy (%)' or 'stage inference (ms)'."""
        with self.lock:
            vals = [float(d[key]) for d in self.diags if t0 <= d["_t"] <= t1 and key in d]
        return statistics.median(vals) if vals else None

    def close(self) -> None:
        self.part.close()
