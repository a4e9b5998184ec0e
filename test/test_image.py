"""Frame decoding for every supported encoding, row padding, and bad data."""

import cv2
import numpy as np
import pytest

from seg_perception.core.image import ImageError, frame_from_compressed, frame_from_raw
from seg_perception.core.model_info import ModelInfo, ClassInfo
from seg_perception.core.segmenter import Fit


def smooth_rgb(h=48, w=64):
    """A smooth colour gradient (demosaicing and chroma subsampling are exact enough on it)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 255 // (w - 1)), (y * 255 // (h - 1)), np.full_like(x, 90)], -1).astype(np.uint8)


def padded(arr2d: np.ndarray, pad: int) -> tuple:
    h, row = arr2d.shape
    buf = np.full((h, row + pad), 7, np.uint8)  # padding bytes that must be ignored
    buf[:, :row] = arr2d
    return buf.tobytes(), row + pad


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """Independent encoder: RGB -> the encoding's byte layout, one row per image row."""
    h, w, _ = rgb.shape
    r, g, b = [rgb[:, :, i].astype(np.int32) for i in range(3)]
    if encoding == "rgb8":
        return rgb.reshape(h, -1)
    if encoding == "bgr8":
        return rgb[:, :, ::-1].reshape(h, -1)
    if encoding == "rgba8":
        return np.dstack([rgb, np.full((h, w), 255, np.uint8)]).reshape(h, -1)
    if encoding == "bgra8":
        return np.dstack([rgb[:, :, ::-1], np.full((h, w), 255, np.uint8)]).reshape(h, -1)
    if encoding == "mono8":
        return rgb[:, :, 1].copy()
    if encoding.startswith("bayer_"):
        pattern = encoding[6:10]  # e.g. rggb: row0 = r g, row1 = g b
        chan = {"r": r, "g": g, "b": b}
        out = np.zeros((h, w), np.uint8)
        for dy in (0, 1):
            for dx in (0, 1):
                out[dy::2, dx::2] = chan[pattern[dy * 2 + dx]][dy::2, dx::2]
        return out
    # BT.601 video-range YUV (what cv_bridge/OpenCV's 4:2:2 conversions assume), chroma
    # averaged over each pixel pair
    yy = np.clip(16 + 0.257 * r + 0.504 * g + 0.098 * b, 0, 255)
    u = np.clip(128 - 0.148 * r - 0.291 * g + 0.439 * b, 0, 255)
    v = np.clip(128 + 0.439 * r - 0.368 * g - 0.071 * b, 0, 255)
    u2 = (u[:, 0::2] + u[:, 1::2]) / 2
    v2 = (v[:, 0::2] + v[:, 1::2]) / 2
    out = np.zeros((h, w * 2), np.uint8)
    if encoding == "yuv422":  # UYVY
        out[:, 0::4], out[:, 1::4], out[:, 2::4], out[:, 3::4] = u2, yy[:, 0::2], v2, yy[:, 1::2]
    else:  # yuv422_yuy2: YUYV
        out[:, 0::4], out[:, 1::4], out[:, 2::4], out[:, 3::4] = yy[:, 0::2], u2, yy[:, 1::2], v2
    return out


@pytest.mark.parametrize("encoding,tol", [
    ("rgb8", 0), ("bgr8", 0), ("rgba8", 0), ("bgra8", 0), ("mono8", 0),
    ("yuv422", 6), ("yuv422_yuy2", 6),
    ("bayer_rggb8", 12), ("bayer_bggr8", 12), ("bayer_gbrg8", 12), ("bayer_grbg8", 12),
])
@pytest.mark.parametrize("pad", [0, 5])
def test_every_encoding_decodes_to_rgb(encoding, tol, pad):
    rgb = smooth_rgb()
    data, step = padded(encode(rgb, encoding), pad)
    frame = frame_from_raw(data, rgb.shape[0], rgb.shape[1], step, encoding)
    out = frame.rgb()
    assert out.shape == rgb.shape and out.dtype == np.uint8
    want = np.repeat(rgb[:, :, 1:2], 3, axis=2) if encoding == "mono8" else rgb
    inner = (slice(2, -2), slice(2, -2))  # demosaicing borders are approximations
    diff = np.abs(out[inner].astype(int) - want[inner].astype(int))
    if tol:
        assert diff.mean() <= 2.0 and np.percentile(diff, 99) <= tol, (diff.mean(), diff.max())
    else:
        assert diff.max() == 0
    # (red follows x over 0..255 while blue is constant: a swapped pattern fails the bound above)


def test_raw_frame_is_a_view_on_the_message_buffer():
    rgb = smooth_rgb()
    data, step = padded(rgb.reshape(rgb.shape[0], -1), 3)
    buf = bytearray(data)
    frame = frame_from_raw(buf, 48, 64, step, "rgb8")
    assert np.shares_memory(frame.native, np.frombuffer(buf, np.uint8))
    np.testing.assert_array_equal(frame.rgb(), rgb)


@pytest.mark.parametrize("encoding", ["bgr8", "rgba8", "bgra8", "mono8", "rgb8"])
def test_resize_then_convert_matches_convert_then_resize(encoding):
    rgb = smooth_rgb(96, 128)
    data = encode(rgb, encoding).tobytes()
    step = len(data) // 96
    info = ModelInfo(classes=(ClassInfo("a", (0, 0, 0)),), input_height=24, input_width=32)
    fit = Fit(96, 128, info)
    small = frame_from_raw(data, 96, 128, step, encoding).resized_rgb(fit).copy()
    ref = fit.to_model(frame_from_raw(data, 96, 128, step, encoding).rgb()).copy()
    assert np.abs(small.astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.parametrize("kwargs,needle", [
    (dict(height=4, width=4, step=12, encoding="rgb16"), "unsupported encoding"),
    (dict(height=4, width=4, step=12, encoding="32FC1"), "unsupported encoding"),
    (dict(height=0, width=4, step=12, encoding="rgb8"), "zero-size"),
    (dict(height=4, width=0, step=0, encoding="rgb8"), "zero-size"),
    (dict(height=4, width=4, step=8, encoding="rgb8"), "step 8 is smaller"),
    (dict(height=5, width=4, step=12, encoding="rgb8"), r"shorter than height\*step"),
])
def test_bad_raw_frames_are_rejected_with_a_reason(kwargs, needle):
    with pytest.raises(ImageError, match=needle):
        frame_from_raw(bytes(48), **kwargs)


def test_compressed_jpeg_and_png_decode_and_corrupt_data_is_rejected():
    rgb = smooth_rgb()
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(frame_from_compressed(png.tobytes(), "png").rgb(), rgb)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert np.abs(frame_from_compressed(jpg.tobytes(), "jpeg").rgb().astype(int) - rgb).mean() < 3
    with pytest.raises(ImageError, match="cannot decode"):
        frame_from_compressed(b"\xff\xd8\xff\xe0" + bytes(200), "jpeg")
    with pytest.raises(ImageError, match="empty"):
        frame_from_compressed(b"", "jpeg")
