"""Pictures of what the node publishes: colourised labels, masks, the occupancy grid, and a
side-by-side composite. Used by the demo and by process-bag --render."""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

GRID_COLORS = {0: (60, 200, 60), 100: (30, 30, 30), -1: (150, 150, 150)}  # RGB


def grid_picture(cells: np.ndarray) -> np.ndarray:
    """int8 [rows=y, cols=x] occupancy -> RGB picture seen from above, forward up, left left."""
    img = np.empty(cells.shape + (3,), np.uint8)
    for value, color in GRID_COLORS.items():
        img[cells == value] = color
    # cells[y index, x index] (y left, x forward) -> picture[row, col] with x up and y to the left:
    # picture[r, c] = cells[H-1-c, W-1-r]
    return np.ascontiguousarray(img[::-1, ::-1].transpose(1, 0, 2))


def map_picture(cells: np.ndarray) -> np.ndarray:
    """int8 occupancy 0..100 / -1 (the drivable map) -> RGB from above, x up, y left: green
    drivable through black not drivable by probability, grey unknown."""
    known = cells >= 0
    p = np.where(known, cells, 0).astype(np.float32)[..., None] / 100.0
    free, occ = np.array(GRID_COLORS[0], np.float32), np.array(GRID_COLORS[100], np.float32)
    img = (free * (1.0 - p) + occ * p).astype(np.uint8)
    img[~known] = GRID_COLORS[-1]
    return np.ascontiguousarray(img[::-1, ::-1].transpose(1, 0, 2))


def fit_height(img: np.ndarray, height: int) -> np.ndarray:
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    w = max(1, int(round(img.shape[1] * height / img.shape[0])))
    return cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA)


def composite(panels: Sequence[np.ndarray], titles: Sequence[str], height: int = 360,
              grid: Optional[np.ndarray] = None) -> np.ndarray:
    """Panels side by side (each scaled to ``height``), titled."""
    tiles = []
    for img, title in zip(panels, titles):
        t = fit_height(img, height).copy()
        cv2.rectangle(t, (0, 0), (min(t.shape[1], 12 + 11 * len(title)), 26), (0, 0, 0), -1)
        cv2.putText(t, title, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.rectangle(t, (0, 0), (t.shape[1] - 1, t.shape[0] - 1), (90, 90, 90), 2)  # tile border
        tiles.append(t)
    return np.concatenate(tiles, axis=1)


def with_caption(img: np.ndarray, text: str) -> np.ndarray:
    """``img`` with a line of text on white below it (the docs' pictures' legends)."""
    bar = np.full((30, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([img, bar])


def save_rgb(path: str, rgb: np.ndarray) -> None:
    if rgb.ndim == 2:
        cv2.imwrite(path, rgb)
    else:
        cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def stack_rows(rows: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Rows (each already side by side) scaled to one width and stacked."""
    out = []
    for r in rows:
        h = max(1, int(round(r.shape[0] * width / r.shape[1])))
        out.append(cv2.resize(r, (width, h), interpolation=cv2.INTER_AREA))
    return np.concatenate(out, axis=0)
