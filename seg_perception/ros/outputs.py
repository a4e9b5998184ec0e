"""A processed frame's outputs as ROS messages: what the node publishes and process-bag writes.

Only the outputs somebody asked for are built (core.pipeline computes each on first access).
Every message carries the input frame's stamp; image outputs its frame_id, the grid grid.frame_id.
"""

from __future__ import annotations

import array
import time
from typing import Callable, Collection, Dict, Optional

import numpy as np

from ..core.pipeline import CONFIDENCE_OUTPUT, GRID_OUTPUT, IMAGE_OUTPUTS, FrameResult
from .conversions import copy_header, image_msg, image_msg_from_buffer, occupancy_grid_msg


def output_type(name: str) -> type:
    """The message type of an output (a topic name under the node's namespace)."""
    from nav_msgs.msg import OccupancyGrid
    from sensor_msgs.msg import Image

    return OccupancyGrid if name == GRID_OUTPUT or name.endswith("/" + GRID_OUTPUT) else Image


class OutputMessages:
    """``reuse_buffers``: output images are written into message buffers that are reused for the
    next frame (the node publishes each message before it builds the next; a caller that keeps
    messages across frames must leave this off)."""

    def __init__(self, reuse_buffers: bool = False) -> None:
        self.reuse_buffers = reuse_buffers
        self._buffers: Dict[str, array.array] = {}

    def build(self, result: FrameResult, wanted: Collection[str],
              publish: Optional[Callable[[str, object], None]] = None,
              t: Optional[float] = None) -> Dict[str, object]:
        """The wanted output messages, masks first, the overlay last, then the grid (``t``: the
        time CameraInfo freshness is judged at, see FrameResult.grid). With ``publish`` each
        message is handed over as soon as it is built, so the outputs planners need leave
        earliest (its time is counted as the 'publish' stage)."""
        timer = result.timer
        header = result.frame.header
        out: Dict[str, object] = {}
        t_msg = 0.0
        for name in sorted((n for n in wanted if n in IMAGE_OUTPUTS), key=IMAGE_OUTPUTS.index):
            if name == CONFIDENCE_OUTPUT and result.confidence_small is None:
                continue  # a model exported without the confidence output: nothing to publish
            t1 = time.perf_counter()
            channels = 3 if name == "overlay" else 1
            encoding = "rgb8" if channels == 3 else "mono8"
            height, width = result.overlay_size if name == "overlay" else (result.height, result.width)
            buf, view = self._buffer(name, height, width, channels)
            t_msg += time.perf_counter() - t1
            if name == "labels":
                arr = result.labels(view)
            elif name == "overlay":
                arr = result.overlay(view)
            elif name == CONFIDENCE_OUTPUT:
                arr = result.confidence(view)
            else:
                arr = result.mask(name[:-len("_mask")], view)
            t1 = time.perf_counter()
            if buf is None:
                out[name] = image_msg(arr, encoding, copy_header(header))
            else:
                out[name] = image_msg_from_buffer(buf, height, width, encoding, copy_header(header))
            t_msg += time.perf_counter() - t1
            self._hand_over(publish, name, out[name], timer)
        if GRID_OUTPUT in wanted and result.pipeline.grid is not None:
            grid = result.grid(t)
            if grid.cells is not None:
                t1 = time.perf_counter()
                out[GRID_OUTPUT] = occupancy_grid_msg(grid.cells, result.pipeline.grid.spec.resolution,
                                                      result.pipeline.grid.origin,
                                                      copy_header(header, result.pipeline.grid.frame_id))
                t_msg += time.perf_counter() - t1
                self._hand_over(publish, GRID_OUTPUT, out[GRID_OUTPUT], timer)
        timer.add("to_msg", t_msg)
        return out

    @staticmethod
    def _hand_over(publish, name: str, msg, timer) -> None:
        if publish is not None:
            t1 = time.perf_counter()
            publish(name, msg)
            timer.add("publish", time.perf_counter() - t1)

    def _buffer(self, name: str, height: int, width: int, channels: int):
        """(array.array, numpy view on it) reused across frames when reuse_buffers is on, so an
        output is computed straight into the message's memory (no copy, no allocation)."""
        if not self.reuse_buffers:
            return None, None
        size = height * width * channels
        buf = self._buffers.get(name)
        if buf is None or len(buf) != size:
            buf = self._buffers[name] = array.array("B", bytes(size))
        view = np.frombuffer(buf, np.uint8).reshape((height, width, channels) if channels == 3 else (height, width))
        return buf, view
