"""The typed configuration (core/config.py): one parser for the node, params files and every
tool's -p; and every parameter that can change at runtime really reaches its component."""

from __future__ import annotations

import numpy as np
import pytest

from models import TEST_LABEL_YAML, make_colour_model

from seg_perception.core.config import ConfigError, NodeConfig, parse_overrides, read_params_file
from seg_perception.core.finish import Finisher, MapFeed, apply_config
from seg_perception.core.parameters import SPECS
from seg_perception.core.pipeline import build_camera_pipelines
from seg_perception.core.runtime.stats import Throttle


def test_one_parser_for_params_files_overrides_and_the_node(tmp_path):
    # a camera's own parameter is taken where the params file names the camera, refused where not
    cfg = NodeConfig.load("config/multi_camera.yaml", ["front.camera_pose.xyz:=[1, 0, 1.5]", "map.enabled:=true"])
    assert cfg.camera("front").pose.xyz == (1.0, 0.0, 1.5) and cfg.map.enabled
    assert [c.name for c in cfg.cameras] == ["front", "left", "right", "rear"]
    with pytest.raises(ConfigError, match="not in cameras"):
        NodeConfig.load("config/camera_seg.yaml", ["front.camera_pose.xyz:=[1, 0, 1.5]"])
    # values typed as the table says, wrong types refused with the parameter's name
    assert NodeConfig.load(None, ["overlay_max_width:=640"]).outputs.overlay_max_width == 640
    assert NodeConfig.load(None, ["grid.resolution:=1"]).grid.resolution == 1.0  # an int for a float
    for item, needle in [("grid.enabled:=maybe", "grid.enabled expects a bool"),
                         ("overlay_max_width:=1.5", "overlay_max_width expects a int"),
                         ("cameras:=[1, 2]", "cameras expects a list of names"),
                         ("no_such:=1", "unknown parameter 'no_such'"), ("grid.enabled", "name:=value")]:
        with pytest.raises(ConfigError, match=needle):
            NodeConfig.load(None, [item])
    # an empty list in a params file (as ros2 param dump writes cameras: []) is no camera
    f = tmp_path / "p.yaml"
    f.write_text("/camera_seg:\n  ros__parameters:\n    cameras: []\n    grid:\n      x_max: 30.0\n")
    cfg = NodeConfig.load(str(f))
    assert not cfg.multi and cfg.grid.x_max == 30.0 and read_params_file(str(f))["cameras"] == []
    assert parse_overrides(["a:=[1, 2]", "b:=text"]) == {"a": [1, 2], "b": "text"}


# Where each parameter that can change at runtime lands: (components) -> what it set.
APPLIED = {
    "overlay_alpha": lambda c: c["pipelines"]["front"].outputs.overlay_alpha,
    "overlay_max_width": lambda c: c["pipelines"]["front"].outputs.overlay_max_width,
    "max_image_pixels": lambda c: c["pipelines"]["rear"].outputs.max_image_pixels,
    "min_confidence.grid": lambda c: c["pipelines"]["front"].outputs.min_confidence["grid"],
    "min_confidence.road": lambda c: c["pipelines"]["front"].outputs.min_confidence["road"],
    "min_confidence.pedestrian": lambda c: c["pipelines"]["front"].outputs.min_confidence["pedestrian"],
    "min_confidence.parking": lambda c: c["pipelines"]["rear"].outputs.min_confidence["parking"],
    "log_throttle_sec": lambda c: c["throttle"].period,
    "camera_info_timeout": lambda c: c["pipelines"]["rear"].grid.watch.timeout_s,
    "grid.max_spread": lambda c: c["finisher"].surround.max_spread_s,
    "camera_pose.xyz": None,  # several cameras: each camera's own (below)
    "camera_pose.rpy": None,
    "map.decay_time": lambda c: c["map"].builder.map.spec.decay_time,
    "map.trinary": lambda c: c["map"].builder.map.spec.trinary,
    "map.odom_timeout": lambda c: c["map"].builder.odom_timeout,
}
PER_CAMERA = {
    "front.camera_pose.xyz": lambda c: c["pipelines"]["front"].grid._T_grid_body.tolist(),
    "rear.camera_pose.rpy": lambda c: c["pipelines"]["rear"].grid._T_grid_body.tolist(),
}


def _other(spec, value):
    """A valid value other than ``value`` for the parameter."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, list):
        return [v + 0.25 for v in value]
    lo, hi = spec.range
    return type(value)(lo + (hi - lo) / 3) if value != type(value)(lo + (hi - lo) / 3) else type(value)(hi)


def test_every_parameter_that_can_change_at_runtime_reaches_its_component(tmp_path):
    """Each changeable parameter of the table, changed alone through NodeConfig.changed and
    core/finish.apply_config (what the node runs on a parameter change), changes what its
    component uses; a changeable parameter with no component here fails this test."""
    changeable = {s.name for s in SPECS if not s.read_only}
    assert changeable == set(APPLIED), "a runtime parameter without a check that it is applied"
    labels = tmp_path / "labels.yaml"
    labels.write_text(TEST_LABEL_YAML)
    cfg = NodeConfig.from_values({"model": make_colour_model(str(tmp_path / "m.onnx")), "label_file": str(labels),
                                  "cameras": ["front", "rear"], "map.enabled": True})
    pipelines = build_camera_pipelines(cfg, {"front": "/front/camera_info", "rear": "/rear/camera_info"})
    map_feed = MapFeed(cfg.map, cfg.grid.frame_id, "odom")
    comps = {"pipelines": pipelines, "finisher": Finisher(["front", "rear"], cfg.grid, map_feed),
             "map": map_feed, "throttle": Throttle(cfg.runtime.log_throttle_sec)}
    try:
        probes = {n: f for n, f in APPLIED.items() if f is not None}
        probes.update(PER_CAMERA)
        for name, probe in probes.items():
            spec = next(s for s in SPECS if s.name == name.split(".", 1)[-1] or s.name == name)
            before = probe(comps)
            changed = cfg.changed({name: _other(spec, cfg.values[name])})
            apply_config(changed, pipelines, comps["finisher"], comps["throttle"])
            after = probe(comps)
            assert after != before, name
            apply_config(cfg, pipelines, comps["finisher"], comps["throttle"])  # back, for the next
            assert probe(comps) == before, name
    finally:
        pipelines["front"].release()
    assert np.isfinite(pipelines["rear"].grid._T_grid_body).all()
