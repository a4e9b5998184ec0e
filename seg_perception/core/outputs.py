"""The outputs a frame can give, as one table: each output's topic name (under the node's
namespace), kind, encoding, size and the FrameResult method that produces it, in publishing
order: masks first (planners need them soonest), the overlay for eyes last, then the grid.
ros/outputs.py turns an entry into its message; nothing else lists the outputs."""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from .labels import MASK_GROUPS


@dataclasses.dataclass(frozen=True)
class Output:
    name: str
    kind: str                      # "image" (sensor_msgs/Image) or "grid" (nav_msgs/OccupancyGrid)
    encoding: str = ""             # an image's: mono8 or rgb8
    size: Optional[Callable[[object], Tuple[int, int]]] = None       # an image's (height, width)
    # an image written into ``out`` (a message buffer) or returned; None: the model gives none
    produce: Optional[Callable[[object, Optional[np.ndarray]], Optional[np.ndarray]]] = None

    @property
    def channels(self) -> int:
        return 3 if self.encoding == "rgb8" else 1


def _frame_size(result) -> Tuple[int, int]:
    return result.height, result.width


def _mask(group: str) -> Output:
    return Output(f"{group}_mask", "image", "mono8", _frame_size, lambda r, out: r.mask(group, out))


GRID_OUTPUT = "drivable_grid"
CONFIDENCE_OUTPUT = "confidence"
OUTPUT_TABLE: Tuple[Output, ...] = tuple(_mask(g) for g in MASK_GROUPS) + (
    Output("labels", "image", "mono8", _frame_size, lambda r, out: r.labels(out)),
    Output(CONFIDENCE_OUTPUT, "image", "mono8", _frame_size, lambda r, out: r.confidence(out)),
    Output("overlay", "image", "rgb8", lambda r: r.overlay_size, lambda r, out: r.overlay(out)),
    Output(GRID_OUTPUT, "grid"),
)
OUTPUT_BY_NAME: Dict[str, Output] = {o.name: o for o in OUTPUT_TABLE}
OUTPUTS = tuple(o.name for o in OUTPUT_TABLE)
IMAGE_OUTPUTS = tuple(o.name for o in OUTPUT_TABLE if o.kind == "image")
MASK_OUTPUTS = tuple(f"{g}_mask" for g in MASK_GROUPS)
