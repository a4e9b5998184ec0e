"""The node's processing pipeline as a plain object: a Frame in, lazily computed outputs out.

A frame travels Frame (decoded camera image) -> Prepared (fitted to the model's input) ->
FrameResult (after the network), whose outputs (masks, labels, confidence, overlay, the
drivable grid with its status) are computed on first access, so an output nobody wants costs
nothing. The ROS node, process-bag and the benchmarks all run this same object (built by
build_pipeline from the node's parameters); they only turn its outputs into messages.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .camera_grid import CameraGrid, GridOutcome
from .image import Frame, ImageError
from .labels import LabelGroups, MASK_GROUPS, UNKNOWN_ID
from .postprocess import Postprocessor, overlay_size
from .segmenter import Fit, Segmenter
from .threads import inference_threads, inference_workers


# The stages a frame's timer records, in the order a frame goes through them (convert, to_msg
# and publish are the ROS glue's).
STAGES = ("convert", "preprocess", "inference", "postprocess", "overlay", "grid", "to_msg", "publish")
# Where a frame waits between the node's threads: from its arrival until the prepare thread
# starts on it (its age in its camera's newest-frame slot, the just-in-time hold included),
# prepared until a network run takes it, inferred until the output thread takes it. With the
# stages they make up most of the node's latency (not the output thread's work around the
# stages, such as the surround grid and the map).
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
    """What the pipeline made of one frame. Each output is computed once, on first access."""

    def __init__(self, pipeline: "SegmentationPipeline", frame: Frame, fit: Fit,
                 labels_model: np.ndarray, timer: StageTimer,
                 confidence_model: Optional[np.ndarray] = None) -> None:
        self.pipeline = pipeline
        self.frame = frame
        self.fit = fit
        self.labels_model = labels_model           # class map at the model's input size
        self.labels_small = fit.labels_inner(labels_model)  # the part that shows the frame
        # uint8 confidence (255 x max softmax probability) beside it; None for older models
        self.confidence_small = (fit.labels_inner(confidence_model)
                                 if confidence_model is not None else None)
        self.timer = timer
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
        post = self.pipeline.post
        return self._timed("labels", lambda: post.upsample(self.labels_small, self.height, self.width, out))

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
        return self.known_labels(self.pipeline.min_confidence.get("grid", 0.0))

    def mask(self, group: str, out: Optional[np.ndarray] = None) -> np.ndarray:
        """HxW uint8: 255 where the class belongs to ``group`` (road, pedestrian, parking) with
        at least the group's minimum confidence."""
        post = self.pipeline.post
        labels = self.known_labels(self.pipeline.min_confidence.get(group, 0.0))
        return self._timed("mask:" + group, lambda: post.upsample(
            post.mask_small(labels, group), self.height, self.width, out))

    def grid(self, t: Optional[float] = None) -> GridOutcome:
        """The drivable grid of this frame, or why there is none (``t``: the time the camera
        model's freshness is judged at; default: now on the grid's clock). Computed once."""
        grid = self.pipeline.grid
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
        return self._timed("grid_confidence", lambda: self.pipeline.grid.sample(self.confidence_small), "grid")

    def confidence(self, out: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """HxW uint8 confidence at the frame's size (255 = certain), None for a model without
        a confidence output."""
        if self.confidence_small is None:
            return None
        post = self.pipeline.post
        return self._timed("confidence", lambda: post.upsample(
            self.confidence_small, self.height, self.width, out))

    @property
    def overlay_size(self) -> Tuple[int, int]:
        """(height, width) of the overlay: the frame's, at most overlay_max_width wide."""
        return overlay_size(self.height, self.width, self.pipeline.overlay_max_width)

    def overlay(self, out: Optional[np.ndarray] = None) -> np.ndarray:
        """rgb8 at overlay_size (or ``out``'s size): the frame blended with its class colours."""
        size = out.shape[:2] if out is not None else self.overlay_size  # out was sized by the caller
        return self._timed("overlay", lambda: self.pipeline.post.overlay(
            self.frame.rgb(), self.labels_small, out, size), stage="overlay")


class SegmentationPipeline:
    """``grid``: the drivable grid of the camera (None: no grid). ``model_path``/``label_path``:
    what was loaded, for diagnostics."""

    def __init__(self, segmenter: Segmenter, groups: LabelGroups, overlay_alpha: float = 0.5,
                 overlay_max_width: int = 0, max_image_pixels: int = 0,
                 min_confidence: Optional[Dict[str, float]] = None, grid: Optional[CameraGrid] = None,
                 model_path: str = "", label_path: str = "") -> None:
        self.segmenter = segmenter
        self.groups = groups
        self.grid = grid
        self.model_path, self.label_path = model_path, label_path
        # The overlay is for eyes (RViz): a full-HD one costs 4x the bytes and blending of a
        # 960-wide one and shows nothing more on a screen. 0: the frame's size.
        self.overlay_max_width = int(overlay_max_width)
        # Larger frames are refused: each output buffer (and DDS's, which keep the largest size
        # they have carried) grows to the largest frame seen. 0: no limit.
        self.max_image_pixels = int(max_image_pixels)
        # Minimum confidence (0..1) per use: "grid" and each mask group. A pixel below it is
        # unknown there: no mask shows it, the grid leaves its cells -1. Missing keys: 0.
        self.min_confidence: Dict[str, float] = {}
        self.set_min_confidence(min_confidence or {})
        colors = [c.color for c in segmenter.info.classes]
        self.post = Postprocessor(groups, colors, overlay_alpha)
        # Test hook: a callable run before inference that may raise, to inject faults into the
        # real pipeline (see core/faults.py). None in normal operation.
        from .faults import fault_hook_from_env

        self.fault_hook: Optional[Callable[[Frame], None]] = fault_hook_from_env()

    @property
    def info(self):
        return self.segmenter.info

    def set_min_confidence(self, values: Dict[str, float]) -> None:
        bad = {k: v for k, v in values.items()
               if k not in CONFIDENCE_USES or not 0.0 <= float(v) <= 1.0}
        if bad:
            raise ValueError(f"min_confidence takes values in [0, 1] for {list(CONFIDENCE_USES)}, "
                             f"got {bad}")
        merged = dict(self.min_confidence)
        merged.update({k: float(v) for k, v in values.items()})
        self.min_confidence = merged  # one assignment: a frame sees the old or the new set

    def set_overlay_alpha(self, alpha: float) -> None:
        self.post.overlay_alpha = float(alpha)

    def apply_parameters(self, p: Dict[str, Any], pose_changed: bool = False) -> None:
        """The node's runtime parameters (validated by core.parameters beforehand)."""
        from .parameters import min_confidence_of

        self.set_min_confidence(min_confidence_of(p))  # the one that can raise: first
        self.set_overlay_alpha(p["overlay_alpha"])
        self.overlay_max_width = int(p["overlay_max_width"])
        self.max_image_pixels = int(p["max_image_pixels"])
        if self.grid is not None:
            self.grid.watch.timeout_s = float(p["camera_info_timeout"])
            if pose_changed and p["camera_pose.source"] == "parameters":
                self.grid.set_pose(p["camera_pose.xyz"], p["camera_pose.rpy"])

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

    def prepare(self, frame: Frame, timer: Optional[StageTimer] = None, pooled: bool = False) -> "Prepared":
        """Fit the frame to the model's input. ``pooled``: into a buffer of its own (given back
        by ``run``), so the next frame can be prepared while the network runs this one."""
        if self.max_image_pixels and frame.height * frame.width > self.max_image_pixels:
            raise ImageError(f"{frame.width}x{frame.height} is {frame.height * frame.width / 1e6:.1f} MP, more than "
                             f"max_image_pixels = {self.max_image_pixels} ({self.max_image_pixels / 1e6:.1f} MP); "
                             f"raise max_image_pixels to accept such frames")
        timer = timer or StageTimer()
        t0 = time.perf_counter()
        fit = self.segmenter.fit_for(frame.height, frame.width)
        buffer = fit.take_buffer() if pooled else None
        try:
            model_input = frame.resized_rgb(fit, buffer)
        except Exception:
            if buffer is not None:
                fit.give_back(buffer)
            raise
        timer.add("preprocess", time.perf_counter() - t0)
        return Prepared(frame, fit, model_input, timer, buffer is not None)

    def run(self, prepared: "Prepared") -> FrameResult:
        """The network on a prepared frame."""
        return run_batch([(self, prepared)])[0]


def run_batch(items: Sequence[Tuple[SegmentationPipeline, "Prepared"]]) -> List[FrameResult]:
    """The network once on several prepared frames (one per camera), each with the pipeline of
    its camera; all the pipelines share one segmenter (build_camera_pipelines). The frames'
    inputs are stacked into one [N, H, W, 3] batch; every frame's timer gets the batch's
    inference time. Every input buffer is given back, also on an error."""
    try:
        segmenter = items[0][0].segmenter
        if any(pl.segmenter is not segmenter for pl, _ in items):
            raise ValueError("run_batch: the pipelines do not share one network")
        t1 = time.perf_counter()
        for pl, prepared in items:
            if pl.fault_hook is not None:
                pl.fault_hook(prepared.frame)
        if len(items) == 1:
            batch = items[0][1].model_input[None]
        else:
            batch = np.stack([prepared.model_input for _, prepared in items])
        labels, confidence = segmenter.backend.infer_with_confidence(batch)
        took = time.perf_counter() - t1
    finally:
        for _, prepared in items:
            prepared.release()
    results = []
    for i, (pl, prepared) in enumerate(items):
        prepared.timer.add("inference", took)
        results.append(FrameResult(pl, prepared.frame, prepared.fit, labels[i], prepared.timer,
                                   confidence[i] if confidence is not None else None))
    return results


def batch_limit(p: Dict[str, Any], segmenter: Segmenter, workers: int = 1) -> int:
    """How many cameras' frames go through the network in one run: what the parameters ask for
    (frames_per_run_asked), never more than the model takes."""
    return max(1, min(frames_per_run_asked(p, segmenter.backend.device, workers), segmenter.backend.max_batch))


def one_frame_runs(p: Dict[str, Any], device: str, workers: int) -> bool:
    """max_batch 0 with several runs at once on the CPU: one frame a run. There a batch costs
    what its frames cost one by one (ONNX Runtime, one thread: 30, 57, 122 ms for 1, 2, 4
    frames), so two runs of two frames only made each frame wait for its neighbour's compute
    (README, Speed, "Several cameras"). A single run (a GPU, or a backend that runs one at a
    time) still takes every camera's frame."""
    return not p["max_batch"] and device == "cpu" and int(workers) > 1


def frames_per_run_asked(p: Dict[str, Any], device: str, workers: int = 1) -> int:
    """Frames a run the parameters ask for: the cameras' frames (at most max_batch) shared among
    ``workers`` runs at once (4 cameras, 2 runs: 2 each); one where one_frame_runs says so."""
    if one_frame_runs(p, device, workers):
        return 1
    return -(-wanted_batch(p) // max(1, int(workers)))  # rounded up: no camera left out


def batch_note(p: Dict[str, Any], segmenter: Segmenter, workers: int) -> str:
    """Why a run takes fewer frames than there are cameras, for the start-up log ("" otherwise)."""
    backend = segmenter.backend
    limit = batch_limit(p, segmenter, workers)
    if frames_per_run_asked(p, backend.device, workers) > limit:
        why = (segmenter.info.source or {}).get("wrap", {}).get("batch", "")
        return (f" (the model takes at most {backend.max_batch} frame{'s' if backend.max_batch > 1 else ''} "
                "a run: " + (f"its wrap says: batch {why})" if why.startswith("fixed") else
                             "export or wrap it with a dynamic batch dimension)"))
    if one_frame_runs(p, backend.device, workers):
        return (" (max_batch 0 on the CPU with several runs at once: one frame a run, as a batch there "
                "costs what its frames cost one by one; max_batch N shares N frames among the runs)")
    return ""


def runs_asked(p: Dict[str, Any]) -> int:
    """Network runs at once the parameters ask for (core/threads.inference_workers); the node
    runs fewer where the backend cannot (core/threads.runs_at_once)."""
    return inference_workers(p["inference_workers"], len(p.get("cameras") or []))


def wanted_batch(p: Dict[str, Any]) -> int:
    """The largest batch the parameters allow: one frame per camera, at most max_batch (what a
    single run takes, and the top of a TensorRT engine's batch profile)."""
    cameras = max(1, len(p.get("cameras") or []))
    return min(int(p["max_batch"]), cameras) if p["max_batch"] else cameras


class Prepared:
    """A frame fitted to the model's input, not yet through the network."""

    __slots__ = ("frame", "fit", "model_input", "timer", "_pooled")

    def __init__(self, frame: Frame, fit: Fit, model_input: np.ndarray, timer: StageTimer, pooled: bool) -> None:
        self.frame, self.fit, self.model_input, self.timer, self._pooled = frame, fit, model_input, timer, pooled

    def release(self) -> None:
        """Give a pooled input buffer back (after inference, or when the frame is dropped)."""
        if self._pooled and self.model_input is not None:
            self.fit.give_back(self.model_input)
        self.model_input = None


CONFIDENCE_USES = ("grid",) + MASK_GROUPS

# The outputs a frame can give, by the names of their topics (~/<name>), in publishing order:
# masks first (planners need them soonest), the overlay for eyes last, then the grid.
MASK_OUTPUTS = tuple(f"{g}_mask" for g in MASK_GROUPS)
CONFIDENCE_OUTPUT = "confidence"
IMAGE_OUTPUTS = MASK_OUTPUTS + ("labels", CONFIDENCE_OUTPUT, "overlay")
GRID_OUTPUT = "drivable_grid"
OUTPUTS = IMAGE_OUTPUTS + (GRID_OUTPUT,)


def model_label_groups(segmenter: Segmenter, label_file: str, model_path: str = "") -> Tuple[LabelGroups, str]:
    """(the label groups of the model's classes, the file they came from): ``label_file``, or
    "" for the packaged label file of the model's class set."""
    from .class_sets import packaged_label_file
    from .labels import load_label_file

    label_path = label_file or packaged_label_file(segmenter.info.class_names, model_path)
    return load_label_file(label_path, segmenter.info.class_names), label_path


def build_pipeline(p: Dict[str, Any], progress: Optional[Callable[[str], None]] = None,
                   camera_info_topic: str = "camera_info", runs: int = 1) -> SegmentationPipeline:
    """The node's pipeline from its parameters (model, labels, backend, grid, pose); ``runs``:
    network runs at once the session's CPU threads leave cores to (where ONNX Runtime runs on
    the CPU). Raises SegmenterError / LabelFileError / ModelInfoError / GridError with the reason."""
    from . import resources

    model_path = p["model"] or resources.DEFAULT_MODEL
    if runs > 1 and not _onnxruntime_on_cpu(model_path, p["backend"]):
        runs = 1  # only ONNX Runtime on the CPU runs several (core/threads.runs_at_once)
    options: Dict[str, Any] = {"num_threads": inference_threads(p["num_threads"], runs)}
    if p["backend"] in ("auto", "tensorrt"):
        # an engine's optimisation profile over batch 1..(the frames one batch can hold)
        options.update(cache_dir=p["engine.cache_dir"], build_if_missing=p["engine.build_if_missing"],
                       precision=p["engine.precision"], progress=progress, max_batch=wanted_batch(p))
    segmenter = Segmenter.from_file(model_path, p["backend"], **options)
    try:
        from .parameters import min_confidence_of

        groups, label_path = model_label_groups(segmenter, p["label_file"], model_path)
        return SegmentationPipeline(segmenter, groups, p["overlay_alpha"], p["overlay_max_width"],
                                    p["max_image_pixels"], min_confidence_of(p), camera_grid(p, groups, camera_info_topic),
                                    model_path=model_path, label_path=label_path)
    except Exception:
        segmenter.release()
        raise


def _onnxruntime_on_cpu(model_path: str, backend: str) -> bool:
    """Whether the model will run on ONNX Runtime's CPU provider (the choice create_backend
    makes); False where it cannot tell (the load then says why)."""
    from .segmenter import SegmenterError, choose_backend

    try:
        name, _ = choose_backend(model_path, backend)
        if name != "onnxruntime":
            return False
        import onnxruntime as ort
    except (SegmenterError, ImportError):
        return False
    return "CUDAExecutionProvider" not in ort.get_available_providers()


def camera_grid(p: Dict[str, Any], groups: LabelGroups, camera_info_topic: str = "camera_info"
                ) -> Optional[CameraGrid]:
    """The drivable grid of a camera with the parameters it sees (None: grid.enabled false)."""
    if not p["grid.enabled"]:
        return None
    from .grid import GridSpec

    spec = GridSpec(resolution=p["grid.resolution"], x_min=p["grid.x_min"], x_max=p["grid.x_max"],
                    y_min=p["grid.y_min"], y_max=p["grid.y_max"], max_range=p["grid.max_range"])
    return CameraGrid(spec, groups, p["grid.frame_id"], p["camera_pose.xyz"], p["camera_pose.rpy"],
                      p["camera_info_timeout"], camera_info_topic)


def build_camera_pipelines(p: Dict[str, Any], cameras: Dict[str, str],
                           progress: Optional[Callable[[str], None]] = None) -> Dict[str, SegmentationPipeline]:
    """One pipeline per camera ({name: its CameraInfo topic}; "" is the single camera), all on one
    network (one model in memory, one engine): each with its own grid, pose and camera model."""
    from .parameters import camera_view, min_confidence_of

    names = list(cameras)
    first = build_pipeline(camera_view(p, names[0]), progress, cameras[names[0]], runs=runs_asked(p))
    pipelines = {names[0]: first}
    try:
        for name in names[1:]:
            view = camera_view(p, name)
            pipelines[name] = SegmentationPipeline(
                first.segmenter, first.groups, view["overlay_alpha"], view["overlay_max_width"],
                view["max_image_pixels"], min_confidence_of(view), camera_grid(view, first.groups, cameras[name]),
                model_path=first.model_path, label_path=first.label_path)
    except Exception:
        first.release()
        raise
    return pipelines


def confidence_level(min_confidence: float) -> int:
    """The uint8 confidence a pixel needs to meet a threshold in [0, 1]."""
    return int(np.ceil(float(min_confidence) * 255.0 - 1e-9))
