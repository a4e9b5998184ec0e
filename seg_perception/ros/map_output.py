"""~/drivable_map on the node: the odometry topic into core/finish.MapFeed (the after-inference
step feeds it every camera's grid), the map published at map.rate, its state for diagnostics.
Glue only: the update rule, the stamp and the fault policy are the core's."""

from __future__ import annotations

from typing import Tuple

from builtin_interfaces.msg import Time
from nav_msgs.msg import OccupancyGrid, Odometry
from rclpy.clock import Clock, ClockType
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

from ..core.finish import MapFeed
from ..core.odometry import yaw_of_quaternion
from . import diagnostics as diag
from .camera import resolve
from .conversions import occupancy_grid_msg, stamp_seconds
from .tf_pose import TF_TIMEOUT_S

MAP_OUTPUT = "drivable_map"
ODOM_TOPIC = "odom"


def odometry_pose(msg) -> Tuple[float, Tuple[float, float, float]]:
    """(stamp in s, planar pose (x, y, yaw)) of a nav_msgs/Odometry: the pose history's input."""
    q = msg.pose.pose.orientation
    return stamp_seconds(msg.header), (msg.pose.pose.position.x, msg.pose.pose.position.y,
                                       yaw_of_quaternion(q.x, q.y, q.z, q.w))


class MapOutput:
    """Created by the node when map.enabled: ``feed`` (core/finish.MapFeed) is fed the odometry
    here and every frame's grid by the after-inference step; ``publisher`` is the node's
    publisher factory (a lifecycle publisher on the managed node)."""

    def __init__(self, node, cfg, publisher, log, node_tf=None) -> None:
        self.node = node
        self._log = log  # the node's throttled log(kind, level, text)
        self.frame_id = cfg.map.frame_id
        self.tf = TfMapPose(node_tf, self.frame_id, cfg.grid.frame_id) if cfg.map.pose_source == "tf" else None
        source = f"TF {self.frame_id} <- {cfg.grid.frame_id}" if self.tf is not None else resolve(node, ODOM_TOPIC)
        self.feed = MapFeed(cfg.map, cfg.grid.frame_id, source)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        self.pub = publisher(OccupancyGrid, f"~/{MAP_OUTPUT}", qos)
        self.sub = None
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        # guarded: an error is logged, never the end of the executor
        self.timer = node.create_timer(1.0 / cfg.map.rate, node._guarded(self.publish), clock=steady)

    @property
    def pose_at(self):
        """The map's pose source for the after-inference step: TF, or None (odometry)."""
        return self.tf.at if self.tf is not None else None

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
        self.node.destroy_timer(self.timer)
        drop_publisher(self.pub)

    def on_odometry(self, msg: Odometry) -> None:
        reason = self.feed.on_odometry(*odometry_pose(msg), msg.header.frame_id, msg.child_frame_id)
        if reason:
            self._log("map_clear", "warn", f"drivable map cleared: {reason}")

    def on_outcome(self, outcome) -> None:
        """What the after-inference step made of a frame's grid, for the log."""
        if outcome is not None and outcome.state != "ok":
            self._log("map", "warn", outcome.status)

    def publish(self) -> None:
        if self.pub.get_subscription_count() == 0:
            return
        occupancy = self.feed.occupancy()
        if occupancy is None:
            return
        cells, origin, resolution, stamp = occupancy
        header = Header(frame_id=self.frame_id, stamp=Time(sec=stamp.sec, nanosec=stamp.nanosec))
        self.pub.publish(occupancy_grid_msg(cells, resolution, origin, header))

    def status(self, prefix: str):
        feed = self.feed
        with feed.lock:
            b, m = feed.builder, feed.builder.map
            outcome = b.outcome
            values = {"frame": self.frame_id, "vehicle pose from": b.odom_source,
                      "odometry frames": " -> ".join(f or "?" for f in feed.odom_frames),
                      "window (m)": f"{m.spec.size_x:g} x {m.spec.size_y:g} at {m.spec.resolution:g}",
                      "decay time (s)": m.spec.decay_time, "updates": m.updates,
                      "frames skipped (no pose at their stamp)": b.skipped,
                      "frames not used (odometry missing or stale)": b.not_updated,
                      "clears": m.clears, "last clear": m.last_clear or "none"}
            problem = feed.odom_problem
        level, message = (diag.OK, outcome.status) if outcome.state == "ok" else (diag.WARN, outcome.status)
        if problem:
            level, message = diag.WARN, f"{problem}; {message}"
        return diag.make_status(f"{prefix}: drivable map", self.frame_id, level, message, values)


class TfMapPose:
    """The vehicle's planar pose from TF (map.pose_source tf): map.frame_id <- grid.frame_id at a
    frame's stamp, from the node's TF buffer (ros/tf_pose.NodeTf). A frame with no transform at
    its stamp is skipped for the map, with tf2's reason (the per-frame grid goes on)."""

    def __init__(self, node_tf, map_frame: str, grid_frame: str, timeout_s: float = TF_TIMEOUT_S) -> None:
        self.map_frame, self.grid_frame, self.timeout_s = map_frame, grid_frame, timeout_s
        self._buffer = node_tf.buffer if node_tf is not None else None
        self.error = ("map.pose_source is tf but " + (node_tf.error if node_tf is not None else "no TF buffer")
                      if self._buffer is None else "")

    def at(self, header):
        """((x, y, yaw), "") or (None, why)."""
        return planar_pose_at(self._buffer, self.map_frame, self.grid_frame, header, self.timeout_s, self.error)


def planar_pose_at(buffer, map_frame: str, grid_frame: str, header, timeout_s: float, error: str = ""):
    """((x, y, yaw) of grid_frame in map_frame at the header's stamp, "") or (None, why): the
    node's and process-bag's map pose from TF."""
    if buffer is None:
        return None, error or "no TF buffer"
    from rclpy.time import Time

    from ..core.pose_source import TransformUnavailable, TransformUnknown
    from .tf_pose import lookup

    try:
        tr = lookup(buffer, map_frame, grid_frame, Time.from_msg(header.stamp), timeout_s)
    except (TransformUnknown, TransformUnavailable) as exc:
        return None, f"no transform {map_frame} <- {grid_frame} at the frame's stamp: {exc}"
    t, q = tr.transform.translation, tr.transform.rotation
    return (t.x, t.y, yaw_of_quaternion(q.x, q.y, q.z, q.w)), ""
