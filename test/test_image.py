"""Frame decoding for every supported encoding, row padding, and bad data."""

import cv2
import numpy as np
import pytest

from seg_perception.core.image import ImageError, frame_from_compressed, frame_from_raw
from seg_perception.core.model_info import ModelInfo, ClassInfo
from seg_perception.core.fit import Fit


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
    name, big = split(encoding)
    if name.endswith("16"):  # 16-bit: v * 257 spans 0..65535 and maps back to v exactly
        base = encode(rgb, name[:-2] + "8").astype(np.uint16) * 257
        return base.astype(">u2" if big else "<u2").view(np.uint8).reshape(h, -1)
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
    if encoding in ("nv12", "nv21"):  # 4:2:0: Y plane, then chroma pairs averaged over 2x2
        u4 = (u[0::2, 0::2] + u[0::2, 1::2] + u[1::2, 0::2] + u[1::2, 1::2]) / 4
        v4 = (v[0::2, 0::2] + v[0::2, 1::2] + v[1::2, 0::2] + v[1::2, 1::2]) / 4
        chroma = np.zeros((h // 2, w), np.uint8)
        first, second = (u4, v4) if encoding == "nv12" else (v4, u4)
        chroma[:, 0::2], chroma[:, 1::2] = first, second
        return np.vstack([yy.astype(np.uint8), chroma])
    u2 = (u[:, 0::2] + u[:, 1::2]) / 2
    v2 = (v[:, 0::2] + v[:, 1::2]) / 2
    out = np.zeros((h, w * 2), np.uint8)
    if encoding in ("yuv422", "uyvy"):  # UYVY
        out[:, 0::4], out[:, 1::4], out[:, 2::4], out[:, 3::4] = u2, yy[:, 0::2], v2, yy[:, 1::2]
    else:  # yuv422_yuy2: YUYV
        out[:, 0::4], out[:, 1::4], out[:, 2::4], out[:, 3::4] = yy[:, 0::2], u2, yy[:, 1::2], v2
    return out


BIG_ENDIAN = "_big_endian"  # a test-only suffix: the 16-bit encoding with is_bigendian set


def split(encoding: str):
    """(ROS encoding, is_bigendian) of a test encoding name."""
    if encoding.endswith(BIG_ENDIAN):
        return encoding[:-len(BIG_ENDIAN)], True
    return encoding, False


@pytest.mark.parametrize("encoding,tol", [
    ("rgb8", 0), ("bgr8", 0), ("rgba8", 0), ("bgra8", 0), ("mono8", 0),
    ("rgb16", 0), ("bgr16", 0), ("rgba16", 0), ("bgra16", 0), ("mono16", 0),
    ("rgb16" + BIG_ENDIAN, 0), ("mono16" + BIG_ENDIAN, 0),
    ("uyvy", 6), ("yuyv", 6), ("yuv422", 6), ("yuv422_yuy2", 6), ("nv12", 8), ("nv21", 8),
    ("bayer_rggb8", 12), ("bayer_bggr8", 12), ("bayer_gbrg8", 12), ("bayer_grbg8", 12),
])
@pytest.mark.parametrize("pad", [0, 5])
def test_every_encoding_decodes_to_rgb(encoding, tol, pad):
    rgb = smooth_rgb()
    ros_encoding, big = split(encoding)
    raw = encode(rgb, ros_encoding + (BIG_ENDIAN if big else ""))
    data, step = padded(raw, pad)
    frame = frame_from_raw(data, rgb.shape[0], rgb.shape[1], step, ros_encoding, is_bigendian=big)
    out = frame.rgb()
    assert out.shape == rgb.shape and out.dtype == np.uint8
    want = np.repeat(rgb[:, :, 1:2], 3, axis=2) if ros_encoding.startswith("mono") else rgb
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


@pytest.mark.parametrize("encoding", ["bgr8", "rgba8", "bgra8", "mono8", "rgb8", "rgb16", "bgr16", "mono16",
                                      "bgra16" + BIG_ENDIAN, "nv12", "uyvy"])
def test_resize_then_convert_matches_convert_then_resize(encoding):
    rgb = smooth_rgb(96, 128)
    ros_encoding, big = split(encoding)
    raw = encode(rgb, encoding)
    data, step = raw.tobytes(), raw.shape[1]
    info = ModelInfo(classes=(ClassInfo("a", (0, 0, 0)),), input_height=24, input_width=32)
    fit = Fit(96, 128, info)
    small = frame_from_raw(data, 96, 128, step, ros_encoding, big).resized_rgb(fit).copy()
    ref = fit.to_model(frame_from_raw(data, 96, 128, step, ros_encoding, big).rgb()).copy()
    assert np.abs(small.astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.parametrize("kwargs,needle", [
    (dict(height=4, width=4, step=12, encoding="16UC1"), "unsupported encoding"),
    (dict(height=4, width=4, step=12, encoding="32FC1"), "unsupported encoding"),
    (dict(height=2, width=4, step=12, encoding="rgb16"), "step 12 is smaller"),
    (dict(height=3, width=4, step=24, encoding="rgb16"), r"shorter than height\*step"),
    (dict(height=6, width=8, step=8, encoding="nv12"), r"shorter than height\*3/2\*step"),
    (dict(height=3, width=4, step=4, encoding="nv21"), "even height"),
    (dict(height=4, width=3, step=3, encoding="nv12"), "even width"),
    (dict(height=4, width=3, step=6, encoding="yuyv"), "even width"),
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


def test_a_ros_image_message_passes_its_byte_order_on():
    """sensor_msgs/Image's is_bigendian reaches the decoder (a 16-bit frame from a big-endian
    camera is not read byte-swapped)."""
    from sensor_msgs.msg import Image

    from seg_perception.ros.conversions import frame_from_msg

    rgb = smooth_rgb()
    msg = Image(height=48, width=64, encoding="mono16", is_bigendian=1, step=128)
    msg.data = encode(rgb, "mono16" + BIG_ENDIAN).tobytes()
    np.testing.assert_array_equal(frame_from_msg(msg).rgb()[:, :, 0], rgb[:, :, 1])
