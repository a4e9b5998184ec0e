"""~/drivable_map on the node: feeds core/drivable_map.MapBuilder with the odometry topic and
every camera's per-frame grid, publishes the map at map.rate and reports its state. Glue only:
the update rule and the fault policy are the core's."""

from __future__ import annotations

import dataclasses
import threading
from typing import Dict, Optional, Tuple

import numpy as np
from builtin_interfaces.msg import Time
from nav_msgs.msg import OccupancyGrid, Odometry
from rclpy.clock import Clock, ClockType
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

from ..core.drivable_map import map_builder, odometry_frames_problem
from ..core.grid import GridSpec
from ..core.odometry import yaw_of_quaternion
from . import diagnostics as diag
from .camera import resolve
from .conversions import occupancy_grid_msg, stamp_seconds
from .tf_pose import tf_listener

MAP_OUTPUT = "drivable_map"
ODOM_TOPIC = "odom"


def odometry_pose(msg) -> Tuple[float, Tuple[float, float, float]]:
    """(stamp in s, planar pose (x, y, yaw)) of a nav_msgs/Odometry: the pose history's input."""
    q = msg.pose.pose.orientation
    return stamp_seconds(msg.header), (msg.pose.pose.position.x, msg.pose.pose.position.y,
                                       yaw_of_quaternion(q.x, q.y, q.z, q.w))


class MapOutput:
    """Created by the node when map.enabled; ``publisher`` is the node's publisher factory (a
    lifecycle publisher on the managed node)."""

    def __init__(self, node, p: Dict[str, object], publisher, log) -> None:
        self.node = node
        self.p = p
        self._log = log  # the node's throttled log(kind, level, text)
        self.lock = threading.Lock()
        self.builder = map_builder(p, resolve(node, ODOM_TOPIC))
        self.frame_id = str(p["map.frame_id"])
        self.odom_frames = ("", "")  # (frame_id, child_frame_id) of the odometry
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        self.pub = publisher(OccupancyGrid, f"~/{MAP_OUTPUT}", qos)
        self.sub = None
        self.tf = TfMapPose(node, self.frame_id, str(p["grid.frame_id"])) if p["map.pose_source"] == "tf" else None
        if self.tf is not None:
            self.builder.odom_source = f"TF {self.frame_id} <- {p['grid.frame_id']}"
        self.published_stamp: Optional[float] = None
        self.stamp = Time()  # the header stamp of the newest frame in the map
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        # guarded: an error is logged, never the end of the executor
        self.timer = node.create_timer(1.0 / float(p["map.rate"]), node._guarded(self.publish), clock=steady)

    def subscribe(self) -> None:
        # best effort matches every publisher (a reliable one too); the history keeps what arrives
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)
        if self.sub is None and self.tf is None:
            self.sub = self.node.create_subscription(Odometry, ODOM_TOPIC, self.node._guarded(self.on_odometry), qos)

    def unsubscribe(self) -> None:
        if self.sub is not None:
            self.node.destroy_subscription(self.sub)
            self.sub = None

    def destroy(self, drop_publisher) -> None:
        self.unsubscribe()
        if self.tf is not None:
            self.tf.close()
        self.node.destroy_timer(self.timer)
        drop_publisher(self.pub)

    def apply_parameters(self, p: Dict[str, object]) -> None:
        with self.lock:
            m = self.builder.map
            m.spec = dataclasses.replace(m.spec, decay_time=float(p["map.decay_time"]), trinary=bool(p["map.trinary"]))
            self.builder.odom_timeout = float(p["map.odom_timeout"])

    def on_odometry(self, msg: Odometry) -> None:
        t, pose = odometry_pose(msg)
        self.odom_frames = (msg.header.frame_id, msg.child_frame_id)
        with self.lock:
            reason = self.builder.on_odometry(t, pose)
        if reason:
            self._log("map_clear", "warn", f"drivable map cleared: {reason}")

    def on_grid(self, cells: np.ndarray, spec: GridSpec, header: Header,
                weight: Optional[np.ndarray] = None) -> None:
        """A camera's per-frame grid (in grid.frame_id) at its frame's stamp; ``weight``: the
        model's confidence behind each cell, where the model gives it."""
        t = stamp_seconds(header)
        pose = None
        if self.tf is not None:  # the pose at this very stamp, from TF (cameras come in any stamp order)
            pose, error = self.tf.at(header)
            if pose is None:
                with self.lock:
                    outcome = self.builder.skip(error)
                self._log("map", "warn", outcome.status)
                return
        with self.lock:
            before = self.builder.map.updates
            outcome = self.builder.on_grid(cells, spec, t, weight, pose)
            if self.builder.map.updates > before and self.builder.map.stamp == t:
                self.stamp = Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec)  # exact, not t
        if outcome.state != "ok":
            self._log("map", "warn", outcome.status)

    def publish(self) -> None:
        with self.lock:
            m = self.builder.map
            if m.stamp is None or m.origin is None or self.pub.get_subscription_count() == 0:
                return
            cells, origin, stamp = m.occupancy(), m.origin, m.stamp
            header = Header(frame_id=self.frame_id, stamp=self.stamp)  # the newest frame in it
        self.pub.publish(occupancy_grid_msg(cells, m.spec.resolution, origin, header))
        self.published_stamp = stamp

    def status(self, prefix: str):
        with self.lock:
            b, m = self.builder, self.builder.map
            outcome = b.outcome
            values = {"frame": self.frame_id, "odometry topic": b.odom_source,
                      "odometry frames": " -> ".join(f or "?" for f in self.odom_frames),
                      "window (m)": f"{m.spec.size_x:g} x {m.spec.size_y:g} at {m.spec.resolution:g}",
                      "decay time (s)": m.spec.decay_time, "updates": m.updates,
                      "frames skipped (no pose at their stamp)": b.skipped,
                      "frames not used (odometry missing or stale)": b.not_updated,
                      "clears": m.clears, "last clear": m.last_clear or "none"}
        level, message = (diag.OK, outcome.status) if outcome.state == "ok" else (diag.WARN, outcome.status)
        problem = odometry_frames_problem(*self.odom_frames, self.frame_id, str(self.p["grid.frame_id"]))
        if problem:
            level, message = diag.WARN, f"{problem}; {message}"
        return diag.make_status(f"{prefix}: drivable map", self.frame_id, level, message, values)


class TfMapPose:
    """The vehicle's planar pose from TF (map.pose_source tf): map.frame_id <- grid.frame_id at a
    frame's stamp. tf2_ros cannot be installed where this was written: without it every frame is
    skipped with the reason (the per-frame grid goes on); the lookup itself has not run here."""

    def __init__(self, node, map_frame: str, grid_frame: str, timeout_s: float = 0.05) -> None:
        self.map_frame, self.grid_frame, self.timeout_s = map_frame, grid_frame, timeout_s
        self._buffer, self._listener, self.error = tf_listener(node, "map.pose_source")

    def close(self) -> None:
        """The listener's /tf subscriptions go with it (a lifecycle cleanup, then configure again)."""
        listener, self._listener = self._listener, None
        if listener is not None and hasattr(listener, "unregister"):
            listener.unregister()

    def at(self, header):
        """((x, y, yaw), "") or (None, why)."""
        if self._buffer is None:
            return None, self.error
        from rclpy.duration import Duration
        from rclpy.time import Time

        try:
            tr = self._buffer.lookup_transform(self.map_frame, self.grid_frame, Time.from_msg(header.stamp),
                                               Duration(seconds=self.timeout_s))
        except Exception as exc:  # tf2 LookupException, ExtrapolationException
            return None, f"no transform {self.map_frame} <- {self.grid_frame} at the frame's stamp: {exc}"
        t, q = tr.transform.translation, tr.transform.rotation
        return (t.x, t.y, yaw_of_quaternion(q.x, q.y, q.z, q.w)), ""
