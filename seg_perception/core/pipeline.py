"""The node's processing pipeline as a plain object: a Frame in, lazily computed outputs out.

The ROS node, the offline bag processor and the benchmarks all run this same code; only the
node adds DDS. Outputs are computed on first access, so an output nobody wants costs nothing.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional

import numpy as np

from .image import Frame
from .labels import LabelGroups, MASK_GROUPS
from .postprocess import Postprocessor
from .segmenter import Fit, Segmenter


class StageTimer:
    """Accumulates seconds per named stage for one frame."""

    __slots__ = ("times",)

    def __init__(self) -> None:
        self.times: Dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.times[stage] = self.times.get(stage, 0.0) + seconds


class FrameResult:
    """What the pipeline made of one frame. Each output is computed once, on first access."""

    def __init__(self, pipeline: "SegmentationPipeline", frame: Frame, fit: Fit,
                 labels_model: np.ndarray, timer: StageTimer) -> None:
        self.pipeline = pipeline
        self.frame = frame
        self.fit = fit
        self.labels_model = labels_model           # class map at the model's input size
        self.labels_small = fit.labels_inner(labels_model)  # the part that shows the frame
        self.timer = timer
        self._cache: Dict[str, np.ndarray] = {}

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

    def mask(self, group: str, out: Optional[np.ndarray] = None) -> np.ndarray:
        """HxW uint8: 255 where the class belongs to ``group`` (road, pedestrian, parking)."""
        post = self.pipeline.post
        return self._timed("mask:" + group, lambda: post.upsample(
            post.mask_small(self.labels_small, group), self.height, self.width, out))

    def overlay(self, out: Optional[np.ndarray] = None) -> np.ndarray:
        """HxWx3 rgb8: the frame blended with its class colours."""
        return self._timed("overlay", lambda: self.pipeline.post.overlay(
            self.frame.rgb(), self.labels_small, out), stage="overlay")


class SegmentationPipeline:
    def __init__(self, segmenter: Segmenter, groups: LabelGroups, overlay_alpha: float = 0.5) -> None:
        self.segmenter = segmenter
        self.groups = groups
        colors = [c.color for c in segmenter.info.classes]
        self.post = Postprocessor(groups, colors, overlay_alpha)
        # Test hook: a callable run before inference that may raise, to inject faults into the
        # real pipeline (see core/faults.py). None in normal operation.
        from .faults import fault_hook_from_env

        self.fault_hook: Optional[Callable[[Frame], None]] = fault_hook_from_env()

    @property
    def info(self):
        return self.segmenter.info

    def set_overlay_alpha(self, alpha: float) -> None:
        self.post.overlay_alpha = float(alpha)

    def process(self, frame: Frame, timer: Optional[StageTimer] = None) -> FrameResult:
        timer = timer or StageTimer()
        t0 = time.perf_counter()
        fit = self.segmenter.fit_for(frame.height, frame.width)
        model_input = frame.resized_rgb(fit)
        t1 = time.perf_counter()
        timer.add("preprocess", t1 - t0)
        if self.fault_hook is not None:
            self.fault_hook(frame)
        labels_model = self.segmenter.infer_model_input(model_input)
        timer.add("inference", time.perf_counter() - t1)
        return FrameResult(self, frame, fit, labels_model, timer)


MASK_OUTPUTS = tuple(f"{g}_mask" for g in MASK_GROUPS)
