"""Bags the bag tests write themselves (rosbags, both storage formats), and ways to read them back."""

from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from models import STREET_LAYOUT, layout_ids, paint_blocks

from seg_perception.core import bagio

START_NS = 1_600_000_000 * 10 ** 9     # 2020: far from the wall clock, so recorded stamps stand out
PERIOD_NS = 100_000_000                # 10 Hz
WIDTH, HEIGHT = 160, 120
IMAGE_TOPIC = "/camera/image_raw"
INFO_TOPIC = "/camera/camera_info"
LATCHED_TOPIC = "/map_static"          # a transient-local topic of an installed type
BLOCK = 20
LAYOUT = STREET_LAYOUT
# pose of the sample camera; the grid needs a camera looking at the ground
POSE_PARAMS = {"camera_pose.xyz": [0.0, 0.0, 1.5], "camera_pose.rpy": [0.0, 0.3, 0.0]}


def painted_frame(i: int) -> np.ndarray:
    """Frame i: the test layout in class colours, shifted one block per frame (so frames differ)."""
    return np.ascontiguousarray(np.roll(paint_blocks(LAYOUT, BLOCK, BLOCK), i * BLOCK, axis=1))


def expected_labels(i: int) -> np.ndarray:
    ids = np.kron(layout_ids(LAYOUT), np.ones((BLOCK, BLOCK), np.uint8))
    return np.roll(ids, i * BLOCK, axis=1)


def stamp(i: int) -> int:
    return START_NS + i * PERIOD_NS


def write_painted_bag(path: str, storage: str = "sqlite3", frames: int = 5, compressed: bool = False,
                      latched: bool = True, tf_static: bool = True, info_topic: bool = True) -> str:
    """A camera bag written with rosbags: painted rgb8 frames (or lossless PNG CompressedImage),
    CameraInfo with each frame, a transient-local OccupancyGrid and /tf_static at the start."""
    ts = bagio.typestore()
    T = ts.types

    def header(t: int, frame: str):
        sec, nsec = divmod(t, 10 ** 9)
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                       frame_id=frame)

    qos_cam = bagio.TopicQos("reliable", "volatile", "keep_last", 10)
    with bagio.BagWriter(path, storage) as bag:
        if tf_static:
            tf_conn = bag.add_topic("/tf_static", bagio.TF_MESSAGE,
                                    bagio.TopicQos("reliable", "transient_local", "keep_last", 1))
            tr = T["geometry_msgs/msg/Transform"](
                translation=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=1.5),
                rotation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
            tf = T["tf2_msgs/msg/TFMessage"](transforms=[T["geometry_msgs/msg/TransformStamped"](
                header=header(START_NS, "base_link"), child_frame_id="camera_link", transform=tr)])
            bag.write(tf_conn, START_NS, bagio.serialize(tf, bagio.TF_MESSAGE))
        if latched:
            map_conn = bag.add_topic(LATCHED_TOPIC, bagio.OCCUPANCY_GRID,
                                     bagio.TopicQos("reliable", "transient_local", "keep_last", 1))
            info = T["nav_msgs/msg/MapMetaData"](
                map_load_time=T["builtin_interfaces/msg/Time"](sec=1, nanosec=0), resolution=0.5,
                width=3, height=2, origin=T["geometry_msgs/msg/Pose"](
                    position=T["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                    orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))
            grid = T["nav_msgs/msg/OccupancyGrid"](header=header(START_NS, "map"), info=info,
                                                   data=np.array([0, 100, -1, 0, 0, 100], np.int8))
            bag.write(map_conn, START_NS, bagio.serialize(grid, bagio.OCCUPANCY_GRID))
        topic = IMAGE_TOPIC + "/compressed" if compressed else IMAGE_TOPIC
        img_type = bagio.COMPRESSED_IMAGE if compressed else bagio.IMAGE
        img_conn = bag.add_topic(topic, img_type, qos_cam)
        info_conn = bag.add_topic(INFO_TOPIC, bagio.CAMERA_INFO, qos_cam) if info_topic else None
        for i in range(frames):
            t = stamp(i)
            rgb = painted_frame(i)
            if info_conn is not None:
                bag.write(info_conn, t, bagio.serialize(camera_info_msg(T, header(t, "camera_optical")),
                                                         bagio.CAMERA_INFO))
            if compressed:
                ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                msg = T["sensor_msgs/msg/CompressedImage"](header=header(t, "camera_optical"), format="png",
                                                          data=png.reshape(-1))
            else:
                msg = T["sensor_msgs/msg/Image"](header=header(t, "camera_optical"), height=HEIGHT, width=WIDTH,
                                                encoding="rgb8", is_bigendian=0, step=WIDTH * 3,
                                                data=rgb.reshape(-1))
            bag.write(img_conn, t, bagio.serialize(msg, img_type))
    return path


def camera_info_msg(T, header):
    f = WIDTH / 2.0
    k = np.array([f, 0.0, (WIDTH - 1) / 2.0, 0.0, f, (HEIGHT - 1) / 2.0, 0.0, 0.0, 1.0])
    p = np.array([f, 0.0, (WIDTH - 1) / 2.0, 0.0, 0.0, f, (HEIGHT - 1) / 2.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return T["sensor_msgs/msg/CameraInfo"](header=header, height=HEIGHT, width=WIDTH, distortion_model="plumb_bob",
                                          d=np.zeros(5), k=k, r=np.eye(3).reshape(-1), p=p, binning_x=0,
                                          binning_y=0, roi=roi)


def read_all(path: str) -> List[Tuple[str, int, bytes]]:
    with bagio.open_bag(path) as bag:
        return [(c.topic, t, raw) for c, t, raw in bag.messages()]


def by_topic(path: str) -> Dict[str, List[Tuple[int, bytes]]]:
    out: Dict[str, List[Tuple[int, bytes]]] = {}
    for topic, t, raw in read_all(path):
        out.setdefault(topic, []).append((t, raw))
    return out


def run_cli(argv: Sequence[str]) -> Tuple[int, str, str]:
    """seg-perception in this process; (exit code, stdout, stderr)."""
    from seg_perception.tools.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def colour_params(colour_model, **extra):
    """The node's configuration (core/config.NodeConfig) with the colour test model."""
    from seg_perception.core.config import NodeConfig

    model, labels = colour_model
    overrides = {"model": model, "label_file": labels}
    overrides.update(extra)
    return NodeConfig.from_values(overrides)


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec


def decoded_by_topic(path: str) -> Dict[str, List[Tuple[int, object]]]:
    """{topic: [(receive time, rclpy message)]}: for comparing bags by content (CDR's padding
    bytes are not always the same for the same message)."""
    import importlib

    from rclpy.serialization import deserialize_message

    out: Dict[str, List[Tuple[int, object]]] = {}
    with bagio.open_bag(path) as bag:
        for c, t, raw in bag.messages():
            pkg, _, name = c.msgtype.split("/")
            cls = getattr(importlib.import_module(f"{pkg}.msg"), name)
            out.setdefault(c.topic, []).append((t, deserialize_message(raw, cls)))
    return out
