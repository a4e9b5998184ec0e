"""Real ROS 2 over real Fast DDS for the integration tests: the node as its own process (its
console script with the params file) and a test-side participant in the test process.

Every test gets a ROS_DOMAIN_ID of its own, claimed with a lock file, so tests running in
parallel (or two CI runs on one host) never hear each other; discovery is kept on localhost.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from typing import Callable, Dict, List, Optional

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from seg_perception.ros.participant import Participant
from seg_perception.tools.support import node_process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARAMS_FILE = os.path.join(REPO, "config", "camera_seg.yaml")
DISCOVERY_TIMEOUT = 20.0  # s; DDS discovery takes a few seconds on a loaded 2-core machine

RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
BEST_EFFORT = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)


class DomainLease:
    """Claims a free ROS_DOMAIN_ID (1..100) across processes with an flock'd file."""

    def __init__(self) -> None:
        lock_dir = os.path.join("/tmp", "seg_perception_test_domains")
        os.makedirs(lock_dir, exist_ok=True)
        start = 1 + (os.getpid() % 100)
        for i in range(100):
            did = 1 + (start + i) % 100
            f = open(os.path.join(lock_dir, f"{did}.lock"), "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            self.domain_id, self._file = did, f
            return
        raise RuntimeError("no free ROS_DOMAIN_ID for the test")

    def release(self) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


def ros_env(domain_id: int, log_dir: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_LOG_DIR=log_dir,
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1",
               RCUTILS_COLORIZED_OUTPUT="0")
    return env


class NodeProcess(node_process.NodeProcess):
    """camera_seg_node started through its console script with the shipped params file, in the
    test's own ROS domain and log folder (the same launcher the demo and benchmarks use)."""

    def __init__(self, domain_id: int, log_dir: str, params: Optional[Dict[str, object]] = None,
                 remaps: Optional[Dict[str, str]] = None, env: Optional[Dict[str, str]] = None,
                 params_file: str = PARAMS_FILE, executable: str = "camera_seg_node") -> None:
        full_env = ros_env(domain_id, log_dir)
        full_env.update(env or {})
        super().__init__(params_file, params or {}, remaps, full_env,
                         log_path=os.path.join(log_dir, f"node_{time.monotonic_ns()}.log"), executable=executable)

    def shm_segments(self) -> List[str]:
        """The Fast DDS shared-memory segments this process owns: /dev/shm/fastrtps_<id> whose
        lock file (<id>_el) it holds (/proc/locks). Its participant removes them when it is
        destroyed; a process that exits without that leaves them (64 MB with the shipped
        profile) until `fastdds shm clean`."""
        by_inode = {}
        for name in os.listdir("/dev/shm"):
            if name.startswith("fastrtps_") and not name.startswith("fastrtps_port") and name.endswith("_el"):
                try:
                    by_inode[os.stat(os.path.join("/dev/shm", name)).st_ino] = name[:-len("_el")]
                except FileNotFoundError:
                    pass
        owned = []
        with open("/proc/locks") as f:
            for line in f:  # "1: FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF"
                parts = line.split()
                if len(parts) > 5 and parts[1] == "FLOCK" and parts[4] == str(self.proc.pid):
                    name = by_inode.get(int(parts[5].split(":")[2]))
                    if name:
                        owned.append(os.path.join("/dev/shm", name))
        return owned


def still_there(paths: List[str]) -> List[str]:
    """The paths that still exist (shared-memory segments a process should have removed)."""
    return [p for p in paths if os.path.exists(p)]


class Collector:
    """Messages received on one topic, with waiting helpers."""

    def __init__(self) -> None:
        self.msgs: List[object] = []
        self.arrival: List[float] = []
        self._cond = threading.Condition()

    def __call__(self, msg) -> None:
        with self._cond:
            self.msgs.append(msg)
            self.arrival.append(time.monotonic())
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[List[object]], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._cond:
            while not pred(self.msgs):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def wait_count(self, n: int, timeout: float) -> bool:
        return self.wait_for(lambda m: len(m) >= n, timeout)

    def snapshot(self) -> List[object]:
        with self._cond:
            return list(self.msgs)


class RosPeer(Participant):
    """The test's own participant: default Fast DDS transports, no profile (like a camera
    driver). The project's Participant, so it shuts down in the order that one keeps (the spin
    thread stopped before the context goes)."""

    def __init__(self, domain_id: int) -> None:
        super().__init__("seg_test_peer", domain_id)

    def subscribe(self, msg_type, topic: str, qos: QoSProfile = RELIABLE) -> Collector:
        col = Collector()
        self.node.create_subscription(msg_type, topic, col, qos)
        return col

    def publisher(self, msg_type, topic: str, qos: QoSProfile = RELIABLE):
        return self.node.create_publisher(msg_type, topic, qos)

    def wait_matched(self, pub, n: int = 1, timeout: float = DISCOVERY_TIMEOUT) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pub.get_subscription_count() >= n:
                return True
            time.sleep(0.05)
        return False

    def wait_publishers(self, topic: str, n: int = 1, timeout: float = DISCOVERY_TIMEOUT) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.node.count_publishers(topic) >= n:
                return True
            time.sleep(0.05)
        return False



class Camera(threading.Thread):
    """Publishes frames at a steady rate until stopped; remembers (stamp, time sent)."""

    def __init__(self, pub, make_msg, rate=10.0, info_pub=None, make_info=None):
        super().__init__(daemon=True)
        self.pub, self.make_msg, self.period = pub, make_msg, 1.0 / rate
        self.info_pub, self.make_info = info_pub, make_info
        self.sent = []
        self.stop_event = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        i = 0
        while not self.stop_event.is_set():
            stamp = 1_800_000_000_000_000_000 + i * 10 ** 8
            info = self.make_info(stamp) if self.info_pub is not None else None
            if info is not None:
                self.info_pub.publish(info)
            msg = self.make_msg(stamp)
            self.pub.publish(msg)
            with self.lock:
                self.sent.append((msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec, time.monotonic()))
            i += 1
            time.sleep(self.period)

    def stamps_between(self, t0, t1):
        with self.lock:
            return [s for s, t in self.sent if t0 <= t <= t1]

    def stop(self):
        self.stop_event.set()
        self.join(5)
