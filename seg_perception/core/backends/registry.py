"""The backends: the one table of where each lives and which files it opens, the choice of one
for a model file (auto: what is installed and what the file is), and loading it with its own
options. Each backend module is imported only when chosen, so choosing one never loads the
others' runtimes. A test registers a backend of its own with ``register_backend``."""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, Dict, NamedTuple, Tuple

from ..model_info import PRECISIONS, ModelInfoError
from .base import Backend, BackendUnavailable, SegmenterError

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
_REQUEST_ONLY: set = set()  # registered backends: requested by name only, never chosen by auto


def register_backend(name: str, module: str, cls: str, files: Tuple[str, ...]) -> None:
    """Add a backend (e.g. a test's, that fails on demand) under ``name``: it can then be
    requested (parameter ``backend``), never chosen by ``auto``."""
    BACKEND_TABLE[name] = BackendEntry(module, cls, files)
    _REQUEST_ONLY.add(name)


def known_backends() -> Tuple[str, ...]:
    """What the parameter ``backend`` takes: auto and every backend in the table."""
    return ("auto",) + tuple(BACKEND_TABLE)


def backend_for_file(model_path: str) -> str:
    ext = os.path.splitext(model_path)[1].lower()
    for name, entry in BACKEND_TABLE.items():
        if ext in entry.files and name not in _REQUEST_ONLY:
            return name
    known = sorted({e for entry in BACKEND_TABLE.values() for e in entry.files})
    raise SegmenterError(f"cannot tell the backend from file type {ext!r} of {model_path}; "
                         f"known: {known}")


def backend_class(name: str):
    if name not in BACKEND_TABLE:
        raise SegmenterError(f"unknown backend {name!r}; choose one of {list(known_backends())}")
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
    if requested not in known_backends():
        raise SegmenterError(f"unknown backend {requested!r}; choose one of {list(known_backends())}")
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
    from .tensorrt.loader import tensorrt_usable

    usable, why_not = tensorrt_usable()
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




def load_backend(model_path: str, requested: str, model: Any, runs: int = 1, progress: Any = None) -> Backend:
    """The backend for ``model_path`` chosen (choose_backend), built with the options it takes
    from ``model`` (core/config.ModelConfig: each backend's ``options_for``) and loaded."""
    if not os.path.isfile(model_path):
        raise SegmenterError(f"model file not found: {model_path}")
    name, _ = choose_backend(model_path, requested)
    try:
        options = backend_class(name).options_for(model, runs, progress)
    except BackendUnavailable:
        options = {}  # create_backend says why it cannot run
    return create_backend(model_path, requested, **options)


def runs_on_cpu_threads(model_path: str, requested: str) -> bool:
    """Whether the model will run on CPU threads of ONNX Runtime (the only backend that runs
    several inferences at once on one loaded model); False where it cannot tell (the load then
    says why)."""
    try:
        name, _ = choose_backend(model_path, requested)
        if name != "onnxruntime":
            return False
        import onnxruntime as ort
    except (SegmenterError, ImportError):
        return False
    return "CUDAExecutionProvider" not in ort.get_available_providers()
