"""Faults over real DDS: the backend failing mid-stream, the camera changing resolution, and
shutdown on SIGINT while frames are streaming."""

import signal
import time

from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CameraInfo, Image

from ros_harness import RELIABLE, Camera, NodeProcess
from test_node import (DiagnosticStatus_ERROR, DiagnosticStatus_OK, feed_until, image_msg, sample_scene_in_test_colours,
                       stamp_of, status_values, subscribe_outputs, wait_status)


def test_backend_failure_mid_stream_is_reported_and_recovers(ros_domain, peer, colour_model, tmp_path):
    fault_file = tmp_path / "fault"
    model, labels = colour_model
    node = NodeProcess(ros_domain[0], ros_domain[1],
                       params={"model": model, "label_file": labels, "grid.enabled": False},
                       env={"SEG_PERCEPTION_FAULT_FILE": str(fault_file)})
    cam = None
    try:
        outs = subscribe_outputs(peer, ("labels", "road_mask"))
        diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
        pub = peer.publisher(Image, "/image", RELIABLE)
        assert peer.wait_matched(pub), node.log()
        _, rgb = sample_scene_in_test_colours(320, 180)
        cam = Camera(pub, lambda s: image_msg(rgb, s))
        cam.start()
        assert outs["labels"].wait_count(3, 30), node.log()
        fault_file.write_text("fail")
        st = wait_status(diag, lambda s: s.level == DiagnosticStatus_ERROR and "injected" in s.message)
        assert st is not None, node.log()
        t_fail = time.monotonic()
        time.sleep(1.5)
        t_clear = time.monotonic()
        fault_file.write_text("")
        failed = cam.stamps_between(t_fail, t_clear - 0.3)
        assert len(failed) >= 5
        st = wait_status(diag, lambda s: s.level == DiagnosticStatus_OK)
        assert st is not None, node.log()
        assert int(status_values(st)["frames failed"]) >= len(failed)
        after = cam.stamps_between(time.monotonic() - 0.5, time.monotonic())
        assert outs["labels"].wait_for(lambda m: any(stamp_of(x) >= min(after) for x in m), 10)
        published = {stamp_of(m) for m in outs["labels"].snapshot() + outs["road_mask"].snapshot()}
        assert not published & set(failed), "outputs were published for frames whose inference failed"
        assert node.alive()
    finally:
        if cam is not None:
            cam.stop()
        assert node.stop() == 0, node.log()


def test_resolution_change_mid_stream(ros_domain, peer, colour_model):
    from seg_perception.ros.sample_stream import camera_info_msg

    cam_a, rgb_a = sample_scene_in_test_colours(320, 180)
    cam_b, rgb_b = sample_scene_in_test_colours(480, 270)
    model, labels = colour_model
    node = NodeProcess(ros_domain[0], ros_domain[1], params={
        "model": model, "label_file": labels, "camera_pose.xyz": list(cam_a.pose_xyz),
        "camera_pose.rpy": list(cam_a.pose_rpy)})
    try:
        outs = subscribe_outputs(peer, ("labels", "overlay"))
        grids = peer.subscribe(OccupancyGrid, "/camera_seg/drivable_grid", RELIABLE)
        diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
        pub = peer.publisher(Image, "/image", RELIABLE)
        ci_pub = peer.publisher(CameraInfo, "/camera_info", RELIABLE)
        assert peer.wait_matched(pub) and peer.wait_matched(ci_pub), node.log()

        def frame(cam, rgb):
            def make(stamp):
                ci_pub.publish(camera_info_msg(cam, stamp))
                return image_msg(rgb, stamp)
            return make

        feed_until(peer, pub, frame(cam_a, rgb_a), [outs["labels"], outs["overlay"], grids])
        builds_a = int(status_values(wait_status(diag, lambda s: True, suffix="drivable grid"))["lookup table builds"])
        switch = stamp_of(image_msg(rgb_b, 1_900_000_000_000_000_000))
        feed_until(peer, pub, lambda s: frame(cam_b, rgb_b)(s + 200_000_000_000_000_000),
                   [outs["labels"], outs["overlay"], grids])
        time.sleep(1.5)
        for col, size in ((outs["labels"], (270, 480)), (outs["overlay"], (270, 480))):
            for m in col.snapshot():
                assert ((m.height, m.width) == size) == (stamp_of(m) >= switch), "stale size published"
        st = wait_status(diag, lambda s: True, suffix="drivable grid")
        assert int(status_values(st)["lookup table builds"]) == builds_a + 1  # rebuilt once, for the new size
    finally:
        assert node.stop() == 0, node.log()


def test_sigint_while_streaming_exits_cleanly_and_quickly(ros_domain, peer, colour_model):
    model, labels = colour_model
    node = NodeProcess(ros_domain[0], ros_domain[1], params={"model": model, "label_file": labels})
    cam = None
    try:
        outs = subscribe_outputs(peer, ("labels",))
        pub = peer.publisher(Image, "/image", RELIABLE)
        assert peer.wait_matched(pub), node.log()
        _, rgb = sample_scene_in_test_colours(640, 360)
        cam = Camera(pub, lambda s: image_msg(rgb, s), rate=30.0)
        cam.start()
        assert outs["labels"].wait_count(3, 30), node.log()
        t0 = time.monotonic()
        code = node.stop(signal.SIGINT, timeout=10)
        elapsed = time.monotonic() - t0
        assert code == 0, node.log()
        assert elapsed < 3.0, elapsed
        assert "Traceback" not in node.log()
    finally:
        if cam is not None:
            cam.stop()
        node.stop()
