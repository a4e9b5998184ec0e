"""The project's sample camera stream as ROS messages (Image + CameraInfo), for the demo, the
benchmarks and the sample bag. Frames come from core.sample's ray-cast street scene."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ..core.sample import SampleCamera, camera_info_dict, render_frame
from .conversions import image_msg

CAMERA_FRAME = "camera_optical_frame"


def header(stamp_ns: int, frame_id: str = CAMERA_FRAME) -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = divmod(int(stamp_ns), 10 ** 9)
    return h


def camera_info_msg(cam: SampleCamera, stamp_ns: int = 0) -> CameraInfo:
    d = camera_info_dict(cam)
    msg = CameraInfo(header=header(stamp_ns))
    msg.width, msg.height = d["width"], d["height"]
    msg.distortion_model = d["distortion_model"]
    msg.d, msg.k, msg.r, msg.p = d["d"], d["k"], d["r"], d["p"]
    return msg


def render_frames(cam: SampleCamera, count: int) -> List[np.ndarray]:
    return [render_frame(i, cam)[0] for i in range(count)]


def frame_msg(rgb: np.ndarray, stamp_ns: int) -> Image:
    return image_msg(rgb, "rgb8", header(stamp_ns))


def pose_parameters(cam: SampleCamera) -> Tuple[List[float], List[float]]:
    """camera_pose.xyz / camera_pose.rpy of the sample camera in base_link."""
    return list(cam.pose_xyz), list(cam.pose_rpy)
