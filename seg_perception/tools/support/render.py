"""Pictures of a processed drive: camera image | overlay | drivable grid, side by side.

``process-bag --render DIR`` writes one PNG per frame and, where OpenCV can encode one, an MP4 of
the whole drive (DIR/drive.mp4), so a person can look at what the node made of a drive.
Pure numpy + OpenCV: no ROS here.
"""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

import cv2
import numpy as np

# OccupancyGrid values -> RGB: drivable, not drivable, unknown
FREE_RGB = (235, 235, 235)
OCCUPIED_RGB = (30, 30, 30)
UNKNOWN_RGB = (120, 135, 160)
GAP = 4                   # px between panels
BACKGROUND = (20, 20, 20)


def grid_picture(cells: np.ndarray, height: int, resolution: Optional[float] = None) -> np.ndarray:
    """An int8 OccupancyGrid array [rows=y, cols=x] as a bird's-eye RGB picture ``height`` px high:
    x (forward) points up, y (left) points left, as seen from above the vehicle."""
    cells = np.asarray(cells)
    view = cells.T[::-1, ::-1]  # rows: x from far to near; columns: y from left to right
    rgb = np.empty(view.shape + (3,), np.uint8)
    rgb[...] = UNKNOWN_RGB
    rgb[view == 0] = FREE_RGB
    rgb[view >= 50] = OCCUPIED_RGB
    scale = height / view.shape[0]
    width = max(1, int(round(view.shape[1] * scale)))
    pic = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_NEAREST)
    if resolution:  # 10 m rings would need the origin; a scale bar is enough to read distances
        metres = 10.0
        px = int(round(metres / resolution * scale))
        if 10 < px < width - 10:
            y = height - 8
            cv2.line(pic, (6, y), (6 + px, y), (220, 60, 60), 2)
            cv2.putText(pic, f"{metres:g} m", (8, y - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (220, 60, 60), 1,
                        cv2.LINE_AA)
    return pic


def _fit_height(img: np.ndarray, height: int) -> np.ndarray:
    if img.shape[0] == height:
        return img
    width = max(1, int(round(img.shape[1] * height / img.shape[0])))
    interp = cv2.INTER_AREA if height < img.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(img, (width, height), interpolation=interp)


def _caption(img: np.ndarray, text: str) -> None:
    cv2.putText(img, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)


def side_by_side(image: np.ndarray, overlay: Optional[np.ndarray] = None,
                 grid: Optional[np.ndarray] = None, height: Optional[int] = None,
                 grid_resolution: Optional[float] = None, caption: str = "") -> np.ndarray:
    """RGB panels [image | overlay | grid] at one height (default: the image's, at most 480).
    A missing overlay or grid leaves its panel out."""
    h = int(height or min(image.shape[0], 480))
    panels: List[Tuple[np.ndarray, str]] = [(_fit_height(image, h), caption or "camera")]
    if overlay is not None:
        panels.append((_fit_height(overlay, h), "segmentation"))
    if grid is not None:
        panels.append((grid_picture(grid, h, grid_resolution), "drivable grid"))
    width = sum(p.shape[1] for p, _ in panels) + GAP * (len(panels) - 1)
    out = np.empty((h, width, 3), np.uint8)
    out[...] = BACKGROUND
    x = 0
    for pic, label in panels:
        pic = np.ascontiguousarray(pic)
        _caption(pic, label)
        out[:, x:x + pic.shape[1]] = pic
        x += pic.shape[1] + GAP
    return out


class DriveRenderer:
    """PNG per frame into ``directory`` and, when OpenCV can write one, ``drive.mp4``."""

    def __init__(self, directory: str, fps: float = 10.0, height: Optional[int] = None,
                 video: bool = True) -> None:
        self.directory = directory
        self.fps = float(fps) if fps and fps > 0 else 10.0
        self.height = height
        self.video_path = os.path.join(directory, "drive.mp4")
        self.want_video = video
        self.video_error: Optional[str] = None
        self._writer = None
        self._size: Optional[Tuple[int, int]] = None
        self.frames = 0
        os.makedirs(directory, exist_ok=True)

    def add(self, image: np.ndarray, overlay: Optional[np.ndarray], grid: Optional[np.ndarray],
            grid_resolution: Optional[float] = None, caption: str = "") -> str:
        pic = side_by_side(image, overlay, grid, self.height, grid_resolution, caption)
        path = os.path.join(self.directory, f"frame_{self.frames:06d}.png")
        bgr = cv2.cvtColor(pic, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(path, bgr):
            raise OSError(f"cannot write {path}")
        self._add_video(bgr)
        self.frames += 1
        return path

    def _add_video(self, bgr: np.ndarray) -> None:
        if not self.want_video or self.video_error:
            return
        h, w = bgr.shape[:2]
        if self._writer is None:
            # even sizes: most MP4 encoders refuse odd ones
            self._size = (w - w % 2, h - h % 2)
            writer = cv2.VideoWriter(self.video_path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size)
            if not writer.isOpened():
                self.video_error = "this OpenCV build cannot write MP4 (mp4v)"
                return
            self._writer = writer
        if (w - w % 2, h - h % 2) != self._size:  # a frame of another size: fit it
            bgr = cv2.resize(bgr, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(bgr[:self._size[1], :self._size[0]]))

    def close(self) -> Optional[str]:
        """Finish the video; returns its path, or None when none was written."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            return self.video_path
        return None
