"""The drivable map: the per-frame drivable grids (each in the grid frame, base_link) fused over
time in the map frame (odom) with the vehicle's pose at each frame's stamp, in a window that
rolls with the vehicle.

Update rule, per cell a frame's grid knows (log-odds L, 0 = unknown):
  seen drivable (0)        L += miss (negative), not below the lower clamp
  seen not drivable (100)  L = max(L + hit, hit), not above the upper clamp: an obstacle seen
                           now is not drivable now, whatever the map held (safety first)
Cells that no frame has seen for ``decay_time`` go back to unknown (a parked car that left the
view stays not drivable until then); a pedestrian that walks away frees its cells as soon as
frames see the ground there again (a few misses undo the clamp). Published as occupancy
probability 0..100 (-1 unknown), or strictly -1/0/100 with ``trinary``.

Limits: flat ground (the grid's), a moving obstacle seen once stays until it is seen free or
decays, and the map is only as right as the odometry under it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

from .grid import FREE, OCCUPIED, UNKNOWN, GridSpec
from .odometry import Pose2D, PoseHistory


DECAY_STEP_S = 0.25


def _known_box(cells: np.ndarray, pad: int) -> Optional[Tuple[Tuple[int, int], Tuple[int, int]]]:
    """((row0, row1), (col0, col1)) of the cells that are not unknown, ``pad`` cells wider each
    side (within the grid); None when every cell is unknown."""
    x, y, w, h = cv2.boundingRect(cv2.compare(np.ascontiguousarray(cells).view(np.uint8), 255, cv2.CMP_NE))
    if w == 0 or h == 0:
        return None
    rows, cols = cells.shape
    return (max(y - pad, 0), min(y + h + pad, rows)), (max(x - pad, 0), min(x + w + pad, cols))


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@dataclasses.dataclass(frozen=True)
class MapSpec:
    resolution: float = 0.1   # m per cell
    size_x: float = 60.0      # m, the window along the map frame's x
    size_y: float = 60.0
    hit: float = 0.7          # probability a "not drivable" observation stands for
    miss: float = 0.4         # ... a "drivable" one
    p_min: float = 0.12       # clamps: how sure the map may get
    p_max: float = 0.97
    decay_time: float = 5.0   # s a cell keeps its value unseen
    trinary: bool = False     # publish -1/0/100 only
    occupied_above: float = 0.65  # trinary thresholds (probability)
    free_below: float = 0.35

    @property
    def cells(self) -> Tuple[int, int]:
        """(rows along y, columns along x)."""
        return (max(1, int(round(self.size_y / self.resolution))), max(1, int(round(self.size_x / self.resolution))))

    def validate(self) -> None:
        if not (self.resolution > 0 and self.size_x > 0 and self.size_y > 0):
            raise ValueError("map resolution and size must be > 0")
        if not (0.0 < self.p_min < 0.5 < self.p_max < 1.0):
            raise ValueError(f"map clamps must satisfy 0 < p_min < 0.5 < p_max < 1, got {self.p_min}, {self.p_max}")
        if not (0.5 < self.hit < 1.0 and 0.0 < self.miss < 0.5):
            raise ValueError(f"map hit must be in (0.5, 1) and miss in (0, 0.5), got {self.hit}, {self.miss}")
        rows, cols = self.cells
        if rows * cols > 4096 * 4096:
            raise ValueError(f"map of {cols}x{rows} cells is too large; use a coarser resolution or a smaller window")


class DrivableMap:
    """Log-odds cells around the vehicle, in the map frame. Not thread-safe: one updater."""

    def __init__(self, spec: MapSpec) -> None:
        spec.validate()
        self.spec = spec
        self.rows, self.cols = spec.cells
        self.L = np.zeros((self.rows, self.cols), np.float32)
        self.seen = np.full((self.rows, self.cols), -np.inf)  # when a frame last saw the cell
        self.origin: Optional[Tuple[float, float]] = None  # map-frame (x, y) of cell [0, 0]'s corner
        self.stamp: Optional[float] = None  # the newest update's time
        self.updates = 0
        self.clears = 0
        self.last_clear = ""
        self._hit, self._miss = logit(spec.hit), logit(spec.miss)
        self._decayed_at: Optional[float] = None
        self._lo, self._hi = logit(spec.p_min), logit(spec.p_max)
        # a confidence weight 0..255 -> its share of a hit or a miss
        self._miss_lut = (np.arange(256, dtype=np.float32) / np.float32(255.0) * np.float32(self._miss))
        self._hit_lut = (np.arange(256, dtype=np.float32) / np.float32(255.0) * np.float32(self._hit))

    def clear(self, reason: str) -> None:
        """Forget everything (odometry jumped, time went backwards, ...); ``reason`` is kept."""
        self.L[:] = 0.0
        self.seen[:] = -np.inf
        self.origin = None
        self.stamp = None
        self._decayed_at = None
        self.clears += 1
        self.last_clear = reason

    def _roll_to(self, x: float, y: float) -> None:
        """Keep the window centred on (x, y): shift by whole cells, forget what falls out."""
        res = self.spec.resolution
        want = (math.floor((x - self.spec.size_x / 2) / res) * res, math.floor((y - self.spec.size_y / 2) / res) * res)
        if self.origin is None:
            self.origin = want
            return
        dc = int(round((want[0] - self.origin[0]) / res))
        dr = int(round((want[1] - self.origin[1]) / res))
        # move when the vehicle is a tenth of the window off centre: not every frame (a shift
        # copies the window), and the view ahead stays within the window (at least 40% of it)
        if abs(dc) < max(1, self.cols // 10) and abs(dr) < max(1, self.rows // 10):
            return
        for arr, empty in ((self.L, 0.0), (self.seen, -np.inf)):
            shifted = np.full_like(arr, empty)
            src_r = slice(max(dr, 0), self.rows + min(dr, 0))
            dst_r = slice(max(-dr, 0), self.rows + min(-dr, 0))
            src_c = slice(max(dc, 0), self.cols + min(dc, 0))
            dst_c = slice(max(-dc, 0), self.cols + min(-dc, 0))
            if src_r.start < src_r.stop and src_c.start < src_c.stop:
                shifted[dst_r, dst_c] = arr[src_r, src_c]
            arr[...] = shifted
        self.origin = (self.origin[0] + dc * res, self.origin[1] + dr * res)

    def update(self, cells: np.ndarray, grid: GridSpec, pose: Pose2D, t: float,
               weight: Optional[np.ndarray] = None) -> int:
        """Fuse one frame's grid (int8 [rows=y, cols=x] in ``grid``'s frame) seen at pose ``pose``
        of that frame in the map frame, time ``t``; returns the map cells it saw. ``weight``:
        uint8 per grid cell (the model's confidence behind it, 255 = sure) scaling each cell's
        hit or miss; an obstacle still reads not drivable at once, however unsure.

        Every map cell under the grid's footprint takes the grid cell its centre falls in
        (cv2.warpAffine, nearest, backwards: a turned grid leaves no holes in the map)."""
        x, y, yaw = pose
        self._roll_to(x, y)
        self.stamp = t if self.stamp is None else max(self.stamp, t)
        k = self.spec.resolution / grid.resolution
        reach = int(math.ceil(k))
        # Only the part of the grid the frame knows (padded by the max-pool's reach) is warped:
        # a camera's view is a wedge of its grid, so this halves the work.
        box = _known_box(cells, pad=reach + 1)
        where = self._footprint(grid, box, pose) if box is not None else None
        if where is None:
            self._decay()
            return 0
        M, (r0, r1, c0, c1) = where
        part = (slice(box[0][0], box[0][1]), slice(box[1][0], box[1][1]))
        src = np.ascontiguousarray(cells[part]).view(np.uint8)  # -1 -> 255 (OpenCV warps no int8)
        size, flags = (c1 - c0, r1 - r0), cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
        obs = cv2.warpAffine(src, M, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=255)
        # obstacles max-pooled: a map cell is not drivable when any grid cell within reach of its
        # centre is (nearest sampling alone skips grid cells at an angle or on a coarser map)
        occ_src = cv2.compare(src, OCCUPIED, cv2.CMP_EQ)  # 255 where not drivable
        if reach > 1:
            occ_src = cv2.dilate(occ_src, np.ones((reach, reach), np.uint8))
        occ = cv2.compare(cv2.warpAffine(occ_src, M, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=0), 0, cv2.CMP_GT)
        free = cv2.bitwise_and(cv2.compare(obs, FREE, cv2.CMP_EQ), cv2.bitwise_not(occ))
        if weight is None:
            miss, hit = self._miss, self._hit
        else:
            w = cv2.warpAffine(np.ascontiguousarray(weight[part], np.uint8), M, size, flags=flags,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            miss, hit = cv2.LUT(w, self._miss_lut), cv2.LUT(w, self._hit_lut)
        # in place on the map's footprint, masked (OpenCV writes into the numpy views)
        L, seen = self.L[r0:r1, c0:c1], self.seen[r0:r1, c0:c1]
        cv2.add(L, miss, dst=L, mask=free)
        # an obstacle reads not drivable at once, however unsure: max(L + hit, the full hit)
        cv2.copyTo(cv2.max(cv2.add(L, hit), self._hit), occ, L)
        # the clamps over the whole footprint: cells outside the masks are within them already
        cv2.min(L, self._hi, dst=L)
        cv2.max(L, self._lo, dst=L)
        known = cv2.bitwise_or(free, occ)
        np.copyto(seen, t, where=known.astype(bool))
        self.updates += 1
        self._decay()
        return cv2.countNonZero(known)

    def _footprint(self, grid: GridSpec, box, pose: Pose2D):
        """(M: map cell of the footprint -> grid cell of the part, both with centres at integers;
        the footprint's map rows r0:r1 and columns c0:c1) of the grid's part ``box`` seen at
        ``pose``, or None when it lies outside the window."""
        (gr0, gr1), (gc0, gc1) = box
        x, y, yaw = pose
        gx0, gy0 = grid.x_min + gc0 * grid.resolution, grid.y_min + gr0 * grid.resolution
        gx1 = min(grid.x_min + gc1 * grid.resolution, grid.x_max)
        gy1 = min(grid.y_min + gr1 * grid.resolution, grid.y_max)
        res, ox, oy = self.spec.resolution, self.origin[0], self.origin[1]
        c, s = math.cos(yaw), math.sin(yaw)
        # the part's corners turned and moved
        gx, gy = np.array([gx0, gx1, gx1, gx0]), np.array([gy0, gy0, gy1, gy1])
        mx, my = x + c * gx - s * gy, y + s * gx + c * gy
        c0 = max(int(math.floor((mx.min() - ox) / res)), 0)
        c1 = min(int(math.ceil((mx.max() - ox) / res)), self.cols)
        r0 = max(int(math.floor((my.min() - oy) / res)), 0)
        r1 = min(int(math.ceil((my.max() - oy) / res)), self.rows)
        if c0 >= c1 or r0 >= r1:
            return None
        k = res / grid.resolution
        dx0, dy0 = ox - x + (c0 + 0.5) * res, oy - y + (r0 + 0.5) * res
        # in the whole grid's cells, then moved to the part's by whole cells: exact, so the part
        # samples exactly the cells the whole grid would
        M = np.array([[c * k, s * k, (c * dx0 + s * dy0 - grid.x_min) / grid.resolution - 0.5 - gc0],
                      [-s * k, c * k, (-s * dx0 + c * dy0 - grid.y_min) / grid.resolution - 0.5 - gr0]])
        return M, (r0, r1, c0, c1)

    def _decay(self) -> None:
        # a full pass over the window: at most every DECAY_STEP_S of frame time (a cell then
        # fades at decay_time + at most that)
        if self._decayed_at is not None and self._decayed_at <= self.stamp < self._decayed_at + DECAY_STEP_S:
            return
        self._decayed_at = self.stamp
        old = self.seen < self.stamp - self.spec.decay_time
        if old.any():
            self.L[old] = 0.0
            self.seen[old] = -np.inf

    def occupancy(self) -> np.ndarray:
        """int8 [rows, cols]: -1 unknown, else 0..100 (occupancy probability), or -1/0/100."""
        out = np.full((self.rows, self.cols), UNKNOWN, np.int8)
        known = np.isfinite(self.seen)
        p = 1.0 / (1.0 + np.exp(-self.L[known]))
        if self.spec.trinary:
            v = np.full(p.shape, UNKNOWN, np.int8)
            v[p >= self.spec.occupied_above] = OCCUPIED
            v[p <= self.spec.free_below] = FREE
            out[known] = v
        else:
            out[known] = np.round(p * 100.0).astype(np.int8)
        return out


@dataclasses.dataclass
class MapOutcome:
    state: str    # "ok", "warn" (the map did not take the frame; the per-frame grid goes on)
    status: str   # for diagnostics


class MapBuilder:
    """The per-frame policy of the map: the pose at a frame's stamp from the odometry history,
    and what to do when there is none. The node and process-bag feed it; it owns the map.

    odometry missing or stale (its newest pose more than ``odom_timeout`` older than the frame)
        the frame does not update the map (WARN); the per-frame grid goes on
    a frame whose stamp the history does not cover
        skipped and counted
    odometry jumps, resets, time goes backwards (odometry or frames: a bag looping)
        the map is cleared and says why
    """

    def __init__(self, spec: MapSpec, history: Optional[PoseHistory] = None, odom_timeout: float = 0.5,
                 odom_source: str = "odom") -> None:
        self.map = DrivableMap(spec)
        self.history = history or PoseHistory()
        self.odom_timeout = odom_timeout
        self.odom_source = odom_source  # named in status texts
        self.skipped = 0        # frames whose pose could not be interpolated
        self.not_updated = 0    # frames while odometry was missing or stale
        self.outcome = MapOutcome("warn", f"no odometry yet on {odom_source}")

    def on_odometry(self, t: float, pose: Pose2D) -> Optional[str]:
        reason = self.history.add(t, pose)
        if reason:
            self.map.clear(reason)
        return reason

    def on_grid(self, cells: np.ndarray, grid: GridSpec, t: float,
                weight: Optional[np.ndarray] = None, pose: Optional[Pose2D] = None) -> MapOutcome:
        """``pose``: the frame's pose where the caller has it at this very stamp (TF), instead of
        the odometry history (several cameras' frames come in any order of their stamps)."""
        newest = self.history.newest_time
        if self.map.stamp is not None and t < self.map.stamp - 1.0:
            self.map.clear(f"frame time went backwards by {self.map.stamp - t:.1f} s (a bag looping?)")
        if pose is not None:
            self.map.update(cells, grid, pose, t, weight)
            self.outcome = MapOutcome("ok", "updating" + (f" (last cleared: {self.map.last_clear})"
                                                          if self.map.last_clear else ""))
        elif newest is None:
            self.not_updated += 1
            self.outcome = MapOutcome("warn", f"map not updated: no odometry on {self.odom_source}")
        elif t - newest > self.odom_timeout:
            self.not_updated += 1
            self.outcome = MapOutcome("warn", f"map not updated: odometry on {self.odom_source} is stale (its "
                                              f"newest pose is {t - newest:.2f} s older than the frame)")
        else:
            pose = self.history.at(t)
            if pose is None:
                self.skipped += 1
                self.outcome = MapOutcome("warn", f"frame skipped: no odometry around its stamp "
                                                  f"({self.skipped} skipped so far)")
            else:
                self.map.update(cells, grid, pose, t, weight)
                self.outcome = MapOutcome("ok", "updating" + (f" (last cleared: {self.map.last_clear})"
                                                              if self.map.last_clear else ""))
        return self.outcome

    def skip(self, reason: str) -> MapOutcome:
        """A frame whose pose the caller could not get (TF had none at its stamp): counted."""
        self.skipped += 1
        self.outcome = MapOutcome("warn", f"frame skipped: {reason}")
        return self.outcome


def map_spec(cfg) -> MapSpec:
    """The map window and update rule of the node's map configuration (core/config.MapConfig)."""
    return MapSpec(resolution=cfg.resolution, size_x=cfg.size, size_y=cfg.size, hit=cfg.hit, miss=cfg.miss,
                   decay_time=cfg.decay_time, trinary=cfg.trinary)


def odometry_frames_problem(frame: str, child: str, map_frame: str, grid_frame: str) -> str:
    """What is wrong with odometry given in ``frame`` for ``child`` ("" when nothing): the map is
    drawn in map.frame_id and the grids are in grid.frame_id."""
    if frame and frame != map_frame:
        return (f"odometry is in '{frame}', map.frame_id is '{map_frame}': the map would be drawn "
                "in the wrong frame")
    if child and child != grid_frame:
        return f"odometry moves '{child}', grid.frame_id is '{grid_frame}'"
    return ""

