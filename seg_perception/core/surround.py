"""The surround grid: every camera's drivable grid (all in grid.frame_id, one GridSpec) fused
into one, and the fair choice of which camera's frame the network takes next.

Fusion rule, per cell, over the cameras whose latest grid is close enough in time:
  100  (not drivable) where any camera sees an obstacle's foot or non-drivable ground
    0  (drivable) where a camera sees drivable ground and none sees 100 there
   -1  (unknown) where no camera knows the cell
Safety first at overlaps: one camera's obstacle beats another's free ground (a pedestrian seen
by the side camera is not erased by the front camera's view of the road behind it).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .grid import FREE, OCCUPIED, UNKNOWN


def fuse_grids(grids: Sequence[np.ndarray]) -> np.ndarray:
    """int8 cells of several cameras' grids (same shape) -> the fused grid."""
    if not grids:
        raise ValueError("no grid to fuse")
    shape = grids[0].shape
    if any(g.shape != shape for g in grids):
        raise ValueError(f"grids of different shapes: {[g.shape for g in grids]}")
    out = np.full(shape, UNKNOWN, np.int8)
    free = np.zeros(shape, bool)
    occupied = np.zeros(shape, bool)
    for g in grids:
        free |= g == FREE
        occupied |= g == OCCUPIED
    out[free] = FREE
    out[occupied] = OCCUPIED  # last: an obstacle seen by any camera wins
    return out


@dataclasses.dataclass
class _Latest:
    cells: np.ndarray
    stamp: float   # seconds, the camera frame's stamp


class SurroundGrid:
    """The latest grid of each camera; ``fused`` combines those within ``max_spread_s`` of the
    newest (a stalled camera's old view drops out instead of holding the map in the past)."""

    def __init__(self, cameras: Sequence[str], max_spread_s: float = 0.2) -> None:
        self.cameras = list(cameras)
        self.max_spread_s = float(max_spread_s)
        self._latest: Dict[str, _Latest] = {}
        self._lock = threading.Lock()  # the output thread updates, diagnostics read

    def update(self, camera: str, cells: np.ndarray, stamp: float) -> None:
        if camera not in self.cameras:
            raise KeyError(f"unknown camera {camera!r}; cameras: {self.cameras}")
        with self._lock:
            self._latest[camera] = _Latest(np.asarray(cells, np.int8), float(stamp))

    def fused(self) -> Optional[Tuple[np.ndarray, float, List[str]]]:
        """(cells, stamp of the newest grid in it, cameras in it), or None before any grid."""
        with self._lock:
            latest = dict(self._latest)
        if not latest:
            return None
        newest = max(v.stamp for v in latest.values())
        used = [c for c in self.cameras if c in latest and newest - latest[c].stamp <= self.max_spread_s]
        return fuse_grids([latest[c].cells for c in used]), newest, used

    def to_publish(self, stamp: float) -> Optional[Tuple[np.ndarray, List[str]]]:
        """(cells, cameras in it) to publish for a grid of ``stamp`` just given to ``update``,
        or None when a newer camera's grid is in the fusion: that one published it, and a
        published surround grid's stamp never goes back (a late camera does not rewind it)."""
        fused = self.fused()
        if fused is None or fused[1] > stamp:
            return None
        return fused[0], fused[2]


def fair_order(waiting: Dict[str, float], last_served: Dict[str, float]) -> List[str]:
    """The order in which cameras with a waiting frame (camera -> its receive time) are served:
    the camera served longest ago first (never served: first of all), then the frame waiting
    longest. Serving by the waiting frame's age alone starves a camera under overload: its
    newest-frame slot keeps replacing the frame, so the frame waiting is always young
    (measured in test_surround: 40/13/27/0 frames for four cameras); this gives each an equal share."""
    return sorted(waiting, key=lambda c: (last_served.get(c, float("-inf")), waiting[c], c))
