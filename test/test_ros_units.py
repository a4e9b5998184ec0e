"""ROS-side units without DDS: parameter checks, the DDS profile choice, message conversions."""

import numpy as np
import pytest
from std_msgs.msg import Header

from seg_perception.core.resources import FASTDDS_PROFILE
from seg_perception.ros.conversions import image_msg, image_to_array, occupancy_grid_msg
from seg_perception.ros.dds_profile import profile_env
from seg_perception.core.config import ConfigError, NodeConfig, check_all, read_params_file
from seg_perception.core.parameters import SPECS, check, default_parameters


@pytest.mark.parametrize("env,applied", [
    ({}, True),
    ({"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}, True),
    ({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}, False),
    ({"FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"}, False),
    ({"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}, False),
])
def test_dds_profile_only_when_the_user_chose_nothing(env, applied):
    assert profile_env(env) == ({"FASTRTPS_DEFAULT_PROFILES_FILE": FASTDDS_PROFILE} if applied else {})


def test_shipped_profile_has_a_64mb_shm_segment_and_keeps_udp():
    import xml.etree.ElementTree as ET

    ns = {"f": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    root = ET.parse(FASTDDS_PROFILE).getroot()
    kinds = {d.find("f:type", ns).text: d for d in root.iterfind(".//f:transport_descriptor", ns)}
    assert int(kinds["SHM"].find("f:segment_size", ns).text) == 64 * 1024 * 1024
    assert "UDPv4" in kinds
    assert root.find(".//f:useBuiltinTransports", ns).text == "false"


@pytest.mark.parametrize("name,value,needle", [
    ("backend", "openvino", "must be one of"),
    ("image_transport", "theora", "must be one of"),
    ("overlay_alpha", 1.5, r"within \[0.0, 1.0\]"),
    ("input_qos.depth", 0, "within"),
    ("camera_pose.xyz", [0.0, 1.0], "3 finite numbers"),
    ("camera_pose.rpy", [0.0, float("nan"), 0.0], "3 finite numbers"),
])
def test_bad_parameter_values_are_rejected_with_a_reason(name, value, needle):
    import re

    reason = check(name, value)
    assert reason and re.search(needle, reason)


def test_cross_parameter_checks_and_shipped_params_file():
    values = default_parameters()
    assert check_all(values) is None
    values["grid.x_min"] = 50.0
    assert "grid.x_min" in check_all(values)
    values = default_parameters()
    values["grid.frame_id"] = " "
    assert "grid.frame_id" in check_all(values)
    values = dict(default_parameters(), **{"map.enabled": True, "map.size": 400.0, "map.resolution": 0.05})
    assert "too large" in check_all(values)  # the map's own limit (8000 x 8000 cells)
    values["map.resolution"] = 0.25
    assert check_all(values) is None
    shipped = read_params_file("config/camera_seg.yaml")
    # the params file documents every parameter with its default
    assert shipped == default_parameters()
    assert {s.name for s in SPECS} == set(shipped)


def test_a_set_of_changes_is_applied_whole_or_not_at_all():
    current = NodeConfig.from_values({})
    before = dict(current.values)
    after = current.changed({"overlay_alpha": 0.2, "min_confidence.grid": 0.7})
    assert after.outputs.overlay_alpha == 0.2 and after.outputs.min_confidence["grid"] == 0.7
    assert dict(current.values) == before  # the caller's configuration untouched: it swaps them when accepted
    refused = [({"overlay_alpha": 0.2, "min_confidence.grid": 7.0}, "min_confidence.grid"),  # one bad value
               ({"grid.x_min": 50.0}, "read-only"),                                        # a restart
               ({"cameras": ["front"]}, "read-only"),
               ({"no_such": 1}, "unknown parameter")]
    for changes, needle in refused:
        with pytest.raises(ConfigError, match=needle):
            current.changed(changes)
    assert dict(current.values) == before
    tf = NodeConfig.from_values({"camera_pose.source": "tf"})
    with pytest.raises(ConfigError, match="camera_pose.source is tf"):
        tf.changed({"camera_pose.xyz": [0.0, 0.0, 1.5]})
    assert tf.changed({"overlay_alpha": 0.1}).outputs.overlay_alpha == 0.1


def test_tools_refuse_a_bad_node_parameter_before_starting_the_node():
    from seg_perception.tools.support.common import ParameterError, checked_overrides

    good = ["grid.enabled:=false", "use_sim_time:=true", "front.camera_pose.xyz:=[1.0, 0.0, 1.5]"]
    # a camera's own parameter with the params file that names the camera, as the node reads them
    assert checked_overrides(good, "config/multi_camera.yaml") == good
    assert checked_overrides(["cameras:=[front]"] + good) == ["cameras:=[front]"] + good
    for bad, needle in [("grid.resolution:=-1", "grid.resolution must be within"),
                        ("gird.enabled:=false", "unknown parameter 'gird.enabled'"),
                        ("front.camera_pose.xyz:=[1, 2]", "3 finite numbers"),
                        ("front.camera_pose.xyz:=[1.0, 0.0, 1.5]", "not in cameras"),
                        ("grid.enabled", "name:=value")]:
        with pytest.raises(ParameterError, match=needle):  # the command prints it and exits 2
            checked_overrides([bad])


def test_image_and_grid_messages_round_trip():
    h = Header(frame_id="cam")
    h.stamp.sec, h.stamp.nanosec = 12, 34
    arr = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3)
    msg = image_msg(arr, "rgb8", h)
    assert (msg.step, msg.header.frame_id, msg.header.stamp.nanosec) == (12, "cam", 34)
    np.testing.assert_array_equal(image_to_array(msg), arr)
    cells = np.array([[0, 100, -1], [100, 0, -1]], np.int8)
    g = occupancy_grid_msg(cells, 0.1, (0.0, -0.1), h)
    assert (g.info.width, g.info.height, g.info.origin.position.y) == (3, 2, -0.1)
    assert list(g.data) == [0, 100, -1, 100, 0, -1]


def _qmul(a, b):
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz)


def test_camera_body_pose_from_a_tf_optical_frame_transform():
    import math

    from seg_perception.core.camera_model import camera_pose
    from seg_perception.core.camera_model import body_pose_from_optical

    # body -> optical as every camera URDF/static publisher has it: rpy (-pi/2, 0, -pi/2)
    q_optical = (-0.5, 0.5, -0.5, 0.5)
    T = body_pose_from_optical((1.0, 2.0, 3.0), q_optical)
    np.testing.assert_allclose(T, camera_pose((1.0, 2.0, 3.0), (0.0, 0.0, 0.0)), atol=1e-12)
    # a camera pitched 0.1 rad down and yawed 0.3 rad: grid <- body <- optical composed in the test
    pitch, yaw = 0.1, 0.3
    q_pitch = (0.0, math.sin(pitch / 2), 0.0, math.cos(pitch / 2))
    q_yaw = (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))
    q_body = _qmul(q_yaw, q_pitch)  # fixed-axis roll-pitch-yaw: R = Rz(yaw) Ry(pitch) Rx(roll)
    T = body_pose_from_optical((0.5, 0.0, 1.4), _qmul(q_body, q_optical))
    np.testing.assert_allclose(T, camera_pose((0.5, 0.0, 1.4), (0.0, pitch, yaw)), atol=1e-12)


def test_the_pipeline_builds_the_grid_from_sure_pixels_only(tmp_path):
    """The road seen through an unsure pixel (a road/parking blend the colour model calls Road
    at 61% confidence) is drivable to the grid at min_confidence.grid 0, unknown at 0.7."""
    from models import COLOR, TEST_LABEL_YAML, make_colour_model

    from seg_perception.core.sample import SampleCamera
    from seg_perception.core.pipeline import build_pipeline
    from seg_perception.ros.conversions import frame_from_msg
    from seg_perception.ros.outputs import OutputMessages
    from seg_perception.ros.sample_stream import camera_info_msg, frame_msg, pose_parameters

    cam = SampleCamera(width=320, height=240)
    labels = tmp_path / "labels.yaml"
    labels.write_text(TEST_LABEL_YAML)
    xyz, rpy = pose_parameters(cam)
    blend = [round(0.51 * r + 0.49 * p) for r, p in zip(COLOR["Road"], COLOR["Parking"])]
    rgb = np.empty((240, 320, 3), np.uint8)
    rgb[:120], rgb[120:] = COLOR["Sky"], blend
    free = {}
    from seg_perception.core.finish import Finisher

    for level in (0.0, 0.7):
        cfg = NodeConfig.from_values({"model": make_colour_model(str(tmp_path / "m.onnx")), "label_file": str(labels),
                                      "camera_pose.xyz": xyz, "camera_pose.rpy": rpy, "min_confidence.grid": level})
        with build_pipeline(cfg) as pipeline:
            pipeline.grid.set_camera_info(camera_info_msg(cam))
            res = pipeline.process(frame_from_msg(frame_msg(rgb, 0)))
            outcome = Finisher([""], cfg.grid).finish("", res, ["drivable_grid"])
            messages = OutputMessages().build(outcome, ["drivable_grid"])
            assert outcome.grid.error is None, outcome.grid.error
            cells = np.asarray(messages["drivable_grid"].data, np.int8)
            free[level] = int((cells == 0).sum())
    assert free[0.0] > 1000 and free[0.7] == 0, free


def test_executor_choice_falls_back_where_rclpy_has_no_events_executor(monkeypatch):
    """auto takes rclpy's EventsExecutor where this rclpy has it (Jazzy 7.1.4 and newer) and
    SingleThreadedExecutor where it does not (Humble, simulated here by hiding the module);
    asking for events there is refused with the fix, before the node starts anything."""
    import sys

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from seg_perception.ros.executor import EVENTS_MODULE, events_executor_class, executor_problem, make_executor

    here = events_executor_class()[0] is not None
    rclpy.init()
    try:
        ex, what = make_executor("auto")
        assert what == "events" if here else what.startswith("single_threaded")
        ex.shutdown()
        ex, what = make_executor("single_threaded")
        assert what == "single_threaded" and isinstance(ex, SingleThreadedExecutor)
        ex.shutdown()
        assert executor_problem("auto") == "" and executor_problem("single_threaded") == ""
        monkeypatch.setitem(sys.modules, EVENTS_MODULE, None)  # an rclpy without it
        ex, what = make_executor("auto")
        assert isinstance(ex, SingleThreadedExecutor) and what.startswith("single_threaded (this rclpy has no")
        ex.shutdown()
        assert "set executor to auto or single_threaded" in executor_problem("events")
        with pytest.raises(ValueError, match="set executor to auto or single_threaded"):
            make_executor("events")
    finally:
        rclpy.try_shutdown()


def test_a_tool_participant_ignores_the_tools_own_command_line(monkeypatch, ros_domain):
    """seg-perception's own '-p name:=value' options are on sys.argv; the camera side of the
    demo and benches must not read them as remap rules of its participant."""
    import sys

    from seg_perception.ros.participant import Participant

    monkeypatch.setattr(sys, "argv", ["seg-perception", "bench", "-p", "image:=/elsewhere"])
    with Participant("argv_check", ros_domain[0]) as part:
        assert part.node.resolve_topic_name("image") == "/image"
