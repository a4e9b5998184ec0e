"""The picture of the surround grid's overlap rule in the README (docs/surround_overlap.png):
two cameras' grids that overlap, and what core/surround.fuse_grids makes of them.

    python -m seg_perception.tools.surround_picture docs/surround_overlap.png
"""

from __future__ import annotations

import sys

import cv2
import numpy as np

from ..core.grid import FREE, OCCUPIED, UNKNOWN
from ..core.surround import fuse_grids
from .support.pictures import composite, grid_picture, with_caption, write_picture

RES, HALF = 0.1, 15.0  # a 30 x 30 m window around base_link, 0.1 m cells


def _cone(heading_deg: float, half_angle_deg: float, reach: float, origin=(0.0, 0.0)) -> np.ndarray:
    """Cells [y, x] a camera at ``origin`` looking along ``heading`` sees on the ground."""
    n = int(2 * HALF / RES)
    c = (np.arange(n) + 0.5) * RES - HALF
    x, y = np.meshgrid(c, c)  # cells[y index, x index]
    dx, dy = x - origin[0], y - origin[1]
    ang = np.degrees(np.arctan2(dy, dx)) - heading_deg
    ang = (ang + 180.0) % 360.0 - 180.0
    return (np.abs(ang) <= half_angle_deg) & (np.hypot(dx, dy) <= reach) & (np.hypot(dx, dy) > 1.0)


def _blob(cx: float, cy: float, r: float) -> np.ndarray:
    n = int(2 * HALF / RES)
    c = (np.arange(n) + 0.5) * RES - HALF
    x, y = np.meshgrid(c, c)
    return np.hypot(x - cx, y - cy) <= r


def example_grids():
    """The two views overlap front-left. front: road ahead, also where the left camera sees a
    pedestrian's feet and the kerb (the front camera misses them: occluded, or misclassified);
    left: the pedestrian and the kerb. Fused: both stay not drivable."""
    front = np.full((int(2 * HALF / RES),) * 2, UNKNOWN, np.int8)
    seen = _cone(0.0, 50.0, 14.0, (1.8, 0.0))
    front[seen] = FREE
    front[seen & _blob(9.0, -3.0, 0.8)] = OCCUPIED  # a parked car's wheels, ahead right
    left = np.full_like(front, UNKNOWN)
    seen_l = _cone(70.0, 55.0, 12.0, (1.0, 0.95))
    left[seen_l] = FREE
    left[seen_l & _blob(6.0, 3.0, 0.5)] = OCCUPIED   # a pedestrian's feet, front-left
    left[seen_l & (np.abs(_grid_y() - 8.0) < 0.3)] = OCCUPIED  # the kerb, left
    return front, left


def _grid_y() -> np.ndarray:
    n = int(2 * HALF / RES)
    c = (np.arange(n) + 0.5) * RES - HALF
    return np.meshgrid(c, c)[1]


def picture() -> np.ndarray:
    front, left = example_grids()
    fused = fuse_grids([front, left])
    panels = []
    for cells in (front, left, fused):
        img = cv2.resize(grid_picture(cells), (300, 300), interpolation=cv2.INTER_NEAREST)
        cv2.circle(img, (150, 150), 4, (220, 40, 40), -1)  # base_link
        panels.append(img)
    return with_caption(composite(panels, ["front camera", "left camera", "~/drivable_grid (fused)"], 300),
                        "green: drivable (0)   black: not drivable (100)   grey: unknown (-1)   "
                        "red dot: base_link, forward up")


def main(argv=None) -> int:
    return write_picture(picture, "surround_overlap.png", argv)


if __name__ == "__main__":
    sys.exit(main())
