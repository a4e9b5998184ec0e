"""camera_pose.source's policy (core/pose_source.py) with a lookup the test controls: TF first,
the parameters only where TF never knew the camera (after a short wait), never a fallback once
TF has placed it; and the grid it gives (core/camera_grid.py)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from seg_perception.core.camera_model import camera_pose
from seg_perception.core.pose_source import CameraPoseSource, TransformUnavailable, TransformUnknown, WaitingForTf

MOUNT = camera_pose((1.2, 0.0, 1.6), (0.0, 0.1, 0.0))


class FakeTf:
    """A lookup: poses by frame, or the exception to raise; remembers the timeouts asked for."""

    def __init__(self):
        self.poses, self.raises, self.timeouts = {}, {}, []

    def __call__(self, frame, header, timeout):
        self.timeouts.append(timeout)
        if frame in self.raises:
            raise self.raises[frame]
        if frame not in self.poses:
            raise TransformUnknown(f'"{frame}" passed to lookupTransform argument source_frame does not exist')
        return self.poses[frame]


def header(frame="front_optical", stamp=0.0):
    return types.SimpleNamespace(frame_id=frame, stamp=stamp)


def test_auto_waits_for_tf_then_takes_the_parameters_and_switches_to_tf_when_it_comes():
    tf, now = FakeTf(), [100.0]
    src = CameraPoseSource("auto", tf, "base_link", wait_s=2.0, clock=lambda: now[0])
    with pytest.raises(WaitingForTf, match="waiting up to 2 s for TF base_link <- front_optical"):
        src(header())
    now[0] = 101.9
    with pytest.raises(RuntimeError, match="waiting"):
        src(header())
    now[0] = 102.1  # TF never heard of the camera: the parameters
    assert src(header()) is None and "camera_pose.xyz/rpy" in src.used["front_optical"]
    assert tf.timeouts == [0.0, 0.0, 0.0]  # a camera TF has not placed is asked without waiting
    tf.poses["front_optical"] = MOUNT  # robot_state_publisher started late: TF from now on
    assert np.array_equal(src(header()), MOUNT) and src.used["front_optical"] == "TF base_link <- front_optical"
    # TF gave the pose: a transform gone later is no grid, never the parameters' pose
    del tf.poses["front_optical"]
    with pytest.raises(RuntimeError, match="TF gave base_link <- front_optical before"):
        src(header())
    assert tf.timeouts[-1] == 0.05  # and it now waits a moment for a late one


def test_auto_never_uses_the_parameters_for_a_camera_tf_knows_but_not_at_this_stamp():
    tf = FakeTf()
    tf.raises["front_optical"] = TransformUnavailable("Lookup would require extrapolation into the future")
    src = CameraPoseSource("auto", tf, "base_link", wait_s=0.0)
    with pytest.raises(RuntimeError, match="at the frame's stamp: Lookup would require extrapolation into the future"):
        src(header())


def test_tf_mode_names_the_unknown_frame_and_auto_without_tf2_takes_the_parameters():
    src = CameraPoseSource("tf", FakeTf(), "base_link")
    with pytest.raises(RuntimeError, match="'mystery_cam'"):
        src(header("mystery_cam"))
    with pytest.raises(RuntimeError, match="no frame_id"):
        src(header(""))
    no_tf2 = "camera_pose.source is tf but tf2_ros is not available"
    with pytest.raises(RuntimeError, match="tf2_ros is not available"):
        CameraPoseSource("tf", None, "base_link", unavailable=no_tf2)(header())
    auto = CameraPoseSource("auto", None, "base_link", unavailable="tf2_ros is not available")
    assert auto(header()) is None and "tf2_ros is not available" in auto.used["front_optical"]
    with pytest.raises(ValueError):
        CameraPoseSource("parameters", None, "base_link")


def test_the_grid_takes_the_parameters_pose_when_the_source_says_so_and_counts_skipped_frames():
    from test_grid import GROUPS, ROAD_SCENE, SPEC, Cam, _camera_info, render_labels

    from seg_perception.core.camera_grid import CameraGrid

    cam = Cam()
    labels = render_labels(cam, ROAD_SCENE)
    spec, groups = SPEC, GROUPS
    params = CameraGrid(spec, groups, pose_xyz=cam.xyz, pose_rpy=cam.rpy)
    params.set_camera_info(_camera_info(cam), t=0.0)
    expected = params.compute(labels, cam.width, cam.height, header=header(), t=0.1).cells
    assert expected is not None

    tf, now = FakeTf(), [0.0]
    grid = CameraGrid(spec, groups, pose_xyz=cam.xyz, pose_rpy=cam.rpy)
    grid.set_camera_info(_camera_info(cam), t=0.0)
    grid.pose_source = CameraPoseSource("auto", tf, "base_link", wait_s=1.0, clock=lambda: now[0])
    waiting = grid.compute(labels, cam.width, cam.height, header=header(), t=0.1)
    assert waiting.cells is None and "waiting" in waiting.status and grid.pose_skipped == 1
    assert waiting.state == "warn"  # start-up, not a fault
    now[0] = 1.5
    assert np.array_equal(grid.compute(labels, cam.width, cam.height, header=header(), t=0.2).cells, expected)
    assert grid.pose_from.startswith("camera_pose.xyz/rpy")
    builds = grid.builds
    # the same mount through TF (a quaternion's round trip off in the last bits): the same grid,
    # and the same lookup table, not a rebuild
    T = camera_pose(cam.xyz, cam.rpy)
    tf.poses["front_optical"] = T + np.where(T != 0, 1e-13, 0.0)
    assert np.array_equal(grid.compute(labels, cam.width, cam.height, header=header(), t=0.3).cells, expected)
    assert grid.pose_from == "TF base_link <- front_optical" and grid.pose_skipped == 1
    assert grid.builds == builds
