"""Several cameras in one node over real DDS (issue #16): per-camera outputs under ~/C/ with
their stamps and frames, one network, the surround grid fused from both, and a camera that
stalls while the other goes on."""

from __future__ import annotations

import math
import os
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CameraInfo, Image

from ros_harness import RELIABLE, Camera
from seg_perception.core.pipeline import WAITS
from test_node import as_array, image_msg, sample_scene_in_test_colours, start_node, stamp_of, status_values, \
    wait_status

CAMERAS = ("front", "rear")


def start_front_and_rear(ros_domain, colour_model, cam, **params):
    """The node with two cameras: front as the sample camera, rear the same mount turned round."""
    xyz, rpy = list(cam.pose_xyz), list(cam.pose_rpy)
    return start_node(ros_domain, colour_model, **{
        "cameras": "[front, rear]", "grid.enabled": True, "grid.x_min": -40.0, "grid.max_spread": 0.5,
        "front.camera_pose.xyz": xyz, "front.camera_pose.rpy": rpy,
        "rear.camera_pose.xyz": [-xyz[0], xyz[1], xyz[2]], "rear.camera_pose.rpy": [rpy[0], rpy[1], math.pi],
        **params})


def rig_topics(peer, node):
    """(labels, surround grid, diagnostics collectors; image and CameraInfo publishers), matched."""
    labels = {c: peer.subscribe(Image, f"/camera_seg/{c}/labels", RELIABLE) for c in CAMERAS}
    surround = peer.subscribe(OccupancyGrid, "/camera_seg/drivable_grid", RELIABLE)
    diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
    pubs = {c: peer.publisher(Image, f"/{c}/image_raw", RELIABLE) for c in CAMERAS}
    infos = {c: peer.publisher(CameraInfo, f"/{c}/camera_info", RELIABLE) for c in CAMERAS}
    for c in CAMERAS:
        assert peer.wait_matched(pubs[c]) and peer.wait_matched(infos[c]), node.log()
    return labels, surround, diag, pubs, infos


def test_two_cameras_one_network_surround_grid_and_a_stalled_camera(ros_domain, peer, colour_model):
    from seg_perception.ros.sample_stream import camera_info_msg

    cam, rgb = sample_scene_in_test_colours(320, 180)
    # the rear camera looks backwards; two network runs at once, a camera each
    node = start_front_and_rear(ros_domain, colour_model, cam, inference_workers=2)
    try:
        grids = {c: peer.subscribe(OccupancyGrid, f"/camera_seg/{c}/drivable_grid", RELIABLE) for c in CAMERAS}
        labels, surround, diag, pubs, infos = rig_topics(peer, node)

        def frame_of(c):
            def make(stamp):
                return image_msg(rgb, stamp + (7 if c == "rear" else 0), frame_id=f"{c}_optical")
            return make

        cams = {c: Camera(pubs[c], frame_of(c), rate=5.0, info_pub=infos[c],
                          make_info=lambda s: camera_info_msg(cam, s)) for c in CAMERAS}
        for c in cams.values():
            c.start()
        try:
            for c in CAMERAS:
                assert labels[c].wait_count(3, 30) and grids[c].wait_count(2, 30), node.log()
            assert surround.wait_count(3, 30), node.log()
            # each camera's outputs carry its own frames' stamps and frame_id
            for c in CAMERAS:
                sent = {s for s, _ in cams[c].sent}
                got = labels[c].snapshot()
                assert {stamp_of(m) for m in got} <= sent and all(m.header.frame_id == f"{c}_optical" for m in got)
                np.testing.assert_array_equal(as_array(got[-1]).shape, (180, 320))
            cells = {c: np.frombuffer(grids[c].snapshot()[-1].data, np.int8).reshape(400, 800)
                     for c in CAMERAS}
            fused = np.frombuffer(surround.snapshot()[-1].data, np.int8).reshape(400, 800)
            assert surround.snapshot()[-1].header.frame_id == "base_link"
            ahead, behind = np.s_[:, 400:], np.s_[:, :400]  # x >= 0 and x < 0 (x_min -40, 0.1 m)
            assert (cells["front"][ahead] == 0).sum() > 1000 and (cells["front"][behind] == 0).sum() == 0
            assert (cells["rear"][behind] == 0).sum() > 1000 and (cells["rear"][ahead] == 0).sum() == 0
            # the surround grid knows both sides
            assert (fused[ahead] == 0).sum() > 1000 and (fused[behind] == 0).sum() > 1000
            # one network for both: its status names both cameras; each camera has its own
            st = wait_status(diag, lambda s: "cameras" in status_values(s))
            assert st is not None and status_values(st)["cameras"] == "front, rear"
            assert status_values(st)["network runs at once"] == "2"
            # where a frame waited: 5 Hz cameras, a network that keeps up: nearly nowhere
            cam_st = wait_status(diag, lambda s: s.name.endswith("front segmentation") and "stage wait for network (ms)"
                                 in status_values(s))
            assert cam_st is not None
            waits = {w: float(status_values(cam_st)[f"stage {w} (ms)"]) for w in WAITS}
            assert all(0 <= v < 50 for v in waits.values()), waits
            assert "up to 1 frame per run, 2 runs at once" in node.log()
            # the output thread is niced only where the two runs (one session thread, and the
            # second run's own) leave a core: not on 2 cores
            base = os.getpriority(os.PRIO_PROCESS, 0)  # the node inherits the test's niceness
            niced = len(os.sched_getaffinity(0)) > 2
            assert max(node.thread_niceness()) == (min(19, base + 5) if niced else base), node.thread_niceness()
            assert (not niced) == ("output thread at niceness 0" in node.log())
            # the rear camera stalls: the front goes on, the surround grid forgets the rear view
            cams["rear"].stop()
            t_stall = time.monotonic()
            n_front = len(labels["front"].snapshot())
            st = wait_status(diag, lambda s: s.name.endswith("rear segmentation") and "no images" in s.message,
                             timeout=20)
            assert st is not None, [(x.name, x.message) for a in diag.snapshot()[-3:] for x in a.status]
            assert len(labels["front"].snapshot()) > n_front
            n_rear = len(labels["rear"].snapshot())
            time.sleep(1.5)
            assert len(labels["rear"].snapshot()) == n_rear  # its outputs stopped with it
            late = [m for m in surround.snapshot()
                    if stamp_of(m) in {s for s, t in cams["front"].sent if t > t_stall + 1.0}]
            assert late, node.log()
            fused = np.frombuffer(late[-1].data, np.int8).reshape(400, 800)
            assert (fused[behind] == 0).sum() == 0 and (fused[ahead] == 0).sum() > 1000
            st = wait_status(diag, lambda s: s.name.endswith(": drivable grid") and "fused from" in s.message,
                             suffix="drivable grid")
            assert st is not None and st.message == "fused from front"
        finally:
            for c in cams.values():
                c.stop()
    finally:
        assert node.stop() == 0, node.log()


def test_the_shipped_four_camera_config_starts_one_node_with_four_cameras(ros_domain, peer, colour_model):
    """config/multi_camera.yaml as the node reads it: four cameras, each with its topics and
    pose, outputs under ~/C/, the surround grid all around the car."""
    import os

    from ros_harness import NodeProcess
    from test_node import get_param

    from seg_perception.core.config import complete, read_params_file

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config", "multi_camera.yaml")
    shipped = complete(read_params_file(path))
    assert shipped["cameras"] == ["front", "left", "right", "rear"]
    model, labels = colour_model
    node = NodeProcess(ros_domain[0], ros_domain[1], params={"model": model, "label_file": labels},
                       params_file=path)
    try:
        for c in ("front", "left", "right", "rear"):
            assert peer.wait_publishers(f"/camera_seg/{c}/labels"), node.log()
            assert peer.wait_publishers(f"/camera_seg/{c}/drivable_grid"), node.log()
        assert peer.wait_publishers("/camera_seg/drivable_grid"), node.log()
        assert get_param(peer, "left.camera_pose.rpy") == [0.0, 0.25, 1.5708]
        assert get_param(peer, "grid.x_min") == -30.0
        for c in ("front", "rear"):
            assert f"subscribing /{c}/image_raw" in node.log()
        # the network on this CPU: one frame a run, the runs side by side (max_batch 0)
        end = time.monotonic() + 30.0
        while "cameras on one network" not in node.log() and time.monotonic() < end:
            time.sleep(0.2)
        assert "4 cameras on one network, up to 1 frame per run" in node.log() and \
            "one frame a run, as a batch there costs" in node.log(), node.log()
    finally:
        assert node.stop() == 0, node.log()


def test_cameras_of_different_sizes_in_one_batch_and_one_with_invalid_camera_info(ros_domain, peer, colour_model):
    """front 320x180 and rear 160x120 go through the network as one batch of two (one network
    run at a time: inference_workers 1); the rear's
    CameraInfo is invalid (K all zeros): its grid is refused with the reason, its masks go on,
    and the surround grid holds the front's view alone (the rear's part stays unknown)."""
    from seg_perception.ros.sample_stream import camera_info_msg

    cam, rgb_front = sample_scene_in_test_colours(320, 180)
    rear_cam, rgb_rear = sample_scene_in_test_colours(160, 120)
    node = start_front_and_rear(ros_domain, colour_model, cam, inference_workers=1)
    try:
        labels, surround, diag, pubs, infos = rig_topics(peer, node)

        def bad_info(stamp):
            msg = camera_info_msg(rear_cam, stamp)
            msg.k = [0.0] * 9
            msg.p = [0.0] * 12
            return msg

        cams = {"front": Camera(pubs["front"], lambda s: image_msg(rgb_front, s, frame_id="front_optical"),
                                rate=5.0, info_pub=infos["front"], make_info=lambda s: camera_info_msg(cam, s)),
                "rear": Camera(pubs["rear"], lambda s: image_msg(rgb_rear, s + 7, frame_id="rear_optical"),
                               rate=5.0, info_pub=infos["rear"], make_info=bad_info)}
        for c in cams.values():
            c.start()
        try:
            for c in CAMERAS:
                assert labels[c].wait_count(3, 30), node.log()
            assert [as_array(labels[c].snapshot()[-1]).shape for c in CAMERAS] == [(180, 320), (120, 160)]
            assert "2 cameras on one network, up to 2 frames per run, 1 run at once" in node.log()
            st = wait_status(diag, lambda s: s.name.endswith("rear drivable grid") and s.level != b"\x00",
                             suffix="drivable grid")
            assert st is not None and "invalid CameraInfo" in st.message and st.level == b"\x02", node.log()
            # the front's grid: after auto's wait for TF (none comes), from camera_pose, OK
            st = wait_status(diag, lambda s: s.name.endswith("front drivable grid") and "waiting" not in s.message,
                             suffix="drivable grid")
            assert st is not None and st.level == b"\x00", st.message
            assert surround.wait_count(3, 30), node.log()
            fused = np.frombuffer(surround.snapshot()[-1].data, np.int8).reshape(400, 800)
            ahead, behind = np.s_[:, 400:], np.s_[:, :400]
            assert (fused[ahead] == 0).sum() > 1000 and (fused[behind] != -1).sum() == 0
            st = wait_status(diag, lambda s: "cameras" in status_values(s))
            assert status_values(st)["frames per network run (max)"] == "2"
        finally:
            for c in cams.values():
                c.stop()
    finally:
        assert node.stop() == 0, node.log()
