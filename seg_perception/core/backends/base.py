"""The backend interface every inference runtime implements, and its errors.

Every backend runs the same graph contract (see model_info): uint8 RGB images [N, H, W, 3] in,
uint8 class ids [N, H, W] out, and, for models exported with it, a uint8 confidence map
[N, H, W] (255 x the largest softmax probability) beside it. Normalisation, argmax and the
confidence are inside the graph, so only those small uint8 maps leave the device. Like
Polygraphy's runners, a backend is activated once (load), called many times (infer), and
deactivated (release); the input contract is checked once, here, for all of them.
"""

from __future__ import annotations

import abc
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..model_info import ModelInfo


class SegmenterError(RuntimeError):
    """A model cannot be loaded or run."""


class BackendUnavailable(SegmenterError):
    """The backend's runtime library is not installed or has no usable device here."""


BATCH_ANY = 64  # "any batch": more cameras than this on one node is not a case


class Backend(abc.ABC):
    """One inference runtime for a seg_perception model file, used like Polygraphy's runners:

        with create_backend(path) as backend:      # activated (loaded) once
            ids, confidence = backend.infer_with_confidence(images)   # many times
        # released on leaving the block, also on an error

    The base checks the input contract once for every backend (uint8 [N, H, W, 3] at the
    model's input size, a loaded backend); subclasses implement load, _infer and _release."""

    name: str = "?"

    def __init__(self, model_path: str, selection_reason: str = "", **options: Any) -> None:
        self.model_path = model_path
        self.options = options
        self.selection_reason = selection_reason  # why this backend was chosen (logged, shown)
        self.info: Optional[ModelInfo] = None
        self.device: str = "cpu"
        # Whether infer_with_confidence returns a confidence map (set by load).
        self.has_confidence: bool = False
        # The most images one infer call takes (set by load: a fixed batch dimension, or an
        # engine's optimisation profile; BATCH_ANY where the graph's batch is dynamic).
        self.max_batch: int = 1
        # Whether infer may run in several threads at once (set by load): the node then runs
        # several cameras' batches side by side on one loaded model (inference_workers).
        self.concurrent_runs: bool = False
        self.active = False

    @abc.abstractmethod
    def load(self) -> None:
        """Activate: read the model, allocate what inference needs, and set ``self.info`` and
        ``self.has_confidence``."""

    @abc.abstractmethod
    def _infer(self, images: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """The runtime's part of infer_with_confidence, on input the base has checked."""

    def activate(self) -> "Backend":
        if not self.active:
            self.load()
            self.active = True
        return self

    def check_input(self, images: np.ndarray) -> None:
        info = self.info
        if not self.active or info is None:
            raise SegmenterError(f"{self.name} backend is not loaded (or was released)")
        expected = (info.input_height, info.input_width, 3)
        if (not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4
                or images.shape[1:] != expected):
            got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise SegmenterError(f"expected uint8 [N, {expected[0]}, {expected[1]}, 3], got {got}")

    def infer_with_confidence(self, images: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """uint8 [N, H, W, 3] RGB at the model's input size -> (uint8 [N, H, W] class ids,
        uint8 [N, H, W] confidence, or None for a model without that output)."""
        self.check_input(images)
        return self._infer(images)

    def infer(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] RGB at the model's input size -> uint8 [N, H, W] class ids."""
        return self.infer_with_confidence(images)[0]

    def release(self) -> None:
        """Deactivate: free device memory and sessions. Safe to call twice."""
        self.active = False
        self._release()

    def _release(self) -> None:
        """The runtime's part of release."""

    def __enter__(self) -> "Backend":
        return self.activate()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def describe(self) -> str:
        return f"{self.name} on {self.device}"

    @classmethod
    def options_for(cls, model: Any, runs: int = 1, progress: Any = None) -> Dict[str, Any]:
        """This backend's constructor options from the model part of the node's configuration
        (core/config.ModelConfig): each backend knows its own. ``runs``: network runs at once
        the CPU threads are shared among."""
        return {}


