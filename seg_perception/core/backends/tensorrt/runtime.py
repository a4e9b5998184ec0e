"""Running a TensorRT engine (``TensorRTBackend``): device and pinned host buffers allocated once
through cuda-python's runtime API for the largest batch, ``execute_async_v3`` on one non-blocking
stream, only the uint8 class and confidence maps copied back, optional CUDA-graph replay (copy
in, execute, copy out as one launch).

NOT RUN here (no TensorRT, no GPU): type-checked against tensorrt-stubs and cuda-python's
bindings; the I/O contract check is tested.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ... import engine_cache as ec
from ...model_info import ModelInfo
from ..base import Backend, BackendUnavailable, SegmenterError
from .builder import DEFAULT_WORKSPACE_MB, PRECISIONS, ProgressFn, _make_logger, ensure_engine
from .loader import CudaError, CudaRuntime, cuda_call, cuda_runtime, gpu_identity, require_tensorrt, tensorrt_usable

if TYPE_CHECKING:  # tensorrt-stubs: the TensorRT 10 API as published, for mypy only
    import tensorrt as trt

log = logging.getLogger(__name__)

# TensorRT DataType names -> the contract's dtypes
_UINT8_NAMES = {"UINT8", "DataType.UINT8"}


# TensorRT DataType names -> the contract's dtypes
_UINT8_NAMES = {"UINT8", "DataType.UINT8"}


def check_io(tensors: Sequence[Tuple[str, bool, str, Sequence[int]]], info: Optional[ModelInfo] = None
             ) -> Tuple[str, str, int, int, Optional[str]]:
    """Check an engine's I/O tensors against the graph contract and return (input name, output
    name, height, width, confidence output name or None). ``tensors``: (name, is_input, dtype
    name, shape with -1 for dynamic).

    Contract: one input uint8 [N, H, W, 3], one output uint8 [N, H, W] (the class map), and
    optionally a second uint8 [N, H, W] output, the confidence, named as the metadata says.
    N dynamic or fixed."""
    inputs = [t for t in tensors if t[1]]
    outputs = [t for t in tensors if not t[1]]
    if len(inputs) != 1 or len(outputs) not in (1, 2):
        raise SegmenterError(f"engine has {len(inputs)} inputs and {len(outputs)} outputs; a "
                             "seg_perception model has one input (image) and one output (class "
                             "map), plus optionally the confidence")
    (in_name, _, in_dtype, in_shape) = inputs[0]
    for what, (_, _, dtype, _) in [("input", inputs[0])] + [("output", o) for o in outputs]:
        if str(dtype).upper() not in _UINT8_NAMES and not str(dtype).upper().endswith("UINT8"):
            raise SegmenterError(f"engine {what} is {dtype}, the contract needs uint8")
    in_shape = list(in_shape)
    if len(in_shape) != 4 or in_shape[3] != 3 or min(in_shape[1:3]) <= 0:
        raise SegmenterError(f"engine input shape {in_shape} is not [N, H, W, 3] with fixed H, W")
    for name, _, _, out_shape in outputs:
        if len(out_shape) != 3 or list(out_shape[1:]) != in_shape[1:3]:
            raise SegmenterError(f"engine output {name!r} shape {list(out_shape)} is not [N, H, W] "
                                 f"for input {in_shape}")
    height, width = int(in_shape[1]), int(in_shape[2])
    names = [o[0] for o in outputs]
    if info is not None:
        out_name = info.output_name
        conf_name = info.confidence_name or None
        if (height, width) != (info.input_height, info.input_width):
            raise SegmenterError(f"engine input is {width}x{height}, its metadata says "
                                 f"{info.input_width}x{info.input_height}")
        expected = [out_name] + ([conf_name] if conf_name and len(names) == 2 else [])
        if in_name != info.input_name or sorted(names) != sorted(expected):
            raise SegmenterError(f"engine tensors {in_name!r}/{names} differ from metadata "
                                 f"{info.input_name!r}/{expected}")
        return in_name, out_name, height, width, conf_name if len(names) == 2 else None
    if len(names) == 2:
        raise SegmenterError("engine has two outputs and no metadata to tell the class map from "
                             "the confidence")
    return in_name, names[0], height, width, None



# --------------------------------------------------------------------------------------------
# Running


class _Buffer:
    """A device allocation plus a pinned host twin with a numpy view on it."""

    def __init__(self, rt: CudaRuntime, nbytes: int) -> None:
        self.rt = rt
        self.nbytes = nbytes
        self.device = 0
        self.host = 0
        self.array: Optional[np.ndarray] = None
        try:
            self.device = int(cuda_call(rt.cudaMalloc(nbytes), "cudaMalloc"))
            self.host = int(cuda_call(rt.cudaMallocHost(nbytes), "cudaMallocHost"))
        except CudaError:
            self.free()
            raise
        self.array = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(self.host))

    def view(self, count: int, shape: Tuple[int, ...]) -> np.ndarray:
        """The first ``count`` bytes of the pinned host buffer as an array of ``shape``."""
        if self.array is None:
            raise SegmenterError("TensorRT buffer used after it was freed")
        return self.array[:count].reshape(shape)

    def free(self) -> None:
        if self.device:
            self.rt.cudaFree(self.device)
            self.device = 0
        if self.host:
            self.array = None
            self.rt.cudaFreeHost(self.host)
            self.host = 0


@dataclasses.dataclass
class _Loaded:
    """What a loaded engine holds, together: set at once by load, dropped at once by release,
    so no method meets half of it. Release order: graphs, buffers, stream, context, engine,
    runtime, logger (each depends on the next)."""
    rt: CudaRuntime                     # cuda-python's runtime module
    logger: "trt.ILogger"
    runtime: "trt.Runtime"
    engine: "trt.ICudaEngine"
    context: "trt.IExecutionContext"
    stream: Any                         # cudaStream_t
    inp: _Buffer
    out: _Buffer
    conf: Optional[_Buffer]
    in_name: str
    out_name: str
    conf_name: Optional[str]
    height: int
    width: int
    graphs: Dict[int, Tuple[Any, Any]] = dataclasses.field(default_factory=dict)
    batch: int = 0


class TensorRTBackend(Backend):
    """Runs a seg_perception model as a TensorRT engine.

    model_path: an .onnx file (engine built or taken from the cache) or an .engine/.plan file
    with its .json sidecar (checked against this TensorRT and GPU, never rebuilt).
    Options: cache_dir ("" = user cache), build_if_missing, precision (fp32|fp16|int8),
    progress (callable taking a str, or None), use_cuda_graph, max_batch, workspace_mb,
    num_threads (ignored: TensorRT runs on the GPU)."""

    name = "tensorrt"

    @classmethod
    def options_for(cls, model, runs: int = 1, progress=None):
        """The engine cache and build settings, and an optimisation profile over batch 1..the
        frames one run may take (model.max_batch)."""
        return {"cache_dir": model.engine_cache_dir, "build_if_missing": model.engine_build_if_missing,
                "precision": model.engine_precision, "progress": progress, "max_batch": model.max_batch}

    def __init__(self, model_path: str, cache_dir: str = "", build_if_missing: bool = True,
                 precision: str = "fp32", progress: ProgressFn = None, use_cuda_graph: bool = False,
                 num_threads: int = 0, max_batch: int = 1, workspace_mb: int = DEFAULT_WORKSPACE_MB,
                 **options: Any) -> None:
        super().__init__(model_path, **options)
        if precision not in PRECISIONS:
            raise SegmenterError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        self.cache_dir = cache_dir or ""
        self.build_if_missing = bool(build_if_missing)
        self.precision = precision
        self.progress = progress
        self.use_cuda_graph = bool(use_cuda_graph)
        self.max_batch = max(1, int(max_batch))
        self.workspace_mb = int(workspace_mb)
        self.engine_path = ""
        self._loaded: Optional[_Loaded] = None
        self._trt_version = ""

    # -- load ---------------------------------------------------------------------------------

    def load(self) -> None:
        usable, why = tensorrt_usable()
        if not usable:
            raise BackendUnavailable(f"TensorRT backend unavailable: {why}")
        require_tensorrt()
        import tensorrt as trt

        self._trt_version = trt.__version__
        ext = os.path.splitext(self.model_path)[1].lower()
        if ext == ".onnx":
            status = ensure_engine(self.model_path, self.precision, self.cache_dir,
                                   self.build_if_missing, self.progress, 1, 1, self.max_batch,
                                   self.workspace_mb)
        else:
            gpu_name, cc = gpu_identity()
            status = ec.check_entry(self.model_path, runtime=(trt.__version__, gpu_name, cc))
            if not status.valid:
                raise ec.EngineCacheError(
                    f"refusing to load {self.model_path}: {status.explain()}. Rebuild it from "
                    "its ONNX file with seg-perception build-engine (an engine runs only on the "
                    "TensorRT version and GPU model that built it)")
        if status.sidecar is None:
            raise SegmenterError(f"{self.model_path}: engine without its .json sidecar")
        self.engine_path = status.engine_path
        self.info = status.info
        key = ec.EngineKey.from_dict(status.sidecar["key"])
        self.max_batch = min(self.max_batch, key.inputs[0].max[0]) if ext == ".onnx" else key.inputs[0].max[0]
        self._load_engine()

    def _load_engine(self) -> None:
        import tensorrt as trt

        rt = cuda_runtime()
        # The logger must outlive the runtime and engine that report through it.
        logger = _make_logger()
        runtime = trt.Runtime(logger)
        with open(self.engine_path, "rb") as f:
            engine = runtime.deserialize_cuda_engine(f.read())
        if engine is None:
            raise SegmenterError(f"TensorRT could not deserialize {self.engine_path} (see log)")
        tensors: List[Tuple[str, bool, str, Tuple[int, ...]]] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            tensors.append((name, is_input, str(engine.get_tensor_dtype(name)).split(".")[-1],
                            tuple(engine.get_tensor_shape(name)[:])))
        in_name, out_name, h, w, conf_name = check_io(tensors, self.info)
        self.has_confidence = conf_name is not None
        profile_max = engine.get_tensor_profile_shape(in_name, 0)[2]
        self.max_batch = min(self.max_batch, int(profile_max[0]))
        context = engine.create_execution_context()
        if context is None:
            raise SegmenterError("TensorRT could not create an execution context (GPU memory?)")
        stream = cuda_call(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking),
                           "cudaStreamCreateWithFlags")
        out_bytes = self.max_batch * h * w
        inp = _Buffer(rt, out_bytes * 3)
        out = _Buffer(rt, out_bytes)
        conf = _Buffer(rt, out_bytes) if conf_name else None
        # Addresses never change: set once, reused by every call and by captured graphs.
        context.set_tensor_address(in_name, inp.device)
        context.set_tensor_address(out_name, out.device)
        if conf is not None and conf_name:
            context.set_tensor_address(conf_name, conf.device)
        self._loaded = _Loaded(rt, logger, runtime, engine, context, stream, inp, out, conf,
                               in_name, out_name, conf_name, h, w)
        gpu_name, cc = gpu_identity()
        self.device = f"cuda ({gpu_name}, sm {cc})"
        self._set_batch(self._loaded, 1)

    # -- infer --------------------------------------------------------------------------------

    def _set_batch(self, e: _Loaded, n: int) -> None:
        if n != e.batch:
            if not e.context.set_input_shape(e.in_name, (n, e.height, e.width, 3)):
                raise SegmenterError(f"engine rejects batch {n} (profile 1..{self.max_batch})")
            e.batch = n

    def _enqueue(self, e: _Loaded, n: int) -> None:
        rt, pixels = e.rt, n * e.height * e.width
        cuda_call(rt.cudaMemcpyAsync(e.inp.device, e.inp.host, pixels * 3,
                                     rt.cudaMemcpyKind.cudaMemcpyHostToDevice, e.stream),
                  "cudaMemcpyAsync (input)")
        if not e.context.execute_async_v3(int(e.stream)):
            raise SegmenterError("TensorRT execute_async_v3 failed (see log)")
        cuda_call(rt.cudaMemcpyAsync(e.out.host, e.out.device, pixels,
                                     rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, e.stream),
                  "cudaMemcpyAsync (class map)")
        if e.conf is not None:
            cuda_call(rt.cudaMemcpyAsync(e.conf.host, e.conf.device, pixels,
                                         rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, e.stream),
                      "cudaMemcpyAsync (confidence)")

    def _graph_for(self, e: _Loaded, n: int) -> Any:
        """A CUDA graph of copy-in, execute, copy-out for batch n, captured on first use. None
        when capture fails (then the plain path runs; logged once)."""
        if n in e.graphs:
            return e.graphs[n][1]
        rt = e.rt
        # One ordinary run first: TensorRT finishes shape-dependent setup outside the capture.
        self._enqueue(e, n)
        cuda_call(rt.cudaStreamSynchronize(e.stream), "cudaStreamSynchronize")
        try:
            cuda_call(rt.cudaStreamBeginCapture(
                e.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
                "cudaStreamBeginCapture")
            try:
                self._enqueue(e, n)
            finally:
                graph = cuda_call(rt.cudaStreamEndCapture(e.stream), "cudaStreamEndCapture")
            graph_exec = cuda_call(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except SegmenterError as exc:
            log.warning("CUDA graph capture failed for batch %d, running without: %s", n, exc)
            e.graphs[n] = (None, None)
            return None
        e.graphs[n] = (graph, graph_exec)
        return graph_exec

    def _infer(self, images: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        e = self._loaded
        if e is None:
            raise SegmenterError("TensorRT backend is not loaded (or was released)")
        h, w = e.height, e.width
        out = np.empty(images.shape[:3], np.uint8)
        conf = np.empty(images.shape[:3], np.uint8) if e.conf is not None else None
        for start in range(0, len(images), self.max_batch):
            chunk = images[start:start + self.max_batch]
            n = len(chunk)
            self._set_batch(e, n)
            e.inp.view(n * h * w * 3, chunk.shape)[...] = chunk
            graph_exec = self._graph_for(e, n) if self.use_cuda_graph else None
            if graph_exec is not None:
                cuda_call(e.rt.cudaGraphLaunch(graph_exec, e.stream), "cudaGraphLaunch")
            else:
                self._enqueue(e, n)
            cuda_call(e.rt.cudaStreamSynchronize(e.stream), "cudaStreamSynchronize")
            # The pinned output buffers are reused by the next call: hand out copies.
            out[start:start + n] = e.out.view(n * h * w, (n, h, w))
            if conf is not None and e.conf is not None:
                conf[start:start + n] = e.conf.view(n * h * w, (n, h, w))
        return out, conf

    # -- release ------------------------------------------------------------------------------

    def _release(self) -> None:
        e, self._loaded = self._loaded, None
        if e is None:
            return
        rt = e.rt
        for graph, graph_exec in e.graphs.values():
            if graph_exec is not None:
                rt.cudaGraphExecDestroy(graph_exec)
            if graph is not None:
                rt.cudaGraphDestroy(graph)
        rt.cudaStreamSynchronize(e.stream)
        for buf in (e.inp, e.out, e.conf):
            if buf is not None:
                buf.free()
        rt.cudaStreamDestroy(e.stream)
        # context before engine before runtime: each depends on the next
        del e.context
        del e.engine
        del e.runtime

    def describe(self) -> str:
        graph = ", CUDA graph" if self.use_cuda_graph else ""
        return (f"tensorrt {self._trt_version or '?'} {self.precision} on {self.device}{graph} "
                f"(engine {os.path.basename(self.engine_path) or '?'})")
