"""Drivable-area occupancy grid: the ground plane z=0 of ``grid_frame`` seen through the camera.

A cell-to-pixel lookup table is built once per (CameraInfo, camera pose, label map size) by
projecting ground points forward through the real camera model (cv2.projectPoints for plumb_bob
and rational_polynomial, cv2.fisheye.projectPoints for equidistant), honouring binning and ROI.
Per frame, the grid is two nearest-pixel gathers (cv2.remap), a row erosion and a few 256-entry
table lookups.

Cell values (nav_msgs/OccupancyGrid): 0 drivable, 100 not drivable (ground classes that are not
drivable, and the ground contact of obstacles), -1 unknown (not seen, hidden, or seen through a
pixel whose confidence is below min_confidence.grid: never drivable on a guess).

Occlusion. A cell's pixel shows whatever the camera ray towards the cell hits first. Under the
flat-ground model, a ground label there means the cell itself is seen; an obstacle label means
the ray is blocked: the cell is hidden (-1), unless the obstacle stands on that very cell. To find
that contact, each cell is sampled at two points on the vertical plane through the camera: its
near edge n and far edge f (half a cell towards / away from the camera's ground point). An
obstacle that blocks the shallower ray to f but not the steeper ray to n stands between n and f:
its foot is in the cell (100). Both blocked: hidden (-1). Ground seen over a low obstacle stays
known. A foot is a transition across that vertical plane; the side edges of an obstacle's
silhouette run along it, and their raster staircase would read as a foot whenever n and f round
to pixels on both sides. So a far-edge obstacle pixel only counts as a foot when both of its
horizontal neighbours are obstacle too (1x3 erosion of the label codes, once per frame); a
cell astride a silhouette's side takes the value of its seen edge, or -1 if that is the far one.
docs/grid.md explains the geometry, the conventions and the limits.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Tuple

import cv2
import numpy as np

from .camera_model import R_BODY_OPTICAL, CameraModel, GridError, check_transform, project_to_labels
from .labels import UNKNOWN_ID, LabelGroups

# OccupancyGrid values
FREE, OCCUPIED, UNKNOWN = 0, 100, -1

# What one label pixel tells about the ground. For the far edge, an obstacle pixel whose two
# horizontal neighbours are obstacle too becomes _SEEN_OBSTACLE_INSIDE (= obstacle + erosion).
_SEEN_NOTHING, _SEEN_DRIVABLE, _SEEN_NOT_DRIVABLE, _SEEN_OBSTACLE, _SEEN_OBSTACLE_INSIDE = 0, 1, 2, 4, 8
# A pixel the network was not sure about (labels.UNKNOWN_ID): a cell with such an edge is
# unknown, never drivable on a guess. 3 is free: a pixel has one code, never 1 | 2.
_SEEN_UNSURE = 3
_NEAR_SHIFT = 16  # near-edge code * 16 | far-edge code indexes the rule table


@dataclasses.dataclass(frozen=True)
class GridSpec:
    resolution: float = 0.1   # m per cell
    x_min: float = 0.0        # m, extent in grid_frame (x forward)
    x_max: float = 40.0
    y_min: float = -20.0      # m (y left)
    y_max: float = 20.0
    max_range: float = 40.0   # m from the camera's ground point; farther cells are unknown

    @property
    def width(self) -> int:
        """Cells along x (columns). The grid covers the whole extent (last cell may overhang)."""
        return max(1, int(math.ceil((self.x_max - self.x_min) / self.resolution - 1e-6)))

    @property
    def height(self) -> int:
        """Cells along y (rows)."""
        return max(1, int(math.ceil((self.y_max - self.y_min) / self.resolution - 1e-6)))

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise GridError(f"grid {f.name} must be a finite number, got {v!r}")
        if self.resolution <= 0:
            raise GridError(f"grid resolution must be > 0 m, got {self.resolution}")
        for lo, hi in (("x_min", "x_max"), ("y_min", "y_max")):  # the names of the grid.* parameters
            if getattr(self, lo) >= getattr(self, hi):
                raise GridError(f"grid.{lo} ({getattr(self, lo)}) must be below grid.{hi} ({getattr(self, hi)})")
        if self.max_range <= 0:
            raise GridError(f"grid max_range must be > 0 m, got {self.max_range}")
        # cv2.remap output sizes are limited to 32767 (two stacked sample planes)
        if 2 * self.height >= 32767 or self.width >= 32767 or self.width * self.height > 25_000_000:
            raise GridError(f"grid of {self.width}x{self.height} cells is too large; "
                            "use a coarser resolution or a smaller extent")

    def cell_centres(self) -> Tuple[np.ndarray, np.ndarray]:
        """(x of each column, y of each row) of the cell centres in grid_frame, metres."""
        xs = self.x_min + (np.arange(self.width) + 0.5) * self.resolution
        ys = self.y_min + (np.arange(self.height) + 0.5) * self.resolution
        return xs, ys
def _rule_table() -> np.ndarray:
    """256-entry uint8 table: near-edge code * 16 | far-edge code -> cell value."""
    ground = (_SEEN_DRIVABLE, _SEEN_NOT_DRIVABLE)
    near_codes = (_SEEN_NOTHING, _SEEN_DRIVABLE, _SEEN_NOT_DRIVABLE, _SEEN_OBSTACLE, _SEEN_UNSURE)
    far_codes = near_codes + (_SEEN_OBSTACLE_INSIDE,)

    def ground_value(code: int) -> int:
        return FREE if code == _SEEN_DRIVABLE else OCCUPIED

    def value(near: int, far: int) -> int:
        if _SEEN_UNSURE in (near, far):
            return UNKNOWN
        if near in ground and far in ground:
            # drivable only if the whole cell is: an edge inside it makes it not drivable
            return FREE if near == far == _SEEN_DRIVABLE else OCCUPIED
        if near in ground and far == _SEEN_OBSTACLE_INSIDE:
            return OCCUPIED  # the obstacle's foot lies between the two edges
        if near in ground and far == _SEEN_NOTHING:
            return ground_value(near)  # far edge out of view
        if far in ground:
            # near edge out of view, hidden by a low obstacle that the far ray passes over, or
            # beside the side of a silhouette: the far edge is seen
            return ground_value(far)
        # hidden (foot nearer than the cell), not seen, or the far edge on a silhouette's side
        return UNKNOWN

    table = np.full(256, UNKNOWN & 0xFF, np.uint8)
    for near in near_codes:
        for far in far_codes:
            table[near * _NEAR_SHIFT | far] = value(near, far) & 0xFF
    return table


class GroundGrid:
    """Occupancy grid of the ground plane from a class map; see the module docstring."""

    def __init__(self, spec: GridSpec, groups: LabelGroups) -> None:
        spec.validate()
        self.spec = spec
        self.groups = groups
        codes = np.full(256, _SEEN_NOTHING, np.uint8)  # ids of no group (and unknown ids): nothing
        codes[groups.member("obstacle")] = _SEEN_OBSTACLE
        codes[groups.member("ground")] = _SEEN_NOT_DRIVABLE
        codes[groups.member("drivable")] = _SEEN_DRIVABLE
        codes[UNKNOWN_ID] = _SEEN_UNSURE
        self._codes = codes
        self._near_codes = codes * _NEAR_SHIFT
        self._row_kernel = np.ones((1, 3), np.uint8)
        self._rule = _rule_table()
        self._key: Optional[tuple] = None
        self._failed: Optional[Tuple[tuple, GridError]] = None
        self._maps: Optional[Tuple[np.ndarray, np.ndarray]] = None  # near, far edge: (H, W, 2) int16 pixel
        self._label_shape: Tuple[int, int] = (0, 0)
        self._crop: Tuple[slice, slice] = (slice(None), slice(None))  # label region the maps index
        self.visible_cells = 0                     # cells in view and within max_range

    @property
    def origin(self) -> Tuple[float, float]:
        """(x, y) in grid_frame of the grid's corner cell's outer corner (OccupancyGrid origin)."""
        return self.spec.x_min, self.spec.y_min

    @property
    def resolution(self) -> float:
        return self.spec.resolution

    @property
    def shape(self) -> Tuple[int, int]:
        """(rows along y, columns along x) of compute()'s output."""
        return self.spec.height, self.spec.width

    @property
    def configured(self) -> bool:
        return self._maps is not None

    def _invalidate(self) -> None:
        self._key = None
        self._maps = None
        self.visible_cells = 0

    def configure(self, camera: CameraModel, T_grid_body: np.ndarray, label_height: int,
                  label_width: int, image_size: Optional[Tuple[int, int]] = None) -> bool:
        """Build the cell -> pixel table; True if it was (re)built, False if nothing changed.

        ``image_size`` (width, height), when given, is checked against the size the CameraInfo
        describes. Raises GridError (and forgets the old table) for an invalid CameraInfo or
        pose, a label map it cannot use, or a camera that sees no cell of the grid.
        """
        if self._maps is not None and (image_size is None or tuple(image_size) == camera.image_size()):
            # per-frame call with the inputs of the current table: answer before validating
            # again (they were valid when it was built; a NaN never compares equal)
            T = np.asarray(T_grid_body, dtype=np.float64)
            if self._key == (camera, _pose_key(T), int(label_height), int(label_width)):
                return False
        try:
            camera.validate()
            T = check_transform(T_grid_body)
            label_height, label_width = int(label_height), int(label_width)
            if not (1 <= label_height < 32767 and 1 <= label_width < 32767):
                raise GridError(f"label map size {label_width}x{label_height} is invalid")
            if image_size is not None and tuple(int(v) for v in image_size) != camera.image_size():
                w, h = camera.image_size()
                raise GridError(f"image is {image_size[0]}x{image_size[1]} but its CameraInfo describes "
                                f"{w}x{h} (size {camera.width}x{camera.height}, binning "
                                f"{camera.binning_x}x{camera.binning_y}, roi {camera.roi[:4]})")
        except GridError:
            self._invalidate()
            raise
        key = (camera, _pose_key(T), label_height, label_width)
        if self._maps is not None and key == self._key:
            return False
        if self._failed is not None and self._failed[0] == key:
            self._invalidate()
            raise self._failed[1]  # same inputs as a failed build: do not rebuild every frame
        self._invalidate()
        try:
            maps, visible = self._build(camera, T, label_height, label_width)
        except GridError as exc:
            self._failed = (key, exc)
            raise
        self._failed = None
        self._maps, self.visible_cells = maps, visible
        self._label_shape = (label_height, label_width)
        self._key = key
        return True

    def _build(self, camera: CameraModel, T_grid_body: np.ndarray, label_height: int,
               label_width: int) -> Tuple[Tuple[np.ndarray, np.ndarray], int]:
        spec = self.spec
        cam_x, cam_y, cam_z = T_grid_body[:3, 3]
        if cam_z <= 0:
            raise GridError(f"camera is at z={cam_z:.3f} m in grid_frame; it must be above the "
                            "ground plane z=0 (check camera_pose.xyz)")
        T_grid_optical = T_grid_body.copy()
        T_grid_optical[:3, :3] = T_grid_body[:3, :3] @ R_BODY_OPTICAL
        pixels = _GroundPixels(camera, T_grid_optical, label_width, label_height)
        H, W = spec.height, spec.width
        xs, ys = spec.cell_centres()
        X, Y = np.meshgrid(xs, ys)  # (H, W): row = y index, column = x index
        # A cell is in view when its centre is within max_range and projects into the label map.
        cells = np.flatnonzero(np.hypot(X - cam_x, Y - cam_y) <= spec.max_range)
        cx, cy = X.ravel()[cells], Y.ravel()[cells]
        _, _, seen = pixels(cx, cy)
        cells, cx, cy = cells[seen], cx[seen], cy[seen]
        if cells.size == 0:
            pitch_down = math.degrees(math.asin(max(-1.0, min(1.0, -T_grid_optical[2, 2]))))
            raise GridError(
                f"camera sees no ground cell of the grid (camera at x={cam_x:.2f} y={cam_y:.2f} "
                f"z={cam_z:.2f} m, optical axis {pitch_down:.1f} deg below the horizon; grid x "
                f"[{spec.x_min}, {spec.x_max}] y [{spec.y_min}, {spec.y_max}] m, max_range "
                f"{spec.max_range} m): check camera_pose")
        # Its values come from its near and far edge, half a cell towards / away from the
        # camera's ground point (any direction for a cell right under the camera).
        dx, dy = cx - cam_x, cy - cam_y
        dist = np.hypot(dx, dy)
        far_enough = dist > 1e-9
        ux = np.where(far_enough, dx / np.where(far_enough, dist, 1.0), 1.0)
        uy = np.where(far_enough, dy / np.where(far_enough, dist, 1.0), 0.0)
        half = 0.5 * spec.resolution
        maps = []
        for sign in (-1.0, 1.0):  # near, far
            m = np.full((H * W, 2), -1, np.int16)  # -1: outside the label map -> remap border
            u, v, ok = pixels(cx + sign * half * ux, cy + sign * half * uy)
            m[cells[ok], 0] = u[ok].astype(np.int16)
            m[cells[ok], 1] = v[ok].astype(np.int16)
            maps.append(m.reshape(H, W, 2))
        self._crop = _crop_to_samples(maps, label_width)
        return (maps[0], maps[1]), int(cells.size)

    def compute(self, labels: np.ndarray) -> np.ndarray:
        """int8 [height, width] grid from a uint8 class map covering the whole camera image.

        Row j is y = y_min + (j + 0.5) * resolution, column i is x = x_min + (i + 0.5) *
        resolution, so ``grid.ravel()`` is OccupancyGrid.data with origin (x_min, y_min).
        """
        if self._maps is None:
            raise GridError("grid is not configured (no valid CameraInfo and pose yet)")
        if not isinstance(labels, np.ndarray) or labels.dtype != np.uint8 or labels.ndim != 2:
            raise GridError(f"labels must be a 2-D uint8 class map, got "
                            f"{getattr(labels, 'dtype', type(labels))} {getattr(labels, 'shape', '')}")
        if labels.shape != self._label_shape:
            raise GridError(f"label map is {labels.shape[1]}x{labels.shape[0]} but the grid was "
                            f"configured for {self._label_shape[1]}x{self._label_shape[0]}")
        labels = labels[self._crop]
        # far-edge code per pixel: nothing / drivable / other ground / obstacle / obstacle inside
        code = cv2.LUT(labels, self._codes)
        inside = cv2.erode(code, self._row_kernel)  # obstacle only where the row neighbours are
        cv2.add(code, cv2.bitwise_and(inside, _SEEN_OBSTACLE), dst=code)
        near_map, far_map = self._maps
        near = cv2.remap(cv2.LUT(labels, self._near_codes), near_map, None, cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=_SEEN_NOTHING)
        far = cv2.remap(code, far_map, None, cv2.INTER_NEAREST,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=_SEEN_NOTHING)
        cv2.bitwise_or(near, far, dst=near)
        return cv2.LUT(near, self._rule).view(np.int8)

    def sample(self, image: np.ndarray) -> np.ndarray:
        """uint8 [height, width]: per cell, the value of ``image`` (uint8, the class map's size:
        e.g. the model's confidence) at the pixel that decides the cell; 0 where none does."""
        if self._maps is None:
            raise GridError("grid is not configured (no valid CameraInfo and pose yet)")
        if image.shape != self._label_shape:
            raise GridError(f"image is {image.shape[1]}x{image.shape[0]}, the grid's class map "
                            f"{self._label_shape[1]}x{self._label_shape[0]}")
        return cv2.remap(np.ascontiguousarray(image[self._crop]), self._maps[1], None, cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)


class _GroundPixels:
    """Ground points (x, y, 0) of grid_frame -> their nearest label pixel (u, v) and whether
    it lies in the label map."""

    def __init__(self, camera: CameraModel, T_grid_optical: np.ndarray, label_width: int,
                 label_height: int) -> None:
        self.camera = camera
        self.R, self.t = T_grid_optical[:3, :3], T_grid_optical[:3, 3]
        self.K_label = camera.label_intrinsics(label_width, label_height)
        self.size = (label_width, label_height)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        optical = (np.stack([x, y, np.zeros_like(x)], axis=1) - self.t) @ self.R  # R^T (p - t)
        uv, ok = project_to_labels(self.camera, self.K_label, optical)
        with np.errstate(invalid="ignore"):
            u, v = np.rint(uv[:, 0]), np.rint(uv[:, 1])
            ok &= (u >= 0) & (u < self.size[0]) & (v >= 0) & (v < self.size[1])
        return u, v, ok


def _crop_to_samples(maps, label_width: int) -> Tuple[slice, slice]:
    """The label rows and columns some cell samples (plus a column each side, so the row erosion
    sees the real neighbours): per frame only these are processed. Shifts ``maps`` into it."""
    sampled = [m[m[..., 0] >= 0] for m in maps]
    uv = np.concatenate(sampled) if any(len(x) for x in sampled) else np.zeros((1, 2), np.int16)
    u0 = max(0, int(uv[:, 0].min()) - 1)
    u1 = min(label_width, int(uv[:, 0].max()) + 2)
    v0, v1 = int(uv[:, 1].min()), int(uv[:, 1].max()) + 1
    for m in maps:
        valid = m[..., 0] >= 0
        m[valid] -= np.array([u0, v0], np.int16)
    return (slice(v0, v1), slice(u0, u1))


def _pose_key(T: np.ndarray) -> bytes:
    """The pose as the table's key: to a nanometre and a nanoradian, so the same mount from the
    parameters and from TF (a quaternion's round trip) is one table, not a rebuild."""
    return (np.round(np.asarray(T, dtype=np.float64), 9) + 0.0).tobytes()
