"""Where a camera sits, frame by frame (camera_pose.source): the policy, without ROS.

- ``tf``: the transform grid.frame_id <- the image's frame_id at the frame's stamp, always. No
  transform: no grid for that frame, with the reason.
- ``auto`` (the default): TF first, camera_pose.xyz/rpy where TF does not know the camera. A
  camera's first frames wait up to ``wait_s`` for TF (a latched /tf_static arrives with
  discovery), so a grid is never made from the parameters only because TF was a moment late.
  Once TF has given a camera's pose, that camera never falls back to the parameters: a
  transform missing later means no grid, with the reason, never a grid from another pose.
- ``parameters``: camera_pose.xyz/rpy; TF is not consulted.

The lookup is the caller's: tf2_ros' buffer in the node, a buffer filled from the bag in
process-bag. It returns the 4x4 grid <- camera body pose or raises ``TransformUnknown`` (TF has
no path between the frames) or ``TransformUnavailable`` (the frames are known, not at this
stamp: too old, in the future, late), each with tf2's reason.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Optional

import numpy as np

SOURCES = ("auto", "tf", "parameters")


class TransformUnknown(LookupError):
    """TF has no path between the two frames (one of them is unknown to it)."""


class TransformUnavailable(LookupError):
    """The frames are connected, but not at this stamp (extrapolation, a late transform)."""


class WaitingForTf(RuntimeError):
    """auto: a camera's first frames, while TF may still bring its mount (a WARN, not an error)."""


# lookup(source frame, header, timeout_s) -> 4x4 grid <- camera body
Lookup = Callable[[str, Any, float], np.ndarray]


class CameraPoseSource:
    """The policy above, for the cameras of one node (state kept per image frame_id). Called
    with a frame's header; returns the camera body's 4x4 pose in the grid frame, or None for
    "use camera_pose.xyz/rpy"; raises RuntimeError with the reason when the frame gets no grid."""

    def __init__(self, mode: str, lookup: Optional[Lookup], grid_frame: str, unavailable: str = "",
                 wait_s: float = 2.0, timeout_s: float = 0.05, clock: Callable[[], float] = time.monotonic) -> None:
        if mode not in ("auto", "tf"):
            raise ValueError(f"camera_pose.source {mode!r}: the policy is for auto and tf")
        self.mode, self.lookup, self.grid_frame = mode, lookup, grid_frame
        self.unavailable = unavailable      # why there is no lookup (tf2_ros missing), when so
        self.wait_s, self.timeout_s, self.clock = wait_s, timeout_s, clock
        self._lock = threading.Lock()
        self._first_seen: Dict[str, float] = {}
        self._from_tf: Dict[str, bool] = {}  # frame_id -> TF has given its pose
        self.used: Dict[str, str] = {}       # frame_id -> where its latest pose came from (diagnostics)

    def __call__(self, header: Any) -> Optional[np.ndarray]:
        frame = str(getattr(header, "frame_id", "") or "")
        if not frame:
            raise RuntimeError(f"the image has no frame_id: TF cannot place it in {self.grid_frame}")
        if self.lookup is None:
            if self.mode == "tf":
                raise RuntimeError(self.unavailable or "no TF lookup")
            self.used[frame] = f"camera_pose.xyz/rpy ({self.unavailable})"
            return None
        with self._lock:
            now = self.clock()
            first = self._first_seen.setdefault(frame, now)
            known = self._from_tf.get(frame, False)
        what = f"{self.grid_frame} <- {frame}"
        # a camera TF has placed waits for a late transform; one it has not is asked without waiting
        timeout = self.timeout_s if (known or self.mode == "tf") else 0.0
        try:
            pose = self.lookup(frame, header, timeout)
        except TransformUnknown as exc:
            if self.mode == "tf":
                raise RuntimeError(f"no transform {what} in TF (is {frame!r} a frame TF knows? {exc})") from exc
            if known:
                raise RuntimeError(f"TF gave {what} before but has none now ({exc}); no grid rather than one "
                                   "from camera_pose.xyz/rpy") from exc
            if now - first < self.wait_s:
                raise WaitingForTf(f"waiting up to {self.wait_s:g} s for TF {what} (camera_pose.source auto) "
                                   "before using camera_pose.xyz/rpy") from exc
            self.used[frame] = f"camera_pose.xyz/rpy (TF has no {what})"
            return None
        except TransformUnavailable as exc:
            if self.mode == "auto" and not known and now - first < self.wait_s:  # its mount on /tf, not yet in
                raise WaitingForTf(f"waiting up to {self.wait_s:g} s for TF {what} at the frame's stamp "
                                   f"(camera_pose.source auto): {exc}") from exc
            raise RuntimeError(f"no transform {what} at the frame's stamp: {exc}") from exc
        with self._lock:
            self._from_tf[frame] = True
        self.used[frame] = f"TF {what}"
        return pose
