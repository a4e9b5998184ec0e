"""process-bag's TF: the bag's /tf_static (all of it, before the first frame: it is latched on a
live system) and /tf (each message at its place in the recording) in a tf2_ros buffer, read by
the camera's pose (camera_pose.source auto or tf, core/pose_source) and the map's
(map.pose_source tf) at each frame's stamp, as the node reads its listener's buffer."""

from __future__ import annotations

from typing import Dict, Optional

TF_TOPIC, TF_STATIC_TOPIC = "/tf", "/tf_static"
CACHE_S = 60.0  # dynamic transforms kept this long behind the newest (the frames come in order)


class BagTf:
    def __init__(self, topics: Dict[str, object]) -> None:
        from ...ros.tf_pose import import_tf2

        self.topics = [t for t in (TF_STATIC_TOPIC, TF_TOPIC) if t in topics]
        self.buffer = None
        tf2_ros, self.error = import_tf2()
        if tf2_ros is not None:
            from rclpy.duration import Duration

            self.buffer = tf2_ros.Buffer(cache_time=Duration(seconds=CACHE_S))
        self.transforms = 0
        self.now_s = 0.0  # the recorded time of the frames being processed

    def preload_static(self, reader) -> None:
        if self.buffer is not None and TF_STATIC_TOPIC in self.topics:
            for _, _, raw in reader.messages([TF_STATIC_TOPIC]):
                self.message(TF_STATIC_TOPIC, raw)

    def message(self, topic: str, raw: bytes) -> None:
        """A recorded tf2_msgs/TFMessage of /tf or /tf_static into the buffer."""
        if self.buffer is None:
            return
        from rclpy.serialization import deserialize_message
        from tf2_msgs.msg import TFMessage

        for tr in deserialize_message(raw, TFMessage).transforms:
            if topic == TF_STATIC_TOPIC:
                self.buffer.set_transform_static(tr, "bag")
            else:
                self.buffer.set_transform(tr, "bag")
            self.transforms += 1

    def camera_pose_source(self, mode: str, grid_frame: str):
        """core/pose_source.CameraPoseSource over the bag's TF. auto's wait for TF runs in the
        bag's recorded time (``now_s``, set before each frame), as the node waits in its own, and
        only where the bag has /tf: its /tf_static is all loaded before the first frame, so
        without /tf nothing could still bring a camera's mount."""
        from ...core.pose_source import CameraPoseSource
        from ...ros.tf_pose import AUTO_WAIT_S, camera_lookup

        look = camera_lookup(self.buffer, grid_frame) if self.buffer is not None else None
        why = f"camera_pose.source is {mode} but {self.error}" if mode == "tf" else self.error
        wait = AUTO_WAIT_S if TF_TOPIC in self.topics else 0.0
        return CameraPoseSource(mode, look, grid_frame, why, wait_s=wait, timeout_s=0.0, clock=lambda: self.now_s)

    def map_pose(self, map_frame: str, grid_frame: str):
        """The map's pose at a frame's stamp from the bag's TF (core/finish.Finisher's map_pose)."""
        from ...ros.map_output import planar_pose_at

        error = "" if self.buffer is not None else f"map.pose_source is tf but {self.error}"
        return lambda header: planar_pose_at(self.buffer, map_frame, grid_frame, header, 0.0, error)


def needs_tf(cfg) -> bool:
    return ((cfg.grid.enabled and cfg.camera("").pose.source != "parameters")
            or (cfg.map.enabled and cfg.grid.enabled and cfg.map.pose_source == "tf"))


def check_tf(cfg) -> Optional[str]:
    """Why the bag cannot be processed with these settings' TF (tf2_ros missing), or None."""
    from ...ros.tf_pose import import_tf2

    wants = [n for n, v in (("camera_pose.source", cfg.camera("").pose.source == "tf"),
                            ("map.pose_source", cfg.map.enabled and cfg.map.pose_source == "tf")) if v]
    if not wants:
        return None
    _, error = import_tf2()
    return f"{' and '.join(wants)} tf: {error}" if error else None
