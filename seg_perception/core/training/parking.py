"""Painted parking bays: CamVid has no parking class, so training images get one.

Method. A plausible pinhole camera is drawn at random (height, pitch, roll, focal length,
principal point for a car-mounted camera at the image's resolution). A Road pixel of the frame is
back-projected onto the ground plane z = 0 and a row of parking bays (perpendicular, angled or
parallel; real-world sizes in metres) is laid out around that point with a random heading.
Every bay outline and marking line is a polygon on the ground plane; it is clipped at a near
plane in front of the camera and projected into the image with cv2.projectPoints, so bays
shrink and converge with distance as real markings do. Then, only where the frame's label is
Road:
  - bay interiors are tinted like fresh asphalt (multiplicative, so shadows and texture stay),
  - white bay markings are blended in (anti-aliased, brightness following the local road
    brightness so they sit in shadow where the road does, with random wear),
  - the bay footprint (interior and its markings) becomes class Parking.
Pixels of any other class (a car or pedestrian standing on the road, pavement, buildings) are
never touched, which also gives correct occlusion for free.

Parked cars: cars cut from the training frames (their Car label kept) are pasted into bays, far
ones first, about 1.5 m tall at the bay's distance. Parking lanes along a kerb: unmarked
parallel spaces from a Road pixel beside Pavement into the road, mostly full of parked cars.
The negatives (road paint that is not parking) are in markings.py.

Limits (see docs/model_card.md): the camera pose is guessed, not the frame's real one, so bays
need not line up with kerbs or lanes; pasted cars are any car of the training frames (a rear
view may sit in a side-on bay), lit as they were in their own frame; markings are clean
geometric lines.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .data import CLASS_ID, PARKING, ROAD

CAR = CLASS_ID["Car"]
PAVEMENT = CLASS_ID["Pavement"]

NEAR = 0.5  # m: polygons are clipped here before projection (points behind the camera)


@dataclasses.dataclass(frozen=True)
class GroundCamera:
    """Pinhole camera above a flat ground. World frame: x forward, y left, z up (REP 103), camera
    at (0, 0, height), looking forward, pitched down by ``pitch`` and rolled by ``roll``."""

    fx: float
    fy: float
    cx: float
    cy: float
    height: float
    pitch: float
    roll: float = 0.0

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def R(self) -> np.ndarray:
        """World -> camera optical frame (x right, y down, z forward)."""
        c, s = math.cos(self.pitch), math.sin(self.pitch)
        r = np.array([[0.0, -1.0, 0.0],     # right = -y
                      [-s, 0.0, -c],        # down, tilted with the pitch
                      [c, 0.0, -s]])        # forward, pointing down by the pitch
        cr, sr = math.cos(self.roll), math.sin(self.roll)
        roll = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
        return roll @ r

    @property
    def center(self) -> np.ndarray:
        return np.array([0.0, 0.0, self.height])

    def to_camera(self, world: np.ndarray) -> np.ndarray:
        return (world - self.center) @ self.R.T

    def ground_point(self, u: float, v: float) -> Optional[np.ndarray]:
        """The ground point (x, y, 0) seen at pixel (u, v), or None above the horizon."""
        ray = np.array([(u - self.cx) / self.fx, (v - self.cy) / self.fy, 1.0]) @ self.R
        if ray[2] >= -1e-6:
            return None
        return self.center + ray * (-self.height / ray[2])

    def project(self, cam_points: np.ndarray) -> np.ndarray:
        """Camera-frame points (all in front of the camera) -> pixel coordinates (OpenCV)."""
        pts, _ = cv2.projectPoints(cam_points.reshape(-1, 1, 3).astype(np.float64),
                                   np.zeros(3), np.zeros(3), self.K, None)
        return pts.reshape(-1, 2)


def random_camera(rng: np.random.Generator, height_px: int, width_px: int) -> GroundCamera:
    """A car-mounted camera plausible for a frame of this size (horizontal FOV about 45-70 deg)."""
    hfov = math.radians(rng.uniform(45.0, 70.0))
    fx = width_px / 2.0 / math.tan(hfov / 2.0)
    return GroundCamera(
        fx=fx, fy=fx * rng.uniform(0.97, 1.03),
        cx=width_px / 2.0 + rng.uniform(-0.04, 0.04) * width_px,
        cy=height_px / 2.0 + rng.uniform(-0.08, 0.08) * height_px,
        height=rng.uniform(1.1, 1.7), pitch=rng.uniform(-0.02, 0.12), roll=rng.uniform(-0.03, 0.03))


def clip_near(poly_cam: np.ndarray, near: float = NEAR) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-frame polygon to z >= near."""
    out: List[np.ndarray] = []
    n = len(poly_cam)
    for i in range(n):
        a, b = poly_cam[i], poly_cam[(i + 1) % n]
        a_in, b_in = a[2] >= near, b[2] >= near
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out).reshape(-1, 3)


def _line_quad(p: np.ndarray, q: np.ndarray, width: float) -> np.ndarray:
    """A marking line from p to q on the ground as a thin rectangle (2D ground coordinates)."""
    d = q - p
    n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9) * width / 2.0
    return np.array([p + n, q + n, q - n, p - n])


@dataclasses.dataclass
class BayLayout:
    bays: List[np.ndarray]   # ground polygons (4x2, metres) of the bay footprints
    lines: List[np.ndarray]  # ground polygons of the marking lines


def random_layout(rng: np.random.Generator, anchor_xy: np.ndarray,
                  kerb_side: Optional[float] = None) -> BayLayout:
    """A row of bays around ``anchor_xy`` (metres on the ground): perpendicular, angled or
    parallel, with real-world sizes, random heading and marking style.

    With ``kerb_side`` (+1 kerb on the left, -1 on the right) it is an unmarked parking lane
    instead: parallel spaces along the driving direction from the kerb (the anchor) into the
    road, with no lines at all (cars parked at the kerb are what marks it)."""
    if kerb_side is not None:
        along, depth = rng.uniform(5.0, 6.5), rng.uniform(1.9, 2.4)
        r = np.array([1.0, rng.normal(0.0, 0.03)])
        r /= np.linalg.norm(r)
        n = kerb_side * np.array([-r[1], r[0]])
        count = int(rng.integers(3, 9))
        origin = anchor_xy - rng.uniform(0.2, 0.8) * count * along * r - depth * n
        bays = [np.array([origin + i * along * r, origin + (i + 1) * along * r,
                          origin + (i + 1) * along * r + depth * n,
                          origin + i * along * r + depth * n]) for i in range(count)]
        return BayLayout(bays, [])
    style = rng.choice(["perpendicular", "angled", "parallel"], p=[0.45, 0.25, 0.30])
    if style == "parallel":
        along, depth, angle = rng.uniform(5.0, 6.5), rng.uniform(2.0, 2.5), math.pi / 2
    else:
        along, depth = rng.uniform(2.3, 2.8), rng.uniform(4.5, 5.5)
        angle = math.pi / 2 if style == "perpendicular" else math.radians(rng.uniform(45, 70))
    # Heading of the row: mostly along the driving direction (bays beside the lane), sometimes
    # across it (a car park seen ahead).
    heading = rng.normal(0.0, 0.2) if rng.random() < 0.75 else math.pi / 2 + rng.normal(0.0, 0.3)
    r = np.array([math.cos(heading), math.sin(heading)])
    side = 1.0 if rng.random() < 0.5 else -1.0
    n = side * np.array([-r[1], r[0]])
    count = int(rng.integers(2, 8))
    step = along / math.sin(angle) if style == "angled" else along
    back = depth * n + depth / math.tan(angle) * r  # separator direction (sheared when angled)
    depth_shift = rng.uniform(0.0, 0.5) * depth
    origin = anchor_xy - (count / 2.0) * step * r - depth_shift * n
    line_w = rng.uniform(0.10, 0.16)
    bays, lines = [], []
    for i in range(count):
        a = origin + i * step * r
        b = a + step * r
        bays.append(np.array([a, b, b + back, a + back]))
    # Separators between (and at both ends of) the bays; a back line for most rows; parallel
    # bays sometimes have a line on the lane side too.
    for i in range(count + 1):
        a = origin + i * step * r
        lines.append(_line_quad(a, a + back, line_w))
    end = origin + count * step * r
    if rng.random() < 0.7:
        lines.append(_line_quad(origin + back, end + back, line_w))
    if style == "parallel" and rng.random() < 0.5:
        lines.append(_line_quad(origin, end, line_w))
    return BayLayout(bays, lines)


def _rasterize(camera: GroundCamera, polys: List[np.ndarray], shape: Tuple[int, int],
               antialias: bool) -> np.ndarray:
    """Fill ground polygons into an HxW uint8 mask (255 inside; anti-aliased edges if asked)."""
    mask = np.zeros(shape, np.uint8)
    shift = 4
    for poly in polys:
        ground = np.concatenate([poly, np.zeros((len(poly), 1))], axis=1)
        cam = clip_near(camera.to_camera(ground))
        if len(cam) < 3:
            continue
        px = camera.project(cam)
        if not np.all(np.isfinite(px)) or np.abs(px).max() > 1e5:
            continue
        pts = np.round(px * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_AA if antialias else cv2.LINE_8,
                     shift=shift)
    return mask


def paint_parking(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                  min_fraction: float = 0.004, max_road_share: float = 0.6, attempts: int = 10,
                  cars: Optional[Sequence["CarCutout"]] = None, kerb_p: float = 0.0,
                  car_p: float = 0.5) -> Tuple[np.ndarray, np.ndarray, bool]:
    """Paint a row of parking bays onto the Road pixels of one frame.

    image: HxWx3 uint8 RGB; label: HxW uint8 model class ids. Returns (image, label, painted):
    new arrays (inputs untouched). A layout is kept when its parking covers at least
    ``min_fraction`` of the frame and at most ``max_road_share`` of the road (bays lie beside
    a lane that stays road); when no attempt fits (little or no road in view) the frame comes
    back unchanged with painted=False.

    With probability ``kerb_p`` the layout is an unmarked parking lane along a kerb (a Road
    pixel beside Pavement) instead of marked bays. With ``cars`` (cutouts from the training
    frames), each marked bay gets a parked car with probability ``car_p``, and each space of a
    kerb lane with probability max(car_p, 0.85): the car keeps its Car label and occludes
    what is behind it.
    """
    h, w = label.shape
    road = label == ROAD
    rows, cols = np.nonzero(road)
    if rows.size < min_fraction * h * w:
        return image.copy(), label.copy(), False
    kerb = rng.random() < kerb_p
    if kerb:
        beside = cv2.dilate((label == PAVEMENT).astype(np.uint8), np.ones((1, 9), np.uint8)) > 0
        rows, cols = np.nonzero(road & beside)
        if rows.size == 0:
            kerb = False
            rows, cols = np.nonzero(road)
    for _ in range(attempts):
        camera = random_camera(rng, h, w)
        k = int(rng.integers(rows.size))
        anchor = camera.ground_point(cols[k] + 0.5, rows[k] + 0.5)
        if anchor is None or not 3.0 <= anchor[0] <= 30.0:
            continue
        side = (1.0 if cols[k] < camera.cx else -1.0) if kerb else None
        layout = random_layout(rng, anchor[:2], kerb_side=side)
        footprint = _rasterize(camera, layout.bays, (h, w), antialias=False) > 0
        parking = footprint & road
        area = parking.sum()
        if area < min_fraction * h * w or area > max_road_share * road.sum():
            continue
        out_image, out_label = _apply(image, label, road, parking,
                                      _rasterize(camera, layout.lines, (h, w), True), rng)
        if cars:
            p = max(car_p, 0.85) if kerb else car_p
            occupied = [bay for bay in layout.bays if rng.random() < p]
            park_cars(out_image, out_label, camera, occupied, cars, rng)
        return out_image, out_label, True
    return image.copy(), label.copy(), False


# ----------------------------------------------------------------------------- parked cars

# Classes a pasted car may cover: the background behind a parked car. People, bikes, poles,
# signs and cars already in the frame are assumed nearer and stay in front.
_BEHIND = (ROAD, PARKING, PAVEMENT, CLASS_ID["Sky"], CLASS_ID["Building"], CLASS_ID["Tree"],
           CLASS_ID["Fence"])


@dataclasses.dataclass(frozen=True)
class CarCutout:
    """A whole car cut from a training frame: its pixels and mask (the label said Car)."""

    rgb: np.ndarray    # hxwx3 uint8
    mask: np.ndarray   # hxw bool


def car_cutouts(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                min_pixels: int = 800, max_count: int = 400) -> List[CarCutout]:
    """Cars worth pasting: connected Car regions that are compact, not cut by the frame's
    border, with a car's aspect ratio."""
    out: List[CarCutout] = []
    for image, label in zip(images, labels):
        car = (label == CAR).astype(np.uint8)
        n, comp, stats, _ = cv2.connectedComponentsWithStats(car, connectivity=8)
        H, W = label.shape
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area < min_pixels or x == 0 or y == 0 or x + w >= W or y + h >= H:
                continue
            if not 0.8 <= w / h <= 3.2 or area < 0.55 * w * h:
                continue
            out.append(CarCutout(image[y:y + h, x:x + w].copy(), comp[y:y + h, x:x + w] == i))
            if len(out) >= max_count:
                return out
    return out


def park_cars(image: np.ndarray, label: np.ndarray, camera: GroundCamera,
              bays: Sequence[np.ndarray], cars: Sequence[CarCutout],
              rng: np.random.Generator) -> None:
    """Paste a car into each ground polygon of ``bays`` (in place), far ones first so near ones
    occlude them. Its size follows the bay's distance: about 1.5 m tall at the bay's centre."""
    h, w = label.shape
    placed = []
    for bay in bays:
        centre = np.append(bay.mean(axis=0), 0.0)
        cam = camera.to_camera(centre[None])[0]
        if cam[2] < 2.0:
            continue
        placed.append((cam[2], camera.project(cam[None])[0]))
    pasted = np.zeros((h, w), bool)
    for depth, (u, v) in sorted(placed, key=lambda t: -t[0]):
        car = cars[int(rng.integers(len(cars)))]
        ch = int(round(camera.fy * rng.uniform(1.35, 1.65) / depth))
        cw = int(round(ch * car.rgb.shape[1] / car.rgb.shape[0]))
        if ch < 6 or cw < 6 or ch > 2 * h:
            continue
        rgb = cv2.resize(car.rgb, (cw, ch), interpolation=cv2.INTER_AREA if ch < car.rgb.shape[0]
                         else cv2.INTER_LINEAR)
        mask = cv2.resize(car.mask.astype(np.uint8), (cw, ch), interpolation=cv2.INTER_NEAREST) > 0
        if rng.random() < 0.5:
            rgb, mask = rgb[:, ::-1], mask[:, ::-1]
        x0, y0 = int(round(u - cw / 2)), int(round(v - 0.85 * ch))
        xs, ys = max(0, x0), max(0, y0)
        xe, ye = min(w, x0 + cw), min(h, y0 + ch)
        if xe <= xs or ye <= ys:
            continue
        sub = mask[ys - y0:ye - y0, xs - x0:xe - x0]
        lab = label[ys:ye, xs:xe]
        free = np.isin(lab, _BEHIND) | pasted[ys:ye, xs:xe]
        sel = sub & free
        gain = rng.uniform(0.8, 1.2)
        patch = np.clip(rgb[ys - y0:ye - y0, xs - x0:xe - x0].astype(np.float32) * gain, 0, 255)
        image[ys:ye, xs:xe][sel] = patch[sel].astype(np.uint8)
        lab[sel] = CAR
        pasted[ys:ye, xs:xe] |= sel


def _blend_markings(img: np.ndarray, image: np.ndarray, road: np.ndarray, line_cov: np.ndarray,
                    rng: np.random.Generator, yellow: bool = False) -> np.ndarray:
    """Blend paint (coverage from an anti-aliased raster) into ``img`` (float RGB) on road pixels:
    worn by low-frequency noise, brightness following the local road brightness (shadows)."""
    h, w = road.shape
    wear = cv2.resize(rng.uniform(0.55, 1.0, (max(2, h // 24), max(2, w // 24))).astype(np.float32),
                      (w, h), interpolation=cv2.INTER_LINEAR)
    alpha = (line_cov.astype(np.float32) / 255.0) * wear * rng.uniform(0.75, 0.95) * road
    luma = cv2.GaussianBlur(image.astype(np.float32).mean(axis=2), (0, 0), 5.0)
    level = np.clip(luma * rng.uniform(2.0, 3.0), 150.0, 250.0)
    colour = (np.array([1.0, 0.85, 0.25], np.float32) if yellow
              else np.array([1.0, 1.0, rng.uniform(0.93, 1.0)], np.float32))
    paint = level[..., None] * colour
    return img * (1.0 - alpha[..., None]) + paint * alpha[..., None]


def _apply(image, label, road, parking, line_cov, rng):
    img = image.astype(np.float32)
    # Asphalt tint inside the bays: darker/bluish-grey, multiplicative so texture and shadows stay.
    tint = np.array([1.0, 1.0, 1.0]) * rng.uniform(0.65, 0.9) + rng.normal(0.0, 0.03, 3)
    strength = rng.uniform(0.6, 1.0)
    factor = 1.0 + (tint - 1.0) * strength
    img[parking] *= factor.astype(np.float32)
    img = _blend_markings(img, image, road, line_cov, rng)
    out_image = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    out_image[~road] = image[~road]  # exact: nothing off the road changes
    out_label = label.copy()
    out_label[parking] = PARKING
    return out_image, out_label
