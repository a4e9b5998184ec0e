"""TF for real (issue #36): the node under the real tf2_ros (built from the Jazzy sources by
scripts/build_tf2.sh) over Fast DDS. A static camera mount on /tf_static gives the grid the same
pose as camera_pose does, cell for cell; a moving odom -> base_link on /tf drives the map as
Odometry does; a transform that is missing, late or only in the future gets no grid (counted,
said in diagnostics), never a wrong one; an unknown frame is named; auto takes TF where it is and
the parameters where it never was; without tf2_ros, auto takes the parameters and tf says why."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid, Odometry
from sensor_msgs.msg import CameraInfo, Image

from ros_harness import RELIABLE, Camera
from test_node import image_msg, sample_scene_in_test_colours, start_node, stamp_of, status_values, wait_status

tf2_ros = pytest.importorskip("tf2_ros", reason="tf2_ros is not built: scripts/build_tf2.sh (../shared/vendor)")

START = 1_800_000_000_000_000_000


def transform(parent, child, xyz, rpy, stamp_ns=0):
    from geometry_msgs.msg import TransformStamped

    from seg_perception.tools.sample_bag import quaternion_from_rpy

    tr = TransformStamped()
    tr.header.stamp.sec, tr.header.stamp.nanosec = divmod(stamp_ns, 10 ** 9)
    tr.header.frame_id, tr.child_frame_id = parent, child
    tr.transform.translation.x, tr.transform.translation.y, tr.transform.translation.z = (float(v) for v in xyz)
    q = quaternion_from_rpy(*rpy)
    tr.transform.rotation.x, tr.transform.rotation.y, tr.transform.rotation.z, tr.transform.rotation.w = q
    return tr


def mount(cam, optical="camera_optical", xyz=None, rpy=None):
    """base_link -> camera_link -> the optical frame, as robot_state_publisher sends a URDF's."""
    from seg_perception.tools.sample_bag import OPTICAL_RPY

    return [transform("base_link", "camera_link", xyz or cam.pose_xyz, rpy or cam.pose_rpy),
            transform("camera_link", optical, (0.0, 0.0, 0.0), OPTICAL_RPY)]


def expected_cells(colour_model, cam, rgb, xyz, rpy):
    """The grid core computes for the frame with the pose given as camera_pose."""
    from seg_perception.core.config import NodeConfig
    from seg_perception.core.pipeline import build_pipeline
    from seg_perception.ros.conversions import frame_from_msg
    from seg_perception.ros.sample_stream import camera_info_msg

    model, labels = colour_model
    cfg = NodeConfig.from_values({"model": model, "label_file": labels, "camera_pose.source": "parameters",
                                  "camera_pose.xyz": list(xyz), "camera_pose.rpy": list(rpy)})
    with build_pipeline(cfg) as pipeline:
        pipeline.grid.set_camera_info(camera_info_msg(cam, START), t=0.0)
        cells = pipeline.process(frame_from_msg(image_msg(rgb, START))).grid(t=0.0).cells
    assert cells is not None and (cells == 0).sum() > 1000
    return cells


def cells_of(msg) -> np.ndarray:
    return np.frombuffer(msg.data, np.int8).reshape(msg.info.height, msg.info.width)


def topics(peer):
    return (peer.subscribe(OccupancyGrid, "/camera_seg/drivable_grid", RELIABLE),
            peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE),
            peer.publisher(Image, "/image", RELIABLE), peer.publisher(CameraInfo, "/camera_info", RELIABLE))


def grid_status(diag, pred, timeout=20.0):
    return wait_status(diag, pred, timeout=timeout, suffix="drivable grid")


def test_a_static_mount_on_tf_gives_the_grid_camera_pose_gives_and_a_late_one_no_wrong_grid(ros_domain, peer, colour_model):
    from seg_perception.ros.sample_stream import camera_info_msg

    cam, rgb = sample_scene_in_test_colours(320, 180)
    want = expected_cells(colour_model, cam, rgb, cam.pose_xyz, cam.pose_rpy)
    node = start_node(ros_domain, colour_model, **{"grid.enabled": True, "camera_pose.source": "tf"})
    try:
        grids, diag, pub, ci_pub = topics(peer)
        assert peer.wait_matched(pub), node.log()
        frame_id = {"id": "mystery_cam"}
        camera = Camera(pub, lambda s: image_msg(rgb, s, frame_id=frame_id["id"]), rate=10.0, info_pub=ci_pub,
                        make_info=lambda s: camera_info_msg(cam, s))
        camera.start()
        try:
            # a frame TF does not know: named, no grid
            st = grid_status(diag, lambda s: s.level == b"\x02" and "'mystery_cam'" in s.message)
            assert st is not None, node.log()
            # the mount not yet on /tf_static (robot_state_publisher still starting): no grid, counted
            frame_id["id"] = "camera_optical"
            st = grid_status(diag, lambda s: "'camera_optical'" in s.message)
            assert st is not None and int(status_values(st)["frames skipped (no camera pose)"]) > 0, node.log()
            assert not grids.snapshot()  # never a grid from any other pose
            # then it comes (latched): from then on the grid is the one camera_pose would give
            broadcaster = tf2_ros.StaticTransformBroadcaster(peer.node)
            broadcaster.sendTransform(mount(cam))
            t_tf = time.monotonic()
            assert grids.wait_count(3, 20), node.log()
            st = grid_status(diag, lambda s: s.level == b"\x00")
            assert st is not None and status_values(st)["camera pose"] == "TF base_link <- camera_optical"
        finally:
            camera.stop()
        got = grids.snapshot()
        assert all(np.array_equal(cells_of(g), want) for g in got), "a grid from another pose"
        assert min(stamp_of(g) for g in got) >= min(camera.stamps_between(t_tf - 1.0, time.monotonic()))
    finally:
        assert node.stop() == 0, node.log()


def test_a_camera_transform_only_in_the_future_gets_no_grid(ros_domain, peer, colour_model):
    """A moving mount (not static) whose transforms are all later than the frames: tf2 cannot
    extrapolate into the past; the frames get no grid, with tf2's reason."""
    from seg_perception.ros.sample_stream import camera_info_msg

    cam, rgb = sample_scene_in_test_colours(320, 180)
    node = start_node(ros_domain, colour_model, **{"grid.enabled": True, "camera_pose.source": "auto"})
    try:
        grids, diag, pub, ci_pub = topics(peer)
        assert peer.wait_matched(pub), node.log()
        moving = tf2_ros.TransformBroadcaster(peer.node)
        future = START + 3600 * 10 ** 9  # an hour after every frame
        static = tf2_ros.StaticTransformBroadcaster(peer.node)
        static.sendTransform(mount(cam)[1:])  # camera_link -> optical: static
        camera = Camera(pub, lambda s: image_msg(rgb, s), rate=10.0, info_pub=ci_pub,
                        make_info=lambda s: camera_info_msg(cam, s))

        def send_future():
            moving.sendTransform(transform("base_link", "camera_link", cam.pose_xyz, cam.pose_rpy,
                                           future + time.monotonic_ns() % 10 ** 9))
        send_future()
        camera.start()
        try:
            for _ in range(40):
                send_future()
                time.sleep(0.1)
            st = grid_status(diag, lambda s: "extrapolation" in s.message.lower(), timeout=5)
            assert st is not None and st.level == b"\x02", node.log()
            assert int(status_values(st)["frames skipped (no camera pose)"]) > 10
            assert not grids.snapshot()  # auto: TF knows the camera, the parameters are not used
        finally:
            camera.stop()
    finally:
        assert node.stop() == 0, node.log()


def test_auto_takes_camera_pose_where_tf_never_had_the_camera_and_tf_once_it_comes(ros_domain, peer, colour_model):
    from seg_perception.ros.sample_stream import camera_info_msg

    cam, rgb = sample_scene_in_test_colours(320, 180)
    params_xyz = (cam.pose_xyz[0], cam.pose_xyz[1], cam.pose_xyz[2] + 0.5)  # the parameters: 0.5 m higher
    from_params = expected_cells(colour_model, cam, rgb, params_xyz, cam.pose_rpy)
    from_tf = expected_cells(colour_model, cam, rgb, cam.pose_xyz, cam.pose_rpy)
    assert not np.array_equal(from_params, from_tf)
    node = start_node(ros_domain, colour_model, **{"grid.enabled": True, "camera_pose.xyz": list(params_xyz),
                                                    "camera_pose.rpy": list(cam.pose_rpy)})  # source: auto
    try:
        grids, diag, pub, ci_pub = topics(peer)
        assert peer.wait_matched(pub), node.log()
        camera = Camera(pub, lambda s: image_msg(rgb, s), rate=10.0, info_pub=ci_pub,
                        make_info=lambda s: camera_info_msg(cam, s))
        camera.start()
        try:
            st = grid_status(diag, lambda s: "waiting up to 2 s for TF" in s.message)
            assert st is not None, node.log()
            assert grids.wait_count(3, 20), node.log()  # then the parameters
            st = grid_status(diag, lambda s: s.level == b"\x00")
            assert st is not None and status_values(st)["camera pose"].startswith("camera_pose.xyz/rpy"), node.log()
            assert all(np.array_equal(cells_of(g), from_params) for g in grids.snapshot())
            broadcaster = tf2_ros.StaticTransformBroadcaster(peer.node)
            broadcaster.sendTransform(mount(cam))
            assert grids.wait_for(lambda m: any(np.array_equal(cells_of(g), from_tf) for g in m), 20), node.log()
            n = len(grids.snapshot())
            assert grids.wait_count(n + 3, 20)
        finally:
            camera.stop()
        got = grids.snapshot()
        switched = next(i for i, g in enumerate(got) if np.array_equal(cells_of(g), from_tf))
        assert all(np.array_equal(cells_of(g), from_tf) for g in got[switched:])  # TF, and only TF, from then on
    finally:
        assert node.stop() == 0, node.log()


def _drive(peer, node, cam, rgb, send_pose, frames=12):
    """Frames one at a time (each waits for its grid), the vehicle's pose at each stamp sent
    first; returns the last stamp and the map whose newest frame it is."""
    from seg_perception.ros.sample_stream import camera_info_msg

    grids = peer.subscribe(OccupancyGrid, "/camera_seg/drivable_grid", RELIABLE)
    maps = peer.subscribe(OccupancyGrid, "/camera_seg/drivable_map", RELIABLE)
    pub, ci_pub = peer.publisher(Image, "/image", RELIABLE), peer.publisher(CameraInfo, "/camera_info", RELIABLE)
    assert peer.wait_matched(pub) and peer.wait_matched(ci_pub), node.log()
    stamp = START
    for i in range(frames):
        stamp = START + i * 10 ** 8
        send_pose(stamp, 0.8 * i)  # 8 m/s
        time.sleep(0.05)
        ci_pub.publish(camera_info_msg(cam, stamp))
        for _ in range(3):
            pub.publish(image_msg(rgb, stamp))
            if grids.wait_for(lambda m: any(stamp_of(g) == stamp for g in m), 5):
                break
        else:
            raise AssertionError(f"no grid for frame {i}: {node.log()[-2000:]}")
    assert maps.wait_for(lambda m: any(stamp_of(x) == stamp for x in m), 20), node.log()
    return next(m for m in maps.snapshot() if stamp_of(m) == stamp)


def test_a_moving_odom_to_base_link_on_tf_drives_the_map_as_odometry_does(ros_domain, peer, colour_model):
    cam, rgb = sample_scene_in_test_colours(320, 180)
    common = {"grid.enabled": True, "map.enabled": True, "map.rate": 10.0, "camera_pose.source": "parameters",
              "camera_pose.xyz": list(cam.pose_xyz), "camera_pose.rpy": list(cam.pose_rpy)}
    from test_map_node import odom_msg

    node = start_node(ros_domain, colour_model, **common)
    try:
        odom_pub = peer.publisher(Odometry, "/odom", RELIABLE)
        assert peer.wait_matched(odom_pub), node.log()
        by_odometry = _drive(peer, node, cam, rgb, lambda t, x: odom_pub.publish(odom_msg(t, x)))
    finally:
        assert node.stop() == 0, node.log()
    node = start_node(ros_domain, colour_model, **dict(common, **{"map.pose_source": "tf"}))
    try:
        diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
        broadcaster = tf2_ros.TransformBroadcaster(peer.node)
        by_tf = _drive(peer, node, cam, rgb, lambda t, x: broadcaster.sendTransform(
            transform("odom", "base_link", (x, 0.0, 0.0), (0.0, 0.0, 0.0), t)))
        st = wait_status(diag, lambda s: True, suffix="drivable map")
        assert st is not None and status_values(st)["vehicle pose from"] == "TF odom <- base_link"
        assert int(status_values(st)["frames skipped (no pose at their stamp)"]) == 0
    finally:
        assert node.stop() == 0, node.log()
    assert by_tf.header.frame_id == by_odometry.header.frame_id == "odom"
    assert (by_tf.info.origin.position.x, by_tf.info.origin.position.y) == (
        by_odometry.info.origin.position.x, by_odometry.info.origin.position.y)
    assert np.array_equal(cells_of(by_tf), cells_of(by_odometry))
    assert (cells_of(by_tf) >= 0).sum() > 1000


def test_map_frames_without_a_transform_at_their_stamp_are_skipped_and_counted(ros_domain, peer, colour_model):
    from seg_perception.ros.sample_stream import camera_info_msg

    cam, rgb = sample_scene_in_test_colours(320, 180)
    node = start_node(ros_domain, colour_model, **{
        "grid.enabled": True, "map.enabled": True, "map.pose_source": "tf", "camera_pose.source": "parameters",
        "camera_pose.xyz": list(cam.pose_xyz), "camera_pose.rpy": list(cam.pose_rpy)})
    try:
        grids, diag, pub, ci_pub = topics(peer)
        maps = peer.subscribe(OccupancyGrid, "/camera_seg/drivable_map", RELIABLE)
        assert peer.wait_matched(pub), node.log()
        camera = Camera(pub, lambda s: image_msg(rgb, s), rate=10.0, info_pub=ci_pub,
                        make_info=lambda s: camera_info_msg(cam, s))
        camera.start()
        try:
            assert grids.wait_count(5, 30), node.log()  # the per-frame grid goes on
            st = wait_status(diag, lambda s: int(status_values(s).get("frames skipped (no pose at their stamp)", 0)) > 3,
                             suffix="drivable map")
            assert st is not None and "odom" in st.message and "base_link" in st.message, node.log()
            assert not maps.snapshot()
        finally:
            camera.stop()
    finally:
        assert node.stop() == 0, node.log()


def test_without_tf2_ros_auto_takes_camera_pose_and_tf_says_why(ros_domain, peer, colour_model, tmp_path):
    """A machine without tf2_ros (hidden from the node's Python here): auto makes grids from
    camera_pose.xyz/rpy and says so, and the map from TF skips every frame saying why; tf makes no
    grid and names what is missing."""
    from seg_perception.ros.sample_stream import camera_info_msg

    hide = tmp_path / "no_tf2"
    (hide / "tf2_ros").mkdir(parents=True)
    (hide / "tf2_ros" / "__init__.py").write_text("raise ImportError('No module named tf2_ros (hidden by the test)')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(hide)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    cam, rgb = sample_scene_in_test_colours(320, 180)
    model, labels = colour_model
    from ros_harness import NodeProcess

    for source in ("auto", "tf"):
        node = NodeProcess(ros_domain[0], ros_domain[1], env=env, params={
            "model": model, "label_file": labels, "grid.enabled": True, "camera_pose.source": source,
            "camera_pose.xyz": list(cam.pose_xyz), "camera_pose.rpy": list(cam.pose_rpy),
            "map.enabled": source == "auto", "map.pose_source": "tf"})
        try:
            grids, diag, pub, ci_pub = topics(peer)
            assert peer.wait_matched(pub), node.log()
            camera = Camera(pub, lambda s: image_msg(rgb, s), rate=10.0, info_pub=ci_pub,
                            make_info=lambda s: camera_info_msg(cam, s))
            camera.start()
            try:
                if source == "auto":
                    assert grids.wait_count(3, 20), node.log()
                    st = grid_status(diag, lambda s: s.level == b"\x00")
                    assert "tf2_ros is not available" in status_values(st)["camera pose"]
                    # the map's pose from TF: every frame skipped for the map, with the reason
                    st = wait_status(diag, lambda s: "tf2_ros is not available" in s.message, suffix="drivable map")
                    assert st is not None and int(status_values(st)["frames skipped (no pose at their stamp)"]) > 0
                else:
                    st = grid_status(diag, lambda s: s.level == b"\x02" and "tf2_ros is not available" in s.message)
                    assert st is not None, node.log()
                    assert not grids.snapshot()
            finally:
                camera.stop()
        finally:
            assert node.stop() == 0, node.log()


def test_replay_publishes_the_drive_s_tf_as_a_vehicle_did(ros_domain, peer, tmp_path):
    """seg-perception replay of the sample drive: a tf2 listener elsewhere finds the camera's
    mount (/tf_static, latched) and the vehicle's motion (/tf) at the frames' stamps."""
    import subprocess
    import sys

    from rclpy.duration import Duration
    from rclpy.time import Time

    from bag_helpers import run_cli
    from ros_harness import ros_env

    bag = str(tmp_path / "drive")
    code, _, err = run_cli(["sample-bag", bag, "--frames", "10", "--width", "160", "--height", "120"])
    assert code == 0, err
    buffer = tf2_ros.Buffer()
    listener = tf2_ros.TransformListener(buffer, peer.node)  # noqa: F841 (kept while the drive plays)
    cli = os.path.join(os.path.dirname(sys.executable), "seg-perception")
    res = subprocess.run([cli, "replay", bag, "--quiet", "--wait-for", "/tf"], env=ros_env(*ros_domain),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "NOT REPLAYED" not in res.stdout + res.stderr
    t = Time(seconds=1_700_000_000, nanoseconds=5 * 10 ** 8)  # frame 5
    end = time.monotonic() + 10
    while not buffer.can_transform("odom", "camera_optical_frame", t) and time.monotonic() < end:
        time.sleep(0.1)
    mounted = buffer.lookup_transform("base_link", "camera_optical_frame", t, Duration(seconds=1))
    assert mounted.transform.translation.z == pytest.approx(1.5)
    moved = buffer.lookup_transform("odom", "base_link", t, Duration(seconds=1))
    assert moved.transform.translation.x == pytest.approx(8.0 * 0.5)  # 8 m/s for 0.5 s
