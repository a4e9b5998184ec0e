"""Masks, class-id images and colour overlays from a class map.

Every output is computed at the model's resolution (a table lookup) and then brought to the
frame's size by nearest neighbour. Nearest-neighbour resizing picks the same source pixel for every
output, so the masks, the label image and the overlay agree pixel for pixel with each other,
exactly as if the lookup had been done on the full-size label image, at a fraction of the cost.
"""

from __future__ import annotations

import threading
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from .labels import LabelGroups


def palette_lut(colors: Sequence[Tuple[int, int, int]]) -> np.ndarray:
    """(256, 1, 3) uint8 colour table for cv2.LUT on a 3-channel image of class ids."""
    table = np.zeros((256, 1, 3), np.uint8)
    for i, c in enumerate(colors):
        table[i, 0] = c
    return table


class Postprocessor:
    def __init__(self, groups: LabelGroups, colors: Sequence[Tuple[int, int, int]]) -> None:
        self.groups = groups
        self.mask_luts: Dict[str, np.ndarray] = {g: groups.lut(g) for g in groups.groups}
        self.colors = palette_lut(colors)
        self._scratch = threading.local()

    @staticmethod
    def upsample(small: np.ndarray, height: int, width: int, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Nearest-neighbour resize to (height, width), into ``out`` when given (no allocation)."""
        if small.shape[:2] == (height, width):
            if out is None:
                return np.ascontiguousarray(small)
            out[...] = small
            return out
        if out is None:
            return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
        return cv2.resize(small, (width, height), dst=out, interpolation=cv2.INTER_NEAREST)

    def _shrink_buffer(self, h: int, w: int) -> np.ndarray:
        """The shrunk frame's buffer, reused from frame to frame (one per thread)."""
        buf = getattr(self._scratch, "shrunk", None)
        if buf is None or buf.shape[:2] != (h, w):
            buf = self._scratch.shrunk = np.empty((h, w, 3), np.uint8)
        return buf

    def mask_small(self, labels_small: np.ndarray, group: str) -> np.ndarray:
        return cv2.LUT(labels_small, self.mask_luts[group])

    def color_small(self, labels_small: np.ndarray) -> np.ndarray:
        # cv2.LUT wants as many channels in the source as in the table
        return cv2.LUT(cv2.merge([labels_small] * 3), self.colors.reshape(256, 1, 3))

    def overlay(self, rgb: np.ndarray, labels_small: np.ndarray, alpha: float,
                out: Optional[np.ndarray] = None) -> np.ndarray:
        """rgb8 image: ``rgb`` (the frame at the overlay's size) blended with its class colours,
        weight ``alpha``; the colour image is upsampled into ``out`` and blended there in place."""
        h, w = rgb.shape[:2]
        color = self.upsample(self.color_small(labels_small), h, w, out)
        return cv2.addWeighted(rgb, 1.0 - alpha, color, alpha, 0.0, dst=color)

    def shrink_buffer(self, h: int, w: int) -> np.ndarray:
        """A buffer for the frame at the overlay's size, reused from frame to frame (one per thread)."""
        return self._shrink_buffer(h, w)


def overlay_size(height: int, width: int, max_width: int) -> Tuple[int, int]:
    """(height, width) of the overlay: the frame's size, shrunk to ``max_width`` with the same
    aspect ratio (0: no limit)."""
    if max_width <= 0 or width <= max_width:
        return height, width
    return max(1, int(round(height * max_width / width))), max_width
