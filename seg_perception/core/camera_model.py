"""The camera as the grid sees it: the fields of a sensor_msgs/CameraInfo (no ROS types), its
checks, poses (camera body frame, REP 103) and the projection of points in the optical frame into
the label map, through the real distortion model (cv2.projectPoints for plumb_bob and
rational_polynomial, cv2.fisheye.projectPoints for equidistant), honouring binning and ROI.
docs/grid.md explains the conventions."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence, Tuple

import cv2
import numpy as np


class GridError(ValueError):
    """Invalid CameraInfo or pose, a label map the grid cannot use, or a camera that sees no ground."""


DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")
# Accepted numbers of distortion coefficients (0 = an undistorted image).
_D_LENGTHS = {"plumb_bob": (0, 4, 5), "rational_polynomial": (0, 8), "equidistant": (0, 4)}

# Fixed rotation body (x fwd, y left, z up) -> optical (z fwd, x right, y down): its columns are
# the optical axes written in the body frame.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0],
                           [-1.0, 0.0, 0.0],
                           [0.0, -1.0, 0.0]])


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


def check_transform(T: Any) -> np.ndarray:
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
