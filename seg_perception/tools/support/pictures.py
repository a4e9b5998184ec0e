"""Pictures of what the node publishes: colourised labels, masks, the occupancy grid, and a
side-by-side composite (the demo, process-bag --render and the docs' pictures), and evaluate's
confusion-matrix picture."""

from __future__ import annotations

import sys
from typing import Callable, Dict, List, Optional, Sequence

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


def write_picture(make: Callable[[], np.ndarray], default_name: str, argv=None) -> int:
    """The main() of a docs-picture script: ``make()`` written to argv[0] (or ``default_name``)."""
    argv = sys.argv[1:] if argv is None else argv
    out = argv[0] if argv else default_name
    save_rgb(out, make())
    print(out)
    return 0


# ----------------------------------------------------------------------------- evaluate's confusion matrix

_FONT_SCALE = 0.45
_CELL = 42
_BAR_W = 170
_TITLE_H = 54


def confusion_picture(results: Dict[str, object], title: str = "") -> np.ndarray:
    """BGR picture: the row-normalised confusion matrix as a heat map (each cell: share of the
    row's truth pixels, %), with per-class IoU bars on the right and the summary on top."""
    cmd = results["confusion_matrix"]
    rows, cols = list(cmd["rows_truth"]), list(cmd["columns_prediction"])
    counts = np.asarray(cmd["counts"], np.float64).reshape(len(rows), len(cols))
    font, scale, cell = cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, _CELL
    label_w = max(cv2.getTextSize(n, font, scale, 1)[0][0] for n in rows + cols) + 12
    top = _TITLE_H + label_w
    left = label_w + 20
    width = left + cell * len(cols) + 20 + _BAR_W + 20
    height = top + cell * len(rows) + 30
    img = np.full((height, width, 3), 255, np.uint8)
    _draw_matrix(img, counts, rows, cols, left, top, label_w)
    cv2.putText(img, "prediction", (left, height - 10), font, scale, (90, 90, 90), 1, cv2.LINE_AA)
    cv2.putText(img, "truth", (4, top - 6), font, scale, (90, 90, 90), 1, cv2.LINE_AA)
    _draw_iou_bars(img, results["per_class_iou"], rows, left + cell * len(cols) + 20, top)
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}"
    masks = results.get("mask_iou", {})
    summary = (f"mIoU {pct(results['miou'])}   pixel accuracy {pct(results['pixel_accuracy'])}   "
               + "   ".join(f"{g} {pct(v)}" for g, v in masks.items()))
    cv2.putText(img, title[:110], (8, 20), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, summary[:120], (8, 42), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def _draw_matrix(img: np.ndarray, counts: np.ndarray, rows: List[str], cols: List[str], left: int,
                 top: int, label_w: int) -> None:
    """The heat map with its percentages, the diagonal outlined, and the row and column names."""
    font, scale, cell = cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, _CELL
    row_sums = counts.sum(1, keepdims=True)
    share = np.where(row_sums > 0, counts / np.maximum(row_sums, 1), 0.0)
    heat = cv2.applyColorMap(np.clip(share * 255, 0, 255).astype(np.uint8).reshape(len(rows), len(cols), 1),
                             cv2.COLORMAP_VIRIDIS)
    for r in range(len(rows)):
        for c in range(len(cols)):
            x0, y0 = left + c * cell, top + r * cell
            color = tuple(int(v) for v in heat[r, c])
            cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1), color, -1)
            if row_sums[r, 0] > 0:
                text = f"{100 * share[r, c]:.0f}"
                ink = (0, 0, 0) if share[r, c] > 0.6 else (255, 255, 255)
                (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
                cv2.putText(img, text, (x0 + (cell - tw) // 2, y0 + (cell + th) // 2), font, scale, ink, 1, cv2.LINE_AA)
            if r == c:
                cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1), (40, 40, 220), 2)
        (tw, th), _ = cv2.getTextSize(rows[r], font, scale, 1)
        cv2.putText(img, rows[r], (left - 8 - tw, top + r * cell + (cell + th) // 2), font, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    for c, name in enumerate(cols):  # column names written vertically, bottom to top
        (tw, th), _ = cv2.getTextSize(name, font, scale, 1)
        strip = np.full((th + 8, label_w, 3), 255, np.uint8)
        cv2.putText(strip, name, (label_w - 6 - tw, th + 2), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
        strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
        x0 = left + c * cell + (cell - strip.shape[1]) // 2
        img[_TITLE_H:_TITLE_H + strip.shape[0], x0:x0 + strip.shape[1]] = strip


def _draw_iou_bars(img: np.ndarray, iou: Dict[str, Optional[float]], rows: List[str], bx: int,
                   top: int) -> None:
    font, scale, cell = cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, _CELL
    cv2.putText(img, "IoU %", (bx, top - 6), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    for r, name in enumerate(rows):
        v = iou.get(name)
        y0 = top + r * cell + 8
        if v is not None:
            cv2.rectangle(img, (bx, y0), (bx + int(_BAR_W * 0.75 * v), y0 + cell - 16), (200, 140, 60), -1)
        text = "n/a" if v is None else f"{100 * v:.1f}"
        cv2.putText(img, text, (bx + 4 + int(_BAR_W * 0.75 * (v or 0)), y0 + cell - 20), font, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
