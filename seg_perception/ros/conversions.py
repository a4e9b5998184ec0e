"""sensor_msgs / nav_msgs <-> numpy without cv_bridge.

Incoming data stays a view on the message buffer. Outgoing arrays are handed to the message as an
``array.array`` filled with one buffer copy: the generated setters check every element of any
other sequence type in Python, which costs seconds for a 1080p image.
"""

from __future__ import annotations

import array
import time
from typing import Optional

import numpy as np
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..core.image import Frame, frame_from_compressed, frame_from_raw


def frame_from_msg(msg, timer=None) -> Frame:
    """Frame from a sensor_msgs/Image or CompressedImage, carrying its header (raises
    core.image.ImageError). ``timer`` (core.pipeline.StageTimer): counts it as 'convert'."""
    t0 = time.perf_counter()
    if isinstance(msg, CompressedImage):
        frame = frame_from_compressed(msg.data, msg.format)
    else:
        frame = frame_from_raw(msg.data, msg.height, msg.width, msg.step, msg.encoding, bool(msg.is_bigendian))
    frame.header = msg.header
    if timer is not None:
        timer.add("convert", time.perf_counter() - t0)
    return frame


def _bytes_array(arr: np.ndarray, typecode: str) -> array.array:
    out = array.array(typecode)
    out.frombytes(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return out


def image_msg(arr: np.ndarray, encoding: str, header: Header) -> Image:
    """HxW (mono8) or HxWx3 (rgb8) uint8 array -> sensor_msgs/Image with the given header."""
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(arr.shape[1] * (arr.shape[2] if arr.ndim == 3 else 1))
    msg.data = _bytes_array(arr, "B")
    return msg


def image_msg_from_buffer(buf: array.array, height: int, width: int, encoding: str, header: Header) -> Image:
    """sensor_msgs/Image around an existing array.array('B') (no copy)."""
    msg = Image()
    msg.header = header
    msg.height, msg.width = height, width
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = width * (3 if encoding == "rgb8" else 1)
    msg.data = buf
    return msg


def image_to_array(msg: Image) -> np.ndarray:
    """A received mono8/rgb8 Image as a numpy array (a view, no copy)."""
    return frame_from_raw(msg.data, msg.height, msg.width, msg.step, msg.encoding).native.squeeze()


def occupancy_grid_msg(cells: np.ndarray, resolution: float, origin_xy, header: Header) -> OccupancyGrid:
    """int8 [rows=y, cols=x] -> nav_msgs/OccupancyGrid with origin at the lower-left cell corner."""
    msg = OccupancyGrid()
    msg.header = header
    msg.info.map_load_time = header.stamp
    msg.info.resolution = float(resolution)
    msg.info.height, msg.info.width = int(cells.shape[0]), int(cells.shape[1])
    msg.info.origin.position.x = float(origin_xy[0])
    msg.info.origin.position.y = float(origin_xy[1])
    msg.info.origin.orientation.w = 1.0
    msg.data = _bytes_array(cells.astype(np.int8, copy=False), "b")
    return msg


def stamp_seconds(header) -> float:
    """A header's stamp in seconds (the map's and the surround grid's time)."""
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def copy_header(header: Header, frame_id: Optional[str] = None) -> Header:
    h = Header()
    h.stamp = header.stamp
    h.frame_id = header.frame_id if frame_id is None else frame_id
    return h
