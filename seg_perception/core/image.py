"""Camera frames from raw ROS image buffers and compressed (JPEG/PNG) data, without cv_bridge.

Raw frames stay views on the message buffer (row padding honoured through strides); colour
conversion happens after the resize to the model's size wherever the encoding allows it, so the
full-resolution work per frame is one resize, not a conversion and a resize.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

# encoding -> (channels, cv2 conversion to RGB applied to the native array, or None)
ENCODINGS = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    # ROS 'yuv422' is UYVY, 'yuv422_yuy2' is YUYV (as in cv_bridge)
    "yuv422": (2, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, cv2.COLOR_YUV2RGB_YUYV),
    # OpenCV names Bayer patterns by the second row's first two pixels, hence the shift
    # (the same mapping cv_bridge uses).
    "bayer_rggb8": (1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, cv2.COLOR_BayerGB2RGB),
}
# Encodings whose pixels cannot be resized before conversion (subsampled chroma, mosaics).
_CONVERT_FIRST = {"yuv422", "yuv422_yuy2", "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8"}


class ImageError(ValueError):
    """A frame that cannot be used: unknown encoding, short data, zero size, corrupt data."""


class Frame:
    """One camera frame in its native encoding, converted to RGB lazily."""

    __slots__ = ("native", "encoding", "height", "width", "_rgb")

    def __init__(self, native: np.ndarray, encoding: str) -> None:
        self.native = native
        self.encoding = encoding
        self.height, self.width = native.shape[:2]
        self._rgb: Optional[np.ndarray] = native if encoding == "rgb8" else None

    def rgb(self) -> np.ndarray:
        """HxWx3 uint8 RGB at full resolution (computed once, only when asked for)."""
        if self._rgb is None:
            code = ENCODINGS[self.encoding][1]
            src = self.native if self.native.ndim == 3 else self.native[:, :, 0]
            if self.encoding in _CONVERT_FIRST or self.native.shape[2] == 1:
                src = np.ascontiguousarray(src)
            self._rgb = cv2.cvtColor(src, code)
        return self._rgb

    def resized_rgb(self, fit, out: Optional[np.ndarray] = None) -> np.ndarray:
        """RGB at the model's input size, written into the fit's buffer: resize first and convert
        the small image where the encoding allows, else convert then resize."""
        if self.encoding in _CONVERT_FIRST or self._rgb is not None:
            return fit.to_model(self.rgb(), out)
        code = ENCODINGS[self.encoding][1]
        w, h = fit.model_size_of_inner()
        src = self.native if self.native.shape[2] != 1 else self.native[:, :, 0]
        if (h, w) == src.shape[:2]:
            small = src
        else:
            interp = cv2.INTER_AREA if (w < self.width or h < self.height) else cv2.INTER_LINEAR
            small = cv2.resize(src, (w, h), interpolation=interp)
        return fit.to_model(cv2.cvtColor(small, code), out)


def frame_from_raw(data, height: int, width: int, step: int, encoding: str) -> Frame:
    """Wrap raw image bytes (any buffer: bytes, array.array, numpy) as a Frame without copying."""
    enc = encoding.lower()
    if enc not in ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r}; supported: {sorted(ENCODINGS)}")
    if height <= 0 or width <= 0:
        raise ImageError(f"zero-size image {width}x{height}")
    channels = ENCODINGS[enc][0]
    row = width * channels
    if step < row:
        raise ImageError(f"step {step} is smaller than width*channels {row} for {encoding}")
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size < height * step:
        raise ImageError(f"image data is {buf.size} bytes, shorter than height*step = "
                         f"{height}*{step} = {height * step}")
    if enc.startswith("yuv422") and width % 2:
        raise ImageError(f"{encoding} needs an even width, got {width}")
    if enc.startswith("bayer") and (width < 2 or height < 2):
        raise ImageError(f"{encoding} needs at least 2x2 pixels, got {width}x{height}")
    rows = buf[:height * step].reshape(height, step)
    native = rows[:, :row].reshape(height, width, channels)  # a view: row padding is a stride
    return Frame(native, enc)


def frame_from_compressed(data, fmt: str = "") -> Frame:
    """Decode a sensor_msgs/CompressedImage payload (JPEG or PNG)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise ImageError("compressed image is empty")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # BGR; None when the data is corrupt
    if decoded is None:
        raise ImageError(f"cannot decode compressed image ({fmt or 'unknown format'}, "
                         f"{buf.size} bytes): corrupt or not JPEG/PNG")
    return Frame(decoded, "bgr8")


def frame_from_rgb(rgb: np.ndarray) -> Frame:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"expected HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
    return Frame(rgb, "rgb8")
