"""Bags in both storage formats: the sample drive, process-bag (against the pipeline run directly
and against the real node over DDS), --render, and clear errors for corrupt or truncated bags."""

from __future__ import annotations

import math
import os
import shutil
import time

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from nav_msgs.msg import OccupancyGrid

from bag_helpers import (HEIGHT, IMAGE_TOPIC, INFO_TOPIC, LATCHED_TOPIC, POSE_PARAMS, WIDTH, by_topic,
                         colour_params, expected_labels, painted_frame, read_all, run_cli,
                         stamp, stamp_ns, write_painted_bag)
from models import CLASS_ID

from seg_perception.core import bagio
from seg_perception.core.config import NodeConfig
from seg_perception.core.finish import Finisher
from seg_perception.core.outputs import OUTPUTS
from seg_perception.core.pipeline import build_pipeline
from seg_perception.ros.conversions import frame_from_msg
from seg_perception.ros.outputs import OutputMessages
from seg_perception.tools.process_bag import process_bag
from seg_perception.tools.sample_bag import OPTICAL_FRAME, quaternion_from_rpy, write_sample_bag

STORAGES = ("sqlite3", "mcap")


def _deep_reliable():
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


RELIABLE_DEEP = _deep_reliable()


def image_array(msg: Image) -> np.ndarray:
    ch = 3 if msg.encoding == "rgb8" else 1
    arr = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :msg.width * ch]
    return arr.reshape(msg.height, msg.width, ch).squeeze(-1) if ch == 1 else arr.reshape(msg.height, msg.width, 3)


# ----------------------------------------------------------------------------- sample drive

@pytest.mark.parametrize("storage", STORAGES)
def test_sample_bag_topics_timing_camera_and_pose(tmp_path, storage):
    from seg_perception.core.sample import SampleCamera, camera_info_dict, render_frame

    out = str(tmp_path / "drive")
    code, stdout, stderr = run_cli(["sample-bag", out, "--storage", storage, "--frames", "4",
                                    "--width", "160", "--height", "120"])
    assert code == 0, stderr
    assert "camera_pose.rpy:=[0.0,0.08,0.0]" in stdout
    assert bagio.bag_storage(out) == storage
    cam = SampleCamera(width=160, height=120)
    with bagio.open_bag(out) as bag:
        topics = bag.topics()
        assert {t: i.msgtype for t, i in topics.items()} == {
            "/camera/image_raw": bagio.IMAGE, "/camera/camera_info": bagio.CAMERA_INFO,
            "/odom": bagio.ODOMETRY, "/tf": bagio.TF_MESSAGE, "/tf_static": bagio.TF_MESSAGE}
        assert topics["/tf_static"].qos.durability == "transient_local"
        assert topics["/camera/image_raw"].qos.durability == "volatile"
        msgs = list(bag.messages())
    start = 1_700_000_000 * 10 ** 9
    images = [(t, deserialize_message(raw, Image)) for c, t, raw in msgs if c.topic == "/camera/image_raw"]
    infos = [(t, deserialize_message(raw, CameraInfo)) for c, t, raw in msgs if c.topic == "/camera/camera_info"]
    assert [t for t, _ in images] == [start + i * 100_000_000 for i in range(4)]  # 10 Hz
    for i, (t, img) in enumerate(images):
        assert stamp_ns(img) == t and img.header.frame_id == OPTICAL_FRAME
        rgb, _ = render_frame(i, cam)
        np.testing.assert_array_equal(image_array(img), rgb)
    assert [t for t, _ in infos] == [t for t, _ in images]
    # the camera drives along the street: its odometry at every frame's stamp, base_link in odom
    from nav_msgs.msg import Odometry

    odom = [(t, deserialize_message(raw, Odometry)) for c, t, raw in msgs if c.topic == "/odom"]
    assert [t for t, _ in odom] == [t for t, _ in images]
    assert all(stamp_ns(o) == t and (o.header.frame_id, o.child_frame_id) == ("odom", "base_link") for t, o in odom)
    assert [o.pose.pose.position.x for _, o in odom] == pytest.approx([cam.speed * i / cam.rate for i in range(4)])
    # and the same as TF (odom -> base_link), as robot_localization or a driver publishes it
    moving = [(t, bagio.deserialize(raw, bagio.TF_MESSAGE)) for c, t, raw in msgs if c.topic == "/tf"]
    assert [t for t, _ in moving] == [t for t, _ in images]
    for (t, m), (_, o) in zip(moving, odom):
        (tr,) = m.transforms
        assert (tr.header.frame_id, tr.child_frame_id) == ("odom", "base_link")
        assert tr.header.stamp.sec * 10 ** 9 + tr.header.stamp.nanosec == t
        assert tr.transform.translation.x == pytest.approx(o.pose.pose.position.x)
    want = camera_info_dict(cam)
    ci = infos[0][1]
    assert (ci.width, ci.height) == (160, 120)
    np.testing.assert_allclose(ci.k, want["k"])
    np.testing.assert_allclose(ci.p, want["p"])
    # /tf_static: base_link -> camera_link is the sample camera's mount
    tf = bagio.deserialize(next(raw for c, t, raw in msgs if c.topic == "/tf_static"), bagio.TF_MESSAGE)
    mount = {tr.child_frame_id: tr for tr in tf.transforms}["camera_link"]
    assert mount.header.frame_id == "base_link"
    assert (mount.transform.translation.x, mount.transform.translation.z) == (0.0, 1.5)
    q = mount.transform.rotation
    assert (q.x, q.y, q.z, q.w) == pytest.approx((0.0, math.sin(0.04), 0.0, math.cos(0.04)))
    optical = {tr.child_frame_id: tr for tr in tf.transforms}[OPTICAL_FRAME]
    q = optical.transform.rotation
    assert (q.x, q.y, q.z, q.w) == pytest.approx((-0.5, 0.5, -0.5, 0.5))  # REP 103 optical frame


def test_quaternion_from_rpy_matches_the_grid_rotation():
    from seg_perception.core.camera_model import camera_pose

    for rpy in [(0.1, 0.2, 0.3), (0.0, 0.08, 0.0), (-1.2, 0.4, 2.0)]:
        x, y, z, w = quaternion_from_rpy(*rpy)
        R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        np.testing.assert_allclose(R, camera_pose((0, 0, 0), rpy)[:3, :3], atol=1e-12)


def test_sample_bag_compressed_mcap(tmp_path):
    from seg_perception.core.sample import SampleCamera, render_frame

    info = write_sample_bag(str(tmp_path / "c"), "mcap", frames=2, width=160, height=120, compressed=True)
    assert info["image_topic"] == "/camera/image_raw/compressed"
    msgs = by_topic(str(tmp_path / "c"))
    assert set(msgs) == {"/camera/image_raw/compressed", "/camera/camera_info", "/odom", "/tf", "/tf_static"}
    msg = deserialize_message(msgs["/camera/image_raw/compressed"][1][1], CompressedImage)
    assert "jpeg" in msg.format
    bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    rgb, _ = render_frame(1, SampleCamera(width=160, height=120))
    assert np.abs(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(int) - rgb).mean() < 4.0


def test_sample_bag_refuses_to_overwrite(tmp_path):
    out = str(tmp_path / "b")
    assert run_cli(["sample-bag", out, "--frames", "1", "--width", "32", "--height", "24"])[0] == 0
    code, _, err = run_cli(["sample-bag", out, "--frames", "1", "--width", "32", "--height", "24"])
    assert code == 2 and "exists already" in err and out in err
    assert run_cli(["sample-bag", out, "--frames", "2", "--width", "32", "--height", "24", "--overwrite"])[0] == 0
    assert len(by_topic(out)["/camera/image_raw"]) == 2


# ----------------------------------------------------------------------------- process-bag

def decode(name: str, raw: bytes):
    return deserialize_message(raw, OccupancyGrid if name == "drivable_grid" else Image)


def direct_outputs(params, bag_path, wanted):
    """The pipeline run directly over the bag's frames: {(name, stamp): message}."""
    out = {}
    with build_pipeline(params) as pipeline:
        msgs = read_all(bag_path)
        first_info = next((raw for topic, _, raw in msgs if topic == INFO_TOPIC), None)
        if first_info is not None:
            pipeline.grid.set_camera_info(deserialize_message(first_info, CameraInfo))
        for topic, t, raw in msgs:
            if topic == INFO_TOPIC:
                pipeline.grid.set_camera_info(deserialize_message(raw, CameraInfo))
            elif topic.startswith(IMAGE_TOPIC):
                cls = CompressedImage if topic.endswith("/compressed") else Image
                res = pipeline.process(frame_from_msg(deserialize_message(raw, cls)))
                outcome = Finisher([""], params.grid).finish("", res, wanted)
                messages = OutputMessages().build(outcome, wanted)
                assert outcome.grid.error is None, outcome.grid.error
                for name, m in messages.items():
                    # through CDR as DDS carries it (OccupancyGrid's resolution is a float32)
                    out[(name, t)] = decode(name, serialize_message(m))
    return out


@pytest.mark.parametrize("storage,compressed", [("sqlite3", False), ("mcap", False), ("mcap", True),
                                                ("sqlite3", True)])
def test_process_bag_outputs_equal_the_pipeline_run_directly(tmp_path, colour_model, storage, compressed):
    src = write_painted_bag(str(tmp_path / "in"), storage, frames=4, compressed=compressed)
    params = colour_params(colour_model, **POSE_PARAMS)
    out = str(tmp_path / "out")
    stats = process_bag(src, out, params, list(OUTPUTS), show_progress=False)
    assert stats["frames_processed"] == 4 and stats["frames_failed"] == 0 and stats["grid_missing"] == 0
    assert bagio.bag_storage(out) == storage  # the input's format by default
    written = by_topic(out)
    inputs = by_topic(src)
    # inputs copied through unchanged, at their times
    for topic, msgs in inputs.items():
        assert written[topic] == msgs, topic
    with bagio.open_bag(out) as bag:
        topics = bag.topics()
        assert topics[LATCHED_TOPIC].qos.durability == "transient_local"  # recorded QoS kept
        assert topics["/camera_seg/drivable_grid"].msgtype == bagio.OCCUPANCY_GRID
        assert topics["/camera_seg/overlay"].msgtype == bagio.IMAGE
    # the pipeline's own messages, at the input frames' receive times. Compared as messages
    # (every field), not bytes: Fast CDR leaves the alignment padding uninitialised.
    direct = direct_outputs(params, src, OUTPUTS)
    for name in OUTPUTS:
        got = written[f"/camera_seg/{name}"]
        assert [t for t, _ in got] == [stamp(i) for i in range(4)], name
        for t, raw in got:
            assert decode(name, raw) == direct[(name, t)], (name, t)
    # and they are right: labels are the painting, masks its classes, header stamps the frames'
    for i, (t, raw) in enumerate(written["/camera_seg/labels"]):
        msg = deserialize_message(raw, Image)
        assert stamp_ns(msg) == t and msg.header.frame_id == "camera_optical"
        np.testing.assert_array_equal(image_array(msg), expected_labels(i))
        road = image_array(deserialize_message(written["/camera_seg/road_mask"][i][1], Image))
        np.testing.assert_array_equal(road == 255, expected_labels(i) == CLASS_ID["Road"])
    grid = deserialize_message(written["/camera_seg/drivable_grid"][0][1], OccupancyGrid)
    cells = np.frombuffer(grid.data, np.int8)
    assert grid.header.frame_id == "base_link" and stamp_ns(grid) == stamp(0)
    assert (cells == 0).any() and (cells == -1).any()


def test_process_bag_cli_options(tmp_path, colour_model):
    src = write_painted_bag(str(tmp_path / "in"), "sqlite3", frames=5)
    model, labels = colour_model
    out = str(tmp_path / "out")
    code, stdout, stderr = run_cli([
        "process-bag", src, "--out", out, "-p", f"model:={model}", "-p", f"label_file:={labels}",
        "-p", "grid.enabled:=false", "--outputs", "labels,overlay", "--no-copy-inputs",
        "--remap", "/camera_seg/overlay:=/seg/overlay", "--storage", "mcap", "--max-frames", "3"])
    assert code == 0, stderr
    # progress on stderr with rate and ETA; summary on stdout
    assert "frames/s" in stderr and "ETA" in stderr and "3/3 frames" in stderr
    assert "3 of 5 frames" in stdout and "frames/s" in stdout
    assert bagio.bag_storage(out) == "mcap"
    written = by_topic(out)
    assert set(written) == {"/camera_seg/labels", "/seg/overlay"}
    assert [t for t, _ in written["/seg/overlay"]] == [stamp(i) for i in range(3)]


def test_process_bag_rejects_bad_arguments(tmp_path, colour_model):
    src = write_painted_bag(str(tmp_path / "in"), "sqlite3", frames=1)
    model, labels = colour_model
    base = ["process-bag", src, "--out", str(tmp_path / "o"), "-p", f"model:={model}", "-p", f"label_file:={labels}"]
    for extra, words in [(["-p", "grid.resolution:=0"], "grid.resolution"),
                         (["-p", "no_such:=1"], "unknown parameter"),
                         (["-p", "grid.enabled:=maybe"], "grid.enabled"),
                         (["--outputs", "labels,mystery"], "mystery"),
                         (["--image-topic", "/nope"], "/nope"),
                         (["--remap", "/a"], "OLD:=NEW")]:
        code, _, err = run_cli(base + extra)
        assert code == 2 and words in err, (extra, err)
    assert not os.path.exists(tmp_path / "o")


def test_process_bag_without_camera_info_writes_no_grid_and_says_why(tmp_path, colour_model):
    src = write_painted_bag(str(tmp_path / "in"), "sqlite3", frames=2, info_topic=False)
    stats = process_bag(src, str(tmp_path / "o"), colour_params(colour_model), list(OUTPUTS), show_progress=False)
    assert stats["camera_info_topic"] is None and stats["frames_processed"] == 2
    assert stats["grid_missing"] == 2 and "CameraInfo" in stats["grid_error"]
    assert "/camera_seg/drivable_grid" not in by_topic(str(tmp_path / "o"))


def test_process_bag_render(tmp_path, colour_model):
    src = write_painted_bag(str(tmp_path / "in"), "mcap", frames=3)
    render = tmp_path / "render"
    stats = process_bag(src, str(tmp_path / "o"), colour_params(colour_model, **POSE_PARAMS), ["labels"],
                        render_dir=str(render), show_progress=False)
    pngs = sorted(p for p in os.listdir(render) if p.endswith(".png"))
    assert pngs == [f"frame_{i:06d}.png" for i in range(3)]
    pic = cv2.cvtColor(cv2.imread(str(render / pngs[1])), cv2.COLOR_BGR2RGB)
    # three panels at the frame's height: image | overlay | grid (square: 40 m x 40 m)
    assert pic.shape[0] == HEIGHT and pic.shape[1] == 2 * WIDTH + HEIGHT + 2 * 4
    left = pic[30:, :WIDTH]   # below the caption: the camera frame itself
    np.testing.assert_array_equal(left, painted_frame(1)[30:])
    # only labels were asked to be written: the overlay and grid made for the pictures are not
    assert set(by_topic(str(tmp_path / "o"))) - {IMAGE_TOPIC, INFO_TOPIC, LATCHED_TOPIC, "/tf_static"} == \
        {"/camera_seg/labels"}
    if stats["video"]:
        cap = cv2.VideoCapture(stats["video"])
        n = 0
        while cap.read()[0]:
            n += 1
        assert n == 3
    else:
        assert stats["video_error"]


# ----------------------------------------------------------------------------- broken bags

def _broken_bags(tmp_path, storage):
    good = write_painted_bag(str(tmp_path / f"good_{storage}"), storage, frames=3)
    ext = ".db3" if storage == "sqlite3" else ".mcap"
    data_file = next(f for f in os.listdir(good) if f.endswith(ext))
    size = os.path.getsize(os.path.join(good, data_file))
    cases = {}
    for label, cut in (("empty", 0), ("half", size // 2), ("most", int(size * 0.9))):
        d = str(tmp_path / f"{label}_{storage}")
        shutil.copytree(good, d)
        with open(os.path.join(d, data_file), "r+b") as f:
            f.truncate(cut)
        cases[label] = (d, data_file)
    d = str(tmp_path / f"garbage_{storage}")
    shutil.copytree(good, d)
    with open(os.path.join(d, data_file), "r+b") as f:
        f.seek(100)
        f.write(np.random.default_rng(0).bytes(size - 200))
    cases["garbage"] = (d, data_file)
    d = str(tmp_path / f"nometa_{storage}")
    shutil.copytree(good, d)
    os.remove(os.path.join(d, "metadata.yaml"))
    return cases


@pytest.mark.parametrize("storage", STORAGES)
def test_corrupt_and_truncated_bags_give_a_clear_error(tmp_path, colour_model, storage):
    model, labels = colour_model
    for label, (path, data_file) in _broken_bags(tmp_path, storage).items():
        out = str(tmp_path / f"out_{label}")
        code, stdout, err = run_cli(["process-bag", path, "--out", out, "--quiet",
                                     "-p", f"model:={model}", "-p", f"label_file:={labels}"])
        assert code == 2, (label, code, stdout, err)
        assert "cannot read bag" in err and path in err and data_file in err, (label, err)
        assert "Traceback" not in err
        assert not os.path.exists(out), label  # no half-written output left behind
        code, _, err = run_cli(["replay", path])
        assert code == 2 and path in err and "cannot read bag" in err, (label, err)


def test_missing_or_non_bag_paths(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "emptydir").mkdir()
    for path, words in [(tmp_path / "nope", "bag not found"), (tmp_path / "notes.txt", "is not a bag"),
                        (tmp_path / "emptydir", "cannot tell the storage format")]:
        code, _, err = run_cli(["process-bag", str(path), "--out", str(tmp_path / "o")])
        assert code == 2 and words in err and str(path) in err, err


# ----------------------------------------------------------------------------- against the node

def test_process_bag_equals_the_node_over_dds(ros_domain, peer, colour_model, tmp_path):
    """The real node, fed the bag's messages over Fast DDS, publishes the same outputs (all six,
    grid included, every field) as process-bag wrote for the same frame."""
    from ros_harness import PARAMS_FILE, RELIABLE, NodeProcess

    src = write_painted_bag(str(tmp_path / "in"), "mcap", frames=4, latched=False, tf_static=False)
    model, labels = colour_model
    overrides = {"model": model, "label_file": labels, **POSE_PARAMS}
    out = str(tmp_path / "out")
    stats = process_bag(src, out, NodeConfig.load(PARAMS_FILE, [f"{k}:={v}" for k, v in overrides.items()]),
                        list(OUTPUTS), show_progress=False)
    assert stats["frames_processed"] == 4
    written = by_topic(out)

    node = NodeProcess(ros_domain[0], ros_domain[1], params=overrides,
                       remaps={"image": IMAGE_TOPIC, "camera_info": INFO_TOPIC})
    try:
        outs = {n: peer.subscribe(OccupancyGrid if n == "drivable_grid" else Image, f"/camera_seg/{n}", RELIABLE)
                for n in OUTPUTS}
        pub = peer.publisher(Image, IMAGE_TOPIC, RELIABLE)
        info_pub = peer.publisher(CameraInfo, INFO_TOPIC, RELIABLE)
        assert peer.wait_matched(pub) and peer.wait_matched(info_pub), node.log()
        msgs = read_all(src)
        frames = [(t, raw) for topic, t, raw in msgs if topic == IMAGE_TOPIC]
        infos = {t: raw for topic, t, raw in msgs if topic == INFO_TOPIC}
        end = time.monotonic() + 60.0
        complete = None
        i = 0
        while complete is None and time.monotonic() < end:
            t, raw = frames[i % len(frames)]
            info_pub.publish(deserialize_message(infos[t], CameraInfo))
            time.sleep(0.05)
            pub.publish(deserialize_message(raw, Image))
            i += 1
            deadline = time.monotonic() + 0.5
            while complete is None and time.monotonic() < deadline:
                common = set.intersection(*({stamp_ns(m) for m in c.snapshot()} for c in outs.values()))
                complete = min(common) if common else None
                time.sleep(0.02)
        assert complete is not None, node.log()
        for name, col in outs.items():
            received = next(m for m in col.snapshot() if stamp_ns(m) == complete)
            want = dict(written[f"/camera_seg/{name}"])[complete]
            assert received == decode(name, want), name
    finally:
        assert node.stop() == 0, node.log()


def test_camera_topic_choice_and_remaps():
    I, C, CI = bagio.IMAGE, bagio.COMPRESSED_IMAGE, bagio.CAMERA_INFO
    both = {"/cam/image_raw": I, "/cam/image_raw/compressed": C, "/cam/camera_info": CI, "/other/camera_info": CI}
    # one camera recorded raw and compressed counts once; its sibling camera_info is chosen
    assert bagio.choose_camera_topics(both) == ("/cam/image_raw", "/cam/camera_info")
    assert bagio.choose_camera_topics(both, prefer_compressed=True) == ("/cam/image_raw/compressed",
                                                                         "/cam/camera_info")
    assert bagio.choose_camera_topics({"/a": C, "/info": CI}) == ("/a", "/info")
    assert bagio.choose_camera_topics({"/a": I}) == ("/a", None)
    with pytest.raises(bagio.BagError, match="several camera topics"):
        bagio.choose_camera_topics({"/a": I, "/b": I})
    with pytest.raises(bagio.BagError, match="no sensor_msgs/Image"):
        bagio.choose_camera_topics({"/info": CI})
    assert bagio.choose_camera_topics({"/a": I, "/b": I}, image_topic="b") == ("/b", None)
    with pytest.raises(bagio.BagError, match="not a CameraInfo"):
        bagio.choose_camera_topics(both, camera_info_topic="/cam/image_raw")
    assert bagio.parse_remaps(["a:=/b", " /c := d "]) == {"/a": "/b", "/c": "/d"}
    for bad in ("a", ":=b", "a:="):
        with pytest.raises(ValueError):
            bagio.parse_remaps([bad])


def test_process_bag_warns_when_the_odometry_is_not_in_the_map_frame(tmp_path, colour_model):
    """The node's diagnostics and process-bag name the same frame problem (core decides it)."""
    from seg_perception.core.sample import SampleCamera

    src = str(tmp_path / "drive")
    write_sample_bag(src, frames=6, width=160, height=120)
    cam = SampleCamera(width=160, height=120)
    params = colour_params(colour_model, **{"camera_pose.xyz": list(cam.pose_xyz), "map.frame_id": "map",
                                            "camera_pose.rpy": list(cam.pose_rpy), "map.enabled": True})
    stats = process_bag(src, str(tmp_path / "out"), params, ["drivable_grid"], show_progress=False)
    assert "odometry is in 'odom', map.frame_id is 'map'" in stats["map"]["odometry_frames"]


def test_process_bag_writes_the_drivable_map_the_builder_makes_of_the_same_frames(tmp_path, colour_model):
    """map.enabled: the sample drive's odometry and every frame's grid into the map, written at
    map.rate of the bag's time in odom; the last one equals core MapBuilder fed directly."""
    from nav_msgs.msg import Odometry

    from seg_perception.core.drivable_map import MapBuilder, map_spec
    from seg_perception.core.odometry import PoseHistory, yaw_of_quaternion
    from seg_perception.core.sample import SampleCamera

    src = str(tmp_path / "drive")
    write_sample_bag(src, frames=25, width=160, height=120)
    cam = SampleCamera(width=160, height=120)
    params = colour_params(colour_model, **{"camera_pose.xyz": list(cam.pose_xyz),
                                            "camera_pose.rpy": list(cam.pose_rpy), "map.enabled": True})
    out = str(tmp_path / "out")
    stats = process_bag(src, out, params, ["drivable_grid"], show_progress=False)
    assert stats["map"]["updates"] == 25 and stats["map"]["skipped"] == 0 and not stats["map"]["clears"]
    assert stats["map"]["odometry_frames"] == ""  # odom -> base_link: the frames the map expects
    written = by_topic(out)
    maps = [(t, deserialize_message(raw, OccupancyGrid)) for t, raw in written["/camera_seg/drivable_map"]]
    assert 4 <= len(maps) <= 6  # 2.5 s of bag time at map.rate 2 Hz
    assert all(m.header.frame_id == "odom" for _, m in maps)
    # the pipeline run directly over the same messages, its grids (and the confidence behind
    # each cell, the map's weights) and the odometry through MapBuilder
    builder = MapBuilder(map_spec(params.map), PoseHistory(jump_distance=params.map.jump_distance),
                         params.map.odom_timeout)
    last_t = maps[-1][0]
    weighted = 0
    with build_pipeline(params) as pipeline:
        for topic, t, raw in read_all(src):
            if t > last_t:
                break
            if topic == "/odom":
                o = deserialize_message(raw, Odometry)
                q = o.pose.pose.orientation
                builder.on_odometry(stamp_ns(o) / 1e9, (o.pose.pose.position.x, o.pose.pose.position.y,
                                                        yaw_of_quaternion(q.x, q.y, q.z, q.w)))
            elif topic == "/camera/camera_info":
                pipeline.grid.set_camera_info(deserialize_message(raw, CameraInfo), t / 1e9)
            elif topic == "/camera/image_raw":
                res = pipeline.process(frame_from_msg(deserialize_message(raw, Image)))
                grid = res.grid(t / 1e9)
                weights = res.grid_confidence()
                weighted += weights is not None
                builder.on_grid(grid.cells, pipeline.grid.spec, stamp_ns(res.frame) / 1e9, weights)
    assert weighted > 0  # the colour model gives confidence: the map is weighted by it
    m = maps[-1][1]
    np.testing.assert_array_equal(np.frombuffer(m.data, np.int8).reshape(600, 600), builder.map.occupancy())
    assert (m.info.origin.position.x, m.info.origin.position.y) == pytest.approx(builder.map.origin)
    assert (builder.map.occupancy() >= 0).sum() > 1000


def test_process_bag_equals_the_node_for_the_four_camera_rig_with_the_map(ros_domain, peer, colour_model, tmp_path):
    """The four-camera rig bag with its odometry, through process-bag and through the real node
    (config/multi_camera.yaml, map.enabled) fed by seg-perception replay over Fast DDS: every
    camera's outputs for the same frame, the surround grid of each stamp and the final map are
    the same messages."""
    import subprocess
    import sys

    from ros_harness import RELIABLE, NodeProcess, ros_env

    from seg_perception.core.sample import RIG_CAMERAS
    from seg_perception.tools.support.node_process import shipped_params_file

    rig = os.path.join(os.path.dirname(shipped_params_file()), "multi_camera.yaml")
    src = str(tmp_path / "rig")
    frames = 8
    START = 1_700_000_000 * 10 ** 9
    code, _, err = run_cli(["sample-bag", src, "--rig", "--frames", str(frames), "--width", "160", "--height", "120"])
    assert code == 0, err
    model, labels = colour_model
    items = [f"model:={model}", f"label_file:={labels}", "map.enabled:=true"]
    out = str(tmp_path / "out")
    stats = process_bag(src, out, NodeConfig.load(rig, items), list(OUTPUTS), show_progress=False)
    assert stats["frames_processed"] == 4 * frames and stats["frames_failed"] == 0
    written = by_topic(out)

    node = NodeProcess(ros_domain[0], ros_domain[1], params=items, params_file=rig)
    replay_cmd = [os.path.join(os.path.dirname(sys.executable), "seg-perception"), "replay", src, "--dds-profile",
                  "--quiet"]
    env = ros_env(ros_domain[0], ros_domain[1])
    try:
        outs = {(c, n): peer.subscribe(OccupancyGrid if n == "drivable_grid" else Image, f"/camera_seg/{c}/{n}", RELIABLE_DEEP)
                for c in RIG_CAMERAS for n in OUTPUTS}
        surround = peer.subscribe(OccupancyGrid, "/camera_seg/drivable_grid", RELIABLE_DEEP)
        maps = peer.subscribe(OccupancyGrid, "/camera_seg/drivable_map", RELIABLE_DEEP)
        # every input and output matched both ways before the drive: the drive's first frames
        # with stamps 10 s before it (no odometry there: the map takes none of them) until every
        # output of one of them has come back
        msgs = read_all(src)
        first = {}
        for topic, _, raw in msgs:
            c = topic.split("/")[1]
            if topic.endswith(("image_raw", "camera_info")) and (c, topic) not in first:
                first[(c, topic)] = deserialize_message(raw, Image if topic.endswith("image_raw") else CameraInfo)
        pubs = {key: peer.publisher(type(m), key[1], RELIABLE) for key, m in first.items()}
        try:  # the rig's mounts, latched from the start as on a vehicle (and as process-bag reads them)
            import tf2_ros
            from tf2_msgs.msg import TFMessage

            static = next(raw for topic, _, raw in msgs if topic == "/tf_static")
            tf2_ros.StaticTransformBroadcaster(peer.node).sendTransform(
                list(deserialize_message(static, TFMessage).transforms))
        except ImportError:
            pass
        primed = None
        for k in range(60):
            stamp_ = START - 10 * 10 ** 9 + k * 10 ** 6
            for suffix in ("camera_info", "image_raw"):
                for (c, topic), m in first.items():
                    if topic.endswith(suffix):
                        m.header.stamp.sec, m.header.stamp.nanosec = divmod(stamp_, 10 ** 9)
                        pubs[(c, topic)].publish(m)
            time.sleep(0.5)
            if all(any(START - 10 ** 10 <= stamp_ns(x) < START for x in col.snapshot()) for col in outs.values()):
                primed = True
                break
        assert primed, node.log()
        time.sleep(1.0)
        replay = subprocess.run(replay_cmd + ["--rate", "0.3", "--wait-for", "/odom"], env=env,
                                capture_output=True, text=True, timeout=120)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        last = max(t for t, _ in written["/camera_seg/drivable_map"])
        assert maps.wait_for(lambda m: any(stamp_ns(x) == last for x in m), 15), node.log()
        compared = 0
        missing = {(c, n): sorted((s - START) / 1e9 for s in set(dict(written[f"/camera_seg/{c}/{n}"])) -
                                  {stamp_ns(m) for m in col.snapshot()}) for (c, n), col in outs.items()}
        assert not any(missing.values()), ({k: v for k, v in missing.items() if v}, node.log()[-2000:])
        for (c, n), col in outs.items():
            want = dict(written[f"/camera_seg/{c}/{n}"])
            got = {stamp_ns(m): m for m in col.snapshot() if stamp_ns(m) >= START}
            assert len(got) == frames, (c, n, sorted((s - min(want)) / 1e9 for s in got), node.log()[-3000:])  # every frame
            for stamp_, msg in got.items():
                assert msg == decode(n, want[stamp_]), (c, n, stamp_)
                compared += 1
        assert compared == 4 * frames * len(OUTPUTS)
        # the surround grid: the last one of each stamp has every camera's grid of that stamp
        def last_of_each(msgs):
            by = {}
            for m in msgs:
                by[stamp_ns(m)] = m
            return by
        want_surround = last_of_each(decode("drivable_grid", raw) for _, raw in written["/camera_seg/drivable_grid"])
        assert last_of_each(m for m in surround.snapshot() if stamp_ns(m) >= START) == want_surround
        final = next(m for m in reversed(maps.snapshot()) if stamp_ns(m) == last)
        assert final == decode("drivable_grid", dict(written["/camera_seg/drivable_map"])[last])
        assert (np.frombuffer(final.data, np.int8) >= 0).sum() > 1000
    finally:
        assert node.stop() == 0, node.log()


def test_sample_bag_of_real_frames(tmp_path):
    """--images: the files' pixels, one frame each in name order, with CameraInfo of their size."""
    frames = [np.random.default_rng(i).integers(0, 255, (90, 160, 3), dtype=np.uint8) for i in range(3)]
    for i, rgb in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = str(tmp_path / "bag")
    code, stdout, err = run_cli(["sample-bag", out, "--images", str(tmp_path / "f*.png"), "--hfov", "60"])
    assert code == 0, err
    written = by_topic(out)
    images = [image_array(deserialize_message(raw, Image)) for _, raw in written["/camera/image_raw"]]
    assert len(images) == 3 and all(np.array_equal(a, b) for a, b in zip(images, frames))
    info = deserialize_message(written["/camera/camera_info"][0][1], CameraInfo)
    assert (info.width, info.height) == (160, 90)
    assert info.k[0] == pytest.approx(80 / np.tan(np.radians(30)))
    code, _, err = run_cli(["sample-bag", str(tmp_path / "bag2"), "--images", str(tmp_path / "none*.png")])
    assert code == 2 and "no image" in err


def test_process_bag_takes_the_camera_and_map_poses_from_the_bag_s_tf(tmp_path, colour_model):
    """The sample drive records its camera's mount on /tf_static and the vehicle on /tf: the
    grid from TF (camera_pose.source tf, and auto) equals the grid from the same pose given as
    parameters, cell for cell; the map from TF (map.pose_source tf) equals the map from /odom."""
    from seg_perception.core.sample import SampleCamera
    from seg_perception.ros.sample_stream import pose_parameters
    from seg_perception.tools.process_bag import process_bag

    src = str(tmp_path / "drive")
    code, _, err = run_cli(["sample-bag", src, "--frames", "6", "--width", "160", "--height", "120"])
    assert code == 0, err
    model, labels = colour_model
    xyz, rpy = pose_parameters(SampleCamera(width=160, height=120))
    base = {"model": model, "label_file": labels, "map.enabled": True}
    runs = {"parameters": dict(base, **{"camera_pose.source": "parameters", "camera_pose.xyz": xyz,
                                        "camera_pose.rpy": rpy}),
            "tf": dict(base, **{"camera_pose.source": "tf", "map.pose_source": "tf"}),
            # auto: TF has the camera; the parameters (left at their defaults: wrong) are not used
            "auto": dict(base, **{"camera_pose.source": "auto"})}
    got = {}
    for name, values in runs.items():
        out = str(tmp_path / name)
        stats = process_bag(src, out, NodeConfig.from_values(values), list(OUTPUTS), show_progress=False)
        assert stats["grid_missing"] == 0, (name, stats["grid_error"])
        got[name] = by_topic(out)
    grids = {n: [decode("drivable_grid", raw) for _, raw in w["/camera_seg/drivable_grid"]] for n, w in got.items()}
    assert len(grids["tf"]) == 6 and grids["tf"] == grids["parameters"] == grids["auto"]
    maps = {n: [decode("drivable_grid", raw) for _, raw in w["/camera_seg/drivable_map"]] for n, w in got.items()}
    assert maps["tf"] and maps["tf"] == maps["parameters"]  # TF odom -> base_link drives it as /odom does

    # a bag without TF for the camera: tf names the frame TF lacks, and no grid is made
    bare = str(tmp_path / "bare")
    write_painted_bag(bare, frames=2, tf_static=False)
    stats = process_bag(bare, str(tmp_path / "bare_out"), colour_params(colour_model, **{"camera_pose.source": "tf"}),
                        list(OUTPUTS), show_progress=False)
    assert stats["grid_missing"] == 2 and "'camera_optical'" in stats["grid_error"], stats["grid_error"]
    assert "/camera_seg/drivable_grid" not in {t for t, n in stats["written"].items() if n}
