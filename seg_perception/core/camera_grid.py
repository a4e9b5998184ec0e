"""One camera's drivable grid with its per-frame policy: which camera model holds (and whether
it is still fresh), where the camera sits, and what the grid's status says when there is none.

The node and process-bag feed it CameraInfo messages (duck-typed: no ROS import here) and take
a GridOutcome per frame, so they cannot disagree about when a grid is made. Times are seconds
on the watch's clock, or passed explicitly where the caller has its own (a bag's recorded time).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .camera_info_watch import OK, WARN, CameraInfoWatch
from .camera_model import CameraModel, GridError, camera_pose
from .grid import GridSpec, GroundGrid
from .labels import LabelGroups

# A pose source: the frame's header in, the camera body frame's 4x4 pose in the grid frame out
# (core/pose_source.CameraPoseSource: TF at the frame's stamp), or None for the parameters'
# pose; it raises with the reason when the frame gets no grid.
PoseSource = Callable[[Any], Optional[np.ndarray]]


@dataclasses.dataclass
class GridOutcome:
    """What became of one frame's grid."""
    cells: Optional[np.ndarray]      # int8 [height, width], None when no grid was made
    error: Optional[str] = None      # why there is none
    state: str = OK                  # camera_info_watch OK | WARN | ERROR, for diagnostics
    status: str = ""                 # the diagnostics text ("" when OK)
    rebuilt: bool = False            # the cell -> pixel table was (re)built for this frame
    settled: bool = False            # state and status set where it was made (not from the error)


class CameraGrid:
    def __init__(self, spec: GridSpec, groups: LabelGroups, frame_id: str = "base_link",
                 pose_xyz: Sequence[float] = (0.0, 0.0, 1.5), pose_rpy: Sequence[float] = (0.0, 0.0, 0.0),
                 camera_info_timeout: float = 0.0, camera_info_topic: str = "camera_info",
                 clock: Callable[[], float] = time.monotonic) -> None:
        spec.validate()
        self.spec = spec
        self.frame_id = frame_id
        self.camera_info_topic = camera_info_topic  # named in the status text
        self.watch = CameraInfoWatch(camera_info_timeout, clock)
        self.pose_source: Optional[PoseSource] = None  # None: the fixed pose of set_pose
        self.builds = 0                                # lookup tables built so far
        self.pose_skipped = 0                          # frames with no grid: no camera pose
        self.pose_from = "camera_pose.xyz/rpy"         # where the latest frame's pose came from
        self._grid = GroundGrid(spec, groups)
        self._T_grid_body = camera_pose(pose_xyz, pose_rpy)
        # (camera model or None, error or None), replaced as one object: CameraInfo arrives on
        # the executor thread while the output thread builds grids
        self._camera: Optional[tuple] = None

    @property
    def origin(self):
        return self.spec.x_min, self.spec.y_min

    def set_camera_info(self, msg: Any, t: Optional[float] = None) -> None:
        """A sensor_msgs/CameraInfo (or anything with its fields) received at ``t``. Never
        raises: one that cannot be used is kept as the grid's error."""
        self.watch.received(t)
        try:
            model = CameraModel.from_camera_info(msg)
            model.validate()
            self._camera = (model, None)  # an unchanged model keeps the grid's lookup table
        except Exception as exc:  # GridError, or a message too broken to read
            self._camera = (None, f"invalid CameraInfo: {exc}")

    def apply(self, grid, pose) -> None:
        """The grid's runtime parameters (core/config GridConfig and the camera's PoseConfig):
        CameraInfo's timeout, and the pose where it comes from the parameters (not TF)."""
        self.watch.timeout_s = float(grid.camera_info_timeout)
        self.set_pose(pose.xyz, pose.rpy)  # with TF (auto): where TF does not know the camera

    def set_pose(self, xyz: Sequence[float], rpy: Sequence[float]) -> None:
        self._T_grid_body = camera_pose(xyz, rpy)

    def set_pose_matrix(self, T_grid_body: np.ndarray) -> None:
        """The parameters' pose as a 4x4 matrix (see camera_model.body_pose_from_optical)."""
        self._T_grid_body = np.asarray(T_grid_body, dtype=np.float64)

    def compute(self, labels: np.ndarray, width: int, height: int, header: Any = None,
                t: Optional[float] = None) -> GridOutcome:
        """The grid from the class map of a ``width`` x ``height`` frame (``header``: the frame's,
        for the pose source), or the reason there is none."""
        outcome = self._compute(labels, width, height, header, t)
        if outcome.rebuilt:
            self.builds += 1
        if not outcome.settled:
            outcome.state, outcome.status = self.watch.grid_status(outcome.error, self.camera_info_topic, t)
        return outcome

    def sample(self, image: np.ndarray) -> np.ndarray:
        """Per cell, the value of ``image`` (the class map's size) where the last grid looked
        (core/grid.GroundGrid.sample): the confidence behind each cell, for the map's weights."""
        return self._grid.sample(image)

    def _compute(self, labels, width, height, header, t) -> GridOutcome:
        if not self.watch.grid_allowed(t):
            return GridOutcome(None, "CameraInfo is stale")
        camera = self._camera  # one snapshot: the size check and the table use the same camera
        if camera is None:
            return GridOutcome(None, "no CameraInfo received yet")
        model, error = camera
        if model is None:
            return GridOutcome(None, error)
        pose = self._T_grid_body
        if self.pose_source is not None:
            try:
                from_source = self.pose_source(header)
            except Exception as exc:  # no transform at this stamp, an unknown frame, a bad quaternion
                from .pose_source import WaitingForTf

                self.pose_skipped += 1
                self.pose_from = f"none: {exc}"
                if isinstance(exc, WaitingForTf):  # start-up, not a fault: a WARN
                    return GridOutcome(None, str(exc), state=WARN, status=f"no grid yet: {exc}", settled=True)
                return GridOutcome(None, str(exc))
            if from_source is not None:
                pose = np.asarray(from_source, dtype=np.float64)
            used = getattr(self.pose_source, "used", {})
            self.pose_from = used.get(getattr(header, "frame_id", ""), self.pose_from) if used else (
                "camera_pose.xyz/rpy" if from_source is None else "the pose source")
        w, h = model.image_size()
        if (w, h) != (width, height):
            return GridOutcome(None, f"CameraInfo describes {w}x{h} images but the image is {width}x{height}")
        try:
            rebuilt = self._grid.configure(model, pose, labels.shape[0], labels.shape[1])
            return GridOutcome(self._grid.compute(labels), rebuilt=rebuilt)
        except GridError as exc:
            return GridOutcome(None, str(exc))

