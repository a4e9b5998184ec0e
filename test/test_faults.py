"""Faults over real DDS: the backend failing mid-stream, the camera changing resolution, and
shutdown on SIGINT while frames are streaming."""

import os
import signal
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CameraInfo, Image

from ros_harness import RELIABLE, Camera, NodeProcess, still_there

# the node with faults the tests switch from outside (test/fault_node.py): a registered backend
# that fails on demand, worker steps that crash on demand
FAULT_NODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fault_node.py")
from test_node import (DiagnosticStatus_ERROR, DiagnosticStatus_OK, DiagnosticStatus_WARN, feed_until, grid_test_topics,
                       image_msg, latest_status, sample_scene_in_test_colours, stamp_of, status_values,
                       subscribe_outputs, wait_status)


def test_backend_failure_mid_stream_is_reported_and_recovers(ros_domain, peer, colour_model, tmp_path):
    fault_file = tmp_path / "fault"
    model, labels = colour_model
    node = NodeProcess(ros_domain[0], ros_domain[1],
                       params={"model": model, "label_file": labels, "grid.enabled": False, "backend": "faulty"},
                       env={"SEG_TEST_FAULT_FILE": str(fault_file)}, executable=FAULT_NODE)
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


def stream_until_labels(peer, node, width=640, height=360, rate=30.0) -> Camera:
    """A camera streaming the test scene to /image until the node's labels come back."""
    outs = subscribe_outputs(peer, ("labels",))
    pub = peer.publisher(Image, "/image", RELIABLE)
    assert peer.wait_matched(pub), node.log()
    _, rgb = sample_scene_in_test_colours(width, height)
    cam = Camera(pub, lambda s: image_msg(rgb, s), rate=rate)
    cam.start()
    assert outs["labels"].wait_count(3, 30), node.log()
    return cam


def test_sigint_while_streaming_exits_cleanly_and_quickly(ros_domain, peer, colour_model):
    model, labels = colour_model
    node = NodeProcess(ros_domain[0], ros_domain[1], params={"model": model, "label_file": labels})
    cam = None
    try:
        cam = stream_until_labels(peer, node)
        segments = node.shm_segments()
        assert any(os.path.getsize(s) > 64e6 for s in segments), segments  # the shipped profile's 64 MB
        t0 = time.monotonic()
        code = node.stop(signal.SIGINT, timeout=10)
        elapsed = time.monotonic() - t0
        assert code == 0, node.log()
        assert elapsed < 3.0, elapsed
        assert "Traceback" not in node.log()
        # its participant went with it: no shared-memory segment left in /dev/shm
        assert still_there(segments) == []
    finally:
        if cam is not None:
            cam.stop()
        node.stop()


def test_late_camera_with_uncalibrated_info_logs_each_severity_and_outputs_go_on(ros_domain, peer, colour_model):
    """Issue #12: a camera that starts after the node (WARN: CameraInfo never received), sends a
    bad frame and then CameraInfo with K all zeros (grid ERROR). Logging WARN and then ERROR
    killed the output thread; now every frame after that still gets its masks, the bad frame
    is named for what it is and counted failed once."""
    from seg_perception.ros.sample_stream import camera_info_msg

    cam, rgb = sample_scene_in_test_colours(320, 180)
    model, labels = colour_model
    node = NodeProcess(ros_domain[0], ros_domain[1], params={
        "model": model, "label_file": labels, "log_throttle_sec": 0.0, "diagnostics_period": 0.25,
        "camera_pose.xyz": list(cam.pose_xyz), "camera_pose.rpy": list(cam.pose_rpy)})
    camera = None
    try:
        outs, grids, diag, pub, ci_pub = grid_test_topics(peer)
        assert peer.wait_matched(pub) and peer.wait_matched(ci_pub), node.log()
        # images, no CameraInfo yet: masks, and a WARN for the grid
        mode = {"info": None}
        bad_k = camera_info_msg(cam)
        bad_k.k = [0.0] * 9
        go = threading.Event()  # cleared: the camera holds its next frame
        go.set()

        def frame(stamp):
            go.wait(10.0)
            return image_msg(rgb, stamp)

        camera = Camera(pub, frame, rate=10.0, info_pub=ci_pub, make_info=lambda s: mode["info"])
        camera.start()
        st = wait_status(diag, lambda s: s.level == DiagnosticStatus_WARN and "never received" in s.message,
                         suffix="drivable grid")
        assert st is not None, node.log()
        assert "CameraInfo on /camera_info never received" in node.log()  # the WARN was logged
        # one truncated frame after that WARN: its own error, counted once. The camera holds its
        # frames meanwhile: a newer frame would replace it in the node's slot (newest wins) on a
        # loaded machine before the node has looked at it
        go.clear()
        time.sleep(0.5)
        short = image_msg(rgb, 1_600_000_000_000_000_000)
        short.data = bytes(short.data[:1000])
        pub.publish(short)
        st = wait_status(diag, lambda s: s.level == DiagnosticStatus_ERROR and "shorter than" in s.message)
        go.set()
        assert st is not None, node.log()
        assert "ValueError" not in st.message
        st = wait_status(diag, lambda s: int(status_values(s)["frames failed"]) >= 1)
        time.sleep(1.0)
        assert int(status_values(latest_status(diag))["frames failed"]) == 1, node.log()
        # now the uncalibrated CameraInfo: grid ERROR, and the masks keep coming
        mode["info"] = bad_k
        st = wait_status(diag, lambda s: s.level == DiagnosticStatus_ERROR and "CameraInfo" in s.message,
                         suffix="drivable grid")
        assert st is not None, node.log()
        t_bad = time.monotonic()
        time.sleep(3.0)
        served = {stamp_of(m) for m in outs["labels"].snapshot()}
        sent = camera.stamps_between(t_bad, time.monotonic() - 0.5)
        assert len(sent) >= 20 and len(served & set(sent)) >= len(sent) // 2, (len(sent), node.log())
        assert not {stamp_of(m) for m in grids.snapshot()} & set(sent)
        st = latest_status(diag)
        assert int(status_values(st)["frames failed"]) == 1 and "building outputs failed" not in st.message
        log = node.log()
        assert "severity cannot be changed" not in log and "Traceback" not in log, log
        assert node.alive()
    finally:
        if camera is not None:
            camera.stop()
        assert node.stop() == 0, node.log()


def test_a_worker_thread_that_fails_is_reported_and_restarted(ros_domain, peer, colour_model, tmp_path):
    """A bug outside the per-frame error handling (injected) ends a worker's loop: diagnostics
    ERROR with the exception, the thread starts again, outputs resume and the status clears."""
    fault_file = tmp_path / "fault"
    node = NodeProcess(ros_domain[0], ros_domain[1],
                       params={"model": colour_model[0], "label_file": colour_model[1], "grid.enabled": False,
                               "diagnostics_period": 0.25},
                       env={"SEG_TEST_FAULT_FILE": str(fault_file)}, executable=FAULT_NODE)
    cam = None
    try:
        outs = subscribe_outputs(peer, ("labels",))
        diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
        pub = peer.publisher(Image, "/image", RELIABLE)
        assert peer.wait_matched(pub), node.log()
        _, rgb = sample_scene_in_test_colours(320, 180)
        cam = Camera(pub, lambda s: image_msg(rgb, s))
        cam.start()
        for thread in ("outputs", "prepare", "inference"):
            assert outs["labels"].wait_count(3, 30), node.log()
            fault_file.write_text(f"crash-once {thread}")
            st = wait_status(diag, lambda s: s.level == DiagnosticStatus_ERROR and f"{thread} thread failed" in s.message
                             and "InjectedFault" in s.message)
            assert st is not None, (thread, node.log())
            t_crash = time.monotonic()
            st = wait_status(diag, lambda s: s.level == DiagnosticStatus_OK)
            assert st is not None, (thread, node.log())
            time.sleep(max(0.0, t_crash + 3.0 - time.monotonic()))
            after = cam.stamps_between(t_crash + 1.0, t_crash + 3.0)
            assert outs["labels"].wait_for(lambda m: any(stamp_of(x) in after for x in m), 10), (thread, node.log())
        assert int(status_values(latest_status(diag))["worker restarts"]) == 3
        # the restarted output thread (the same OS thread) is at output_niceness, not niced again
        base = os.getpriority(os.PRIO_PROCESS, 0)  # the node inherits the test's niceness
        assert max(node.thread_niceness()) == (min(19, base + 5) if len(os.sched_getaffinity(0)) >= 2 else base)
        assert node.alive()
        assert node.log().count("Traceback") == 3  # each failure's traceback is in the log
    finally:
        if cam is not None:
            cam.stop()
        assert node.stop() == 0, node.log()


def test_a_worker_thread_that_keeps_failing_ends_the_node_non_zero(ros_domain, peer, colour_model, tmp_path):
    """Failing again and again (more than 3 times a minute), restarting in place is no cure: the
    node says so in diagnostics and exits non-zero, for a launch file's respawn."""
    fault_file = tmp_path / "fault"
    fault_file.write_text("crash outputs")
    node = NodeProcess(ros_domain[0], ros_domain[1],
                       params={"model": colour_model[0], "label_file": colour_model[1], "grid.enabled": False},
                       env={"SEG_TEST_FAULT_FILE": str(fault_file)}, executable=FAULT_NODE)
    cam = None
    try:
        outs = subscribe_outputs(peer, ("labels",))
        diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
        pub = peer.publisher(Image, "/image", RELIABLE)
        assert peer.wait_matched(pub), node.log()
        _, rgb = sample_scene_in_test_colours(320, 180)
        segments = node.shm_segments()  # now: once it says "exiting" they may be gone already
        assert segments, node.log()
        cam = Camera(pub, lambda s: image_msg(rgb, s))
        cam.start()
        st = wait_status(diag, lambda s: s.level == DiagnosticStatus_ERROR and "exiting" in s.message, timeout=30)
        assert st is not None and "outputs thread failed" in st.message, node.log()
        node.proc.wait(10)
        assert node.proc.returncode == 2, node.log()
        assert still_there(segments) == []  # a respawn loop leaks no /dev/shm
        assert not outs["labels"].snapshot()
        assert "exiting with code 2" in node.log()
    finally:
        if cam is not None:
            cam.stop()
        node.stop()


def test_repeated_sigint_and_sigterm_while_streaming_exit_cleanly(ros_domain, peer, colour_model):
    """ros2 launch in a terminal: Ctrl-C reaches the node from the terminal and from launch, then
    launch may escalate to SIGTERM. Exit 0, quickly, nothing aborted."""
    model, labels = colour_model
    for pause in (0.0, 0.05, 0.2):
        node = NodeProcess(ros_domain[0], ros_domain[1], params={"model": model, "label_file": labels})
        cam = None
        try:
            cam = stream_until_labels(peer, node)
            t0 = time.monotonic()
            for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGINT):
                node.proc.send_signal(sig)
                time.sleep(pause)
            node.proc.wait(10)
            elapsed = time.monotonic() - t0
            log = node.log()
            assert node.proc.returncode == 0, (pause, log)
            assert elapsed < 3.0, elapsed
            assert "terminate called" not in log and "Traceback" not in log, log
        finally:
            if cam is not None:
                cam.stop()
            node.stop()


def test_a_frame_larger_than_max_image_pixels_is_rejected_and_the_limit_can_change(ros_domain, peer, colour_model):
    from test_node import set_params

    node = NodeProcess(ros_domain[0], ros_domain[1], params={
        "model": colour_model[0], "label_file": colour_model[1], "grid.enabled": False,
        "max_image_pixels": 320 * 180})
    try:
        outs = subscribe_outputs(peer, ("labels",))
        diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
        pub = peer.publisher(Image, "/image", RELIABLE)
        assert peer.wait_matched(pub), node.log()
        _, small = sample_scene_in_test_colours(320, 180)
        _, big = sample_scene_in_test_colours(640, 360)
        feed_until(peer, pub, lambda s: image_msg(small, s), [outs["labels"]])
        big_stamp = 1_650_000_000_000_000_000
        pub.publish(image_msg(big, big_stamp))
        st = wait_status(diag, lambda s: s.level == DiagnosticStatus_ERROR and "max_image_pixels" in s.message)
        assert st is not None and "640x360" in st.message, (latest_status(diag), node.log())
        time.sleep(1.0)
        assert big_stamp not in {stamp_of(m) for m in outs["labels"].snapshot()}
        # the limit is a runtime parameter: lifted, the same frame size is served
        res = set_params(peer, {"max_image_pixels": 0})
        assert res[0].successful, res[0].reason
        stamp = feed_until(peer, pub, lambda s: image_msg(big, s + 7), [outs["labels"]])
        m = next(x for x in outs["labels"].snapshot() if stamp_of(x) == stamp)
        assert (m.width, m.height) == (640, 360)
    finally:
        assert node.stop() == 0, node.log()


def test_auto_input_qos_waits_for_the_camera_and_answers_its_first_frame(ros_domain, peer, colour_model):
    """input_qos.reliability auto with no camera yet: the node subscribes once the camera is
    there, with its reliability (it subscribed best-effort at start and re-subscribed a second
    later, losing the frame in flight). A camera that sends one frame once matched gets its answer."""
    node = NodeProcess(ros_domain[0], ros_domain[1], params={
        "model": colour_model[0], "label_file": colour_model[1], "grid.enabled": False})
    try:
        outs = subscribe_outputs(peer, ("labels",))
        time.sleep(4.0)  # the node is up, no camera
        assert "no publisher yet" in node.log(), node.log()
        pub = peer.publisher(Image, "/image", RELIABLE)
        assert peer.wait_matched(pub), node.log()
        _, rgb = sample_scene_in_test_colours(320, 180)
        stamp = 1_640_000_000_000_000_000
        pub.publish(image_msg(rgb, stamp))
        assert outs["labels"].wait_for(lambda m: any(stamp_of(x) == stamp for x in m), 10), node.log()
        log = node.log()
        assert log.count("subscribing reliable to match its publishers") == 1 and "best-effort" not in log, log
    finally:
        assert node.stop() == 0, node.log()


def test_camera_info_is_found_beside_the_remapped_image_topic(ros_domain, peer, colour_model):
    """image_transport's convention: remapping only 'image' to /cam0/image_raw listens for
    CameraInfo on /cam0/camera_info (the README's examples gave a node with no grid)."""
    from nav_msgs.msg import OccupancyGrid
    from sensor_msgs.msg import CameraInfo

    from seg_perception.ros.camera import camera_info_beside
    from seg_perception.ros.sample_stream import camera_info_msg

    assert camera_info_beside("/front/left/image_raw") == "/front/left/camera_info"
    assert camera_info_beside("/image") == "/camera_info"
    cam, rgb = sample_scene_in_test_colours(320, 180)
    node = NodeProcess(ros_domain[0], ros_domain[1], remaps={"image": "/cam0/image_raw"}, params={
        "model": colour_model[0], "label_file": colour_model[1],
        "camera_pose.xyz": list(cam.pose_xyz), "camera_pose.rpy": list(cam.pose_rpy)})
    try:
        grids = peer.subscribe(OccupancyGrid, "/camera_seg/drivable_grid", RELIABLE)
        pub = peer.publisher(Image, "/cam0/image_raw", RELIABLE)
        ci_pub = peer.publisher(CameraInfo, "/cam0/camera_info", RELIABLE)
        assert peer.wait_matched(pub) and peer.wait_matched(ci_pub), node.log()

        def frame(stamp):
            ci_pub.publish(camera_info_msg(cam, stamp))
            return image_msg(rgb, stamp)

        feed_until(peer, pub, frame, [grids])
        assert "subscribing /cam0/image_raw (raw) and /cam0/camera_info" in node.log()
    finally:
        assert node.stop() == 0, node.log()
