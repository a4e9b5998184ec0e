"""The backend interface, the backend factory, and the Segmenter that fits frames to a model.

Every backend runs the same graph contract (see model_info): uint8 RGB images [N, H, W, 3] in,
uint8 class ids [N, H, W] out, and, for models exported with it, a uint8 confidence map
[N, H, W] (255 x the largest softmax probability) beside it. Normalisation, argmax and the
confidence are inside the graph, so only those small uint8 maps leave the device. Like Polygraphy's runners, a backend is activated once
(load), called many times (infer), and deactivated (release).
"""

from __future__ import annotations

import abc
import collections
import importlib
import logging
import os
from typing import Any, Deque, Dict, NamedTuple, Optional, Tuple

import cv2
import numpy as np

from .model_info import PRECISIONS, ModelInfo, ModelInfoError

log = logging.getLogger(__name__)

class BackendEntry(NamedTuple):
    module: str
    cls: str
    files: Tuple[str, ...]   # model file types it opens


# The one backend table: where each backend lives (imported only when chosen) and the files it
# opens. A file type's default backend is the first entry that opens it (.onnx: ONNX Runtime).
BACKEND_TABLE: Dict[str, BackendEntry] = {
    "onnxruntime": BackendEntry("seg_perception.core.backends.onnxruntime", "OnnxRuntimeBackend",
                                (".onnx",)),
    "torch": BackendEntry("seg_perception.core.backends.torch", "TorchBackend", (".pt", ".pth")),
    "tensorrt": BackendEntry("seg_perception.core.backends.tensorrt", "TensorRTBackend",
                             (".onnx", ".engine", ".plan")),
}
BACKENDS = ("auto",) + tuple(BACKEND_TABLE)  # "auto" chooses by file type and what is installed


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


def backend_for_file(model_path: str) -> str:
    ext = os.path.splitext(model_path)[1].lower()
    for name, entry in BACKEND_TABLE.items():
        if ext in entry.files:
            return name
    known = sorted({e for entry in BACKEND_TABLE.values() for e in entry.files})
    raise SegmenterError(f"cannot tell the backend from file type {ext!r} of {model_path}; "
                         f"known: {known}")


def backend_class(name: str):
    if name not in BACKEND_TABLE:
        raise SegmenterError(f"unknown backend {name!r}; choose one of {list(BACKENDS)}")
    entry = BACKEND_TABLE[name]
    try:
        module = importlib.import_module(entry.module)
    except ImportError as exc:  # the backend's runtime library is missing
        raise BackendUnavailable(f"backend {name!r} is not available: {exc}") from exc
    return getattr(module, entry.cls)


class ModelSpec(NamedTuple):
    """A model as the tools name it: ``[backend[/precision]:]path``."""
    backend: str
    precision: str
    path: str

    @property
    def label(self) -> str:
        return f"{self.backend}{'/' + self.precision if self.precision else ''}:{os.path.basename(self.path)}"


def parse_model_spec(spec: str) -> ModelSpec:
    """'[backend[/precision]:]path' -> ModelSpec; the backend defaults to the file type's.
    Raises ValueError with the reason."""
    backend, precision, path = "", "", spec
    head, sep, tail = spec.partition(":")
    if sep and head.split("/")[0] in BACKEND_TABLE:
        backend, _, precision = head.partition("/")
        path = tail
    if not backend:
        try:
            backend = backend_for_file(path)
        except SegmenterError:
            raise ValueError(f"cannot tell the backend of {spec!r}; write backend:path") from None
    elif _cannot_open(backend, path):
        raise ValueError(f"{spec!r}: {_cannot_open(backend, path)}")
    if precision and precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} in {spec!r}")
    if precision and backend != "tensorrt":
        raise ValueError(f"{spec!r}: a precision applies to tensorrt only (ONNX Runtime and "
                         "PyTorch run the file as it is; pass the _fp16/_int8 file instead)")
    return ModelSpec(backend, precision, path)


def _cannot_open(backend: str, path: str) -> str:
    """Why ``backend`` cannot open ``path`` by its file type ("" when it can)."""
    ext = os.path.splitext(path)[1].lower()
    if ext in BACKEND_TABLE[backend].files:
        return ""
    return (f"backend '{backend}' cannot run a {ext or 'extensionless'} file; it takes "
            f"{', '.join(BACKEND_TABLE[backend].files)}")


def choose_backend(model_path: str, requested: str = "auto") -> Tuple[str, str]:
    """(backend name, why) for a model file.

    auto: TensorRT when it, cuda-python and a CUDA GPU are present (an .onnx file is built into
    a cached engine); else ONNX Runtime with its CUDA provider, else ONNX Runtime on the CPU;
    PyTorch for a checkpoint (.pt). An explicit request is checked against the file type."""
    if requested not in BACKENDS:
        raise SegmenterError(f"unknown backend {requested!r}; choose one of {list(BACKENDS)}")
    by_file = backend_for_file(model_path)
    if requested != "auto":
        if _cannot_open(requested, model_path):
            raise SegmenterError(f"{_cannot_open(requested, model_path)} ({model_path})")
        return requested, f"backend '{requested}' requested"
    if by_file == "torch":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise SegmenterError(f"{model_path} is a PyTorch checkpoint and torch is not installed; "
                                 "export it to ONNX (seg-perception export) to run without torch")
        return "torch", "auto: PyTorch checkpoint (.pt)"
    from .backends import tensorrt as trt_backend

    usable, why_not = trt_backend.tensorrt_usable()
    if by_file == "tensorrt":
        if not usable:
            raise BackendUnavailable(f"{model_path} is a TensorRT engine and TensorRT cannot run "
                                     f"here ({why_not}); use the .onnx file instead")
        return "tensorrt", f"auto: TensorRT engine file ({why_not})"
    if usable:
        return "tensorrt", f"auto: TensorRT preferred on a GPU ({why_not})"
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(f"no runtime can run {model_path}: TensorRT not used "
                                 f"({why_not}) and onnxruntime is not installed ({exc})") from exc
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return "onnxruntime", f"auto: ONNX Runtime with CUDA (TensorRT not used: {why_not})"
    return "onnxruntime", f"auto: ONNX Runtime on the CPU (TensorRT not used: {why_not}; " \
                          "no CUDA provider in this onnxruntime)"


def create_backend(model_path: str, backend: str = "auto", **options: Any) -> Backend:
    """Pick, construct and load a backend for ``model_path``. Raises SegmenterError with a clear
    reason when the file is missing or corrupt or the backend cannot run here."""
    if not os.path.isfile(model_path):
        raise SegmenterError(f"model file not found: {model_path}")
    name, why = choose_backend(model_path, backend)
    log.info("backend %s (%s)", name, why)
    inst = backend_class(name)(model_path, selection_reason=why, **options)
    try:
        inst.activate()
    except (SegmenterError, ModelInfoError):
        raise
    except Exception as exc:  # corrupt or incompatible file: surface the runtime's own words
        raise SegmenterError(f"cannot load {model_path} with {name}: {exc}") from exc
    if inst.info is None:
        raise SegmenterError(f"{model_path} carries no seg_perception metadata")
    return inst


class Fit:
    """How frames of one size map onto the model's fixed input (and labels back again).

    stretch: cv2.resize to the model size (area interpolation when shrinking).
    letterbox: scale by min(W/w, H/h), keep aspect ratio, pad the rest with pad_value.
    The class map returns to the frame's size by nearest neighbour, so every output pixel is
    a class id the network really predicted (no blended, invalid ids at boundaries).
    """

    def __init__(self, src_h: int, src_w: int, info: ModelInfo) -> None:
        self.src_h, self.src_w = src_h, src_w
        self.dst_h, self.dst_w = info.input_height, info.input_width
        self.mode = info.fit
        self.pad_value = info.pad_value
        if self.mode == "letterbox":
            scale = min(self.dst_w / src_w, self.dst_h / src_h)
            self.inner_w = max(1, min(self.dst_w, int(round(src_w * scale))))
            self.inner_h = max(1, min(self.dst_h, int(round(src_h * scale))))
            self.off_x = (self.dst_w - self.inner_w) // 2
            self.off_y = (self.dst_h - self.inner_h) // 2
        else:
            self.inner_w, self.inner_h, self.off_x, self.off_y = self.dst_w, self.dst_h, 0, 0
        shrinking = self.inner_w < src_w or self.inner_h < src_h
        self.interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        # Reused model-input buffer: no per-frame allocation for the network input.
        self.buffer = self._new_buffer()
        self._inner = self.buffer[self.off_y:self.off_y + self.inner_h, self.off_x:self.off_x + self.inner_w]
        # More buffers for a pipeline that prepares the next frame while the network runs one
        # (take_buffer / give_back); their padding is filled once, like the buffer's.
        self._free: Deque[np.ndarray] = collections.deque()

    def _new_buffer(self) -> np.ndarray:
        return np.full((self.dst_h, self.dst_w, 3), self.pad_value, np.uint8)

    def take_buffer(self) -> np.ndarray:
        """A model-input buffer nobody else writes until it is given back (thread-safe)."""
        try:
            return self._free.pop()
        except IndexError:
            return self._new_buffer()

    def give_back(self, buffer: np.ndarray) -> None:
        # in use at once, per camera of this size: one in each network run, one waiting, one
        # being written (four cameras, two runs: up to 8); more than 16 is a size that comes and goes
        if len(self._free) < 16:
            self._free.append(buffer)

    def to_model(self, image: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Resize an HxWxC uint8 image into the model input buffer (or ``out``)."""
        target = self._inner if out is None else out[self.off_y:self.off_y + self.inner_h,
                                                     self.off_x:self.off_x + self.inner_w]
        if image.shape[0] == self.inner_h and image.shape[1] == self.inner_w:
            target[...] = image
        else:
            cv2.resize(image, (self.inner_w, self.inner_h), dst=target, interpolation=self.interp)
        return self.buffer if out is None else out

    def model_size_of_inner(self) -> Tuple[int, int]:
        return self.inner_w, self.inner_h

    def labels_to_source(self, labels: np.ndarray) -> np.ndarray:
        """Class map at model size -> class map at the frame's size (nearest neighbour)."""
        inner = labels[self.off_y:self.off_y + self.inner_h, self.off_x:self.off_x + self.inner_w]
        if inner.shape == (self.src_h, self.src_w):
            return np.ascontiguousarray(inner)
        return cv2.resize(inner, (self.src_w, self.src_h), interpolation=cv2.INTER_NEAREST)

    def labels_inner(self, labels: np.ndarray) -> np.ndarray:
        """The part of a model-size class map that shows the frame (padding cut off)."""
        return labels[self.off_y:self.off_y + self.inner_h, self.off_x:self.off_x + self.inner_w]


class Segmenter:
    """A loaded backend plus the frame fitting its model asks for."""

    def __init__(self, backend: Backend) -> None:
        if backend.info is None:
            raise SegmenterError(f"{backend.model_path}: backend {backend.name} is not loaded")
        self.backend = backend
        self.info: ModelInfo = backend.info
        self._fits: Dict[Tuple[int, int], Fit] = {}

    @classmethod
    def from_file(cls, model_path: str, backend: str = "auto", **options: Any) -> "Segmenter":
        return cls(create_backend(model_path, backend, **options))

    def fit_for(self, height: int, width: int) -> Fit:
        key = (height, width)
        fit = self._fits.get(key)
        if fit is None:
            if len(self._fits) > 8:  # a camera that keeps changing size must not grow this
                self._fits.clear()
            fit = self._fits[key] = Fit(height, width, self.info)
        return fit

    def infer_model_input(self, model_input: np.ndarray) -> np.ndarray:
        """One HxWx3 uint8 image already at the model size -> HxW uint8 class map."""
        return self.backend.infer(model_input[None])[0]

    @property
    def has_confidence(self) -> bool:
        return self.backend.has_confidence

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB frame of any size -> HxW uint8 class map at the frame's size."""
        fit = self.fit_for(rgb.shape[0], rgb.shape[1])
        return fit.labels_to_source(self.infer_model_input(fit.to_model(rgb)))

    def release(self) -> None:
        self.backend.release()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()
