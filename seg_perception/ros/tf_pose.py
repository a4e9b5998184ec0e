"""TF through tf2_ros: one buffer per node (its listener on /tf and /tf_static), read by the
camera's pose (core/pose_source, camera_pose.source auto or tf) and by the map's
(map.pose_source tf); process-bag fills a buffer of its own from the bag's /tf and /tf_static.

tf2_ros comes with every ROS 2 install; without a distro the project builds it from the Jazzy
sources for its tests (scripts/build_tf2.sh). Where it is missing, camera_pose.source auto takes
camera_pose.xyz/rpy, and tf (or map.pose_source tf) says why in diagnostics.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..core.camera_model import body_pose_from_optical
from ..core.pose_source import CameraPoseSource, TransformUnavailable, TransformUnknown

TF_TIMEOUT_S = 0.05  # how long a lookup waits for a transform that is late (not for one TF lacks)
AUTO_WAIT_S = 2.0    # camera_pose.source auto: a camera's first frames wait this long for TF


def import_tf2() -> Tuple[Optional[object], str]:
    """(the tf2_ros module, "") or (None, why)."""
    try:
        import tf2_ros
    except ImportError as exc:
        return None, f"tf2_ros is not available ({exc})"
    return tf2_ros, ""


def lookup(buffer, target: str, source: str, stamp, timeout_s: float):
    """``buffer``'s transform target <- source at ``stamp`` (an rclpy Time), waiting up to
    ``timeout_s`` for a late one; tf2's errors as core/pose_source's, with tf2's text."""
    import tf2_ros
    from rclpy.duration import Duration

    try:
        return buffer.lookup_transform(target, source, stamp, Duration(seconds=timeout_s))
    except (tf2_ros.LookupException, tf2_ros.ConnectivityException, tf2_ros.InvalidArgumentException) as exc:
        # InvalidArgument: a frame id tf2 refuses outright (a leading '/', ROS 1 style): TF can
        # never have that camera
        raise TransformUnknown(str(exc) or type(exc).__name__) from exc
    except (tf2_ros.ExtrapolationException, tf2_ros.TransformException) as exc:
        raise TransformUnavailable(str(exc) or type(exc).__name__) from exc


def camera_lookup(buffer, grid_frame: str):
    """A core/pose_source lookup over ``buffer``: the camera body's 4x4 pose in ``grid_frame`` from
    the transform to the image's (optical) frame at the frame's stamp."""
    from rclpy.time import Time

    def at(frame: str, header, timeout_s: float) -> np.ndarray:
        tr = lookup(buffer, grid_frame, frame, Time.from_msg(header.stamp), timeout_s)
        t, q = tr.transform.translation, tr.transform.rotation
        try:
            return body_pose_from_optical((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
        except ValueError as exc:  # a zero quaternion
            raise TransformUnavailable(f"unusable rotation in TF {grid_frame} <- {frame}: {exc}") from exc
    return at


class NodeTf:
    """The node's TF buffer and listener, made when a setting asks for TF; ``error`` says why
    there is none (tf2_ros missing)."""

    def __init__(self, node) -> None:
        self.buffer = self.listener = None
        tf2_ros, self.error = import_tf2()
        if tf2_ros is not None:
            self.buffer = tf2_ros.Buffer()
            self.listener = tf2_ros.TransformListener(self.buffer, node)

    def camera_pose_source(self, mode: str, grid_frame: str) -> CameraPoseSource:
        look = camera_lookup(self.buffer, grid_frame) if self.buffer is not None else None
        why = f"camera_pose.source is {mode} but {self.error}" if mode == "tf" else self.error
        return CameraPoseSource(mode, look, grid_frame, why, wait_s=AUTO_WAIT_S, timeout_s=TF_TIMEOUT_S)

    def close(self) -> None:
        """The listener's subscriptions go with it (a lifecycle cleanup, then configure again)."""
        listener, self.listener = self.listener, None
        if listener is not None and hasattr(listener, "unregister"):
            listener.unregister()
