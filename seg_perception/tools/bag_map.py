"""process-bag's drivable map (map.enabled): the bag's odometry and every frame's grid into the
same core/drivable_map.MapBuilder the node uses, the map written at map.rate of the bag's time
as /camera_seg/drivable_map."""

from __future__ import annotations

from typing import Dict, Optional

from ..core.bagio import ODOMETRY


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
    def __init__(self, writer, params: Dict[str, object], grid_spec, topic: str, stats: Dict[str, object]) -> None:
        from ..core import bagio
        from ..core.drivable_map import map_builder

        self.builder = map_builder(params, "the bag's odometry")
        self.frames = (str(params["map.frame_id"]), str(params["grid.frame_id"]))
        self.writer, self.grid_spec, self.stats = writer, grid_spec, stats
        self.frame_id = str(params["map.frame_id"])
        self.period_ns = int(1e9 / float(params["map.rate"]))
        self.topic = topic
        self.conn = writer.add_topic(topic, bagio.OCCUPANCY_GRID, bagio.TopicQos("reliable", "volatile", "keep_last", 1))
        stats["written"][topic] = 0
        stats["map"] = {"updates": 0, "skipped": 0, "not_updated": 0, "clears": [], "odometry_frames": ""}
        self._last_written: Optional[int] = None
        self._header = None

    def odometry(self, msg) -> None:
        from ..core.drivable_map import odometry_frames_problem
        from ..ros.map_output import odometry_pose

        problem = odometry_frames_problem(msg.header.frame_id, msg.child_frame_id, *self.frames)
        if problem and not self.stats["map"]["odometry_frames"]:  # the first one, as the node's status says it
            self.stats["map"]["odometry_frames"] = problem
        reason = self.builder.on_odometry(*odometry_pose(msg))
        if reason:
            self.stats["map"]["clears"].append(reason)

    def frame(self, result, t_ns: int) -> None:
        """After the frame's outputs: its grid into the map; the map written when it is due."""
        from rclpy.serialization import serialize_message

        from ..ros.conversions import copy_header, occupancy_grid_msg, stamp_seconds

        grid = result.grid(t_ns / 1e9)
        if grid.cells is None:
            return
        header = result.frame.header
        before = self.builder.map.updates
        self.builder.on_grid(grid.cells, self.grid_spec, stamp_seconds(header), result.grid_confidence())
        m = self.builder.map
        if m.updates > before:
            self._header = copy_header(header, self.frame_id)
        s = self.stats["map"]
        s.update(updates=m.updates, skipped=self.builder.skipped, not_updated=self.builder.not_updated)
        if self._header is None or (self._last_written is not None and t_ns - self._last_written < self.period_ns):
            return
        msg = occupancy_grid_msg(m.occupancy(), m.spec.resolution, m.origin, self._header)
        self.writer.write(self.conn, t_ns, serialize_message(msg))
        self.stats["written"][self.topic] += 1
        self._last_written = t_ns
