"""~/drivable_map on the node over real DDS (issue #17): odometry in, the map in odom with the
frames' stamps; odometry that stops leaves the per-frame grid going and the map waiting (WARN);
a jump clears it and says why."""

from __future__ import annotations

import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid, Odometry

from ros_harness import RELIABLE, Camera
from test_node import image_msg, sample_scene_in_test_colours, start_node, stamp_of, status_values, wait_status


def odom_msg(stamp_ns: int, x: float) -> Odometry:
    msg = Odometry()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10 ** 9)
    msg.header.frame_id, msg.child_frame_id = "odom", "base_link"
    msg.pose.pose.position.x = x
    msg.pose.pose.orientation.w = 1.0
    return msg


def test_map_in_odom_from_odometry_stops_when_it_is_stale_and_clears_on_a_jump(ros_domain, peer, colour_model):
    from sensor_msgs.msg import CameraInfo, Image

    from seg_perception.ros.sample_stream import camera_info_msg

    cam, rgb = sample_scene_in_test_colours(320, 180)
    node = start_node(ros_domain, colour_model, **{
        "grid.enabled": True, "map.enabled": True, "map.rate": 5.0,
        "camera_pose.xyz": list(cam.pose_xyz), "camera_pose.rpy": list(cam.pose_rpy)})
    try:
        maps = peer.subscribe(OccupancyGrid, "/camera_seg/drivable_map", RELIABLE)
        grids = peer.subscribe(OccupancyGrid, "/camera_seg/drivable_grid", RELIABLE)
        diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
        img_pub = peer.publisher(Image, "/image", RELIABLE)
        info_pub = peer.publisher(CameraInfo, "/camera_info", RELIABLE)
        odom_pub = peer.publisher(Odometry, "/odom", RELIABLE)
        assert peer.wait_matched(img_pub) and peer.wait_matched(odom_pub), node.log()
        odometry = {"on": True, "offset": 0.0}
        first = []
        lock = threading.Lock()

        def info_and_odometry(stamp):
            # the vehicle drives at 1 m/s; its odometry at each frame's stamp, sent first
            with lock:
                first.append(stamp) if not first else None
                if odometry["on"]:
                    odom_pub.publish(odom_msg(stamp, odometry["offset"] + (stamp - first[0]) * 1e-9))
            return camera_info_msg(cam, stamp)

        camera = Camera(img_pub, lambda s: image_msg(rgb, s), rate=10.0, info_pub=info_pub,
                        make_info=info_and_odometry)
        camera.start()
        try:
            assert maps.wait_count(3, 30), node.log()
            m = maps.snapshot()[-1]
            sent = {s for s, _ in camera.sent}
            assert m.header.frame_id == "odom" and stamp_of(m) in sent
            assert (m.info.width, m.info.height, round(m.info.resolution, 3)) == (600, 600, 0.1)
            cells = np.frombuffer(m.data, np.int8).reshape(600, 600)
            x_now = (stamp_of(m) - first[0]) * 1e-9
            # the window is centred on the vehicle; the road ahead of it is known drivable
            assert abs(m.info.origin.position.x + 30.0 - x_now) < 15.0 and abs(m.info.origin.position.y + 30.0) < 0.2
            ahead = (np.arange(600) * 0.1 + m.info.origin.position.x > x_now + 5.0)
            assert ((cells[:, ahead] >= 0) & (cells[:, ahead] <= 35)).sum() > 1000
            assert (cells[:, ~ahead] == -1).mean() > 0.5  # behind the start nothing is known
            st = wait_status(diag, lambda s: s.name.endswith("drivable map"), suffix="drivable map")
            assert st is not None and st.message.startswith("updating"), st.message if st else node.log()
            # odometry stops: the map stops updating (WARN, stale), the per-frame grid goes on
            with lock:
                odometry["on"] = False
            st = wait_status(diag, lambda s: "stale" in s.message, suffix="drivable map", timeout=20)
            assert st is not None and st.level == b"\x01", [(x.name, x.message) for a in diag.snapshot()[-2:] for x in a.status]
            n_grid, stamp_map = len(grids.snapshot()), stamp_of(maps.snapshot()[-1])
            time.sleep(1.5)
            assert len(grids.snapshot()) > n_grid + 5
            assert stamp_of(maps.snapshot()[-1]) == stamp_map, "the map went on without odometry"
            # odometry is back: the map goes on
            with lock:
                odometry["on"] = True
            assert maps.wait_for(lambda ms: stamp_of(ms[-1]) > stamp_map, 10), node.log()
            assert "drivable map cleared" not in node.log()
            # odometry jumps 50 m between two poses 0.1 s apart: the map is cleared and says why
            with lock:
                odometry["offset"] = 50.0
            st = wait_status(diag, lambda s: "jumped" in status_values(s).get("last clear", ""),
                             suffix="drivable map", timeout=20)
            assert st is not None and st.message.startswith("updating"), node.log()
            assert "drivable map cleared: odometry jumped" in node.log()
        finally:
            camera.stop()
    finally:
        assert node.stop() == 0, node.log()
