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
from typing import Any, Optional, Sequence, Tuple

import cv2
import numpy as np

from .labels import UNKNOWN_ID, LabelGroups


class GridError(ValueError):
    """Invalid CameraInfo or pose, a label map the grid cannot use, or a camera that sees no ground."""


DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")
# Accepted numbers of distortion coefficients (0 = an undistorted image).
_D_LENGTHS = {"plumb_bob": (0, 4, 5), "rational_polynomial": (0, 8), "equidistant": (0, 4)}

# OccupancyGrid values
FREE, OCCUPIED, UNKNOWN = 0, 100, -1

# What one label pixel tells about the ground. For the far edge, an obstacle pixel whose two
# horizontal neighbours are obstacle too becomes _SEEN_OBSTACLE_INSIDE (= obstacle + erosion).
_SEEN_NOTHING, _SEEN_DRIVABLE, _SEEN_NOT_DRIVABLE, _SEEN_OBSTACLE, _SEEN_OBSTACLE_INSIDE = 0, 1, 2, 4, 8
# A pixel the network was not sure about (labels.UNKNOWN_ID): a cell with such an edge is
# unknown, never drivable on a guess. 3 is free: a pixel has one code, never 1 | 2.
_SEEN_UNSURE = 3
_NEAR_SHIFT = 16  # near-edge code * 16 | far-edge code indexes the rule table

# Fixed rotation body (x fwd, y left, z up) -> optical (z fwd, x right, y down): its columns are
# the optical axes written in the body frame.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0],
                           [-1.0, 0.0, 0.0],
                           [0.0, -1.0, 0.0]])


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
        if self.x_max <= self.x_min or self.y_max <= self.y_min:
            raise GridError(f"grid extent is empty: x [{self.x_min}, {self.x_max}], "
                            f"y [{self.y_min}, {self.y_max}] m")
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


@dataclasses.dataclass(frozen=True)
class CameraModel:
    """The fields of a sensor_msgs/CameraInfo the grid needs (no ROS types)."""

    width: int                     # calibrated (full sensor) resolution
    height: int
    K: Tuple[float, ...]           # 3x3 row-major, full-resolution pixels
    D: Tuple[float, ...] = ()
    distortion_model: str = "plumb_bob"
    binning_x: int = 0             # 0 is the same as 1
    binning_y: int = 0
    roi: Tuple[int, int, int, int, bool] = (0, 0, 0, 0, False)  # x_offset, y_offset, width, height, do_rectify

    @classmethod
    def from_fields(cls, width: int, height: int, k: Sequence[float], d: Sequence[float] = (),
                    distortion_model: str = "plumb_bob", binning_x: int = 0, binning_y: int = 0,
                    roi: Optional[Any] = None) -> "CameraModel":
        """Build from plain values; ``k`` may be 9 numbers or a 3x3 array, ``roi`` a 4/5-tuple or
        an object with x_offset, y_offset, width, height (do_rectify) attributes."""
        try:
            K = tuple(float(v) for v in np.asarray(k, dtype=np.float64).reshape(-1))
            D = tuple(float(v) for v in np.asarray(d, dtype=np.float64).reshape(-1))
        except (TypeError, ValueError) as exc:
            raise GridError(f"CameraInfo K/D are not numbers: {exc}") from exc
        if roi is None:
            r: Tuple[int, int, int, int, bool] = (0, 0, 0, 0, False)
        elif hasattr(roi, "x_offset"):
            r = (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height),
                 bool(getattr(roi, "do_rectify", False)))
        else:
            vals = tuple(roi)
            if len(vals) not in (4, 5):
                raise GridError(f"CameraInfo roi must have 4 or 5 values, got {vals!r}")
            r = (int(vals[0]), int(vals[1]), int(vals[2]), int(vals[3]),
                 bool(vals[4]) if len(vals) == 5 else False)
        return cls(int(width), int(height), K, D, str(distortion_model), int(binning_x), int(binning_y), r)

    @classmethod
    def from_camera_info(cls, msg: Any) -> "CameraModel":
        """From a sensor_msgs/msg/CameraInfo (duck-typed: no ROS import here)."""
        return cls.from_fields(msg.width, msg.height, msg.k, msg.d, msg.distortion_model,
                               msg.binning_x, msg.binning_y, msg.roi)

    def _bin(self) -> Tuple[int, int]:
        return max(1, self.binning_x), max(1, self.binning_y)

    def _roi(self) -> Tuple[int, int, int, int]:
        x0, y0, w, h = self.roi[:4]
        if x0 == 0 and y0 == 0 and w == 0 and h == 0:  # all zeros = full resolution
            return 0, 0, self.width, self.height
        return x0, y0, w, h

    def validate(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise GridError(f"CameraInfo size {self.width}x{self.height} is invalid (camera not calibrated?)")
        if len(self.K) != 9:
            raise GridError(f"CameraInfo K must have 9 values, got {len(self.K)}")
        if not all(math.isfinite(v) for v in self.K):
            raise GridError(f"CameraInfo K contains NaN or infinity: {list(self.K)}")
        fx, fy = self.K[0], self.K[4]
        if fx <= 0 or fy <= 0:
            raise GridError(f"CameraInfo K has focal lengths fx={fx}, fy={fy}; they must be > 0 "
                            "(an all-zero K means the camera is not calibrated)")
        if abs(self.K[3]) > 0 or abs(self.K[6]) > 0 or abs(self.K[7]) > 0 or abs(self.K[8] - 1.0) > 1e-9:
            raise GridError(f"CameraInfo K is not an intrinsic matrix [fx s cx; 0 fy cy; 0 0 1]: {list(self.K)}")
        if self.distortion_model not in DISTORTION_MODELS:
            raise GridError(f"unknown CameraInfo distortion_model {self.distortion_model!r}; supported: "
                            f"{list(DISTORTION_MODELS)} (plumb_bob with D all zero for an undistorted image)")
        if len(self.D) not in _D_LENGTHS[self.distortion_model]:
            raise GridError(f"CameraInfo D has {len(self.D)} values; {self.distortion_model} takes "
                            f"{' or '.join(str(n) for n in _D_LENGTHS[self.distortion_model])}")
        if not all(math.isfinite(v) for v in self.D):
            raise GridError(f"CameraInfo D contains NaN or infinity: {list(self.D)}")
        if self.binning_x < 0 or self.binning_y < 0:
            raise GridError(f"CameraInfo binning {self.binning_x}x{self.binning_y} is negative")
        x0, y0, w, h = self._roi()
        if x0 < 0 or y0 < 0 or w <= 0 or h <= 0 or x0 + w > self.width or y0 + h > self.height:
            raise GridError(f"CameraInfo roi (x_offset={x0}, y_offset={y0}, width={w}, height={h}) "
                            f"does not lie inside the {self.width}x{self.height} sensor")
        bx, by = self._bin()
        if w // bx < 1 or h // by < 1:
            raise GridError(f"CameraInfo binning {bx}x{by} leaves no pixel of the {w}x{h} roi")

    def image_size(self) -> Tuple[int, int]:
        """(width, height) of the images this CameraInfo describes: the ROI, then binning."""
        _, _, w, h = self._roi()
        bx, by = self._bin()
        return w // bx, h // by

    def label_intrinsics(self, label_width: int, label_height: int) -> np.ndarray:
        """K in the pixels of a label map of that size covering the whole image.

        Pixel centres are at integer coordinates at every stage. Full-res sensor u maps to
        label u_l = (u + 0.5 - x_offset) * s - 0.5 with s = (label_width / image_width) / binning_x.
        (image_geometry drops the two half-pixel terms; that differs by under half a pixel.)
        """
        x0, y0, _, _ = self._roi()
        bx, by = self._bin()
        iw, ih = self.image_size()
        su = label_width / iw / bx
        sv = label_height / ih / by
        K = np.array(self.K, dtype=np.float64).reshape(3, 3)
        return np.array([[K[0, 0] * su, K[0, 1] * su, (K[0, 2] + 0.5 - x0) * su - 0.5],
                         [0.0, K[1, 1] * sv, (K[1, 2] + 0.5 - y0) * sv - 0.5],
                         [0.0, 0.0, 1.0]])


def _rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Fixed-axis X, then Y, then Z (tf2 setRPY / URDF rpy): R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def camera_pose(xyz: Sequence[float], rpy: Sequence[float]) -> np.ndarray:
    """4x4 transform grid_frame <- camera body frame (REP 103: x forward, y left, z up).

    rpy in radians, fixed-axis XYZ as tf2 and URDF use it; positive pitch points the camera down.
    """
    try:
        p = [float(v) for v in xyz]
        a = [float(v) for v in rpy]
    except (TypeError, ValueError) as exc:
        raise GridError(f"camera pose must be numbers: xyz={xyz!r} rpy={rpy!r}") from exc
    if len(p) != 3 or len(a) != 3 or not all(math.isfinite(v) for v in p + a):
        raise GridError(f"camera pose needs 3 finite xyz and 3 finite rpy values, got xyz={xyz!r} rpy={rpy!r}")
    T = np.eye(4)
    T[:3, :3] = _rotation_rpy(*a)
    T[:3, 3] = p
    return T


def _check_transform(T: Any) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise GridError(f"camera pose must be a finite 4x4 transform, got shape {T.shape}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0 or \
            not np.allclose(T[3], [0, 0, 0, 1]):
        raise GridError("camera pose is not a rigid transform (rotation not orthonormal)")
    return T


def _radial_limit(values: np.ndarray, grid: np.ndarray, cap: float) -> float:
    """Largest grid value up to which ``values`` (the distorted radius) keeps increasing.

    Beyond it a distortion polynomial folds back and would map far-off points into the image.
    """
    bad = np.nonzero((np.diff(values) <= 0) | ~np.isfinite(values[1:]))[0]
    return float(grid[bad[0]]) if bad.size else cap


def _valid_undistorted_radius(camera: CameraModel) -> float:
    """Normalised radius r = |(x/z, y/z)| (or angle for equidistant) where the model is usable."""
    D = np.zeros(8)
    D[:len(camera.D)] = camera.D
    if camera.distortion_model == "equidistant":
        theta = np.linspace(0.0, math.pi / 2 - 1e-3, 20000)
        t2 = theta * theta
        theta_d = theta * (1 + D[0] * t2 + D[1] * t2 ** 2 + D[2] * t2 ** 3 + D[3] * t2 ** 4)
        return _radial_limit(theta_d, theta, theta[-1])
    r = np.tan(np.linspace(0.0, math.radians(89.5), 20000))
    r2 = r * r
    num = 1 + D[0] * r2 + D[1] * r2 ** 2 + D[4] * r2 ** 3
    den = 1 + D[5] * r2 + D[6] * r2 ** 2 + D[7] * r2 ** 3  # rational_polynomial only (else zeros)
    with np.errstate(divide="ignore", invalid="ignore"):
        rd = np.where(den > 1e-9, r * num / den, np.nan)
    return _radial_limit(rd, r, r[-1])


def project_to_labels(camera: CameraModel, K_label: np.ndarray, points_optical: np.ndarray
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """(Nx2 label-pixel coordinates, N bool valid) of points in the optical frame.

    Invalid: behind the camera, or outside the radius where the distortion model is monotonic.
    """
    P = np.asarray(points_optical, dtype=np.float64).reshape(-1, 3)
    uv = np.full((len(P), 2), np.nan)
    z = P[:, 2]
    front = z > 1e-6
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(front, P[:, 0] / z, 0.0)
        y = np.where(front, P[:, 1] / z, 0.0)
    r = np.hypot(x, y)
    limit = _valid_undistorted_radius(camera) if any(camera.D) else math.inf
    if camera.distortion_model == "equidistant":
        valid = front & (np.arctan(r) <= limit)
    else:
        valid = front & (r <= limit)
    if not np.any(valid):
        return uv, valid
    fx, skew, fy = K_label[0, 0], K_label[0, 1], K_label[1, 1]
    if not any(camera.D):
        # no distortion: the pinhole formula (what cv2.projectPoints computes with D = 0,
        # without the Jacobian it always computes from Python)
        uv[valid, 0] = fx * x[valid] + skew * y[valid] + K_label[0, 2]
        uv[valid, 1] = fy * y[valid] + K_label[1, 2]
        return uv, valid
    norm = np.stack([x[valid], y[valid], np.ones(int(valid.sum()))], axis=1).reshape(-1, 1, 3)
    zero = np.zeros(3)
    if camera.distortion_model == "equidistant":
        D = np.array(camera.D, dtype=np.float64).reshape(4, 1)
        K0 = K_label.copy()
        K0[0, 1] = 0.0
        img, _ = cv2.fisheye.projectPoints(norm, zero, zero, K0, D, alpha=skew / fx)
        img = img.reshape(-1, 2)
    else:
        D = np.array(camera.D, dtype=np.float64)
        K0 = K_label.copy()
        K0[0, 1] = 0.0  # cv2.projectPoints ignores skew: add it from the distorted y below
        img, _ = cv2.projectPoints(norm, zero, zero, K0, D)
        img = img.reshape(-1, 2)
        if skew != 0.0:
            img[:, 0] += skew * (img[:, 1] - K_label[1, 2]) / fy
    uv[valid] = img
    valid &= np.all(np.isfinite(uv), axis=1)
    return uv, valid


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
            if self._key == (camera, T.tobytes(), int(label_height), int(label_width)):
                return False
        try:
            camera.validate()
            T = _check_transform(T_grid_body)
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
        key = (camera, T.tobytes(), label_height, label_width)
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
        R, t = T_grid_optical[:3, :3], T_grid_optical[:3, 3]
        K_label = camera.label_intrinsics(label_width, label_height)

        def pixels(x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
            """Nearest label pixel (u, v) of ground points and whether it lies in the label map."""
            optical = (np.stack([x, y, np.zeros_like(x)], axis=1) - t) @ R  # R^T (p - t)
            uv, ok = project_to_labels(camera, K_label, optical)
            with np.errstate(invalid="ignore"):
                u, v = np.rint(uv[:, 0]), np.rint(uv[:, 1])
                ok &= (u >= 0) & (u < label_width) & (v >= 0) & (v < label_height)
            return u, v, ok

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
        # Per frame only the label rows and columns some cell samples are processed (plus a
        # column each side, so the row erosion sees the real neighbours).
        sampled = [m[m[..., 0] >= 0] for m in maps]
        uv = np.concatenate(sampled) if any(len(x) for x in sampled) else np.zeros((1, 2), np.int16)
        u0 = max(0, int(uv[:, 0].min()) - 1)
        u1 = min(label_width, int(uv[:, 0].max()) + 2)
        v0, v1 = int(uv[:, 1].min()), int(uv[:, 1].max()) + 1
        for m in maps:
            valid = m[..., 0] >= 0
            m[valid] -= np.array([u0, v0], np.int16)
        self._crop = (slice(v0, v1), slice(u0, u1))
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


def body_pose_from_optical(translation, quaternion_xyzw) -> np.ndarray:
    """4x4 grid_frame <- camera body frame, from a transform grid_frame <- camera optical frame
    (what TF holds for an image's frame_id: z forward, x right, y down)."""
    x, y, z, w = (float(v) for v in quaternion_xyzw)
    n = (x * x + y * y + z * z + w * w) ** 0.5
    if not n > 0:
        raise ValueError("zero quaternion")
    x, y, z, w = x / n, y / n, z / n, w / n
    R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    T = np.eye(4)
    T[:3, :3] = R @ R_BODY_OPTICAL.T  # R_grid_optical = R_grid_body @ R_BODY_OPTICAL
    T[:3, 3] = [float(v) for v in translation]
    return T
