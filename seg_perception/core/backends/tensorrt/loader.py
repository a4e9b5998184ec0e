"""Finding TensorRT and cuda-python, and the CUDA runtime calls the builder and runtime share.

Both libraries are imported lazily, inside the functions that need them: importing this module
costs nothing where they are absent, and ``tensorrt_usable()`` answers without importing
TensorRT. NOT RUN here (no TensorRT, no GPU); cuda_call's unwrapping is tested.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any, Protocol, Tuple

from ..base import BackendUnavailable, SegmenterError

if TYPE_CHECKING:
    from cuda.bindings import runtime as _cudart


class CudaRuntime(Protocol):
    """The part of cuda-python's runtime module (``cuda.bindings.runtime``) that this backend
    calls. The type check (test_typecheck) holds the real module to it, through stubs made from
    the module's own embedded signatures, and every call here to it: a name, an argument count
    or an enum the API does not have fails there. Each call returns (cudaError_t, *values)."""

    cudaMemcpyKind: type[_cudart.cudaMemcpyKind]
    cudaStreamCaptureMode: type[_cudart.cudaStreamCaptureMode]
    cudaStreamNonBlocking: int

    def cudaGetErrorName(self, error: _cudart.cudaError_t) -> Any: ...
    def cudaGetErrorString(self, error: _cudart.cudaError_t) -> Any: ...
    def cudaGetDeviceCount(self) -> Any: ...
    def cudaGetDeviceProperties(self, device: int) -> Any: ...
    def cudaMalloc(self, size: int) -> Any: ...
    def cudaMallocHost(self, size: int) -> Any: ...
    def cudaFree(self, devPtr: Any) -> Any: ...
    def cudaFreeHost(self, ptr: Any) -> Any: ...
    def cudaStreamCreateWithFlags(self, flags: int) -> Any: ...
    def cudaStreamSynchronize(self, stream: Any) -> Any: ...
    def cudaStreamDestroy(self, stream: Any) -> Any: ...
    def cudaMemcpyAsync(self, dst: Any, src: Any, count: int, kind: _cudart.cudaMemcpyKind,
                        stream: Any) -> Any: ...
    def cudaStreamBeginCapture(self, stream: Any, mode: _cudart.cudaStreamCaptureMode) -> Any: ...
    def cudaStreamEndCapture(self, stream: Any) -> Any: ...
    def cudaGraphInstantiate(self, graph: Any, flags: int) -> Any: ...
    def cudaGraphLaunch(self, graphExec: Any, stream: Any) -> Any: ...
    def cudaGraphExecDestroy(self, graphExec: Any) -> Any: ...
    def cudaGraphDestroy(self, graph: Any) -> Any: ...


class CudaError(SegmenterError):
    """A CUDA runtime call failed."""


# --------------------------------------------------------------------------------------------
# Availability and CUDA runtime access (cuda-python)


def cuda_runtime() -> CudaRuntime:
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (cuda-python >= 12.6, the only
    name in 13.x), else the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime
        return runtime
    except ImportError:
        pass
    try:
        return importlib.import_module("cuda.cudart")  # cuda-python < 12.6
    except ImportError as exc:
        raise BackendUnavailable(f"cuda-python is not installed ({exc}); "
                                 "pip install cuda-python") from exc


def cuda_call(result, what: str = "CUDA call"):
    """Unwrap a cuda-python result ``(cudaError_t, *values)``: raise CudaError with CUDA's own
    name and description on failure, else return the value (or tuple of values, or None)."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if int(err) != 0:
        rt = cuda_runtime()
        name = _err_text(rt.cudaGetErrorName(err)) or str(err)
        desc = _err_text(rt.cudaGetErrorString(err))
        raise CudaError(f"{what} failed: {name}: {desc}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _err_text(result) -> str:
    value = result[1] if isinstance(result, tuple) else result
    return value.decode() if isinstance(value, bytes) else str(value or "")


def gpu_identity(device: int = 0) -> Tuple[str, str]:
    """(GPU name, compute capability "major.minor") of a CUDA device, from cuda-python.
    BackendUnavailable when there is no usable device (CUDA's reason included)."""
    rt = cuda_runtime()
    try:
        count = cuda_call(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except CudaError as exc:
        raise BackendUnavailable(f"no usable CUDA device: {exc}") from exc
    if not count:
        raise BackendUnavailable("no CUDA device found")
    if device >= count:
        raise BackendUnavailable(f"CUDA device {device} requested, {count} present")
    props = cuda_call(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.strip("\x00 ").strip(), f"{props.major}.{props.minor}"


def tensorrt_installed() -> bool:
    """Whether the tensorrt module itself is installed. tensorrt-stubs (type checking) leaves a
    ``tensorrt`` folder of .pyi files that imports as an empty namespace package: not TensorRT."""
    spec = importlib.util.find_spec("tensorrt")
    return spec is not None and spec.origin is not None


def tensorrt_usable() -> Tuple[bool, str]:
    """(usable, reason) without importing tensorrt: TensorRT and cuda-python installed and a CUDA
    device answering."""
    if not tensorrt_installed():
        return False, "tensorrt is not installed"
    try:
        if importlib.util.find_spec("cuda.bindings") is None and importlib.util.find_spec("cuda.cudart") is None:
            return False, "cuda-python is not installed"
    except (ImportError, ValueError):
        return False, "cuda-python is not installed"
    try:
        name, cc = gpu_identity()
    except SegmenterError as exc:
        return False, str(exc)
    return True, f"tensorrt, cuda-python and GPU {name} (sm {cc}) present"


def require_tensorrt() -> None:
    """BackendUnavailable unless the tensorrt module imports. Callers then ``import tensorrt``
    themselves, inside the function: mypy types that name from tensorrt-stubs, so every TensorRT
    call is checked against the published API although TensorRT never runs here."""
    if not tensorrt_installed():
        raise BackendUnavailable("tensorrt is not installed: no module named 'tensorrt'")
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(f"tensorrt is not installed: {exc}") from exc


def trt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0
