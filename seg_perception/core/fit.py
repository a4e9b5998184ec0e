"""How camera frames of one size meet a model's fixed input (and its class map comes back)."""

from __future__ import annotations

import collections
from typing import Deque, Optional, Tuple

import cv2
import numpy as np

from .model_info import ModelInfo


class Fit:
    """How frames of one size map onto the model's fixed input (and labels back again).

    stretch: cv2.resize to the model size (area interpolation when shrinking).
    letterbox: scale by min(W/w, H/h), keep aspect ratio, pad the rest with pad_value.
    The class map returns to the frame's size by nearest neighbour, so every output pixel is
    a class id the network really predicted (no blended, invalid ids at boundaries).
    """

    def __init__(self, src_h: int, src_w: int, info: ModelInfo) -> None:
        self.src_h, self.src_w = src_h, src_w
        self.dst_h, self.dst_w = info.input_height, info.input_width
        self.mode = info.fit
        self.pad_value = info.pad_value
        if self.mode == "letterbox":
            scale = min(self.dst_w / src_w, self.dst_h / src_h)
            self.inner_w = max(1, min(self.dst_w, int(round(src_w * scale))))
            self.inner_h = max(1, min(self.dst_h, int(round(src_h * scale))))
            self.off_x = (self.dst_w - self.inner_w) // 2
            self.off_y = (self.dst_h - self.inner_h) // 2
        else:
            self.inner_w, self.inner_h, self.off_x, self.off_y = self.dst_w, self.dst_h, 0, 0
        shrinking = self.inner_w < src_w or self.inner_h < src_h
        self.interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        # Reused model-input buffer: no per-frame allocation for the network input.
        self.buffer = self._new_buffer()
        self._inner = self.buffer[self.off_y:self.off_y + self.inner_h, self.off_x:self.off_x + self.inner_w]
        # More buffers for a pipeline that prepares the next frame while the network runs one
        # (take_buffer / give_back); their padding is filled once, like the buffer's.
        self._free: Deque[np.ndarray] = collections.deque()

    def _new_buffer(self) -> np.ndarray:
        return np.full((self.dst_h, self.dst_w, 3), self.pad_value, np.uint8)

    def take_buffer(self) -> np.ndarray:
        """A model-input buffer nobody else writes until it is given back (thread-safe)."""
        try:
            return self._free.pop()
        except IndexError:
            return self._new_buffer()

    def give_back(self, buffer: np.ndarray) -> None:
        # in use at once, per camera of this size: one in each network run, one waiting, one
        # being written (four cameras, two runs: up to 8); more than 16 is a size that comes and goes
        if len(self._free) < 16:
            self._free.append(buffer)

    def pad(self, out: np.ndarray) -> None:
        """Write the letterbox padding into ``out`` (a model-input array shared with frames of
        other sizes); nothing to do for a stretched frame."""
        if (self.inner_h, self.inner_w) == (self.dst_h, self.dst_w):
            return
        y0, y1, x0, x1 = self.off_y, self.off_y + self.inner_h, self.off_x, self.off_x + self.inner_w
        out[:y0] = self.pad_value
        out[y1:] = self.pad_value
        out[y0:y1, :x0] = self.pad_value
        out[y0:y1, x1:] = self.pad_value

    def to_model(self, image: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Resize an HxWxC uint8 image into the model input buffer (or ``out``)."""
        target = self._inner if out is None else out[self.off_y:self.off_y + self.inner_h,
                                                     self.off_x:self.off_x + self.inner_w]
        if image.shape[0] == self.inner_h and image.shape[1] == self.inner_w:
            target[...] = image
        else:
            cv2.resize(image, (self.inner_w, self.inner_h), dst=target, interpolation=self.interp)
        return self.buffer if out is None else out

    def model_size_of_inner(self) -> Tuple[int, int]:
        return self.inner_w, self.inner_h

    def labels_to_source(self, labels: np.ndarray) -> np.ndarray:
        """Class map at model size -> class map at the frame's size (nearest neighbour)."""
        inner = labels[self.off_y:self.off_y + self.inner_h, self.off_x:self.off_x + self.inner_w]
        if inner.shape == (self.src_h, self.src_w):
            return np.ascontiguousarray(inner)
        return cv2.resize(inner, (self.src_w, self.src_h), interpolation=cv2.INTER_NEAREST)

    def labels_inner(self, labels: np.ndarray) -> np.ndarray:
        """The part of a model-size class map that shows the frame (padding cut off)."""
        return labels[self.off_y:self.off_y + self.inner_h, self.off_x:self.off_x + self.inner_w]
