"""The drivable-area occupancy grid against geometry computed here, independently of grid.py.

Label images are ray-cast in this file from a known ground layout (hand-derived pinhole inverse;
OpenCV's undistortPoints for the distortion models). The camera's orientation comes from the
tf2 setRPY quaternion formula. The expected grid comes from the layout itself (ground class, box
footprints, line-of-sight to each cell, field of view, range), never from grid.py's projection.

Tolerance: a cell may differ from the layout at its centre only where the layout changes within
r_tol of it: one cell, plus the ground footprint of half a label pixel (the grid picks the nearest
label pixel). In the near field that footprint is a fraction of a cell.
"""

import dataclasses
import math
from typing import List, Tuple

import cv2
import numpy as np
import pytest

from seg_perception.core import sample
from seg_perception.core.datasets import CAMVID_PARKING_CLASSES
from seg_perception.core.labels import UNKNOWN_ID
from seg_perception.core.camera_model import CameraModel, GridError, camera_pose
from seg_perception.core.grid import GridSpec, GroundGrid
from seg_perception.core.labels import parse_label_groups

CLASSES = tuple(name for name, _ in CAMVID_PARKING_CLASSES)
ID = {name: i for i, name in enumerate(CLASSES)}
GROUPS = parse_label_groups({"groups": {
    "road": ["Road"], "pedestrian": ["Pedestrian"], "parking": ["Parking"],
    "drivable": ["Road", "Parking"], "ground": ["Road", "Pavement", "Parking"],
    "obstacle": ["Car", "Pedestrian", "Fence", "Building"]}}, CLASSES)
DRIVABLE = {ID["Road"], ID["Parking"]}
FOOTPRINT = 50  # expected-state marker: inside an obstacle's footprint (100 contact or -1 hidden)

SPEC = GridSpec(resolution=0.1, x_min=0.0, x_max=20.0, y_min=-10.0, y_max=10.0, max_range=18.0)


# ---------------------------------------------------------------- independent camera geometry

def quaternion_from_rpy(roll, pitch, yaw):
    """tf2::Quaternion::setRPY (fixed axes X, Y, Z)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy)


def quaternion_matrix(x, y, z, w):
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@dataclasses.dataclass
class Cam:
    """A camera described the way CameraInfo does, plus its mount, with test-side geometry."""
    width: int = 640
    height: int = 480
    fx: float = 457.0
    fy: float = 457.0
    cx: float = 319.5
    cy: float = 239.5
    skew: float = 0.0
    D: Tuple[float, ...] = ()
    model: str = "plumb_bob"
    binning: Tuple[int, int] = (0, 0)
    roi: Tuple[int, int, int, int] = (0, 0, 0, 0)
    xyz: Tuple[float, float, float] = (0.0, 0.0, 1.6)
    rpy: Tuple[float, float, float] = (0.0, 0.15, 0.0)
    label: Tuple[int, int] = (320, 240)  # (width, height) of the label map
    _cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def camera_model(self) -> CameraModel:
        K = [self.fx, self.skew, self.cx, 0, self.fy, self.cy, 0, 0, 1]
        return CameraModel.from_fields(self.width, self.height, K, self.D, self.model,
                                       self.binning[0], self.binning[1], self.roi)

    def configure(self, grid: GroundGrid) -> bool:
        return grid.configure(self.camera_model(), camera_pose(self.xyz, self.rpy),
                              self.label[1], self.label[0])

    @property
    def K(self):
        return np.array([[self.fx, self.skew, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    def image_size(self):
        """CameraInfo docs: the ROI (all zeros = full sensor), then divided by binning (0 = 1)."""
        w, h = (self.roi[2], self.roi[3]) if any(self.roi) else (self.width, self.height)
        return w // max(1, self.binning[0]), h // max(1, self.binning[1])

    def label_to_sensor(self, u, v):
        """Label-map pixel -> full-resolution sensor pixel (pixel centres at integers)."""
        iw, ih = self.image_size()
        bx, by = max(1, self.binning[0]), max(1, self.binning[1])
        u_img = (u + 0.5) * iw / self.label[0] - 0.5
        v_img = (v + 0.5) * ih / self.label[1] - 0.5
        return (u_img + 0.5) * bx - 0.5 + self.roi[0], (v_img + 0.5) * by - 0.5 + self.roi[1]

    def label_K(self):
        """K in label pixels, derived from label_to_sensor's inverse."""
        iw, ih = self.image_size()
        su = self.label[0] / iw / max(1, self.binning[0])
        sv = self.label[1] / ih / max(1, self.binning[1])
        return np.array([[self.fx * su, self.skew * su, (self.cx + 0.5 - self.roi[0]) * su - 0.5],
                         [0, self.fy * sv, (self.cy + 0.5 - self.roi[1]) * sv - 0.5], [0, 0, 1.0]])

    def R(self):
        """grid <- body rotation from the quaternion."""
        return quaternion_matrix(*quaternion_from_rpy(*self.rpy))

    def centre(self):
        return np.array(self.xyz, dtype=np.float64)

    def normalised(self, u_sensor, v_sensor):
        """Undistorted normalised coordinates (x/z, y/z) of sensor pixels.

        u = fx x_d + skew y_d + cx, v = fy y_d + cy: the skew is taken out by hand first
        (OpenCV's undistortPoints ignores it)."""
        u_sensor = u_sensor - self.skew * (v_sensor - self.cy) / self.fy
        if not any(self.D):
            return (u_sensor - self.cx) / self.fx, (v_sensor - self.cy) / self.fy
        K0 = self.K.copy()
        K0[0, 1] = 0.0
        pts = np.stack([u_sensor.ravel(), v_sensor.ravel()], axis=1).reshape(-1, 1, 2).astype(np.float64)
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-12)
        if self.model == "equidistant":
            out = cv2.fisheye.undistortPoints(pts, K0, np.array(self.D).reshape(4, 1), criteria=crit)
        else:
            out = cv2.undistortPointsIter(pts, K0, np.array(self.D), None, None, crit)
        out = out.reshape(-1, 2)
        return out[:, 0].reshape(u_sensor.shape), out[:, 1].reshape(u_sensor.shape)

    def pixel_rays(self):
        """(Lh, Lw, 3) ray directions in the grid frame of every label pixel's centre."""
        if "rays" not in self._cache:
            self._cache["rays"] = self._pixel_rays()
        return self._cache["rays"]

    def _pixel_rays(self):
        v, u = np.mgrid[0:self.label[1], 0:self.label[0]].astype(np.float64)
        x, y = self.normalised(*self.label_to_sensor(u, v))
        # optical (x right, y down, z forward) -> body (x forward, y left, z up)
        body = np.stack([np.ones_like(x), -x, -y], axis=-1)
        return body @ self.R().T

    def to_optical(self, pts):
        body = (pts - self.centre()) @ self.R()  # R^T (p - c)
        return np.stack([-body[..., 1], -body[..., 2], body[..., 0]], axis=-1)

    def in_view(self, pts):
        """Whether ground points project into the label map (hand pinhole formula; OpenCV's
        forward models for distortion, inside the angle the image border covers)."""
        o = self.to_optical(pts)
        front = o[..., 2] > 1e-6
        z = np.where(front, o[..., 2], 1.0)
        x, y = o[..., 0] / z, o[..., 1] / z
        Kl = self.label_K()
        if not any(self.D):
            u, v = Kl[0, 0] * x + Kl[0, 1] * y + Kl[0, 2], Kl[1, 1] * y + Kl[1, 2]
            ok = front
        else:
            r = np.hypot(x, y)
            angle = np.arctan(r)
            ok = front & (angle <= self.border_angle() + 0.02)
            p = np.stack([x[ok], y[ok], np.ones(int(ok.sum()))], axis=1).reshape(-1, 1, 3)
            K0 = Kl.copy()
            K0[0, 1] = 0.0  # OpenCV's pinhole projectPoints ignores skew: added below by hand
            if self.model == "equidistant":
                img, _ = cv2.fisheye.projectPoints(p, np.zeros(3), np.zeros(3), K0,
                                                   np.array(self.D).reshape(4, 1))
            else:
                img, _ = cv2.projectPoints(p, np.zeros(3), np.zeros(3), K0, np.array(self.D))
            img = img.reshape(-1, 2)
            u = np.full(x.shape, -10.0)
            v = np.full(x.shape, -10.0)
            v[ok] = img[:, 1]
            u[ok] = img[:, 0] + Kl[0, 1] * (img[:, 1] - Kl[1, 2]) / Kl[1, 1]
        Lw, Lh = self.label
        return ok & (u >= -0.5) & (u < Lw - 0.5) & (v >= -0.5) & (v < Lh - 0.5)

    def border_angle(self):
        """Largest off-axis angle any label pixel sees (from the undistorted rays)."""
        rays = self.to_optical(self.centre() + self.pixel_rays())
        return float(np.max(np.arctan2(np.hypot(rays[..., 0], rays[..., 1]), rays[..., 2])))

    def pixel_angle(self):
        """Largest angle between the rays of neighbouring label pixels."""
        r = self.pixel_rays()
        r = r / np.linalg.norm(r, axis=-1, keepdims=True)
        dots = [np.sum(r[:, 1:] * r[:, :-1], axis=-1), np.sum(r[1:] * r[:-1], axis=-1)]
        return float(max(np.arccos(np.clip(d, -1, 1)).max() for d in dots))


# ---------------------------------------------------------------- independent scene

@dataclasses.dataclass
class Scene:
    # (x0, x1, y0, y1, class): ground rectangles painted in order on a Pavement plane
    ground: List[tuple]
    # (x0, x1, y0, y1, height, class): boxes standing on the ground
    boxes: List[tuple] = dataclasses.field(default_factory=list)

    def ground_class(self, x, y):
        cls = np.full(np.shape(x), ID["Pavement"], np.uint8)
        for x0, x1, y0, y1, name in self.ground:
            cls[(x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)] = ID[name]
        return cls


def box_entry(origin, dirs, box):
    """Slab method: (t_enter, t_exit) of rays origin + t*dirs through an axis-aligned box."""
    x0, x1, y0, y1, h, _ = box
    lo, hi = np.array([x0, y0, 0.0]), np.array([x1, y1, h])
    d = np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)
    t0, t1 = (lo - origin) / d, (hi - origin) / d
    return np.max(np.minimum(t0, t1), axis=-1), np.min(np.maximum(t0, t1), axis=-1)


def render_labels(cam: Cam, scene: Scene) -> np.ndarray:
    rays = cam.pixel_rays()
    c = cam.centre()
    labels = np.full(rays.shape[:2], ID["Sky"], np.uint8)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(rays[..., 2] < -1e-12, -c[2] / rays[..., 2], np.inf)
    hit = np.isfinite(t_ground)
    gx, gy = c[0] + rays[..., 0] * np.where(hit, t_ground, 0), c[1] + rays[..., 1] * np.where(hit, t_ground, 0)
    labels[hit] = scene.ground_class(gx, gy)[hit]
    depth = t_ground
    for box in scene.boxes:
        t_in, t_out = box_entry(c, rays, box)
        front = (t_in <= t_out) & (t_in > 0) & (t_in < depth)
        labels[front] = ID[box[5]]
        depth = np.where(front, t_in, depth)
    return labels


def layout_state(cam: Cam, scene: Scene, spec: GridSpec, x, y, max_range=None):
    """Expected grid value at ground points: 0/100 seen ground, -1 unseen, FOOTPRINT."""
    pts = np.stack([x, y, np.zeros_like(x)], axis=-1)
    cls = scene.ground_class(x, y)
    state = np.where(np.isin(cls, list(DRIVABLE)), 0, 100).astype(np.int16)
    c = cam.centre()
    seg = pts - c
    for box in scene.boxes:
        t_in, t_out = box_entry(c, seg, box)
        state[(t_in <= t_out) & (t_in < 1 - 1e-9) & (t_out > 0)] = -1  # line of sight blocked
    for x0, x1, y0, y1, _, _ in scene.boxes:
        state[(x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)] = FOOTPRINT
    max_range = spec.max_range if max_range is None else max_range
    out = ~cam.in_view(pts) | (np.hypot(x - c[0], y - c[1]) > max_range)
    state[out] = -1
    return state


def expected(cam: Cam, scene: Scene, spec: GridSpec):
    """(state at cell centres, allowed values per cell as a 4-bit mask, certain mask, r_tol)."""
    xs, ys = spec.cell_centres()
    X, Y = np.meshgrid(xs, ys)
    c = cam.centre()
    d2 = (X - c[0]) ** 2 + (Y - c[1]) ** 2
    r_tol = spec.resolution + 0.71 * cam.pixel_angle() * (d2 + c[2] ** 2) / c[2]
    centre = layout_state(cam, scene, spec, X, Y)
    bit = {-1: 1, 0: 2, 100: 4, FOOTPRINT: 1 | 4}
    allowed = np.zeros(X.shape, np.uint8)
    certain = np.ones(X.shape, bool)
    offsets = [(1.0, a) for a in np.linspace(0, 2 * np.pi, 16, endpoint=False)] + \
              [(0.5, a) for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)] + [(0.0, 0.0)]
    for frac, a in offsets:
        x, y = X + frac * r_tol * math.cos(a), Y + frac * r_tol * math.sin(a)
        s = layout_state(cam, scene, spec, x, y)
        certain &= s == centre
        # a cell inside the range may read its pixel's ground just beyond it
        for s in (s, layout_state(cam, scene, spec, x, y, max_range=np.inf)):
            for value, b in bit.items():
                allowed[s == value] |= b
    return centre, allowed, certain, r_tol


def value_bits(grid):
    return np.select([grid == -1, grid == 0, grid == 100], [1, 2, 4], 0).astype(np.uint8)


def check_against_layout(grid, cam, scene, spec=SPEC):
    centre, allowed, certain, r_tol = expected(cam, scene, spec)
    assert grid.dtype == np.int8 and grid.shape == (spec.height, spec.width)
    bad = (value_bits(grid) & allowed) == 0
    exact = certain & (centre != FOOTPRINT)
    bad |= exact & (grid != centre)
    if bad.any():
        xs, ys = spec.cell_centres()
        j, i = np.nonzero(bad)
        where = [(round(xs[a], 2), round(ys[b], 2), int(grid[b, a]), int(centre[b, a]))
                 for b, a in zip(j[:8], i[:8])]
        pytest.fail(f"{bad.sum()} cells disagree with the layout (x, y, got, expected): {where}")
    return centre, certain, r_tol


def make_grid(cam, spec=SPEC):
    grid = GroundGrid(spec, GROUPS)
    assert cam.configure(grid) is True
    return grid


def cell(spec, x, y):
    """(row, column) of the cell containing ground point (x, y)."""
    return int((y - spec.y_min) // spec.resolution), int((x - spec.x_min) // spec.resolution)


ROAD_SCENE = Scene(
    ground=[(4.0, 14.0, -1.75, 1.75, "Road"),       # road strip: 3.5 m wide, from 4 m ahead
            (6.0, 10.0, -5.5, -3.0, "Parking")],    # parking rectangle on the right
    boxes=[(9.0, 9.4, 0.6, 1.1, 1.75, "Pedestrian")])  # standing on the road, taller than the camera


# ---------------------------------------------------------------- tests

def test_camera_pose_follows_tf2_rpy_and_rep103():
    for rpy in [(0.0, 0.0, 0.0), (0.1, 0.0, 0.0), (0.0, 0.3, 0.0), (0.0, 0.0, -0.7),
                (0.2, -0.4, 1.3), (-2.8, 0.9, 3.0)]:
        T = camera_pose((1.0, -2.0, 1.5), rpy)
        np.testing.assert_allclose(T[:3, :3], quaternion_matrix(*quaternion_from_rpy(*rpy)), atol=1e-12)
        np.testing.assert_allclose(T[:3, 3], (1.0, -2.0, 1.5))
        np.testing.assert_allclose(T[3], (0, 0, 0, 1))
    # positive pitch points the camera's x axis down; positive yaw turns it left
    assert camera_pose((0, 0, 1), (0, 0.2, 0))[2, 0] == pytest.approx(-math.sin(0.2))
    assert camera_pose((0, 0, 1), (0, 0, 0.2))[1, 0] == pytest.approx(math.sin(0.2))
    with pytest.raises(GridError):
        camera_pose((0, 0, float("nan")), (0, 0, 0))
    with pytest.raises(GridError):
        camera_pose((0, 0), (0, 0, 0))


def test_grid_spec_size_origin_and_validation():
    spec = GridSpec()
    assert (spec.width, spec.height) == (400, 400)
    grid = GroundGrid(spec, GROUPS)
    assert grid.origin == (0.0, -20.0) and grid.resolution == 0.1 and grid.shape == (400, 400)
    assert (GridSpec(resolution=0.25, x_max=10.1).width) == 41  # covers the whole extent
    for bad in [GridSpec(resolution=0.0), GridSpec(x_max=-1.0), GridSpec(max_range=0.0),
                GridSpec(y_min=float("nan")), GridSpec(resolution=0.001)]:
        with pytest.raises(GridError):
            GroundGrid(bad, GROUPS)


def test_road_parking_and_pedestrian_cell_by_cell():
    cam = Cam()
    grid = make_grid(cam)
    labels = render_labels(cam, ROAD_SCENE)
    assert labels.shape == (240, 320)
    assert (labels == ID["Pedestrian"]).sum() > 50 and (labels == ID["Sky"]).sum() > 1000  # horizon in view
    out = grid.compute(labels)
    centre, certain, r_tol = check_against_layout(out, cam, ROAD_SCENE)
    # the comparison covers every kind of cell, not a few
    for state, least in [(0, 2000), (100, 3000), (-1, 3000)]:
        assert (certain & (centre == state)).sum() >= least, state

    res = SPEC.resolution
    # road strip: starts 4 m ahead, 3.5 m wide (within one cell)
    for y in (-1.2, -0.5, 0.0, 0.3):
        row = cell(SPEC, 0, y)[0]
        first_free = np.argmax(out[row] == 0) * res + SPEC.x_min
        assert abs(first_free - 4.0) <= res + 1e-9, (y, first_free)
    col = cell(SPEC, 6.0, 0)[1]
    free_rows = np.nonzero(out[:, col] == 0)[0]
    road_rows = free_rows[(free_rows > cell(SPEC, 0, -2.5)[0]) & (free_rows < cell(SPEC, 0, 2.5)[0])]
    y_lo = SPEC.y_min + road_rows.min() * res
    y_hi = SPEC.y_min + (road_rows.max() + 1) * res
    assert abs(y_lo + 1.75) <= res + 1e-9 and abs(y_hi - 1.75) <= res + 1e-9, (y_lo, y_hi)
    # parking rectangle: drivable, on the right (negative y = low rows)
    r, c = cell(SPEC, 8.0, -4.2)
    assert (out[r - 5:r + 5, c - 10:c + 10] == 0).all()

    # pedestrian: the foot of its near face is 100 within one cell, in every row it covers
    for y in np.arange(0.7, 1.05, res):
        row = cell(SPEC, 0, y)[0]
        near = out[row, cell(SPEC, 9.0 - res, 0)[1]:cell(SPEC, 9.0 + res, 0)[1] + 1]
        assert (near == 100).any(), (y, near)
    # cells behind it are unknown, all the way to the edge of the view
    behind = certain & (centre == -1) & (np.arange(SPEC.width)[None, :] * res > 9.5)
    rows = slice(cell(SPEC, 0, 0.6)[0], cell(SPEC, 0, 2.5)[0])
    assert behind[rows].sum() > 200
    assert (out[rows][behind[rows]] == -1).all()
    # and the ground seen next to it stays known
    r, c = cell(SPEC, 11.0, -0.5)
    assert out[r, c] == 0


def test_ground_seen_over_a_low_obstacle_stays_known():
    # a 0.5 m fence across the road 7 m ahead: its shadow ends where the camera ray over its top
    # meets the ground, x = 7.1 * 1.6 / (1.6 - 0.5) = 10.33 m; beyond that the road is seen again
    scene = Scene(ground=[(3.0, 18.0, -2.0, 2.0, "Road")], boxes=[(7.0, 7.1, -1.5, 1.5, 0.5, "Fence")])
    cam = Cam()
    grid = make_grid(cam)
    out = grid.compute(render_labels(cam, scene))
    check_against_layout(out, cam, scene)
    row = cell(SPEC, 0, 0.05)[0]
    xs = SPEC.x_min + (np.arange(SPEC.width) + 0.5) * SPEC.resolution
    assert (out[row][(xs > 3.2) & (xs < 6.85)] == 0).all()
    assert (out[row][(xs > 6.85) & (xs < 7.25)] == 100).any()  # the fence's foot
    assert (out[row][(xs > 7.4) & (xs < 10.1)] == -1).all()    # its shadow
    assert (out[row][(xs > 10.8) & (xs < 13.0)] == 0).all()    # road seen over it


DISTORTED = {
    "plumb_bob": Cam(D=(-0.30, 0.09, 0.001, -0.0008, 0.0)),
    "rational_polynomial": Cam(model="rational_polynomial", D=(0.20, 0.02, 0.0005, 0.0003, 0.0, 0.60, 0.06, 0.0)),
    # wide fisheye: fx 230 on a 640 sensor
    # r (1 - 0.45 r^2) turns back at r = 0.86 (41 deg off axis): the image lies inside that, but
    # ground cells further to the side would fold back into the image centre if projected
    "pinhole_skew": Cam(skew=150.0),  # large, so that ignoring it moves cells by several
    "plumb_bob_skew": Cam(skew=150.0, D=(-0.30, 0.09, 0.001, -0.0008, 0.0)),
    "plumb_bob_folding": Cam(fx=800.0, fy=800.0, D=(-0.45, 0.0, 0.0, 0.0, 0.0), rpy=(0.0, 0.25, 0.0)),
    "equidistant": Cam(fx=230.0, fy=230.0, model="equidistant", D=(0.04, -0.01, 0.003, -0.0005),
                       rpy=(0.0, 0.3, 0.0)),
}


@pytest.mark.parametrize("model", sorted(DISTORTED))
def test_distortion_models_and_skew_cell_by_cell(model):
    cam = DISTORTED[model]
    # the test's own forward projection (in_view) is used only where the model is monotonic
    r = np.linspace(0, math.tan(cam.border_angle() + 0.02), 2000)
    if cam.model == "equidistant":
        t = np.arctan(r)
        k = cam.D
        rd = t * (1 + k[0] * t ** 2 + k[1] * t ** 4 + k[2] * t ** 6 + k[3] * t ** 8)
    else:
        k = cam.D + (0.0,) * (8 - len(cam.D))
        rd = r * (1 + k[0] * r ** 2 + k[1] * r ** 4 + k[4] * r ** 6) / (1 + k[5] * r ** 2 + k[6] * r ** 4 + k[7] * r ** 6)
    assert np.all(np.diff(rd) > 0)

    grid = make_grid(cam)
    labels = render_labels(cam, ROAD_SCENE)
    out = grid.compute(labels)
    centre, certain, _ = check_against_layout(out, cam, ROAD_SCENE)
    assert (certain & (centre == 0)).sum() > 2000 and (certain & (centre == -1)).sum() > 2000

    # the check is sensitive to the model: the same labels read without distortion and skew disagree
    pinhole = dataclasses.replace(cam, D=(), model="plumb_bob", skew=0.0)
    wrong = GroundGrid(SPEC, GROUPS)
    pinhole.configure(wrong)
    differ = certain & (centre != FOOTPRINT) & (wrong.compute(labels) != centre)
    assert differ.sum() > 100  # (a correct reading differs on none of these cells)


def test_binning_roi_and_label_scaling():
    # 1280x960 sensor, 2x2 binning, ROI cropping the sky away; the label map has another aspect
    # ratio than the image (a stretched model input), so K scales differently along u and v
    cam = Cam(width=1280, height=960, fx=914.0, fy=914.0, cx=639.5, cy=479.5,
              binning=(2, 2), roi=(160, 300, 960, 600), label=(240, 160))
    assert cam.camera_model().image_size() == cam.image_size() == (480, 300)
    grid = make_grid(cam)
    labels = render_labels(cam, ROAD_SCENE)
    assert labels.shape == (160, 240)
    out = grid.compute(labels)
    centre, certain, _ = check_against_layout(out, cam, ROAD_SCENE)
    assert (certain & (centre == 0)).sum() > 1500

    # sensitive to the ROI offset and binning: ignoring either gives a different grid
    for wrong_cam in (dataclasses.replace(cam, roi=(0, 0, 960, 600)),
                      dataclasses.replace(cam, binning=(0, 0), roi=(160, 300, 480, 300))):
        wrong = GroundGrid(SPEC, GROUPS)
        wrong_cam.configure(wrong)
        differ = certain & (centre != FOOTPRINT) & (wrong.compute(labels) != centre)
        assert differ.sum() > 300


def test_image_size_must_match_camera_info():
    cam = Cam(binning=(2, 2))
    grid = GroundGrid(SPEC, GROUPS)
    T = camera_pose(cam.xyz, cam.rpy)
    assert grid.configure(cam.camera_model(), T, 120, 160, image_size=(320, 240)) is True
    with pytest.raises(GridError, match="320x240"):
        grid.configure(cam.camera_model(), T, 120, 160, image_size=(640, 480))
    assert not grid.configured


def test_lookup_table_rebuilt_only_when_inputs_change():
    cam = Cam()
    grid = GroundGrid(SPEC, GROUPS)
    assert cam.configure(grid) is True
    labels = render_labels(cam, ROAD_SCENE)
    first = grid.compute(labels)
    # equal values in new objects: nothing to rebuild
    assert grid.configure(cam.camera_model(), np.array(camera_pose(cam.xyz, cam.rpy)), 240, 320) is False
    assert np.array_equal(grid.compute(labels), first)
    # pose change: rebuilt, and the grid follows the new geometry
    higher = dataclasses.replace(cam, xyz=(0.0, 0.0, 2.5))
    assert higher.configure(grid) is True
    assert not np.array_equal(grid.compute(labels), first)
    assert higher.configure(grid) is False
    # label size change
    assert grid.configure(higher.camera_model(), camera_pose(higher.xyz, higher.rpy), 120, 160) is True
    assert grid.compute(np.zeros((120, 160), np.uint8)).shape == (SPEC.height, SPEC.width)
    # CameraInfo change (distortion)
    assert dataclasses.replace(higher, D=(0.01, 0, 0, 0, 0)).configure(grid) is True
    assert cam.configure(grid) is True
    assert np.array_equal(grid.compute(labels), first)


INVALID = {
    "zero K": dict(fx=0.0, fy=0.0, cx=0.0, cy=0.0),
    "NaN in K": dict(cx=float("nan")),
    "unknown distortion model": dict(model="kannala_brandt", D=(0.1, 0.0, 0.0, 0.0)),
    "D of the wrong length": dict(model="equidistant", D=(0.1, 0.0, 0.0, 0.0, 0.0)),
    "NaN in D": dict(D=(float("nan"), 0, 0, 0, 0)),
    "zero size": dict(width=0, height=0),
    "ROI outside the sensor": dict(roi=(600, 0, 100, 100)),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_camera_info_raises_and_stops_the_grid(case):
    grid = GroundGrid(SPEC, GROUPS)
    Cam().configure(grid)
    with pytest.raises(GridError):
        dataclasses.replace(Cam(), **INVALID[case]).configure(grid)
    with pytest.raises(GridError, match="not configured"):  # no stale table from the old camera
        grid.compute(np.zeros((240, 320), np.uint8))


@pytest.mark.parametrize("xyz,rpy", [
    ((0.0, 0.0, 1.6), (0.0, -0.8, 0.0)),      # pitched up: every ray above the horizon
    ((0.0, 0.0, 1.6), (0.0, 0.2, math.pi)),   # looking backwards at ground outside the grid
    ((0.0, 0.0, -0.2), (0.0, 0.2, 0.0)),      # below the ground plane
])
def test_camera_that_sees_no_ground_cell_raises(xyz, rpy):
    grid = GroundGrid(SPEC, GROUPS)
    cam = Cam(xyz=xyz, rpy=rpy)
    for _ in range(2):  # the same failing inputs fail again (without a rebuild)
        with pytest.raises(GridError, match="ground"):
            cam.configure(grid)
    assert not grid.configured


def test_compute_checks_its_input():
    grid = GroundGrid(SPEC, GROUPS)
    with pytest.raises(GridError, match="not configured"):
        grid.compute(np.zeros((240, 320), np.uint8))
    Cam().configure(grid)
    for bad in (np.zeros((240, 321), np.uint8), np.zeros((240, 320), np.int32), np.zeros((240, 320, 3), np.uint8)):
        with pytest.raises(GridError):
            grid.compute(bad)
    # a letterboxed model output passes the inner part as a view with a wider row stride
    labels = render_labels(Cam(), ROAD_SCENE)
    padded = np.zeros((260, 360), np.uint8)
    padded[10:250, 20:340] = labels
    view = padded[10:250, 20:340]
    assert not view.flags.c_contiguous
    assert np.array_equal(grid.compute(view), grid.compute(labels))


def test_sample_street_scene_end_to_end():
    """The project's ray-cast sample drive (its own camera and layout) through the grid."""
    cam = sample.SampleCamera(width=480, height=270)
    info = sample.camera_info_dict(cam)
    spec = GridSpec(resolution=0.1, x_min=0.0, x_max=16.0, y_min=-12.0, y_max=12.0, max_range=20.0)
    grid = GroundGrid(spec, GROUPS)
    model = CameraModel.from_fields(info["width"], info["height"], info["k"], info["d"], info["distortion_model"])
    assert grid.configure(model, camera_pose(cam.pose_xyz, cam.pose_rpy), cam.height, cam.width)
    _, labels = sample.render_frame(0, cam)  # frame 0: pedestrian at x 14..14.4, car beyond 30 m
    out = grid.compute(labels)

    xs, ys = spec.cell_centres()
    X, Y = np.meshgrid(xs, ys)
    # the sample's layout: road |y| <= 3.5, parking bays (and their road-painted lines) -9 < y < -4,
    # pavement elsewhere, buildings from |y| = 11
    drivable = (np.abs(Y) <= 3.5) | ((Y > -9.0) & (Y < -4.0))
    edges = np.array([-11.0, -9.0, -4.0, -3.5, 3.5, 11.0])
    h, f = cam.mount_height, cam.fx
    d2 = X ** 2 + Y ** 2
    # one cell plus half a pixel's ground footprint (pixel angle 1/f; label map = image here)
    r_tol = spec.resolution + 0.71 * (d2 + h * h) / (h * f)
    near_edge = np.min(np.abs(Y[..., None] - edges), axis=-1) <= r_tol
    # in view: hand pinhole projection with the sample's pitch
    c, s = math.cos(cam.pitch), math.sin(cam.pitch)
    fwd, up = c * X - s * (-h), s * X + c * (-h)  # body -> pitched camera axes
    u = f * (-Y) / fwd + (cam.width - 1) / 2
    v = f * (-up) / fwd + (cam.height - 1) / 2
    margin = 3.0
    in_view = (fwd > 0) & (u > margin) & (u < cam.width - 1 - margin) & (v > margin) & (v < cam.height - 1 - margin)
    region = in_view & (X > 3.0) & (X < 13.0) & ~near_edge & (np.hypot(X, Y) < spec.max_range - r_tol)
    ground = region & (np.abs(Y) < 11.0)
    assert ground.sum() > 5000
    assert np.array_equal(out[ground], np.where(drivable[ground], 0, 100).astype(np.int8))
    inside_building = region & (np.abs(Y) > 11.0)  # behind the buildings' faces
    assert inside_building.sum() > 50 and (out[inside_building] == -1).all()


def test_unsure_pixels_leave_their_cells_unknown_never_drivable():
    cam = Cam()
    grid = make_grid(cam)
    labels = render_labels(cam, ROAD_SCENE)
    sure = grid.compute(labels)
    unsure = labels.copy()
    unsure[:, : labels.shape[1] // 2][labels[:, : labels.shape[1] // 2] == ID["Road"]] = UNKNOWN_ID
    out = grid.compute(unsure)
    changed = out != sure
    # what changed became unknown, nothing became drivable or blocked on a guess
    assert changed.sum() > 500 and (out[changed] == -1).all()
    assert (sure[changed] == 0).sum() > 500
    assert (grid.compute(np.full_like(labels, UNKNOWN_ID)) == -1).all()


def test_a_cell_with_one_unsure_edge_is_unknown_not_drivable():
    """Unsure road rows interleaved with sure ones: a cell whose near edge is sure road and far
    edge unsure (or the other way round) must stay -1; taking the unsure edge as 'nothing
    seen' would call it drivable."""
    cam = Cam()
    grid = make_grid(cam)
    labels = render_labels(cam, ROAD_SCENE)
    sure = grid.compute(labels)
    striped = labels.copy()
    rows = np.zeros(labels.shape, bool)
    rows[::2] = True
    striped[rows & (labels == ID["Road"])] = UNKNOWN_ID
    out = grid.compute(striped)
    free_before, free_after = int((sure == 0).sum()), int((out == 0).sum())
    assert free_before > 2000
    # measured: 45% of the free cells stay free (both edges on sure rows); were an unsure edge
    # taken as 'nothing seen', 82% would
    assert free_after < 0.6 * free_before, (free_before, free_after)
    assert not ((out == 0) & (sure != 0)).any()


# ---------------------------------------------------------------- per-frame policy (CameraGrid)

def _camera_info(cam: Cam):
    """The fields of a sensor_msgs/CameraInfo, duck-typed as CameraGrid reads them."""
    from types import SimpleNamespace

    roi = SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False)
    return SimpleNamespace(width=cam.width, height=cam.height, k=[cam.fx, 0, cam.cx, 0, cam.fy, cam.cy, 0, 0, 1],
                           d=[], distortion_model="plumb_bob", binning_x=0, binning_y=0, roi=roi)


def test_camera_grid_policy_freshness_pose_and_size():
    """The policy the node and process-bag share: no grid before a CameraInfo or after it went
    stale (WARN naming the topic), a pose source that fails is an ERROR with its reason, a frame
    of another size than the CameraInfo gets none, and the lookup table is built only once."""
    from seg_perception.core.camera_grid import CameraGrid
    from seg_perception.core.camera_info_watch import ERROR, OK, WARN

    cam = Cam()
    labels = render_labels(cam, ROAD_SCENE)
    grid = CameraGrid(SPEC, GROUPS, "base_link", cam.xyz, cam.rpy, camera_info_timeout=1.0,
                      camera_info_topic="/front/camera_info", clock=lambda: 0.0)
    none_yet = grid.compute(labels, cam.width, cam.height, t=0.0)
    assert none_yet.cells is None and none_yet.state == WARN and "never received" in none_yet.status
    assert "/front/camera_info" in none_yet.status

    grid.set_camera_info(_camera_info(cam), t=10.0)
    made = grid.compute(labels, cam.width, cam.height, t=10.5)
    assert made.state == OK and made.error is None and made.rebuilt
    expected = GroundGrid(SPEC, GROUPS)
    cam.configure(expected)
    assert np.array_equal(made.cells, expected.compute(labels))
    again = grid.compute(labels, cam.width, cam.height, t=10.9)
    assert again.cells is not None and not again.rebuilt and grid.builds == 1

    stale = grid.compute(labels, cam.width, cam.height, t=11.2)  # 1.2 s after it, timeout 1 s
    assert stale.cells is None and stale.state == WARN and "1.2 s ago" in stale.status

    grid.set_camera_info(_camera_info(cam), t=11.3)
    other_size = grid.compute(labels, 320, 240, t=11.4)
    assert other_size.cells is None and other_size.state == ERROR and "640x480" in other_size.error

    def no_tf(header):
        raise RuntimeError(f"no transform for {header}")
    grid.pose_source = no_tf
    failed = grid.compute(labels, cam.width, cam.height, header="front_optical", t=11.5)
    assert failed.cells is None and failed.state == ERROR and "no transform for front_optical" in failed.status
    # a pose source that answers moves the camera: the table is rebuilt for the new pose
    higher = dataclasses.replace(cam, xyz=(0.0, 0.0, 2.5))
    grid.pose_source = lambda header: camera_pose(higher.xyz, higher.rpy)
    moved = grid.compute(labels, cam.width, cam.height, t=11.6)
    assert moved.rebuilt and grid.builds == 2
    higher.configure(expected)
    assert np.array_equal(moved.cells, expected.compute(labels))

    uncalibrated = _camera_info(cam)
    uncalibrated.width = uncalibrated.height = 0
    grid.set_camera_info(uncalibrated, t=11.7)
    broken = grid.compute(labels, cam.width, cam.height, t=11.8)
    assert broken.cells is None and broken.state == ERROR and "invalid CameraInfo" in broken.status
