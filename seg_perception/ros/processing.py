"""One camera message in, the node's output messages out: the node's whole pipeline without DDS.

The node publishes what this returns; `seg-perception process-bag` serialises the same messages
into a bag. Only outputs somebody asked for are computed.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Collection, Dict, Optional, Tuple

from sensor_msgs.msg import CameraInfo

from ..core import resources
from ..core.image import Frame
from ..core.labels import MASK_GROUPS, load_label_file
from ..core.pipeline import SegmentationPipeline, StageTimer
from ..core.segmenter import Segmenter
from .conversions import camera_model_from_msg, copy_header, frame_from_msg, image_msg, \
    occupancy_grid_msg

MASK_OUTPUTS = tuple(f"{g}_mask" for g in MASK_GROUPS)
IMAGE_OUTPUTS = MASK_OUTPUTS + ("labels", "overlay")
GRID_OUTPUT = "drivable_grid"
OUTPUTS = IMAGE_OUTPUTS + (GRID_OUTPUT,)


@dataclasses.dataclass
class GridSettings:
    spec: object                      # core.grid.GridSpec
    frame_id: str = "base_link"
    pose_xyz: Tuple[float, float, float] = (0.0, 0.0, 1.5)
    pose_rpy: Tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclasses.dataclass
class Processed:
    messages: Dict[str, object]
    timings: Dict[str, float]
    frame: Optional[Frame] = None
    grid_error: Optional[str] = None   # why no grid was made for this frame (None: made or not asked)
    grid_rebuilt: bool = False         # the cell->pixel lookup table was (re)built for this frame


class FrameProcessor:
    def __init__(self, pipeline: SegmentationPipeline, grid: Optional[GridSettings] = None) -> None:
        self.pipeline = pipeline
        self.grid_settings = grid
        self._grid = None
        self._camera_info: Optional[CameraInfo] = None
        self._camera_model = None
        self._camera_error: Optional[str] = None
        if grid is not None:
            from ..core.grid import GroundGrid, camera_pose

            self._grid = GroundGrid(grid.spec, pipeline.groups)
            self._T_grid_body = camera_pose(grid.pose_xyz, grid.pose_rpy)

    def set_camera_info(self, msg: CameraInfo) -> None:
        if self._camera_info is not None and _same_camera(self._camera_info, msg):
            return  # unchanged: keep the parsed model (and the grid's lookup table)
        self._camera_info = msg
        if self._grid is None:
            return  # only the grid uses the camera model
        try:
            model = camera_model_from_msg(msg)
            model.validate()
            self._camera_model, self._camera_error = model, None
        except Exception as exc:  # core.grid.GridError, or a message too broken to read
            self._camera_model, self._camera_error = None, f"invalid CameraInfo: {exc}"

    def set_pose(self, xyz, rpy) -> None:
        if self._grid is not None:
            from ..core.grid import camera_pose

            self._T_grid_body = camera_pose(xyz, rpy)
            self.grid_settings.pose_xyz, self.grid_settings.pose_rpy = tuple(xyz), tuple(rpy)

    @property
    def has_camera_info(self) -> bool:
        return self._camera_info is not None

    def process(self, msg, wanted: Collection[str], grid_allowed: bool = True) -> Processed:
        """Decode ``msg`` (Image or CompressedImage), run the network, build the wanted outputs.
        Raises core.image.ImageError for a bad frame and SegmenterError when inference fails."""
        timer = StageTimer()
        t0 = time.perf_counter()
        frame = frame_from_msg(msg)
        timer.add("convert", time.perf_counter() - t0)
        result = self.pipeline.process(frame, timer)
        out: Dict[str, object] = {}
        header = msg.header
        t_msg = 0.0
        for name in wanted:
            if name not in IMAGE_OUTPUTS:
                continue
            if name == "labels":
                arr, enc = result.labels(), "mono8"
            elif name == "overlay":
                arr, enc = result.overlay(), "rgb8"
            else:
                arr, enc = result.mask(name[:-len("_mask")]), "mono8"
            t1 = time.perf_counter()
            out[name] = image_msg(arr, enc, copy_header(header))
            t_msg += time.perf_counter() - t1
        timer.add("to_msg", t_msg)
        processed = Processed(out, timer.times, frame)
        if GRID_OUTPUT in wanted and self._grid is not None:
            self._make_grid(result, header, grid_allowed, processed, timer)
        return processed

    def _make_grid(self, result, header, grid_allowed: bool, processed: Processed, timer) -> None:
        from ..core.grid import GridError

        if not grid_allowed:
            processed.grid_error = "CameraInfo is stale"
            return
        if self._camera_info is None:
            processed.grid_error = "no CameraInfo received yet"
            return
        if self._camera_model is None:
            processed.grid_error = self._camera_error
            return
        w, h = self._camera_model.image_size()
        if (w, h) != (result.width, result.height):
            processed.grid_error = (f"CameraInfo describes {w}x{h} images but the image is "
                                    f"{result.width}x{result.height}")
            return
        t0 = time.perf_counter()
        labels = result.labels_small
        try:
            processed.grid_rebuilt = self._grid.configure(self._camera_model, self._T_grid_body,
                                                          labels.shape[0], labels.shape[1])
            cells = self._grid.compute(labels)
        except GridError as exc:
            processed.grid_error = str(exc)
            return
        finally:
            timer.add("grid", time.perf_counter() - t0)
        spec = self.grid_settings.spec
        t1 = time.perf_counter()
        processed.messages[GRID_OUTPUT] = occupancy_grid_msg(
            cells, spec.resolution, (spec.x_min, spec.y_min),
            copy_header(header, self.grid_settings.frame_id))
        timer.add("to_msg", time.perf_counter() - t1)


def default_parameters() -> Dict[str, object]:
    """The node's parameter defaults (as in config/camera_seg.yaml)."""
    from .parameters import SPECS

    return {spec.name: (list(spec.default) if isinstance(spec.default, list) else spec.default)
            for spec in SPECS}


def load_parameters_file(path: str, node_name: str = "camera_seg") -> Dict[str, object]:
    """Node parameters from a ROS 2 params file (``/**`` or the node's name), flattened with dots,
    over the defaults; validated like the node validates them."""
    import yaml

    from .parameters import check_all

    with open(path, "r", encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    values = default_parameters()
    for key in ("/**", node_name, "/" + node_name):
        section = (doc.get(key) or {}).get("ros__parameters")
        if section:
            values.update(_flatten(section))
    reason = check_all(values)
    if reason:
        raise ValueError(f"invalid parameter in {path}: {reason}")
    return values


def _flatten(d: Dict[str, object], prefix: str = "") -> Dict[str, object]:
    out: Dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def build_processor(p: Dict[str, object], progress=None) -> FrameProcessor:
    """The node's FrameProcessor from its parameters (model, labels, backend, grid, pose).
    Raises SegmenterError / LabelFileError / ModelInfoError / GridError with the reason."""
    model_path = p["model"] or resources.DEFAULT_MODEL
    label_path = p["label_file"] or resources.DEFAULT_LABEL_FILE
    options = {"num_threads": p["num_threads"]}
    if p["backend"] in ("auto", "tensorrt"):
        options.update(cache_dir=p["engine.cache_dir"], build_if_missing=p["engine.build_if_missing"],
                       precision=p["engine.precision"], progress=progress)
    segmenter = Segmenter.from_file(model_path, p["backend"], **options)
    try:
        groups = load_label_file(label_path, segmenter.info.class_names)
        pipeline = SegmentationPipeline(segmenter, groups, p["overlay_alpha"])
        grid = None
        if p["grid.enabled"]:
            from ..core.grid import GridSpec

            spec = GridSpec(resolution=p["grid.resolution"], x_min=p["grid.x_min"], x_max=p["grid.x_max"],
                            y_min=p["grid.y_min"], y_max=p["grid.y_max"], max_range=p["grid.max_range"])
            spec.validate()
            grid = GridSettings(spec, p["grid.frame_id"], tuple(p["camera_pose.xyz"]),
                                tuple(p["camera_pose.rpy"]))
        processor = FrameProcessor(pipeline, grid)
    except Exception:
        segmenter.release()
        raise
    processor.model_path, processor.label_path = model_path, label_path
    return processor


def _same_camera(a: CameraInfo, b: CameraInfo) -> bool:
    return (a.width == b.width and a.height == b.height and list(a.k) == list(b.k)
            and list(a.d) == list(b.d) and a.distortion_model == b.distortion_model
            and a.binning_x == b.binning_x and a.binning_y == b.binning_y
            and (a.roi.x_offset, a.roi.y_offset, a.roi.width, a.roi.height, a.roi.do_rectify)
            == (b.roi.x_offset, b.roi.y_offset, b.roi.width, b.roi.height, b.roi.do_rectify))
