"""The node's parameters, without ROS: one table with types, defaults, ranges, choices and
whether a change needs a restart (read-only), and the checks of values and of sets of them.
core/config.py parses them into typed parts; ros/parameters.py declares them with descriptors."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

from .model_info import PRECISIONS

NODE_NAME = "camera_seg"  # the node's name: its topics' namespace and its params-file section


def _backends() -> Sequence[str]:
    from .backends.registry import known_backends  # a backend a test registers is a choice too

    return known_backends()


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    default: Any
    description: str
    read_only: bool = True
    range: Optional[Tuple[float, float]] = None
    choices: Union[None, Sequence[str], Callable[[], Sequence[str]]] = None
    length: Optional[int] = None  # for arrays

    def allowed(self) -> Optional[Sequence[str]]:
        """The values a choice parameter takes (None: not a choice)."""
        return self.choices() if callable(self.choices) else self.choices


SPECS = (
    Spec("model", "", "Model file: .onnx (ONNX Runtime, or TensorRT via the engine cache), "
         ".engine/.plan (TensorRT), .pt (PyTorch). Empty: the packaged default model."),
    Spec("label_file", "", "YAML label file grouping the model's class names into road, "
         "pedestrian, parking, drivable, ground, obstacle. Empty: the packaged label file of the "
         "model's class set (camvid_parking, camvid, cityscapes)."),
    Spec("backend", "auto", "Inference backend; auto prefers TensorRT on a GPU, then ONNX Runtime, "
         "then PyTorch.", choices=_backends),
    Spec("num_threads", 0, "CPU threads for inference (0: every core but one, which stays for "
         "decoding, outputs and DDS).", range=(0, 256)),
    Spec("output_niceness", 5, "Niceness (Linux) of the thread that builds and publishes the "
         "outputs: with few cores the network's thread keeps its core and the outputs fill the "
         "gaps. Applied only where the network leaves a core (not where its threads take every "
         "core). 0: same priority as the network.", range=(0, 19)),
    Spec("executor", "auto", "The rclpy executor that runs the node's callbacks. events: rclpy's "
         "EventsExecutor (rclpy.experimental, Jazzy 7.1.4 and newer), a C++ loop that costs a "
         "fraction of the CPU per callback; single_threaded: rclpy's SingleThreadedExecutor (every "
         "distro); auto: events where this rclpy has it.", choices=("auto", "events", "single_threaded")),
    Spec("image_transport", "raw", "raw: subscribe sensor_msgs/Image on 'image'; compressed: "
         "sensor_msgs/CompressedImage on the resolved 'image' topic + '/compressed'.",
         choices=("raw", "compressed")),
    Spec("input_qos.reliability", "auto", "QoS reliability of the image and camera_info "
         "subscriptions. auto: reliable when every publisher is reliable (full-HD frames from a "
         "reliable camera arrive intact), else best_effort; best_effort matches any camera.",
         choices=("auto", "best_effort", "reliable")),
    Spec("input_qos.depth", 1, "Queue depth of the input subscriptions.", range=(1, 100)),
    Spec("overlay_alpha", 0.5, "Weight of the class colours in ~/overlay.", read_only=False,
         range=(0.0, 1.0)),
    Spec("overlay_max_width", 960, "~/overlay is shrunk to at most this width (same aspect "
         "ratio): it is for eyes, and a full-HD overlay costs 4x the bytes. 0: the image's size.",
         read_only=False, range=(0, 16384)),
    Spec("max_image_pixels", 4096 * 3072, "Frames with more pixels (width x height) are rejected "
         "with an error: memory grows to fit the largest frame (DDS keeps its buffers at that size), "
         "so one stray huge frame must not cost it for good. 0: no limit.", read_only=False,
         range=(0, 1 << 30)),
    Spec("min_confidence.grid", 0.5, "Pixels whose confidence (largest softmax probability) is "
         "below this are unknown to ~/drivable_grid: the cells they show stay -1, never drivable "
         "on a guess. 0: every pixel counts. A model without a confidence output ignores it. "
         "Defaults chosen for the shipped model (docs/model_card.md).",
         read_only=False, range=(0.0, 1.0)),
    Spec("min_confidence.road", 0.5, "~/road_mask leaves out pixels below this confidence.",
         read_only=False, range=(0.0, 1.0)),
    Spec("min_confidence.pedestrian", 0.3, "~/pedestrian_mask leaves out pixels below this "
         "confidence. Keep it low: a probable pedestrian must not vanish from the mask.",
         read_only=False, range=(0.0, 1.0)),
    Spec("min_confidence.parking", 0.7, "~/parking_mask leaves out pixels below this "
         "confidence.", read_only=False, range=(0.0, 1.0)),
    Spec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", range=(0.05, 60.0)),
    Spec("log_throttle_sec", 5.0, "At most one log line per error kind in this many seconds.",
         read_only=False, range=(0.0, 3600.0)),
    Spec("camera_info_timeout", 2.0, "The grid stops (WARN) when no CameraInfo arrived for this "
         "many seconds; 0 disables the check.", read_only=False, range=(0.0, 3600.0)),
    Spec("cameras", [], "Camera names. Empty: one camera on 'image' and 'camera_info', outputs under ~/. "
         "For each name C: C.image (default C/image_raw), C.camera_info (C/camera_info), "
         "C.image_transport, C.camera_pose.xyz, C.camera_pose.rpy; outputs under ~/C/, one network "
         "for all, and ~/drivable_grid fused from every camera's grid."),
    Spec("max_batch", 0, "Several cameras: how many cameras' newest frames go through the network "
         "at a time, shared among the runs at once (0: all of them, where the model takes a batch: "
         "a dynamic batch dimension, a TensorRT profile, which the engine build then covers; but "
         "one a run where several runs go at once on a CPU, as a batch there costs what its frames "
         "cost one by one; 1: one frame after the other).",
         range=(0, 64)),
    Spec("inference_workers", 0, "Several cameras: how many network runs go at once, each on its "
         "share of the cameras, all on the one model in memory (0: one per camera up to every core "
         "but one, two on 2 cores, where ONNX Runtime runs on the CPU, else one; 1: one run at a "
         "time). Only ONNX Runtime without IOBinding runs several; other backends run one. One "
         "camera: one run.", range=(0, 64)),
    Spec("grid.max_spread", 0.2, "Surround grid (several cameras): a camera's latest grid is left "
         "out when its stamp is more than this behind the newest, s.", read_only=False, range=(0.0, 10.0)),
    Spec("grid.enabled", True, "Publish ~/drivable_grid (nav_msgs/OccupancyGrid)."),
    Spec("grid.frame_id", "base_link", "Frame of the grid and of camera_pose."),
    Spec("grid.resolution", 0.1, "Grid cell size, m.", range=(0.01, 5.0)),
    Spec("grid.x_min", 0.0, "Grid extent behind/ahead, m (x forward).", range=(-1000.0, 1000.0)),
    Spec("grid.x_max", 40.0, "Grid extent ahead, m.", range=(-1000.0, 1000.0)),
    Spec("grid.y_min", -20.0, "Grid extent to the right, m (y left).", range=(-1000.0, 1000.0)),
    Spec("grid.y_max", 20.0, "Grid extent to the left, m.", range=(-1000.0, 1000.0)),
    Spec("grid.max_range", 40.0, "Ground farther than this from the camera is unknown, m.",
         range=(0.1, 1000.0)),
    Spec("camera_pose.source", "auto", "Where the camera pose comes from: auto (TF grid.frame_id <- "
         "the image's frame_id where TF has it, after waiting 2 s for it; camera_pose.xyz/rpy where TF "
         "never had it; once TF gave a camera's pose, no fallback), tf (TF only) or parameters "
         "(camera_pose.xyz/rpy only).", choices=("auto", "tf", "parameters")),
    Spec("camera_pose.xyz", [0.0, 0.0, 1.5], "Camera body frame position in grid.frame_id, m (where "
         "TF does not give it).",
         read_only=False, length=3),
    Spec("camera_pose.rpy", [0.0, 0.0, 0.0], "Camera body frame roll, pitch, yaw in grid.frame_id, "
         "rad (REP 103 body frame: x forward, y left, z up).", read_only=False, length=3),
    Spec("map.enabled", False, "Publish ~/drivable_map (nav_msgs/OccupancyGrid in map.frame_id): the "
         "grids fused over time with the vehicle's odometry (topic 'odom', nav_msgs/Odometry; remap "
         "it). Needs grid.enabled."),
    Spec("map.frame_id", "odom", "Frame of the map: the odometry's frame."),
    Spec("map.pose_source", "odometry", "Where the vehicle's pose at each frame's stamp comes from: "
         "odometry (nav_msgs/Odometry on 'odom') or tf (map.frame_id <- grid.frame_id at the frame's stamp).",
         choices=("odometry", "tf")),
    Spec("map.size", 60.0, "Side of the square window around the vehicle, m.", range=(1.0, 400.0)),
    Spec("map.resolution", 0.1, "Map cell size, m.", range=(0.01, 5.0)),
    Spec("map.rate", 2.0, "How often the map is published, Hz.", range=(0.1, 50.0)),
    Spec("map.decay_time", 5.0, "A cell no frame saw for this long goes back to unknown, s.",
         read_only=False, range=(0.1, 3600.0)),
    Spec("map.hit", 0.7, "Probability one 'not drivable' observation stands for (log-odds hit).",
         range=(0.51, 0.99)),
    Spec("map.miss", 0.4, "Probability one 'drivable' observation stands for (log-odds miss).",
         range=(0.01, 0.49)),
    Spec("map.trinary", False, "Publish the map as -1/0/100 only (else occupancy probability 0..100).",
         read_only=False),
    Spec("map.odom_timeout", 0.5, "Odometry older than this behind a frame is stale: the map stops "
         "updating (WARN), s.", read_only=False, range=(0.01, 60.0)),
    Spec("map.jump_distance", 2.0, "A step between odometry poses longer than this (beyond what 60 m/s "
         "allows in the time between them) clears the map, m.", range=(0.1, 1000.0)),
    Spec("engine.cache_dir", "", "TensorRT engine cache directory (empty: the user's cache dir)."),
    Spec("engine.build_if_missing", True, "Build a TensorRT engine at start when none is cached."),
    Spec("engine.precision", "fp16", "TensorRT engine precision.", choices=PRECISIONS),
)
# The managed node's own (camera_seg_lifecycle_node)
MANAGED_SPECS = (
    Spec("autostart", False, "Managed node: configure and activate at start, as a launch file's "
         "lifecycle events or a lifecycle manager would (false: it waits unconfigured for them)."),
)
SPEC_BY_NAME = {s.name: s for s in SPECS}
# What each camera of `cameras` has of its own, as C.<name>; checked like the node-wide one
PER_CAMERA = ("image", "camera_info", "image_transport", "camera_pose.xyz", "camera_pose.rpy")
CAMERA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def camera_parameters(name: str, p: Dict[str, Any]) -> Dict[str, Any]:
    """The defaults of camera ``name``'s own parameters (the node-wide values where there is one)."""
    return {f"{name}.image": f"{name}/image_raw", f"{name}.camera_info": f"{name}/camera_info",
            f"{name}.image_transport": p["image_transport"],
            f"{name}.camera_pose.xyz": list(p["camera_pose.xyz"]),
            f"{name}.camera_pose.rpy": list(p["camera_pose.rpy"])}


ROS_PARAMETERS = ("use_sim_time",)  # every ROS 2 node's own


def spec_of(name: str) -> Optional[Spec]:
    """The table's entry of ``name``; a camera's own parameter (C.image, C.camera_pose.xyz, ...)
    as its node-wide twin (C.image and C.camera_info: free topic names, read-only)."""
    spec = SPEC_BY_NAME.get(name)
    if spec is not None or "." not in name:
        return spec
    key = name.split(".", 1)[1]
    if key not in PER_CAMERA:
        return None
    base = SPEC_BY_NAME.get(key)
    if base is None:  # image, camera_info
        return Spec(name, "", f"camera {name.split('.', 1)[0]}: its {key} topic")
    return dataclasses.replace(base, name=name)


def check(name: str, value: Any) -> Optional[str]:
    """The reason ``value`` is not valid for parameter ``name``, or None."""
    spec = spec_of(name)
    if spec is None:
        return None
    allowed = spec.allowed()
    if allowed and value not in allowed:
        return f"{name} must be one of {list(allowed)}, got {value!r}"
    if spec.length:
        vals = list(value) if value is not None else []
        if len(vals) != spec.length or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
            return f"{name} must be {spec.length} finite numbers, got {vals!r}"
    if spec.range is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = spec.range
        if not (lo <= value <= hi) or (isinstance(value, float) and not math.isfinite(value)):
            return f"{name} must be within [{lo}, {hi}], got {value!r}"
    return None


POSE_PARAMETERS = ("camera_pose.xyz", "camera_pose.rpy")  # also each camera's C.camera_pose.*


def default_parameters() -> Dict[str, object]:
    """The node's parameter defaults (as in config/camera_seg.yaml)."""
    return {spec.name: (list(spec.default) if isinstance(spec.default, list) else spec.default)
            for spec in SPECS}


