"""The node's configuration, typed: one parser from the parameter table (core/parameters.SPECS)
to frozen dataclasses, one part per component, used alike by the ROS node (its declared
parameters), params files and every tool's ``-p name:=value``.

    cfg = NodeConfig.load("config/camera_seg.yaml", ["map.enabled:=true"])
    cfg.model.backend, cfg.grid.spec(), cfg.camera("front").pose.xyz, cfg.outputs.min_confidence
    cfg = cfg.changed({"overlay_alpha": 0.3})     # a runtime change: whole or refused (ConfigError)

Each component is built from its part and re-applied from it after a change (the pipeline from
``outputs``, a camera's grid from ``grid`` and its camera's ``pose``, the map from ``map``), so a
parameter is read in one place. ``values`` keeps the flat parameters as ROS declares and dumps them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from . import parameters as table


class ConfigError(ValueError):
    """A parameter value (or a set of them) that is refused, with the reason."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What the network needs (all read-only: a change needs a restart)."""
    path: str                     # the file to load ("" in the parameters: the packaged default)
    label_file: str               # "" : the packaged label file of the model's classes
    backend: str
    num_threads: int
    engine_cache_dir: str
    engine_build_if_missing: bool
    engine_precision: str
    max_batch: int                # the most frames one run may take (a TensorRT profile's top)


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """How a frame's outputs are made (changeable at runtime)."""
    overlay_alpha: float
    overlay_max_width: int
    max_image_pixels: int
    min_confidence: Mapping[str, float]   # per use: grid and each mask group

    @classmethod
    def plain(cls, **changes: Any) -> "OutputConfig":
        """No thresholds, no limits, the overlay at the frame's size (a pipeline run directly)."""
        return cls(**{**dict(overlay_alpha=0.5, overlay_max_width=0, max_image_pixels=0, min_confidence={}),
                      **changes})

    @classmethod
    def defaults(cls, **changes: Any) -> "OutputConfig":
        """The parameters' defaults (``changes`` replaced: e.g. for a tool or a test)."""
        return dataclasses.replace(_parts(complete({})).outputs, **changes)


@dataclasses.dataclass(frozen=True)
class PoseConfig:
    source: str                   # parameters | tf
    xyz: Tuple[float, float, float]
    rpy: Tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    """One camera: "" is the single camera on 'image' / 'camera_info'."""
    name: str
    image: str
    camera_info: str
    transport: str
    pose: PoseConfig


@dataclasses.dataclass(frozen=True)
class GridConfig:
    enabled: bool
    frame_id: str
    resolution: float
    x_min: float
    x_max: float
    y_min: float
    y_max: float
    max_range: float
    camera_info_timeout: float    # changeable
    max_spread: float             # several cameras' surround grid; changeable

    def spec(self):
        from .grid import GridSpec

        return GridSpec(resolution=self.resolution, x_min=self.x_min, x_max=self.x_max, y_min=self.y_min,
                        y_max=self.y_max, max_range=self.max_range)


@dataclasses.dataclass(frozen=True)
class MapConfig:
    enabled: bool
    frame_id: str
    pose_source: str
    size: float
    resolution: float
    rate: float
    decay_time: float             # changeable
    hit: float
    miss: float
    trinary: bool                 # changeable
    odom_timeout: float           # changeable
    jump_distance: float


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """The frame runtime: threads, runs at once, batching; the node's executor and logs."""
    executor: str
    output_niceness: int
    max_batch: int
    inference_workers: int
    input_reliability: str
    input_depth: int
    diagnostics_period: float
    log_throttle_sec: float       # changeable


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    values: Mapping[str, Any]     # every parameter, flat (what the node declares)
    model: ModelConfig
    outputs: OutputConfig
    grid: GridConfig
    map: MapConfig
    runtime: RuntimeConfig
    cameras: Tuple[CameraConfig, ...]

    # -- building
    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "NodeConfig":
        """From flat parameter values over the defaults (each camera's own defaulting to the
        node-wide ones); refused with the reason (ConfigError) when a value or the set is invalid."""
        full = complete(values)
        reason = check_all(full)
        if reason:
            raise ConfigError(f"invalid parameter: {reason}")
        return _parts(full)

    @classmethod
    def load(cls, params_file: Optional[str] = None, overrides: Sequence[str] = (),
             node_name: str = table.NODE_NAME) -> "NodeConfig":
        """Defaults, then a ROS 2 params file, then ``name:=value`` overrides (as ``--ros-args
        -p`` reads them): what every tool that takes the node's parameters runs."""
        values: Dict[str, Any] = dict(read_params_file(params_file, node_name)) if params_file else {}
        values.update(parse_overrides(overrides))
        try:
            return cls.from_values(values)
        except ConfigError as exc:
            raise ConfigError(f"{exc}" + (f" (params file {params_file})" if params_file else "")) from None

    def changed(self, changes: Mapping[str, Any]) -> "NodeConfig":
        """The configuration after a runtime change, all of it or none: a read-only parameter, an
        unknown one or an invalid value refuses the whole set (ConfigError, with the reason)."""
        typed: Dict[str, Any] = {}
        for name, value in changes.items():
            spec = table.spec_of(name)
            if spec is None:
                raise ConfigError(f"unknown parameter {name!r}")
            if spec.read_only:
                raise ConfigError(f"{name} is read-only: set it in the params file and restart the node")
            typed[name] = coerce(name, value)
        merged = dict(self.values)
        merged.update(typed)
        reason = check_all(merged)
        if reason:
            raise ConfigError(reason)
        if self.camera("").pose.source == "tf" and any(n.endswith(table.POSE_PARAMETERS) for n in typed):
            raise ConfigError("camera_pose.xyz/rpy are not used: camera_pose.source is tf (the pose comes from TF)")
        return _parts(merged)

    # -- reading
    @property
    def multi(self) -> bool:
        return bool(self.values["cameras"])

    def camera(self, name: str) -> CameraConfig:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        if name == "":  # several cameras: the node-wide pose (TF or not) is the first's
            return self.cameras[0]
        raise KeyError(name)


# ---------------------------------------------------------------- values

def check_all(values: Dict[str, Any]) -> Optional[str]:
    """Checks between parameters (after each one passed check())."""
    for name, value in values.items():
        reason = table.check(name, value)
        if reason:
            return reason
    cameras = list(values.get("cameras") or [])
    bad = [c for c in cameras if not isinstance(c, str) or not table.CAMERA_NAME.match(c)]
    if bad:
        return f"cameras must be names of letters, digits and _ (a topic namespace each), got {bad}"
    if len(set(cameras)) != len(cameras):
        return f"cameras must be different names, got {cameras}"
    strays = sorted(n for n in values if n not in table.SPEC_BY_NAME and "." in n
                    and n.split(".", 1)[1] in table.PER_CAMERA and n.split(".", 1)[0] not in cameras)
    if strays:
        return f"{strays[0]} names a camera that is not in cameras {cameras}"
    if not str(values["grid.frame_id"]).strip():
        return "grid.frame_id must name a frame"
    if values.get("map.enabled") and not values["grid.enabled"]:
        return "map.enabled needs grid.enabled: the map is made of the per-frame grids"
    if values.get("map.enabled") and not str(values["map.frame_id"]).strip():
        return "map.frame_id must name a frame"
    from .drivable_map import map_spec
    from .grid import GridError

    parts = _parts(values)
    if parts.map.enabled:
        try:  # the window's limits live with the map
            map_spec(parts.map).validate()
        except ValueError as exc:
            return str(exc)
    try:  # the extent and size limits live with the grid
        parts.grid.spec().validate()
    except GridError as exc:
        return str(exc)
    return None



def complete(values: Mapping[str, Any]) -> Dict[str, Any]:
    """Defaults, then ``values`` (coerced to their parameters' types), then the defaults of each
    camera's own parameters that ``values`` does not give."""
    full = table.default_parameters()
    for name, value in values.items():
        full[name] = coerce(name, value)
    for cam in full["cameras"]:
        for name, default in table.camera_parameters(cam, full).items():
            full.setdefault(name, default)
    return full


def coerce(name: str, value: Any) -> Any:
    """``value`` in the type of parameter ``name`` (a camera's own named C.<parameter>); an
    unknown name or a value of the wrong type is refused (ConfigError)."""
    spec = table.spec_of(name)
    if spec is None:
        if name in table.ROS_PARAMETERS:
            return value
        raise ConfigError(f"unknown parameter {name!r}; known: {', '.join(sorted(table.SPEC_BY_NAME))}")
    default = spec.default
    bad = ConfigError(f"parameter {name} expects a {_type_name(default)}, got {value!r}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if isinstance(default, list):
        if name == "cameras":
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise bad
            return [str(v) for v in value]
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise bad
        return [float(v) for v in value]
    return "" if value is None else str(value)


def _type_name(default: Any) -> str:
    if isinstance(default, list):
        return "list of names" if not default or isinstance(default[0], str) else "list of numbers"
    return type(default).__name__


def parse_overrides(items: Iterable[str]) -> Dict[str, Any]:
    """['name:=value', ...] with values read as YAML, as ``--ros-args -p`` reads them."""
    import yaml

    out: Dict[str, Any] = {}
    for item in items or ():
        name, sep, text = str(item).partition(":=")
        if not sep or not name.strip():
            raise ConfigError(f"parameter {item!r} must look like name:=value, e.g. grid.enabled:=false")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot read the value of {item!r}: {exc}") from exc
        out[name.strip()] = value
    return out


def read_params_file(path: str, node_name: str = table.NODE_NAME) -> Dict[str, Any]:
    """A ROS 2 params file's values for the node (``/**`` or its name), flattened with dots."""
    import yaml

    try:
        with open(path, "r", encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read params file {path}: {exc}") from exc
    values: Dict[str, Any] = {}
    for key in ("/**", node_name, "/" + node_name):
        section = (doc.get(key) or {}).get("ros__parameters") if isinstance(doc, dict) else None
        if section:
            values.update(_flatten(section))
    if values.get("cameras") is None and "cameras" in values:
        values["cameras"] = []  # `cameras: []` and `cameras:` mean none
    return values


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ---------------------------------------------------------------- parts

def _parts(v: Mapping[str, Any]) -> NodeConfig:
    from .labels import MASK_GROUPS

    names = list(v["cameras"])
    cameras = tuple(_camera(v, n) for n in names) if names else (_camera(v, ""),)
    wanted_batch = min(int(v["max_batch"]), len(names)) if v["max_batch"] and names else max(1, len(names))
    model = ModelConfig(path=str(v["model"]), label_file=str(v["label_file"]), backend=str(v["backend"]),
                        num_threads=int(v["num_threads"]), engine_cache_dir=str(v["engine.cache_dir"]),
                        engine_build_if_missing=bool(v["engine.build_if_missing"]),
                        engine_precision=str(v["engine.precision"]), max_batch=wanted_batch)
    outputs = OutputConfig(overlay_alpha=float(v["overlay_alpha"]), overlay_max_width=int(v["overlay_max_width"]),
                           max_image_pixels=int(v["max_image_pixels"]),
                           min_confidence={use: float(v[f"min_confidence.{use}"]) for use in ("grid",) + MASK_GROUPS})
    grid = GridConfig(enabled=bool(v["grid.enabled"]), frame_id=str(v["grid.frame_id"]),
                      **{k: float(v[f"grid.{k}"]) for k in ("resolution", "x_min", "x_max", "y_min", "y_max",
                                                             "max_range", "max_spread")},
                      camera_info_timeout=float(v["camera_info_timeout"]))
    map_cfg = MapConfig(enabled=bool(v["map.enabled"]), frame_id=str(v["map.frame_id"]),
                        pose_source=str(v["map.pose_source"]), trinary=bool(v["map.trinary"]),
                        **{k: float(v[f"map.{k}"]) for k in ("size", "resolution", "rate", "decay_time", "hit",
                                                              "miss", "odom_timeout", "jump_distance")})
    runtime = RuntimeConfig(executor=str(v["executor"]), output_niceness=int(v["output_niceness"]),
                            max_batch=int(v["max_batch"]), inference_workers=int(v["inference_workers"]),
                            input_reliability=str(v["input_qos.reliability"]), input_depth=int(v["input_qos.depth"]),
                            diagnostics_period=float(v["diagnostics_period"]),
                            log_throttle_sec=float(v["log_throttle_sec"]))
    return NodeConfig(values=dict(v), model=model, outputs=outputs, grid=grid, map=map_cfg, runtime=runtime,
                      cameras=cameras)


def _camera(v: Mapping[str, Any], name: str) -> CameraConfig:
    own = (lambda key: v[f"{name}.{key}"]) if name else (lambda key: v[key])
    return CameraConfig(
        name=name, image=str(own("image")) if name else "image",
        camera_info=str(own("camera_info")) if name else "camera_info",
        transport=str(own("image_transport")),
        pose=PoseConfig(source=str(v["camera_pose.source"]), xyz=tuple(float(x) for x in own("camera_pose.xyz")),
                        rpy=tuple(float(x) for x in own("camera_pose.rpy"))))
