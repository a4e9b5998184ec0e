"""The launch file's RViz part: rviz2 missing means a warning and the node alone, and the RViz
config follows the node's namespace (issue #12). ros2 launch is not installable here; these are
the functions the launch file calls."""

import os
import re

from seg_perception.core.outputs import GRID_OUTPUT, IMAGE_OUTPUTS
from seg_perception.ros.rviz_setup import node_fqn, rviz_config_text, rviz_missing, write_rviz_config

MAP_OUTPUT = "drivable_map"  # ros/map_output.MAP_OUTPUT, named here without importing rclpy
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(REPO, "rviz", "camera_seg.rviz")


def topics(text):
    return set(re.findall(r"Value: (/\S+)", text))


def test_rviz2_is_looked_up_in_the_ament_index(tmp_path, monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "empty"))
    reason = rviz_missing()
    assert reason and "rviz2 is not installed" in reason and "apt install" in reason
    # an install prefix that has rviz2 registered, as a ROS install has
    index = tmp_path / "ros" / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "rviz2").write_text("")
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{tmp_path / 'empty'}{os.pathsep}{tmp_path / 'ros'}")
    assert rviz_missing() is None


def test_the_rviz_config_names_the_namespaced_node_topics(tmp_path):
    template = open(TEMPLATE).read()
    names = {t.rsplit("/", 1)[1] for t in topics(template)}
    published = set(IMAGE_OUTPUTS) | {GRID_OUTPUT, GRID_OUTPUT + "_updates", MAP_OUTPUT, MAP_OUTPUT + "_updates"}
    assert names and names <= published, names - published
    for ns, fqn in (("", "/camera_seg"), ("front", "/front/camera_seg"), ("/veh/front/", "/veh/front/camera_seg")):
        assert node_fqn(ns, "camera_seg") == fqn
        got = topics(rviz_config_text(template, fqn))
        assert got == {f"{fqn}/{n}" for n in names}, got
    path = write_rviz_config(TEMPLATE, "/front/camera_seg", str(tmp_path))
    assert topics(open(path).read()) == {f"/front/camera_seg/{n}" for n in names}


def test_the_multi_camera_rviz_config_names_the_rigs_topics():
    """rviz/multi_camera.rviz: the four cameras' overlays and the surround grid, as the node with
    config/multi_camera.yaml publishes them, moved with the namespace like the other."""
    from seg_perception.core.config import complete, read_params_file

    text = open(os.path.join(REPO, "rviz", "multi_camera.rviz")).read()
    cameras = complete(read_params_file(os.path.join(REPO, "config", "multi_camera.yaml")))["cameras"]
    want = {f"/camera_seg/{c}/overlay" for c in cameras} | {f"/camera_seg/{n}" for n in (
        GRID_OUTPUT, GRID_OUTPUT + "_updates", MAP_OUTPUT, MAP_OUTPUT + "_updates")}
    assert topics(text) == want
    assert topics(rviz_config_text(text, "/car/camera_seg")) == {t.replace("/camera_seg", "/car/camera_seg", 1)
                                                                  for t in want}
