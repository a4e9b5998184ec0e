"""A camera's processing as a plain object: a Frame in, lazily computed outputs out.

A frame travels Frame (decoded camera image) -> Prepared (fitted to the model's input) ->
FrameResult (after the network), whose outputs (masks, labels, confidence, overlay, the
drivable grid with its status) are computed on first access, so an output nobody wants costs
nothing. The frame runtime (core/runtime), process-bag and the benchmarks all run this same
object, built by build_pipeline from the node's configuration (core/config.py).
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .camera_grid import CameraGrid, GridOutcome
from .config import CameraConfig, GridConfig, NodeConfig, OutputConfig
from .fit import Fit
from .image import Frame, ImageError
from .labels import LabelGroups, UNKNOWN_ID
from .postprocess import Postprocessor, overlay_size
from .segmenter import Segmenter

# The stages a frame's timer records, in the order a frame goes through them (convert, to_msg
# and publish are the ROS glue's).
STAGES = ("convert", "preprocess", "inference", "postprocess", "overlay", "grid", "to_msg", "publish")
# Where a frame waits between the runtime's threads: from its arrival until the prepare thread
# starts on it (its age in its camera's newest-frame slot, the just-in-time hold included),
# prepared until a network run takes it, inferred until the output thread takes it.
WAITS = ("wait for prepare", "wait for network", "wait for outputs")


class StageTimer:
    """Accumulates seconds per named stage (STAGES, WAITS) for one frame."""

    __slots__ = ("times", "_queued")

    def __init__(self) -> None:
        self.times: Dict[str, float] = {}
        self._queued: Optional[float] = None

    def add(self, stage: str, seconds: float) -> None:
        self.times[stage] = self.times.get(stage, 0.0) + seconds

    def queued(self) -> None:
        """The frame is handed over to the next thread (a wait starts)."""
        self._queued = time.monotonic()

    def taken(self, wait: str) -> None:
        """The next thread took it: the time since ``queued`` counts as ``wait``."""
        if self._queued is not None:
            self.add(wait, time.monotonic() - self._queued)
            self._queued = None


class FrameResult:
    """What the pipeline made of one frame. Each output is computed once, on first access, with
    the output settings that held when the frame was prepared (a runtime change applies from the
    next frame on, never half-way through one)."""

    def __init__(self, frame: Frame, fit: Fit, labels_model: np.ndarray, timer: StageTimer,
                 confidence_model: Optional[np.ndarray], post: Postprocessor, outputs: OutputConfig,
                 grid: Optional[CameraGrid] = None, wanted: Sequence[str] = ()) -> None:
        self.frame = frame
        self.fit = fit
        self.labels_model = labels_model           # class map at the model's input size
        self.labels_small = fit.labels_inner(labels_model)  # the part that shows the frame
        # uint8 confidence (255 x max softmax probability) beside it; None for older models
        self.confidence_small = (fit.labels_inner(confidence_model)
                                 if confidence_model is not None else None)
        self.timer = timer
        self.post, self.outputs, self.camera_grid = post, outputs, grid
        self.wanted = list(wanted)                 # the outputs somebody wanted when it was prepared
        self._cache: Dict[str, np.ndarray] = {}
        self._grid: Optional[GridOutcome] = None

    @property
    def height(self) -> int:
        return self.frame.height

    @property
    def width(self) -> int:
        return self.frame.width

    def _timed(self, key: str, make: Callable[[], np.ndarray], stage: str = "postprocess") -> np.ndarray:
        out = self._cache.get(key)
        if out is None:
            t0 = time.perf_counter()
            out = self._cache[key] = make()
            self.timer.add(stage, time.perf_counter() - t0)
        return out

    # ``out``: an array of the right shape to write the output into (e.g. a message's buffer).
    def labels(self, out: Optional[np.ndarray] = None) -> np.ndarray:
        """HxW uint8 class ids at the frame's size."""
        return self._timed("labels", lambda: self.post.upsample(self.labels_small, self.height, self.width, out))

    def known_labels(self, min_confidence: float) -> np.ndarray:
        """The model-size class map (frame part) with UNKNOWN_ID where the confidence is below
        ``min_confidence`` (0..1). Without a confidence map, or at 0, the class map itself."""
        level = confidence_level(min_confidence)
        if self.confidence_small is None or level == 0:
            return self.labels_small

        def make() -> np.ndarray:
            known = self.labels_small.copy()
            known[self.confidence_small < level] = UNKNOWN_ID
            return known
        return self._timed(f"known:{level}", make)

    def grid_labels(self) -> np.ndarray:
        """What the drivable grid is made from: the class map with unsure pixels unknown."""
        return self.known_labels(self.outputs.min_confidence.get("grid", 0.0))

    def mask(self, group: str, out: Optional[np.ndarray] = None) -> np.ndarray:
        """HxW uint8: 255 where the class belongs to ``group`` (road, pedestrian, parking) with
        at least the group's minimum confidence."""
        labels = self.known_labels(self.outputs.min_confidence.get(group, 0.0))
        return self._timed("mask:" + group, lambda: self.post.upsample(
            self.post.mask_small(labels, group), self.height, self.width, out))

    def grid(self, t: Optional[float] = None) -> GridOutcome:
        """The drivable grid of this frame, or why there is none (``t``: the time the camera
        model's freshness is judged at; default: now on the grid's clock). Computed once."""
        grid = self.camera_grid
        if grid is None:
            return GridOutcome(None, "grid.enabled is false")
        if self._grid is None:
            labels = self.grid_labels()  # unsure pixels unknown: their cells stay -1
            t0 = time.perf_counter()
            self._grid = grid.compute(labels, self.width, self.height, self.frame.header, t)
            self.timer.add("grid", time.perf_counter() - t0)
        return self._grid

    def grid_confidence(self) -> Optional[np.ndarray]:
        """uint8 per grid cell: the model's confidence at the pixel behind the cell (the drivable
        map's weights); None without a grid or for a model without confidence."""
        if self.confidence_small is None or self.grid().cells is None:
            return None
        return self._timed("grid_confidence", lambda: self.camera_grid.sample(self.confidence_small), "grid")

    def confidence(self, out: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """HxW uint8 confidence at the frame's size (255 = certain), None for a model without
        a confidence output."""
        if self.confidence_small is None:
            return None
        return self._timed("confidence", lambda: self.post.upsample(
            self.confidence_small, self.height, self.width, out))

    @property
    def overlay_size(self) -> Tuple[int, int]:
        """(height, width) of the overlay: the frame's, at most overlay_max_width wide."""
        return overlay_size(self.height, self.width, self.outputs.overlay_max_width)

    def overlay(self, out: Optional[np.ndarray] = None) -> np.ndarray:
        """rgb8 at overlay_size (or ``out``'s size): the frame blended with its class colours.
        The frame is brought to that size before any colour conversion (core/image.rgb_at)."""
        h, w = out.shape[:2] if out is not None else self.overlay_size  # out was sized by the caller

        def make() -> np.ndarray:
            rgb = self.frame.rgb_at(h, w, self.post.shrink_buffer(h, w))
            return self.post.overlay(rgb, self.labels_small, self.outputs.overlay_alpha, out)
        return self._timed("overlay", make, stage="overlay")


class SegmentationPipeline:
    """One camera's processing: the (shared) segmenter, the label groups, its output settings
    (default: OutputConfig.plain) and its drivable grid (None: no grid). ``model_path`` /
    ``label_path``: what was loaded."""

    def __init__(self, segmenter: Segmenter, groups: LabelGroups, outputs: Optional[OutputConfig] = None,
                 grid: Optional[CameraGrid] = None, model_path: str = "", label_path: str = "") -> None:
        self.segmenter = segmenter
        self.groups = groups
        self.grid = grid
        self.model_path, self.label_path = model_path, label_path
        self.outputs = outputs or OutputConfig.plain()
        self.post = Postprocessor(groups, [c.color for c in segmenter.info.classes])

    @property
    def info(self):
        return self.segmenter.info

    def apply(self, outputs: OutputConfig) -> None:
        """New output settings (validated by core/config): from the next frame on."""
        self.outputs = outputs  # one assignment: a frame sees the old or the new set

    def release(self) -> None:
        """Release the network (its backend's memory, a GPU context)."""
        self.segmenter.release()

    def __enter__(self) -> "SegmentationPipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def process(self, frame: Frame, timer: Optional[StageTimer] = None) -> FrameResult:
        """Preprocess and run the network on one frame (``prepare`` then ``run``)."""
        return self.run(self.prepare(frame, timer))

    def prepare(self, frame: Frame, timer: Optional[StageTimer] = None, pooled: bool = False,
                out: Optional[np.ndarray] = None) -> "Prepared":
        """Fit the frame to the model's input. ``pooled``: into a buffer of its own (given back
        by ``run``), so the next frame can be prepared while the network runs this one; ``out``:
        into that array (a row of a batch the caller owns)."""
        max_pixels = self.outputs.max_image_pixels
        if max_pixels and frame.height * frame.width > max_pixels:
            raise ImageError(f"{frame.width}x{frame.height} is {frame.height * frame.width / 1e6:.1f} MP, more than "
                             f"max_image_pixels = {max_pixels} ({max_pixels / 1e6:.1f} MP); "
                             f"raise max_image_pixels to accept such frames")
        timer = timer or StageTimer()
        t0 = time.perf_counter()
        fit = self.segmenter.fit_for(frame.height, frame.width)
        buffer = out if out is not None else (fit.take_buffer() if pooled else None)
        try:
            if out is not None:
                fit.pad(out)  # a row shared with frames of other sizes: its padding written here
            model_input = frame.resized_rgb(fit, buffer)
        except Exception:
            if buffer is not None and out is None:
                fit.give_back(buffer)
            raise
        timer.add("preprocess", time.perf_counter() - t0)
        return Prepared(frame, fit, model_input, timer, pooled and out is None, self.outputs)

    def run(self, prepared: "Prepared") -> FrameResult:
        """The network on a prepared frame."""
        return run_batch([(self, prepared)])[0]

    def result(self, prepared: "Prepared", labels: np.ndarray, confidence: Optional[np.ndarray]) -> FrameResult:
        return FrameResult(prepared.frame, prepared.fit, labels, prepared.timer, confidence, self.post,
                           prepared.outputs, self.grid, prepared.wanted)


class Prepared:
    """A frame fitted to the model's input, not yet through the network."""

    __slots__ = ("frame", "fit", "model_input", "timer", "outputs", "wanted", "_pooled")

    def __init__(self, frame: Frame, fit: Fit, model_input: np.ndarray, timer: StageTimer, pooled: bool,
                 outputs: OutputConfig) -> None:
        self.frame, self.fit, self.model_input = frame, fit, model_input
        self.timer, self._pooled = timer, pooled
        self.outputs = outputs           # the settings its outputs will be made with
        self.wanted: List[str] = []      # set by the runtime: the outputs wanted of it

    def release(self) -> None:
        """Give a pooled input buffer back (after inference, or when the frame is dropped)."""
        if self._pooled and self.model_input is not None:
            self.fit.give_back(self.model_input)
        self.model_input = None


def run_batch(items: Sequence[Tuple[SegmentationPipeline, Prepared]],
              inputs: Optional[np.ndarray] = None) -> List[FrameResult]:
    """The network once on several prepared frames (one per camera), each with the pipeline of
    its camera; all the pipelines share one segmenter (build_camera_pipelines). ``inputs``: the
    [N, H, W, 3] batch the frames were prepared into (no copy); else one frame's buffer is used
    as it is and several are stacked. Every frame's timer gets the batch's inference time; every
    input buffer is given back, also on an error."""
    try:
        segmenter = items[0][0].segmenter
        if any(pl.segmenter is not segmenter for pl, _ in items):
            raise ValueError("run_batch: the pipelines do not share one network")
        t1 = time.perf_counter()
        if inputs is None:
            inputs = (items[0][1].model_input[None] if len(items) == 1 else
                      np.stack([prepared.model_input for _, prepared in items]))
        labels, confidence = segmenter.backend.infer_with_confidence(inputs)
        took = time.perf_counter() - t1
    finally:
        for _, prepared in items:
            prepared.release()
    results = []
    for i, (pl, prepared) in enumerate(items):
        prepared.timer.add("inference", took)
        results.append(pl.result(prepared, labels[i], confidence[i] if confidence is not None else None))
    return results


def model_label_groups(segmenter: Segmenter, label_file: str, model_path: str = "") -> Tuple[LabelGroups, str]:
    """(the label groups of the model's classes, the file they came from): ``label_file``, or
    "" for the packaged label file of the model's class set."""
    from .class_sets import packaged_label_file
    from .labels import load_label_file

    label_path = label_file or packaged_label_file(segmenter.info.class_names, model_path)
    return load_label_file(label_path, segmenter.info.class_names), label_path


def build_pipeline(cfg: NodeConfig, camera: str = "", progress: Optional[Callable[[str], None]] = None,
                   camera_info_topic: str = "camera_info", runs: int = 1) -> SegmentationPipeline:
    """Camera ``camera``'s pipeline (model, labels, backend, grid, pose) from the configuration;
    ``runs``: network runs at once the session's CPU threads leave cores to. Raises
    SegmenterError / LabelFileError / ModelInfoError / GridError with the reason."""
    from . import resources
    from .backends.registry import load_backend, runs_on_cpu_threads

    model_path = cfg.model.path or resources.DEFAULT_MODEL
    if runs > 1 and not runs_on_cpu_threads(model_path, cfg.model.backend):
        runs = 1  # only ONNX Runtime on the CPU runs several (core/threads.runs_at_once)
    segmenter = Segmenter(load_backend(model_path, cfg.model.backend, cfg.model, runs, progress))
    try:
        groups, label_path = model_label_groups(segmenter, cfg.model.label_file, model_path)
        return SegmentationPipeline(segmenter, groups, cfg.outputs,
                                    camera_grid(cfg.grid, cfg.camera(camera), groups, camera_info_topic),
                                    model_path=model_path, label_path=label_path)
    except Exception:
        segmenter.release()
        raise


def camera_grid(grid: GridConfig, camera: CameraConfig, groups: LabelGroups,
                camera_info_topic: str = "camera_info") -> Optional[CameraGrid]:
    """The drivable grid of a camera (None: grid.enabled false)."""
    if not grid.enabled:
        return None
    return CameraGrid(grid.spec(), groups, grid.frame_id, camera.pose.xyz, camera.pose.rpy,
                      grid.camera_info_timeout, camera_info_topic)


def build_camera_pipelines(cfg: NodeConfig, info_topics: Dict[str, str],
                           progress: Optional[Callable[[str], None]] = None,
                           runs: int = 1) -> Dict[str, SegmentationPipeline]:
    """One pipeline per camera ({name: its CameraInfo topic}; "" is the single camera), all on one
    network (one model in memory, one engine): each with its own grid, pose and camera model."""
    names = list(info_topics)
    first = build_pipeline(cfg, names[0], progress, info_topics[names[0]], runs=runs)
    try:
        return {names[0]: first, **pipelines_on(first, cfg, {n: info_topics[n] for n in names[1:]})}
    except Exception:
        first.release()
        raise


def pipelines_on(loaded: SegmentationPipeline, cfg: NodeConfig, info_topics: Dict[str, str]
                 ) -> Dict[str, SegmentationPipeline]:
    """Pipelines for these cameras on ``loaded``'s network (its segmenter and label groups), each
    with a grid of its own: a model loaded once serves many cameras, or many bags one after the
    other (each bag's cameras start with no CameraInfo)."""
    return {name: SegmentationPipeline(loaded.segmenter, loaded.groups, cfg.outputs,
                                       camera_grid(cfg.grid, cfg.camera(name), loaded.groups, topic),
                                       model_path=loaded.model_path, label_path=loaded.label_path)
            for name, topic in info_topics.items()}


def confidence_level(min_confidence: float) -> int:
    """The uint8 confidence a pixel needs to meet a threshold in [0, 1]."""
    return int(np.ceil(float(min_confidence) * 255.0 - 1e-9))
