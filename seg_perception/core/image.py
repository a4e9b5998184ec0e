"""Camera frames from raw ROS image buffers and compressed (JPEG/PNG) data, without cv_bridge.

Raw frames stay views on the message buffer (row padding honoured through strides); colour
conversion happens after the resize to the model's size wherever the encoding allows it, so the
full-resolution work per frame is one resize, not a conversion and a resize.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import cv2
import numpy as np

class Encoding(NamedTuple):
    channels: int              # values per pixel in a packed row (1 for the rows of a 4:2:0 image)
    to_rgb: Optional[int]      # cv2 conversion of the native array to RGB; None: it is RGB
    bytes_per_value: int = 1   # 2: 16-bit values, brought to 8 bits (value / 256, as cv_bridge)
    convert_first: bool = False  # subsampled chroma or a mosaic: convert, then resize
    planar_420: bool = False   # a full-size Y plane, then a half-size interleaved chroma plane


ENCODINGS = {
    "rgb8": Encoding(3, None),
    "bgr8": Encoding(3, cv2.COLOR_BGR2RGB),
    "rgba8": Encoding(4, cv2.COLOR_RGBA2RGB),
    "bgra8": Encoding(4, cv2.COLOR_BGRA2RGB),
    "mono8": Encoding(1, cv2.COLOR_GRAY2RGB),
    "rgb16": Encoding(3, None, 2),
    "bgr16": Encoding(3, cv2.COLOR_BGR2RGB, 2),
    "rgba16": Encoding(4, cv2.COLOR_RGBA2RGB, 2),
    "bgra16": Encoding(4, cv2.COLOR_BGRA2RGB, 2),
    "mono16": Encoding(1, cv2.COLOR_GRAY2RGB, 2),
    # 4:2:2: Jazzy names uyvy/yuyv; the older yuv422 (UYVY) and yuv422_yuy2 (YUYV) mean the same
    "uyvy": Encoding(2, cv2.COLOR_YUV2RGB_UYVY, convert_first=True),
    "yuyv": Encoding(2, cv2.COLOR_YUV2RGB_YUYV, convert_first=True),
    "yuv422": Encoding(2, cv2.COLOR_YUV2RGB_UYVY, convert_first=True),
    "yuv422_yuy2": Encoding(2, cv2.COLOR_YUV2RGB_YUYV, convert_first=True),
    # 4:2:0 from ISPs and GMSL cameras: height rows of Y, then height/2 rows of UV (nv12) or VU
    # (nv21) pairs, each row 'step' bytes
    "nv12": Encoding(1, cv2.COLOR_YUV2RGB_NV12, convert_first=True, planar_420=True),
    "nv21": Encoding(1, cv2.COLOR_YUV2RGB_NV21, convert_first=True, planar_420=True),
    # OpenCV names Bayer patterns by the second row's first two pixels, hence the shift
    # (the same mapping cv_bridge uses).
    "bayer_rggb8": Encoding(1, cv2.COLOR_BayerBG2RGB, convert_first=True),
    "bayer_bggr8": Encoding(1, cv2.COLOR_BayerRG2RGB, convert_first=True),
    "bayer_gbrg8": Encoding(1, cv2.COLOR_BayerGR2RGB, convert_first=True),
    "bayer_grbg8": Encoding(1, cv2.COLOR_BayerGB2RGB, convert_first=True),
}


class ImageError(ValueError):
    """A frame that cannot be used: unknown encoding, short data, zero size, corrupt data."""


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    """16-bit values (either byte order) to 8 bits, value / 256 as cv_bridge scales them."""
    return (arr >> 8).astype(np.uint8) if arr.dtype != np.uint8 else arr


class Frame:
    """One camera frame in its native encoding, converted to RGB lazily.

    native: HxWxC values (uint8, or uint16 of either byte order), or for 4:2:0 encodings the
    (H*3/2)xWx1 bytes of both planes. ``header``: the input message's header, opaque here; the
    ROS glue copies it into every output (and a pose source may look the camera up by it)."""

    __slots__ = ("native", "encoding", "height", "width", "header", "_rgb")

    def __init__(self, native: np.ndarray, encoding: str, height: Optional[int] = None) -> None:
        self.native = native
        self.encoding = encoding
        self.header = None
        self.height, self.width = native.shape[:2]
        if height is not None:
            self.height = height
        enc = ENCODINGS[encoding]
        self._rgb: Optional[np.ndarray] = (native if enc.to_rgb is None and enc.bytes_per_value == 1
                                           else None)

    def _native_2d_or_3d(self) -> np.ndarray:
        return self.native if self.native.shape[2] != 1 else self.native[:, :, 0]

    def _convert(self, src: np.ndarray) -> np.ndarray:
        code = ENCODINGS[self.encoding].to_rgb
        src = _to_8bit(src)
        if code is None:
            return np.ascontiguousarray(src)
        if src.ndim == 2 or ENCODINGS[self.encoding].convert_first:
            src = np.ascontiguousarray(src)
        return cv2.cvtColor(src, code)

    def rgb(self) -> np.ndarray:
        """HxWx3 uint8 RGB at full resolution (computed once, only when asked for)."""
        if self._rgb is None:
            self._rgb = self._convert(self._native_2d_or_3d())
        return self._rgb

    def resized_rgb(self, fit, out: Optional[np.ndarray] = None) -> np.ndarray:
        """RGB at the model's input size, written into the fit's buffer: resize first and convert
        the small image where the encoding allows, else convert then resize."""
        if ENCODINGS[self.encoding].convert_first or self._rgb is not None:
            return fit.to_model(self.rgb(), out)
        w, h = fit.model_size_of_inner()
        return fit.to_model(self._small_rgb(h, w), out)

    def rgb_at(self, height: int, width: int, out: Optional[np.ndarray] = None) -> np.ndarray:
        """HxWx3 RGB at (height, width) (e.g. the overlay's size): resized first and the small
        image converted where the encoding allows, so a bgr8, YUV or JPEG frame is not converted
        at full resolution only to be shrunk. ``out``: where to write it when a resize is needed."""
        if (height, width) == (self.height, self.width):
            return self.rgb()
        if ENCODINGS[self.encoding].convert_first or self._rgb is not None:
            interp = cv2.INTER_AREA if (width < self.width or height < self.height) else cv2.INTER_LINEAR
            return cv2.resize(self.rgb(), (width, height), dst=out, interpolation=interp)
        return self._small_rgb(height, width)

    def _small_rgb(self, h: int, w: int) -> np.ndarray:
        src = self._native_2d_or_3d()
        if not src.dtype.isnative:  # big-endian 16-bit: OpenCV takes native byte order only
            src = src.astype(src.dtype.newbyteorder("="))
        if (h, w) != src.shape[:2]:
            interp = cv2.INTER_AREA if (w < self.width or h < self.height) else cv2.INTER_LINEAR
            src = cv2.resize(src, (w, h), interpolation=interp)
        return self._convert(src)


def frame_from_raw(data, height: int, width: int, step: int, encoding: str, is_bigendian: bool = False) -> Frame:
    """Wrap raw image bytes (any buffer: bytes, array.array, numpy) as a Frame without copying."""
    enc = encoding.lower()
    if enc not in ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r}; supported: {sorted(ENCODINGS)}")
    if height <= 0 or width <= 0:
        raise ImageError(f"zero-size image {width}x{height}")
    spec = ENCODINGS[enc]
    row = width * spec.channels * spec.bytes_per_value
    if step < row:
        raise ImageError(f"step {step} is smaller than width*channels*bytes {row} for {encoding}")
    rows = height * 3 // 2 if spec.planar_420 else height
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size < rows * step:
        need = f"height*3/2*step = {rows}*{step}" if spec.planar_420 else f"height*step = {height}*{step}"
        raise ImageError(f"image data is {buf.size} bytes, shorter than {need} = {rows * step}")
    if (spec.channels == 2 or spec.planar_420) and width % 2:
        raise ImageError(f"{encoding} needs an even width, got {width}")
    if spec.planar_420 and height % 2:
        raise ImageError(f"{encoding} needs an even height, got {height}")
    if enc.startswith("bayer") and (width < 2 or height < 2):
        raise ImageError(f"{encoding} needs at least 2x2 pixels, got {width}x{height}")
    native = buf[:rows * step].reshape(rows, step)[:, :row]  # a view: row padding is a stride
    if spec.bytes_per_value == 2:
        native = native.view(">u2" if is_bigendian else "<u2")
    return Frame(native.reshape(rows, width, spec.channels), enc, height=height)


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
