"""A sample camera stream the project makes itself: a street scene ray-cast from a known ground
layout (road with lane markings, parking bays, pavement, buildings, a parked car and a pedestrian
crossing), seen by a pinhole camera driving forward. Used by the demo, the sample bag and tests.

It comes with its ground-truth label image (class names from the CamVid+Parking list) and the
camera's intrinsics and pose, so the same frames can check masks and the occupancy grid.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Tuple

import numpy as np

from .datasets import CAMVID_PARKING_CLASSES

CLASS_ID = {name: i for i, (name, _) in enumerate(CAMVID_PARKING_CLASSES)}

# A photograph-like colour per scene class (not the palette colours).
_TEXTURE = {
    "Sky": (170, 200, 235),
    "Building": (150, 112, 92),
    "Road": (92, 92, 98),
    "Pavement": (172, 164, 150),
    "Parking": (70, 78, 86),
    "Car": (40, 62, 170),
    "Pedestrian": (205, 60, 55),
}
_MARKING = (235, 235, 230)


@dataclasses.dataclass(frozen=True)
class SampleCamera:
    width: int = 1920
    height: int = 1080
    hfov_deg: float = 90.0
    mount_height: float = 1.5  # m above the ground
    pitch: float = 0.08        # rad, nose down (REP 103)
    speed: float = 8.0         # m/s
    rate: float = 10.0         # frames per second
    # where the camera sits on the car (base_link: x forward, y left) and where it looks: the
    # defaults are the front camera of the sample drive; a rig adds side and rear cameras
    x: float = 0.0             # m
    y: float = 0.0             # m
    yaw: float = 0.0           # rad, counter-clockwise from forward

    @property
    def fx(self) -> float:
        return self.width / 2.0 / math.tan(math.radians(self.hfov_deg) / 2.0)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, (self.width - 1) / 2.0],
                         [0.0, self.fx, (self.height - 1) / 2.0],
                         [0.0, 0.0, 1.0]])

    @property
    def pose_xyz(self) -> Tuple[float, float, float]:
        return (self.x, self.y, self.mount_height)

    @property
    def pose_rpy(self) -> Tuple[float, float, float]:
        return (0.0, self.pitch, self.yaw)


def _rays(cam: SampleCamera) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-free ray directions in the body frame (x forward, y left, z up) for every pixel."""
    u = np.arange(cam.width, dtype=np.float32)
    v = np.arange(cam.height, dtype=np.float32)
    K = cam.K
    xo = ((u - K[0, 2]) / K[0, 0])[None, :]
    yo = ((v - K[1, 2]) / K[1, 1])[:, None]
    # optical (x right, y down, z forward) -> body (x forward, y left, z up)
    bx, by, bz = np.ones_like(yo), -xo, -yo
    c, s = math.cos(cam.pitch), math.sin(cam.pitch)
    # pitch about body y: positive pitch turns x toward -z (looking down)
    dx = c * bx + s * bz
    dz = -s * bx + c * bz
    dx, by, dz = (np.broadcast_to(a, (cam.height, cam.width)) for a in (dx, by, dz))
    if cam.yaw:  # then yaw about body z (the car's frame); the front camera skips it: bit for bit as before
        cy, sy = math.cos(cam.yaw), math.sin(cam.yaw)
        dx, by = cy * dx - sy * by, sy * dx + cy * by
    return dx, by, dz


def render_frame(index: int, cam: SampleCamera = SampleCamera(), seed: int = 0
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """(rgb HxWx3 uint8, labels HxW uint8 in CamVid+Parking ids) of frame ``index``."""
    t = index / cam.rate
    travelled = cam.speed * t
    scene = _RayCast(cam)
    scene.ground(travelled)
    # buildings along both sides
    scene.box(-50, 250, 11.0, 14.0, 12.0, "Building")
    scene.box(-50, 250, -14.0, -11.0, 12.0, "Building")
    # a parked car in a bay, passing by
    car_x = 30.0 - math.fmod(travelled, 40.0)
    scene.box(car_x, car_x + 4.5, -8.5, -6.5, 1.5, "Car")
    # a pedestrian crossing ahead
    ped_x = 14.0 - math.fmod(travelled * 0.25, 6.0)
    ped_y = 2.5 - math.fmod(t * 1.2, 5.0)
    scene.box(ped_x, ped_x + 0.4, ped_y - 0.3, ped_y + 0.3, 1.75, "Pedestrian")
    return scene.paint(np.random.default_rng(seed + index)), scene.labels


class _RayCast:
    """One frame's rays from the camera (street coordinates relative to the vehicle): what each
    pixel sees first (labels), how far (depth), and whether it is road paint."""

    def __init__(self, cam: SampleCamera) -> None:
        self.cam = cam
        self.dx, self.dy, self.dz = _rays(cam)
        self.labels = np.full((cam.height, cam.width), CLASS_ID["Sky"], np.uint8)
        self.marking = np.zeros((cam.height, cam.width), bool)
        self.depth = np.full((cam.height, cam.width), np.inf, np.float32)

    def ground(self, travelled: float) -> None:
        """The ground plane z = 0: road, pavement, parking bays and their paint."""
        cam, dx, dy, dz = self.cam, self.dx, self.dy, self.dz
        with np.errstate(divide="ignore", invalid="ignore"):
            tg = np.where(dz < -1e-6, cam.mount_height / -dz, np.inf)
        ground = np.isfinite(tg)
        tg = np.where(ground, tg, 0.0)  # keep the arithmetic below finite; masked by `ground`
        gx = cam.x + dx * tg
        gy = cam.y + dy * tg
        wx = gx + travelled  # world x along the street
        ground &= tg * np.hypot(dx, dy) < 200.0 if cam.yaw else gx < 200.0
        ground_cls = np.full(self.labels.shape, CLASS_ID["Pavement"], np.uint8)
        road = np.abs(gy) <= 3.5
        ground_cls[road] = CLASS_ID["Road"]
        # parking bays on the right side: 2.5 m wide, 5 m deep, every 3 m along the street
        bay = (gy < -4.0) & (gy > -9.0) & (np.mod(wx, 3.0) > 0.15)
        ground_cls[bay] = CLASS_ID["Parking"]
        bay_line = (gy < -4.0) & (gy > -9.0) & ~bay
        lane_dash = (np.abs(gy) < 0.08) & (np.mod(wx, 6.0) < 3.0)
        edge = (np.abs(np.abs(gy) - 3.4) < 0.08)
        ground_cls[bay_line] = CLASS_ID["Road"]  # painted lines between bays count as road (CamVid)
        self.labels[ground] = ground_cls[ground]
        self.marking[ground] = (lane_dash | edge | bay_line)[ground]
        self.depth[ground] = tg[ground]

    def box(self, x0: float, x1: float, y0: float, y1: float, z1: float, name: str) -> None:
        """Axis-aligned box standing on the ground, in vehicle-relative coordinates."""
        cam, dx, dy, dz, h = self.cam, self.dx, self.dy, self.dz, self.cam.mount_height
        hit = np.full(self.labels.shape, np.inf, np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            for plane_x in (x0, x1):
                tt = (plane_x - cam.x) / dx
                yy, zz = cam.y + dy * tt, h + dz * tt
                ok = (tt > 0) & (yy >= y0) & (yy <= y1) & (zz >= 0) & (zz <= z1)
                hit = np.where(ok & (tt < hit), tt, hit)
            for plane_y in (y0, y1):
                tt = (plane_y - cam.y) / dy
                xx, zz = cam.x + dx * tt, h + dz * tt
                ok = (tt > 0) & (xx >= x0) & (xx <= x1) & (zz >= 0) & (zz <= z1)
                hit = np.where(ok & (tt < hit), tt, hit)
        closer = hit < self.depth
        self.labels[closer] = CLASS_ID[name]
        self.marking[closer] = False
        self.depth[closer] = hit[closer]

    def paint(self, rng: np.random.Generator) -> np.ndarray:
        """The RGB frame: a flat texture per class, white paint, a shaded sky, sensor noise."""
        cam, labels = self.cam, self.labels
        rgb = np.zeros((cam.height, cam.width, 3), np.uint8)
        for name, color in _TEXTURE.items():
            rgb[labels == CLASS_ID[name]] = color
        rgb[self.marking] = _MARKING
        sky = labels == CLASS_ID["Sky"]
        shade = np.linspace(-25, 15, cam.height, dtype=np.float32)[:, None, None]
        noise = rng.normal(0.0, 4.0, size=(cam.height, cam.width, 1)).astype(np.float32)
        img = rgb.astype(np.float32) + noise + np.where(sky[:, :, None], shade, 0.0)
        return np.clip(img, 0, 255).astype(np.uint8)


def camera_info_dict(cam: SampleCamera = SampleCamera()) -> Dict[str, object]:
    """Fields of a sensor_msgs/CameraInfo for the sample camera (no distortion)."""
    K = cam.K
    P = np.zeros((3, 4))
    P[:, :3] = K
    return {
        "width": cam.width, "height": cam.height, "distortion_model": "plumb_bob",
        "d": [0.0] * 5, "k": K.reshape(-1).tolist(), "r": np.eye(3).reshape(-1).tolist(),
        "p": P.reshape(-1).tolist(),
    }


RIG_CAMERAS = ("front", "left", "right", "rear")  # sample_rig's cameras, in its order


def sample_rig(width: int = 640, height: int = 360) -> Dict[str, SampleCamera]:
    """The four-camera car rig of config/multi_camera.yaml (front, left, right, rear), as sample
    cameras of the same street (a test holds the two to each other)."""
    return dict(zip(RIG_CAMERAS, (
        SampleCamera(width=width, height=height, x=1.8, y=0.0, mount_height=1.45, pitch=0.08, yaw=0.0),
        SampleCamera(width=width, height=height, x=1.0, y=0.95, mount_height=1.2, pitch=0.25, yaw=1.5708),
        SampleCamera(width=width, height=height, x=1.0, y=-0.95, mount_height=1.2, pitch=0.25, yaw=-1.5708),
        SampleCamera(width=width, height=height, x=-1.0, y=0.0, mount_height=1.3, pitch=0.15, yaw=3.1416),
    )))
