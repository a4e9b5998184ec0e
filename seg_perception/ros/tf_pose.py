"""The camera's pose from TF: a core.camera_grid pose source (camera_pose.source tf).

tf2_ros cannot be installed where this was written: the lookup itself has not run here. Without
tf2_ros every lookup fails with the reason, so the grid says why and stays off; masks go on.
"""

from __future__ import annotations

import numpy as np

from ..core.camera_model import body_pose_from_optical


def tf_listener(node, parameter: str):
    """(tf2 buffer, its listener, "") or (None, None, why): tf2_ros imported lazily, as it may
    not be installed; ``parameter`` names the setting that asked for TF, for the reason."""
    try:
        from tf2_ros import Buffer, TransformListener
    except ImportError as exc:
        return None, None, f"{parameter} is tf but tf2_ros is not available ({exc})"
    buffer = Buffer()
    return buffer, TransformListener(buffer, node), ""


class TfPose:
    def __init__(self, node, grid_frame: str, timeout_s: float = 0.05) -> None:
        self.grid_frame = grid_frame
        self.timeout_s = timeout_s
        self._buffer, self._listener, self.error = tf_listener(node, "camera_pose.source")

    def __call__(self, header) -> np.ndarray:
        """4x4 grid frame <- camera body frame at the frame's stamp (a static mount is valid at
        any time); raises RuntimeError with the reason."""
        if self._buffer is None:
            raise RuntimeError(self.error)
        from rclpy.duration import Duration
        from rclpy.time import Time

        try:
            tr = self._buffer.lookup_transform(self.grid_frame, header.frame_id, Time.from_msg(header.stamp),
                                               Duration(seconds=self.timeout_s))
            t, q = tr.transform.translation, tr.transform.rotation
            return body_pose_from_optical((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
        except Exception as exc:  # tf2 LookupException, ExtrapolationException, a bad quaternion
            raise RuntimeError(f"no usable transform {self.grid_frame} <- {header.frame_id}: {exc}") from exc
