"""After the network: what a frame's result becomes besides its images, the same for the node
and process-bag. ``Finisher.finish(camera, result, wanted)`` computes the frame's grid (when
wanted) with its status, feeds several cameras' surround grid and the drivable map, and returns
all of it as a FrameOutcome; the caller only turns it into messages (publish, or write to a bag).
``MapFeed`` is the drivable map with its one odometry handler and its one stamp rule."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Collection, Dict, Optional, Sequence, Tuple

import numpy as np

from .camera_grid import GridOutcome
from .config import GridConfig, MapConfig
from .drivable_map import MapBuilder, MapOutcome, map_spec, odometry_frames_problem
from .grid import GridSpec
from .odometry import Pose2D, PoseHistory
from .outputs import GRID_OUTPUT
from .pipeline import FrameResult, SegmentationPipeline
from .surround import SurroundGrid

# header -> (planar pose at its stamp, "") or (None, why): a pose source for the map (TF)
MapPose = Callable[[Any], Tuple[Optional[Pose2D], str]]


def stamp_seconds(header: Any) -> float:
    """A header's stamp (anything with .stamp.sec / .stamp.nanosec) in seconds."""
    return header.stamp.sec + header.stamp.nanosec * 1e-9


@dataclasses.dataclass
class FrameOutcome:
    """What became of one frame after the network (its images are the result's to make)."""
    camera: str
    result: FrameResult
    grid: Optional[GridOutcome] = None       # None: not wanted (nobody listens to a grid)
    grid_spec: Optional[GridSpec] = None
    grid_frame_id: str = ""
    surround: Optional[np.ndarray] = None    # the fused surround grid to publish now (several cameras)
    surround_cameras: Sequence[str] = ()
    map: Optional[MapOutcome] = None         # what the drivable map made of the frame


class MapFeed:
    """The drivable map of the node and of process-bag: odometry in (``on_odometry``), every
    frame's grid in (``on_grid``), the map out (``occupancy``) stamped with the newest frame in it.
    Thread-safe (odometry arrives on the executor thread, grids on the output thread)."""

    def __init__(self, cfg: MapConfig, grid_frame: str, odom_source: str) -> None:
        self.frame_id, self.grid_frame = cfg.frame_id, grid_frame
        self.lock = threading.Lock()
        self.builder = MapBuilder(map_spec(cfg), PoseHistory(jump_distance=cfg.jump_distance),
                                  cfg.odom_timeout, odom_source)
        self.stamp: Any = None           # the header stamp of the newest frame in the map
        self.odom_frames = ("", "")      # (frame_id, child_frame_id) of the odometry
        self.odom_problem = ""           # what is wrong with them ("" when nothing)

    def apply(self, cfg: MapConfig) -> None:
        """The map's runtime parameters (decay, trinary, odometry timeout)."""
        with self.lock:
            m = self.builder.map
            m.spec = dataclasses.replace(m.spec, decay_time=cfg.decay_time, trinary=cfg.trinary)
            self.builder.odom_timeout = cfg.odom_timeout

    def on_odometry(self, t: float, pose: Pose2D, frame_id: str = "", child_frame_id: str = "") -> Optional[str]:
        """One odometry pose (nav_msgs/Odometry's, planar); the reason the map was cleared, if it was."""
        with self.lock:
            self.odom_frames = (frame_id, child_frame_id)
            self.odom_problem = odometry_frames_problem(frame_id, child_frame_id, self.frame_id, self.grid_frame)
            return self.builder.on_odometry(t, pose)

    def on_grid(self, cells: np.ndarray, spec: GridSpec, header: Any, weight: Optional[np.ndarray] = None,
                pose: Optional[Pose2D] = None) -> MapOutcome:
        """A frame's grid (in grid.frame_id) at its stamp; ``weight``: the model's confidence behind
        each cell; ``pose``: the vehicle's at this stamp where the caller has it (TF)."""
        t = stamp_seconds(header)
        with self.lock:
            before = self.builder.map.updates
            outcome = self.builder.on_grid(cells, spec, t, weight, pose)
            if self.builder.map.updates > before and self.builder.map.stamp == t:
                self.stamp = header.stamp  # the newest frame in the map: exact, not t
        return outcome

    def skip(self, reason: str) -> MapOutcome:
        with self.lock:
            return self.builder.skip(reason)

    def occupancy(self) -> Optional[Tuple[np.ndarray, Tuple[float, float], float, Any]]:
        """(cells, origin, resolution, stamp of the newest frame in it), or None before any."""
        with self.lock:
            m = self.builder.map
            if m.stamp is None or m.origin is None or self.stamp is None:
                return None
            return m.occupancy(), m.origin, m.spec.resolution, self.stamp


class Finisher:
    """The after-inference step of several cameras (or one): each camera's grid and its status,
    the surround grid fused from all cameras (``cameras`` names more than one and the grid is on),
    the drivable map (``map_feed``)."""

    def __init__(self, cameras: Sequence[str], grid: GridConfig, map_feed: Optional[MapFeed] = None,
                 map_pose: Optional[MapPose] = None) -> None:
        self.surround = (SurroundGrid([c for c in cameras if c], grid.max_spread)
                         if grid.enabled and len([c for c in cameras if c]) > 1 else None)
        self.map_feed = map_feed
        self.map_pose = map_pose

    def apply(self, grid: GridConfig, map_cfg: Optional[MapConfig] = None) -> None:
        if self.surround is not None:
            self.surround.max_spread_s = grid.max_spread
        if self.map_feed is not None and map_cfg is not None:
            self.map_feed.apply(map_cfg)

    def finish(self, camera: str, result: FrameResult, wanted: Collection[str],
               t: Optional[float] = None) -> FrameOutcome:
        """``wanted``: the outputs somebody wants of this frame (the grid among them when the
        surround grid or the map want it too); ``t``: the time CameraInfo freshness is judged at
        (a bag's recorded time; default: now on the grid's clock)."""
        outcome = FrameOutcome(camera, result)
        grid = result.camera_grid
        if GRID_OUTPUT not in wanted or grid is None:
            return outcome
        outcome.grid, outcome.grid_spec, outcome.grid_frame_id = result.grid(t), grid.spec, grid.frame_id
        cells = outcome.grid.cells
        if cells is None:
            return outcome
        header = result.frame.header
        if self.surround is not None:
            stamp = stamp_seconds(header)
            self.surround.update(camera, cells, stamp)
            fused = self.surround.to_publish(stamp)
            if fused is not None:  # None: a newer camera's grid is in it, that one published
                outcome.surround, outcome.surround_cameras = fused
        if self.map_feed is not None:
            pose = None
            if self.map_pose is not None:  # the pose at this very stamp (cameras come in any order)
                pose, why = self.map_pose(header)
                if pose is None:
                    outcome.map = self.map_feed.skip(why)
                    return outcome
            outcome.map = self.map_feed.on_grid(cells, grid.spec, header, result.grid_confidence(), pose)
        return outcome


def apply_config(cfg, pipelines: Dict[str, SegmentationPipeline], finisher: Optional[Finisher] = None,
                 throttle=None) -> None:
    """A changed configuration (core/config.NodeConfig.changed) to every component, each from its
    own part: the cameras' pipelines (outputs) and grids (CameraInfo timeout, pose), the surround
    grid and the map (``finisher``), the log throttle. The node calls it on a parameter change."""
    for name, pipeline in pipelines.items():
        pipeline.apply(cfg.outputs)
        if pipeline.grid is not None:
            pipeline.grid.apply(cfg.grid, cfg.camera(name).pose)
    if finisher is not None:
        finisher.apply(cfg.grid, cfg.map)
    if throttle is not None:
        throttle.period = cfg.runtime.log_throttle_sec
