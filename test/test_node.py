"""The camera_seg node over real ROS 2 / Fast DDS: started through its console script with the
shipped params file, fed from a test process that uses no DDS profile of ours."""

from __future__ import annotations

import signal
import time

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from models import CLASS_ID, TEST_LABEL_YAML, layout_ids, make_colour_model, paint_blocks
from ros_harness import BEST_EFFORT, RELIABLE, NodeProcess

OUTPUTS = ("road_mask", "pedestrian_mask", "parking_mask", "labels", "overlay")
LAYOUT = [
    ["Sky", "Sky", "Building", "Sky", "Sky", "Sky", "Building", "Building"],
    ["Building", "Sky", "Car", "Car", "Sky", "Sky", "Person", "Building"],
    ["Sidewalk", "Person", "Road", "Road", "Road", "Car", "Person", "Sidewalk"],
    ["Sidewalk", "Road", "Road", "Road", "Road", "Road", "Parking", "Parking"],
    ["Road", "Road", "Road", "Person", "Road", "Road", "Parking", "Parking"],
    ["Road", "Road", "Road", "Road", "Road", "Road", "Road", "Sidewalk"],
]
GROUPS = {"road_mask": ["Road"], "pedestrian_mask": ["Person"], "parking_mask": ["Parking"]}


def image_msg(rgb: np.ndarray, stamp_ns: int, encoding: str = "rgb8", frame_id: str = "camera_optical",
              pad: int = 0) -> Image:
    if encoding == "bgr8":
        data = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif encoding == "rgb8":
        data = rgb
    else:
        raise ValueError(encoding)
    h, w, c = data.shape
    step = w * c + pad
    buf = np.zeros((h, step), np.uint8)
    buf[:, :w * c] = data.reshape(h, w * c)
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10 ** 9)
    msg.header.frame_id = frame_id
    msg.height, msg.width, msg.encoding, msg.step = h, w, encoding, step
    msg.data = buf.tobytes()
    return msg


def camera_info(width: int, height: int, stamp_ns: int = 0) -> CameraInfo:
    ci = CameraInfo()
    ci.header.stamp.sec, ci.header.stamp.nanosec = divmod(stamp_ns, 10 ** 9)
    ci.header.frame_id = "camera_optical"
    ci.width, ci.height = width, height
    f = width / 2.0
    ci.k = [f, 0.0, (width - 1) / 2.0, 0.0, f, (height - 1) / 2.0, 0.0, 0.0, 1.0]
    ci.p = [f, 0.0, (width - 1) / 2.0, 0.0, 0.0, f, (height - 1) / 2.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ci.r = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    ci.distortion_model = "plumb_bob"
    ci.d = [0.0] * 5
    return ci


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec


def as_array(msg: Image) -> np.ndarray:
    ch = 3 if msg.encoding == "rgb8" else 1
    arr = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :msg.width * ch]
    return arr.reshape(msg.height, msg.width, ch).squeeze(-1) if ch == 1 else arr.reshape(msg.height, msg.width, 3)


def latest_status(diag_col, suffix: str = "segmentation"):
    for arr in reversed(diag_col.snapshot()):
        for st in arr.status:
            if st.name.endswith(suffix):
                return st
    return None


def status_values(st) -> dict:
    return {kv.key: kv.value for kv in st.values}


def feed_until(peer, pub, make_msg, collectors, timeout=60.0, period=0.25):
    """Publish frames (a new stamp each) until every collector has an output of one published
    stamp; returns that stamp."""
    end = time.monotonic() + timeout
    sent = []
    i = 0
    while time.monotonic() < end:
        stamp = 1_700_000_000_000_000_000 + i * 50_000_000
        pub.publish(make_msg(stamp))
        sent.append(stamp)
        i += 1
        deadline = time.monotonic() + period
        while time.monotonic() < deadline:
            common = None
            for col in collectors:
                stamps = {stamp_of(m) for m in col.snapshot()}
                common = stamps if common is None else common & stamps
            if common:
                return max(common & set(sent))
            time.sleep(0.02)
    raise AssertionError("no complete set of outputs arrived")


def start_node(ros_domain, colour_model, **params):
    model, labels = colour_model
    p = {"model": model, "label_file": labels, "grid.enabled": False}
    p.update(params)
    return NodeProcess(ros_domain[0], ros_domain[1], params=p)


def subscribe_outputs(peer, names=OUTPUTS):
    return {n: peer.subscribe(Image, f"/camera_seg/{n}", RELIABLE) for n in names}


def check_outputs(outs, stamp, rgb, frame_id="camera_optical"):
    h, w = rgb.shape[:2]
    expected = np.kron(layout_ids(LAYOUT), np.ones((h // len(LAYOUT), w // len(LAYOUT[0])), np.uint8))
    msgs = {n: next(m for m in col.snapshot() if stamp_of(m) == stamp) for n, col in outs.items()}
    for n, m in msgs.items():
        assert m.header.frame_id == frame_id, n
        assert (m.height, m.width) == (h, w), n
        assert m.encoding == ("rgb8" if n == "overlay" else "mono8"), n
    labels = as_array(msgs["labels"])
    np.testing.assert_array_equal(labels, expected)
    for n, classes in GROUPS.items():
        mask = as_array(msgs[n])
        assert set(np.unique(mask)) <= {0, 255}
        want = np.isin(labels, [CLASS_ID[c] for c in classes])
        assert want.any()
        np.testing.assert_array_equal(mask == 255, want, err_msg=n)
    overlay = as_array(msgs["overlay"]).astype(int)
    # alpha 0.5 over a frame painted in the class colours: the overlay equals the frame
    assert np.abs(overlay - rgb.astype(int)).max() <= 1
    return msgs


def test_full_hd_rgb8_all_outputs(ros_domain, peer, colour_model):
    """1920x1080 rgb8 from a participant without our DDS profile reaches the node; every output
    arrives with the input's header, at the input size, consistent with labels and label file."""
    node = start_node(ros_domain, colour_model)
    try:
        outs = subscribe_outputs(peer)
        diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
        pub = peer.publisher(Image, "/image", RELIABLE)
        ci_pub = peer.publisher(CameraInfo, "/camera_info", RELIABLE)
        assert peer.wait_matched(pub), node.log()
        rgb = paint_blocks(LAYOUT, 180, 240)  # 1080 x 1920
        ci_pub.publish(camera_info(1920, 1080))
        try:
            stamp = feed_until(peer, pub, lambda s: image_msg(rgb, s), list(outs.values()))
        except AssertionError:
            st = latest_status(diag)
            raise AssertionError(f"{status_values(st) if st else 'no diagnostics'}\n"
                                 f"{ {n: len(c.snapshot()) for n, c in outs.items()} }\n{node.log()}")
        check_outputs(outs, stamp, rgb)
    finally:
        assert node.stop() == 0, node.log()
