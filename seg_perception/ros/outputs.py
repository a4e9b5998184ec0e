"""A processed frame's outputs as ROS messages: what the node publishes and process-bag writes,
from the one output table (core/outputs.OUTPUT_TABLE) and the frame's FrameOutcome.

Only the outputs somebody asked for are built (core.pipeline computes each on first access).
Every message carries the input frame's stamp; image outputs its frame_id, the grids their frame.
"""

from __future__ import annotations

import array
import time
from typing import Callable, Collection, Dict, Optional

import numpy as np

from ..core.finish import FrameOutcome
from ..core.outputs import GRID_OUTPUT, OUTPUT_BY_NAME, OUTPUT_TABLE
from .conversions import copy_header, image_msg, image_msg_from_buffer, occupancy_grid_msg


def output_type(name: str) -> type:
    """The message type of an output (a topic name under the node's namespace)."""
    from nav_msgs.msg import OccupancyGrid
    from sensor_msgs.msg import Image

    base = name.rsplit("/", 1)[-1]
    return OccupancyGrid if OUTPUT_BY_NAME[base].kind == "grid" else Image


class OutputMessages:
    """``reuse_buffers``: output images are written into message buffers that are reused for the
    next frame (the node publishes each message before it builds the next; a caller that keeps
    messages across frames must leave this off)."""

    def __init__(self, reuse_buffers: bool = False) -> None:
        self.reuse_buffers = reuse_buffers
        self._buffers: Dict[str, array.array] = {}

    def build(self, outcome: FrameOutcome, wanted: Collection[str],
              publish: Optional[Callable[[str, object], None]] = None) -> Dict[str, object]:
        """The wanted output messages in the table's order (masks first, the overlay last, then
        the grid). With ``publish`` each message is handed over as soon as it is built, so the
        outputs planners need leave earliest (its time is counted as the 'publish' stage)."""
        result = outcome.result
        timer = result.timer
        header = result.frame.header
        out: Dict[str, object] = {}
        t_msg = 0.0
        for spec in OUTPUT_TABLE:
            if spec.name not in wanted:
                continue
            if spec.kind == "grid":
                grid = outcome.grid
                if grid is None or grid.cells is None:
                    continue
                t1 = time.perf_counter()
                out[spec.name] = occupancy_grid_msg(grid.cells, outcome.grid_spec.resolution,
                                                    (outcome.grid_spec.x_min, outcome.grid_spec.y_min),
                                                    copy_header(header, outcome.grid_frame_id))
                t_msg += time.perf_counter() - t1
            else:
                t1 = time.perf_counter()
                height, width = spec.size(result)
                buf, view = self._buffer(spec.name, height, width, spec.channels)
                t_msg += time.perf_counter() - t1
                arr = spec.produce(result, view)
                if arr is None:
                    continue  # a model exported without the confidence output: nothing to publish
                t1 = time.perf_counter()
                out[spec.name] = (image_msg(arr, spec.encoding, copy_header(header)) if buf is None else
                                  image_msg_from_buffer(buf, height, width, spec.encoding, copy_header(header)))
                t_msg += time.perf_counter() - t1
            if publish is not None:
                t1 = time.perf_counter()
                publish(spec.name, out[spec.name])
                timer.add("publish", time.perf_counter() - t1)
        timer.add("to_msg", t_msg)
        return out

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


def surround_grid_msg(outcome: FrameOutcome):
    """The fused surround grid of an outcome that has one to publish, stamped with its frame's
    stamp (the newest in it), in grid.frame_id."""
    spec = outcome.grid_spec
    return occupancy_grid_msg(outcome.surround, spec.resolution, (spec.x_min, spec.y_min),
                              copy_header(outcome.result.frame.header, outcome.grid_frame_id))


__all__ = ["GRID_OUTPUT", "OutputMessages", "output_type", "surround_grid_msg"]
