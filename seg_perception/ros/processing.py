"""One camera message in, the node's output messages out: the node's whole pipeline without DDS.

The node publishes what this returns; `seg-perception process-bag` serialises the same messages
into a bag. Only outputs somebody asked for are computed.
"""

from __future__ import annotations

import array
import dataclasses
import time
from typing import Callable, Collection, Dict, Optional, Tuple

import numpy as np
from sensor_msgs.msg import CameraInfo

from ..core import resources
from ..core.image import Frame
from ..core.labels import load_label_file
from ..core.pipeline import (CONFIDENCE_OUTPUT, GRID_OUTPUT, IMAGE_OUTPUTS, MASK_OUTPUTS,  # noqa: F401
                             OUTPUTS, SegmentationPipeline, StageTimer)
from ..core.grid import body_pose_from_optical  # noqa: F401  (re-exported)
from ..core.parameters import default_parameters, load_parameters_file, min_confidence_of  # noqa: F401
from ..core.segmenter import Segmenter
from ..core.threads import inference_threads, opencv_threads  # noqa: F401
from .conversions import camera_model_from_msg, copy_header, frame_from_msg, image_msg, \
    image_msg_from_buffer, occupancy_grid_msg



@dataclasses.dataclass
class GridSettings:
    spec: object                      # core.grid.GridSpec
    frame_id: str = "base_link"
    pose_xyz: Tuple[float, float, float] = (0.0, 0.0, 1.5)
    pose_rpy: Tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclasses.dataclass
class PreparedFrame:
    """A frame decoded and fitted to the model's input, before inference."""
    prepared: object  # core.pipeline.Prepared
    header: object    # std_msgs/Header of the input

    def release(self) -> None:
        """A prepared frame that will not be inferred (dropped): give its buffer back."""
        self.prepared.release()


@dataclasses.dataclass
class Inferred:
    """A frame after inference, before its outputs are built."""
    result: object   # core.pipeline.FrameResult
    header: object   # std_msgs/Header of the input


@dataclasses.dataclass
class Processed:
    messages: Dict[str, object]
    timings: Dict[str, float]
    frame: Optional[Frame] = None
    grid_error: Optional[str] = None   # why no grid was made for this frame (None: made or not asked)
    grid_rebuilt: bool = False         # the cell->pixel lookup table was (re)built for this frame


class FrameProcessor:
    """``reuse_buffers``: output images are written into message buffers that are reused for the
    next frame (the node publishes each message before it builds the next; a caller that keeps
    messages across frames must leave this off)."""

    def __init__(self, pipeline: SegmentationPipeline, grid: Optional[GridSettings] = None,
                 reuse_buffers: bool = False, model_path: str = "", label_path: str = "") -> None:
        self.pipeline = pipeline
        self.model_path, self.label_path = model_path, label_path  # what was loaded (diagnostics)
        self.reuse_buffers = reuse_buffers
        self._buffers: Dict[str, array.array] = {}
        self.grid_settings = grid
        self._grid = None
        # (CameraInfo message, parsed camera model or None, error or None), replaced as one object:
        # CameraInfo arrives on the executor thread while the output thread builds grids
        self._camera: Optional[Tuple[CameraInfo, object, Optional[str]]] = None
        if grid is not None:
            from ..core.grid import GroundGrid, camera_pose

            self._grid = GroundGrid(grid.spec, pipeline.groups)
            self._T_grid_body = camera_pose(grid.pose_xyz, grid.pose_rpy)

    def set_camera_info(self, msg: CameraInfo) -> None:
        current = self._camera
        if current is not None and _same_camera(current[0], msg):
            return  # unchanged: keep the parsed model (and the grid's lookup table)
        if self._grid is None:
            self._camera = (msg, None, None)  # only the grid uses the camera model
            return
        try:
            model = camera_model_from_msg(msg)
            model.validate()
            self._camera = (msg, model, None)
        except Exception as exc:  # core.grid.GridError, or a message too broken to read
            self._camera = (msg, None, f"invalid CameraInfo: {exc}")

    def set_pose(self, xyz, rpy) -> None:
        if self._grid is not None:
            from ..core.grid import camera_pose

            self._T_grid_body = camera_pose(xyz, rpy)
            self.grid_settings.pose_xyz, self.grid_settings.pose_rpy = tuple(xyz), tuple(rpy)

    def set_pose_matrix(self, T_grid_body: np.ndarray) -> None:
        """The camera body frame's pose as a 4x4 matrix (e.g. from TF, see body_pose_from_optical)."""
        if self._grid is not None:
            self._T_grid_body = np.asarray(T_grid_body, dtype=np.float64)

    def process(self, msg, wanted: Collection[str], grid_allowed: bool = True) -> Processed:
        """Decode ``msg`` (Image or CompressedImage), run the network, build the wanted outputs.
        Raises core.image.ImageError for a bad frame and SegmenterError when inference fails."""
        return self.finish(self.infer(msg), wanted, grid_allowed)

    def infer(self, msg) -> Inferred:
        """First half: decode, fit to the model and run it."""
        return self.run(self.prepare(msg))

    def prepare(self, msg) -> PreparedFrame:
        """Decode and fit to the model's input (raises ImageError for a bad frame). With
        reuse_buffers each prepared frame has an input buffer of its own, so the node prepares
        the next frame while the network runs this one."""
        timer = StageTimer()
        t0 = time.perf_counter()
        frame = frame_from_msg(msg)
        timer.add("convert", time.perf_counter() - t0)
        return PreparedFrame(self.pipeline.prepare(frame, timer, pooled=self.reuse_buffers), msg.header)

    def run(self, prepared: PreparedFrame) -> Inferred:
        """The network on a prepared frame (the network's own thread)."""
        return Inferred(self.pipeline.run(prepared.prepared), prepared.header)

    def finish(self, inferred: Inferred, wanted: Collection[str], grid_allowed: bool = True,
               publish: Optional[Callable[[str, object], None]] = None) -> Processed:
        """Second half: the wanted output messages. Masks first, the overlay last; with
        ``publish`` each message is handed over as soon as it is built, so the outputs planners
        need leave earliest (its time is counted as the 'publish' stage)."""
        result, header = inferred.result, inferred.header
        timer = result.timer
        out: Dict[str, object] = {}
        t_msg = 0.0
        for name in sorted((n for n in wanted if n in IMAGE_OUTPUTS), key=IMAGE_OUTPUTS.index):
            if name == CONFIDENCE_OUTPUT and result.confidence_small is None:
                continue  # a model exported without the confidence output: nothing to publish
            t1 = time.perf_counter()
            channels = 3 if name == "overlay" else 1
            height, width = result.overlay_size if name == "overlay" else (result.height, result.width)
            buf, view = self._buffer(name, height, width, channels)
            t_msg += time.perf_counter() - t1
            if name == "labels":
                arr = result.labels(view)
            elif name == "overlay":
                arr = result.overlay(view)
            elif name == CONFIDENCE_OUTPUT:
                arr = result.confidence(view)
            else:
                arr = result.mask(name[:-len("_mask")], view)
            t1 = time.perf_counter()
            if buf is None:
                out[name] = image_msg(arr, "rgb8" if channels == 3 else "mono8", copy_header(header))
            else:
                out[name] = image_msg_from_buffer(buf, height, width,
                                                  "rgb8" if channels == 3 else "mono8", copy_header(header))
            t_msg += time.perf_counter() - t1
            if publish is not None:
                t1 = time.perf_counter()
                publish(name, out[name])
                timer.add("publish", time.perf_counter() - t1)
        timer.add("to_msg", t_msg)
        processed = Processed(out, timer.times, result.frame)
        if GRID_OUTPUT in wanted and self._grid is not None:
            self._make_grid(result, header, grid_allowed, processed, timer)
            if publish is not None and GRID_OUTPUT in out:
                t1 = time.perf_counter()
                publish(GRID_OUTPUT, out[GRID_OUTPUT])
                timer.add("publish", time.perf_counter() - t1)
        return processed

    def _buffer(self, name: str, height: int, width: int, channels: int):
        """(array.array, numpy view on it) reused across frames when reuse_buffers is on, so an
        output is computed straight into the message's memory (no copy, no allocation)."""
        if not self.reuse_buffers:
            return None, None
        size = height * width * channels
        buf = self._buffers.get(name)
        if buf is None or len(buf) != size:
            buf = self._buffers[name] = array.array("B", bytes(size))
        view = np.frombuffer(buf, np.uint8).reshape((height, width, channels) if channels == 3 else (height, width))
        return buf, view

    def _make_grid(self, result, header, grid_allowed: bool, processed: Processed, timer) -> None:
        from ..core.grid import GridError

        if not grid_allowed:
            processed.grid_error = "CameraInfo is stale"
            return
        camera = self._camera  # one snapshot: the size check and the table use the same camera
        if camera is None:
            processed.grid_error = "no CameraInfo received yet"
            return
        _, model, error = camera
        if model is None:
            processed.grid_error = error
            return
        T_grid_body = self._T_grid_body
        w, h = model.image_size()
        if (w, h) != (result.width, result.height):
            processed.grid_error = (f"CameraInfo describes {w}x{h} images but the image is "
                                    f"{result.width}x{result.height}")
            return
        t0 = time.perf_counter()
        labels = result.grid_labels()  # unsure pixels unknown: their cells stay -1
        try:
            processed.grid_rebuilt = self._grid.configure(model, T_grid_body, labels.shape[0], labels.shape[1])
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


def build_processor(p: Dict[str, object], progress=None, reuse_buffers: bool = False) -> FrameProcessor:
    """The node's FrameProcessor from its parameters (model, labels, backend, grid, pose).
    Raises SegmenterError / LabelFileError / ModelInfoError / GridError with the reason."""
    model_path = p["model"] or resources.DEFAULT_MODEL
    label_path = p["label_file"] or resources.DEFAULT_LABEL_FILE
    options = {"num_threads": inference_threads(p["num_threads"])}
    if p["backend"] in ("auto", "tensorrt"):
        options.update(cache_dir=p["engine.cache_dir"], build_if_missing=p["engine.build_if_missing"],
                       precision=p["engine.precision"], progress=progress)
    segmenter = Segmenter.from_file(model_path, p["backend"], **options)
    try:
        groups = load_label_file(label_path, segmenter.info.class_names)
        pipeline = SegmentationPipeline(segmenter, groups, p["overlay_alpha"], p["overlay_max_width"],
                                        p["max_image_pixels"], min_confidence_of(p))
        grid = None
        if p["grid.enabled"]:
            from ..core.grid import GridSpec

            spec = GridSpec(resolution=p["grid.resolution"], x_min=p["grid.x_min"], x_max=p["grid.x_max"],
                            y_min=p["grid.y_min"], y_max=p["grid.y_max"], max_range=p["grid.max_range"])
            spec.validate()
            grid = GridSettings(spec, p["grid.frame_id"], tuple(p["camera_pose.xyz"]),
                                tuple(p["camera_pose.rpy"]))
        return FrameProcessor(pipeline, grid, reuse_buffers=reuse_buffers, model_path=model_path,
                              label_path=label_path)
    except Exception:
        segmenter.release()
        raise


def _same_camera(a: CameraInfo, b: CameraInfo) -> bool:
    return (a.width == b.width and a.height == b.height and list(a.k) == list(b.k)
            and list(a.d) == list(b.d) and a.distortion_model == b.distortion_model
            and a.binning_x == b.binning_x and a.binning_y == b.binning_y
            and (a.roi.x_offset, a.roi.y_offset, a.roi.width, a.roi.height, a.roi.do_rectify)
            == (b.roi.x_offset, b.roi.y_offset, b.roi.width, b.roi.height, b.roi.do_rectify))
