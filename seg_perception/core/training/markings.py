"""Road paint that is not parking: the negatives for the painted parking bays.

Painted bays alone teach a model "white paint on asphalt means parking" (issue #13: the old
default fired on zig-zags, lane paint and tram rails). So training frames also get the road paint
a car sees everywhere, laid out on the ground plane with the same guessed camera as the bays
(parking.GroundCamera) and blended the same way, but the label stays Road:

  - lane lines: solid, dashed or double, white or yellow, beside the ego lane or further out;
  - UK zig-zags along the kerb;
  - zebra crossings and stop / give-way lines across the road;
  - lane arrows (straight, with a head);
  - tram rails: two pairs of steel rails, 1.435 m gauge, bright with a dark groove.

Only Road pixels are touched, and no label changes, so a painted frame never teaches anything
about the other classes.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

from .data import ROAD
from .parking import GroundCamera, _blend_markings, _line_quad, _rasterize, random_camera

KINDS = ("lane_lines", "zigzag", "crossing", "arrow", "rails")


def _along(heading: float) -> Tuple[np.ndarray, np.ndarray]:
    r = np.array([math.cos(heading), math.sin(heading)])
    return r, np.array([-r[1], r[0]])


def lane_lines(rng: np.random.Generator) -> List[np.ndarray]:
    heading = rng.normal(0.0, 0.04)
    r, n = _along(heading)
    polys = []
    for _ in range(int(rng.integers(1, 4))):
        offset = rng.choice([-1.0, 1.0]) * rng.uniform(1.4, 7.0)
        width = rng.uniform(0.10, 0.20)
        style = rng.choice(["solid", "dashed", "double"], p=[0.3, 0.5, 0.2])
        start = offset * n
        if style == "dashed":
            dash, gap = rng.uniform(1.5, 4.0), rng.uniform(2.0, 9.0)
            x = rng.uniform(0.0, dash + gap)
            while x < 60.0:
                polys.append(_line_quad(start + x * r, start + (x + dash) * r, width))
                x += dash + gap
        else:
            polys.append(_line_quad(start, start + 60.0 * r, width))
            if style == "double":
                polys.append(_line_quad(start + 0.3 * n, start + 0.3 * n + 60.0 * r, width))
    return polys


def zigzag(rng: np.random.Generator) -> List[np.ndarray]:
    r, n = _along(rng.normal(0.0, 0.04))
    offset = rng.choice([-1.0, 1.0]) * rng.uniform(2.5, 5.5)
    amp, pitch, width = rng.uniform(0.3, 0.6), rng.uniform(1.5, 2.5), rng.uniform(0.1, 0.15)
    x0 = rng.uniform(0.0, 10.0)
    pts = [(offset + (amp if i % 2 else -amp)) * n + (x0 + i * pitch) * r for i in range(16)]
    return [_line_quad(a, b, width) for a, b in zip(pts[:-1], pts[1:])]


def crossing(rng: np.random.Generator) -> List[np.ndarray]:
    r, n = _along(rng.normal(0.0, 0.06))
    x0 = rng.uniform(4.0, 25.0)
    polys = []
    if rng.random() < 0.6:  # zebra: stripes along the driving direction, side by side
        length, stripe = rng.uniform(2.5, 4.0), rng.uniform(0.4, 0.6)
        y = -rng.uniform(4.0, 9.0)
        end = rng.uniform(4.0, 9.0)
        while y < end:
            centre = x0 * r + (y + stripe / 2) * n
            polys.append(_line_quad(centre, centre + length * r, stripe))
            y += 2 * stripe
    else:  # stop line (solid) or give-way line (dashed) across the road
        width = rng.uniform(0.2, 0.4)
        dashed = rng.random() < 0.5
        y = -rng.uniform(3.0, 8.0)
        end = rng.uniform(3.0, 8.0)
        while y < end:
            step = 0.6 if dashed else end - y
            polys.append(_line_quad(x0 * r + y * n, x0 * r + (y + step) * n, width))
            y += step + (0.6 if dashed else 0.0)
    return polys


def arrow(rng: np.random.Generator) -> List[np.ndarray]:
    r, n = _along(rng.normal(0.0, 0.04))
    base = rng.uniform(4.0, 20.0) * r + rng.choice([-1.0, 0.0, 1.0]) * 3.5 * n
    shaft, head, half = rng.uniform(2.5, 5.0), rng.uniform(1.2, 2.0), rng.uniform(0.4, 0.6)
    tip = base + (shaft + head) * r
    neck = base + shaft * r
    return [_line_quad(base, neck, rng.uniform(0.15, 0.25)),
            np.array([neck + half * n, tip, neck - half * n])]


def rails(rng: np.random.Generator) -> List[np.ndarray]:
    r, n = _along(rng.normal(0.0, 0.04))
    centre = rng.uniform(-3.0, 3.0)
    polys = []
    tracks = 1 if rng.random() < 0.5 else 2
    for t in range(tracks):
        c = centre + t * rng.uniform(3.0, 3.5)
        for side in (-0.7175, 0.7175):  # 1.435 m standard gauge
            start = (c + side) * n
            polys.append(_line_quad(start, start + 60.0 * r, rng.uniform(0.06, 0.09)))
    return polys


LAYOUTS = {"lane_lines": lane_lines, "zigzag": zigzag, "crossing": crossing, "arrow": arrow,
           "rails": rails}


def paint_road_markings(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                        kinds: Tuple[str, ...] = KINDS, count: int = 0,
                        min_pixels: int = 50) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Paint 1-3 kinds of road marking onto the Road pixels of a frame; the label stays Road.

    Returns (image, label, kinds painted): new arrays, inputs untouched. A frame with little
    road comes back unchanged with an empty list."""
    h, w = label.shape
    road = label == ROAD
    if road.sum() < min_pixels:
        return image.copy(), label.copy(), []
    camera: GroundCamera = random_camera(rng, h, w)
    img = image.astype(np.float32)
    painted: List[str] = []
    n = count or int(rng.integers(1, 4))
    for kind in rng.choice(list(kinds), size=min(n, len(kinds)), replace=False):
        cov = _rasterize(camera, LAYOUTS[kind](rng), (h, w), antialias=True)
        if int(((cov > 0) & road).sum()) < min_pixels:
            continue
        if kind == "rails":
            img = _paint_rails(img, image, road, cov, rng)
        else:
            img = _blend_markings(img, image, road, cov, rng, yellow=rng.random() < 0.2)
        painted.append(str(kind))
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    out[~road] = image[~road]
    return out, label.copy(), painted


def _paint_rails(img, image, road, cov, rng):
    """Steel rails: a bright polished top with a dark groove beside it."""
    import cv2

    alpha = cov.astype(np.float32) / 255.0 * road
    groove = np.clip(cv2.dilate(cov, np.ones((3, 3), np.uint8)).astype(np.float32) / 255.0
                     - alpha, 0.0, 1.0) * road
    luma = cv2.GaussianBlur(image.astype(np.float32).mean(axis=2), (0, 0), 5.0)
    steel = np.clip(luma * rng.uniform(1.4, 2.2), 90.0, 230.0)[..., None] * np.array(
        [1.0, 1.0, 1.03], np.float32)
    img = img * (1.0 - 0.6 * groove[..., None])
    return img * (1.0 - alpha[..., None]) + steel * alpha[..., None]
