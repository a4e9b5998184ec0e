"""process-bag's drivable map (map.enabled): the bag's odometry (or its TF: support/bag_tf.py)
and every frame's grid into the same core/finish.MapFeed the node uses, the map written at map.rate of the bag's time as
/camera_seg/drivable_map."""

from __future__ import annotations

from typing import Dict, Optional

from ...core.bagio import ODOMETRY


def odometry_topic(topics: Dict[str, object], remaps: Dict[str, str]) -> str:
    """The bag's odometry topic: /odom (or what 'odom' is remapped to); refuses a bag without it."""
    name = remaps.get("odom", remaps.get("/odom", "/odom"))
    name = name if name.startswith("/") else "/" + name
    info = topics.get(name)
    if info is None or getattr(info, "msgtype", None) != ODOMETRY:
        found = sorted(t for t, i in topics.items() if getattr(i, "msgtype", None) == ODOMETRY)
        raise ValueError(f"map.enabled needs nav_msgs/Odometry on {name} in the bag"
                         + (f"; it has {found}: remap odom to one (-r odom:=TOPIC)" if found else
                            "; it has none (or set map.enabled:=false)"))
    return name


class BagMap:
    """The map of the bag's drive: the bag's odometry into core/finish.MapFeed (the after-inference
    step feeds it every frame's grid), written at map.rate of the bag's time, stamped as the
    node stamps it (the newest frame in it)."""

    def __init__(self, writer, cfg, topic: str, stats: Dict[str, object], source: str = "the bag's odometry") -> None:
        from ...core import bagio
        from ...core.finish import MapFeed

        self.feed = MapFeed(cfg.map, cfg.grid.frame_id, source)
        self.writer, self.stats = writer, stats
        self.frame_id = cfg.map.frame_id
        self.period_ns = int(1e9 / cfg.map.rate)
        self.topic = topic
        self.odom_topic = ""
        self.conn = writer.add_topic(topic, bagio.OCCUPANCY_GRID, bagio.TopicQos("reliable", "volatile", "keep_last", 1))
        stats["written"][topic] = 0
        stats["map"] = {"updates": 0, "skipped": 0, "not_updated": 0, "clears": [], "odometry_frames": ""}
        self._last_written: Optional[int] = None
        self._written_updates = 0   # the map's update count when it was last written
        self._last_t: Optional[int] = None

    def odometry(self, msg) -> None:
        from ...ros.map_output import odometry_pose

        reason = self.feed.on_odometry(*odometry_pose(msg), msg.header.frame_id, msg.child_frame_id)
        if self.feed.odom_problem and not self.stats["map"]["odometry_frames"]:  # the first, as the node's status says it
            self.stats["map"]["odometry_frames"] = self.feed.odom_problem
        if reason:
            self.stats["map"]["clears"].append(reason)

    def written_after(self, outcome, t_ns: int) -> None:
        """After a frame's outcome (its grid already in the map): the map written when it is due."""
        b = self.feed.builder
        self.stats["map"].update(updates=b.map.updates, skipped=b.skipped, not_updated=b.not_updated)
        self._last_t = t_ns
        if self._last_written is not None and t_ns - self._last_written < self.period_ns:
            return
        self._write(t_ns)

    def finish(self) -> None:
        """The map as it stands after the bag's last frame, when frames came after the last write
        (the node publishes that one on its next tick)."""
        if self._last_t is not None and self.feed.builder.map.updates > self._written_updates:
            self._write(self._last_t)

    def _write(self, t_ns: int) -> None:
        from builtin_interfaces.msg import Time
        from rclpy.serialization import serialize_message
        from std_msgs.msg import Header

        from ...ros.conversions import occupancy_grid_msg

        occupancy = self.feed.occupancy()
        if occupancy is None:
            return
        cells, origin, resolution, stamp = occupancy
        header = Header(frame_id=self.frame_id, stamp=Time(sec=stamp.sec, nanosec=stamp.nanosec))
        self.writer.write(self.conn, t_ns, serialize_message(occupancy_grid_msg(cells, resolution, origin, header)))
        self.stats["written"][self.topic] += 1
        self._last_written = t_ns
        self._written_updates = self.feed.builder.map.updates
