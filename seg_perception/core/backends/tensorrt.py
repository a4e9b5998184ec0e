"""TensorRT backend and engine builder (TensorRT 10.x and 11.x Python API, cuda-python).

TensorRT and cuda-python are imported lazily, inside the functions that need them: importing this
module costs nothing where they are absent, and ``tensorrt_usable()`` answers without importing
TensorRT.

Building (``ensure_engine`` / ``build_serialized_engine``):
  * strongly typed networks: precision comes from the ONNX graph (FP16 export, INT8 Q/DQ export);
    no FP16/INT8 builder flags and no implicit INT8 calibrator (deprecated in 10.1, removed in 11);
  * every ONNX parser error is reported (node, operator, description), not just the first;
  * workspace memory-pool limit; an optimisation profile over the batch sizes;
  * a timing cache per TensorRT version and GPU, loaded before and saved after every build;
  * progress (phases and steps) from an IProgressMonitor, passed to a callback and the log;
  * engines go to the engine cache (core/engine_cache.py), keyed by what makes them valid.

Running (``TensorRTBackend``): device and pinned host buffers allocated once through cuda-python's
runtime API for the largest batch, ``execute_async_v3`` on one non-blocking stream, only the uint8
class map copied back, optional CUDA-graph replay (copy in, execute, copy out as one launch).

NOT RUN in this project's development environment: no TensorRT could be installed there and no
GPU was available. Everything in this file that touches ``tensorrt`` or a CUDA device was written
against the documented API and has never executed; the pure helpers (I/O contract check, parser
error formatting, progress reporting, cuda error unwrapping) and the engine cache are tested.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import engine_cache as ec
from ..model_info import ModelInfo
from ..segmenter import Backend, BackendUnavailable, SegmenterError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_WORKSPACE_MB = 1024
ProgressFn = Optional[Callable[[str], None]]


class EngineBuildError(SegmenterError):
    """TensorRT could not parse the ONNX file or build an engine from it."""


class CudaError(SegmenterError):
    """A CUDA runtime call failed."""


# --------------------------------------------------------------------------------------------
# Availability and CUDA runtime access (cuda-python)


def cuda_runtime():
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (cuda-python >= 12.6, the only
    name in 13.x), else the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime
        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart
        return cudart
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


def tensorrt_usable() -> Tuple[bool, str]:
    """(usable, reason) without importing tensorrt: TensorRT and cuda-python installed and a CUDA
    device answering."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "tensorrt is not installed"
    try:
        if importlib.util.find_spec("cuda") is None:
            return False, "cuda-python is not installed"
    except (ImportError, ValueError):
        return False, "cuda-python is not installed"
    try:
        name, cc = gpu_identity()
    except SegmenterError as exc:
        return False, str(exc)
    return True, f"tensorrt, cuda-python and GPU {name} (sm {cc}) present"


def _trt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"tensorrt is not installed: {exc}") from exc
    return trt


def trt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


# --------------------------------------------------------------------------------------------
# Pure helpers (no TensorRT): the I/O contract, parser errors, progress.

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


def format_parser_errors(errors: Sequence[Mapping[str, Any]], onnx_path: str = "") -> str:
    """All ONNX parser errors as one message: each with its node index, name and operator."""
    lines = [f"TensorRT's ONNX parser reported {len(errors)} error(s)"
             + (f" for {onnx_path}" if onnx_path else "") + ":"]
    for i, e in enumerate(errors, 1):
        where = []
        if e.get("node", -1) is not None and int(e.get("node", -1)) >= 0:
            where.append(f"node {e['node']}")
        if e.get("node_name"):
            where.append(repr(e["node_name"]))
        if e.get("node_operator"):
            where.append(f"({e['node_operator']})")
        if e.get("local_functions"):
            where.append("in " + " > ".join(e["local_functions"]))
        loc = " ".join(where) or "graph"
        lines.append(f"  {i}. [{e.get('code', '?')}] {loc}: {e.get('desc', '').strip()}")
    return "\n".join(lines)


def _parser_error_fields(err) -> Dict[str, Any]:
    """The fields of a tensorrt.ParserError (methods in the Python API), tolerant of versions
    that lack the newer ones."""
    def get(name, default=None):
        attr = getattr(err, name, None)
        if attr is None:
            return default
        try:
            return attr() if callable(attr) else attr
        except Exception:  # a field the binding cannot produce for this error
            return default

    code = get("code")
    return {"code": getattr(code, "name", str(code)), "desc": get("desc", ""),
            "node": get("node", -1), "node_name": get("node_name", ""),
            "node_operator": get("node_operator", ""),
            "local_functions": list(get("local_function_stack", []) or []),
            "file": get("file", ""), "line": get("line", 0)}


class BuildProgress:
    """Turns the builder's phase/step callbacks into readable lines, at most one step line per
    phase every ``interval_s`` seconds (a build reports thousands of steps). Thread-safe: TensorRT
    may call it from several threads. ``cancel()`` makes the next step_complete ask TensorRT to
    stop the build."""

    def __init__(self, emit: Callable[[str], None], interval_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.emit = emit
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._phases: Dict[str, Tuple[Optional[str], int, float]] = {}
        self._started = clock()
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def _path(self, name: str) -> str:
        parts, seen = [name], {name}
        parent = self._phases.get(name, (None, 0, 0.0))[0]
        while parent and parent not in seen:
            parts.append(parent)
            seen.add(parent)
            parent = self._phases.get(parent, (None, 0, 0.0))[0]
        return " > ".join(reversed(parts))

    def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
        with self._lock:
            self._phases[phase_name] = (parent_phase, int(num_steps), 0.0)
            line = f"build {self.clock() - self._started:6.1f}s: {self._path(phase_name)} ({num_steps} steps)"
        self.emit(line)

    def step_complete(self, phase_name: str, step: int) -> bool:
        with self._lock:
            parent, steps, last = self._phases.get(phase_name, (None, 0, 0.0))
            now = self.clock()
            line = None
            if now - last >= self.interval_s:
                self._phases[phase_name] = (parent, steps, now)
                line = (f"build {now - self._started:6.1f}s: {self._path(phase_name)} "
                        f"{step + 1}/{steps}")
        if line:
            self.emit(line)
        return not self._cancelled

    def phase_finish(self, phase_name: str) -> None:
        with self._lock:
            line = f"build {self.clock() - self._started:6.1f}s: {self._path(phase_name)} done"
            self._phases.pop(phase_name, None)
        self.emit(line)


def _emitter(progress: ProgressFn) -> Callable[[str], None]:
    def emit(line: str) -> None:
        log.info("%s", line)
        if progress is not None:
            try:
                progress(line)
            except Exception:  # a failing progress sink must not break the build
                log.exception("progress callback failed")
    return emit


# --------------------------------------------------------------------------------------------
# Which ONNX file gives the requested precision (strongly typed: precision is in the graph)


def onnx_precision(onnx_path: str) -> str:
    """Precision of an ONNX graph: from the graph when onnx is installed, else from the
    ``source.precision`` the exporter writes into the metadata (onnx is not in the runtime set)."""
    try:
        from ..quantize import graph_precision
        return graph_precision(onnx_path)
    except ImportError:
        from ..model_info import read_onnx_metadata
        meta = read_onnx_metadata(onnx_path)
        return ModelInfo.from_json(meta).source.get("precision", "fp32") if meta else "fp32"


def onnx_for_precision(onnx_path: str, precision: str, work_dir: str) -> str:
    """The ONNX file to build a ``precision`` engine from: the file itself when its graph has
    that precision; else its ``_fp16``/``_int8`` sibling written by `seg-perception export`;
    else, for FP16 only, a conversion written to ``work_dir``. INT8 needs calibration images,
    so it is never made implicitly."""
    if precision not in PRECISIONS:
        raise SegmenterError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    have = onnx_precision(onnx_path)
    if have == precision:
        return onnx_path
    if have != "fp32":
        raise SegmenterError(f"{onnx_path} is a {have} graph; a {precision} engine needs the "
                             f"{precision} export (strongly typed build: precision comes from the graph)")
    from ..quantize import variant_path

    sibling = variant_path(onnx_path, precision)
    if os.path.isfile(sibling) and onnx_precision(sibling) == precision:
        log.info("using %s for the %s engine", sibling, precision)
        return sibling
    if precision == "int8":
        raise SegmenterError(
            f"an INT8 engine needs an INT8 Q/DQ ONNX calibrated on real images; none next to "
            f"{onnx_path}. Make it with: seg-perception export CHECKPOINT --out {onnx_path} "
            f"--int8 --calib-dir IMAGES (writes {os.path.basename(sibling)})")
    try:
        from ..quantize import convert_fp16
    except ImportError as exc:
        raise SegmenterError(f"FP16 engine: {sibling} is missing and converting needs the onnx "
                             f"package ({exc}); run seg-perception export --fp16") from exc
    out = os.path.join(work_dir, f"{os.path.splitext(os.path.basename(onnx_path))[0]}."
                                 f"{ec.file_sha256(onnx_path)[:12]}_fp16.onnx")
    if not os.path.isfile(out):
        log.info("converting %s to FP16 for the engine build: %s", onnx_path, out)
        convert_fp16(onnx_path, out)
    return out


# --------------------------------------------------------------------------------------------
# Building (TensorRT)


def _make_logger(trt):
    """A trt.ILogger that forwards TensorRT's messages to Python logging."""
    levels = {trt.ILogger.Severity.INTERNAL_ERROR: logging.CRITICAL,
              trt.ILogger.Severity.ERROR: logging.ERROR,
              trt.ILogger.Severity.WARNING: logging.WARNING,
              trt.ILogger.Severity.INFO: logging.DEBUG,  # TensorRT's INFO is chatty
              trt.ILogger.Severity.VERBOSE: logging.DEBUG}

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg) -> None:
            log.log(levels.get(severity, logging.INFO), "TensorRT: %s", msg)

    return _Logger()


def _make_progress_monitor(trt, progress: BuildProgress):
    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name):
            progress.phase_finish(phase_name)

    return _Monitor()


def build_serialized_engine(onnx_path: str, profile: ec.InputProfile,
                            workspace_mb: int = DEFAULT_WORKSPACE_MB,
                            timing_cache_file: str = "", progress: ProgressFn = None) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network and build a serialized engine.

    Raises EngineBuildError listing every parser error, or saying the build failed."""
    trt = _trt()
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    # TensorRT 10: strong typing is opt-in; 11: always on and the flag is deprecated (ignored).
    if trt_major(trt.__version__) < 11 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(os.path.abspath(onnx_path))
    if not ok or parser.num_errors:
        errors = [_parser_error_fields(parser.get_error(i)) for i in range(parser.num_errors)]
        if not errors:
            errors = [{"code": "?", "desc": "parse_from_file returned False without errors "
                                            "(unreadable or not an ONNX file?)"}]
        raise EngineBuildError(format_parser_errors(errors, onnx_path))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)

    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(profile.name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(opt_profile)

    timing_cache = None
    if timing_cache_file:
        blob = b""
        if os.path.isfile(timing_cache_file):
            with open(timing_cache_file, "rb") as f:
                blob = f.read()
        timing_cache = config.create_timing_cache(blob)
        if timing_cache is None or not config.set_timing_cache(timing_cache, ignore_mismatch=False):
            log.warning("timing cache %s could not be used (other TensorRT version or GPU?); "
                        "starting a new one", timing_cache_file)
            timing_cache = config.create_timing_cache(b"")
            config.set_timing_cache(timing_cache, ignore_mismatch=False)

    monitor = None
    tracker = BuildProgress(_emitter(progress))
    if hasattr(config, "progress_monitor"):  # TensorRT >= 10.0
        monitor = _make_progress_monitor(trt, tracker)
        config.progress_monitor = monitor
    t0 = time.monotonic()
    _emitter(progress)(f"building TensorRT {trt.__version__} engine from {os.path.basename(onnx_path)} "
                       f"(batch {profile.min[0]}..{profile.max[0]}, workspace {workspace_mb} MiB)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build an engine from {onnx_path}; see the "
                               "TensorRT errors in the log above")
    _emitter(progress)(f"engine built in {time.monotonic() - t0:.1f} s")
    if timing_cache_file and timing_cache is not None:
        data = config.get_timing_cache().serialize()
        ec._atomic_write(timing_cache_file, bytes(data))
    del monitor
    return bytes(serialized)


def ensure_engine(onnx_path: str, precision: str = "fp32", cache_dir: str = "",
                  build_if_missing: bool = True, progress: ProgressFn = None,
                  min_batch: int = 1, opt_batch: int = 1, max_batch: int = 1,
                  workspace_mb: int = DEFAULT_WORKSPACE_MB, force: bool = False) -> ec.EntryStatus:
    """The cached engine for ``onnx_path`` at ``precision`` on this GPU and TensorRT: loaded from
    the cache when valid, else built (when allowed) and stored with its sidecar. Stale and corrupt
    entries are rebuilt, never loaded; with building off they raise EngineCacheError."""
    from ..model_info import read_onnx_metadata

    trt = _trt()
    gpu_name, cc = gpu_identity()
    cache = ec.resolve_cache_dir(cache_dir)
    os.makedirs(cache, exist_ok=True)
    source = onnx_for_precision(onnx_path, precision, cache)
    meta = read_onnx_metadata(source)
    if meta is None:
        raise SegmenterError(f"{source} carries no seg_perception metadata")
    info = ModelInfo.from_json(meta)
    profile = ec.batch_profile(info.input_name, info.input_height, info.input_width,
                               min_batch, opt_batch, max_batch)
    key = ec.make_key(source, trt.__version__, gpu_name, cc, precision, [profile])
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    status = ec.lookup(cache, stem, key)
    if status.valid and not force:
        return status
    how = (f"seg-perception build-engine {onnx_path} --precision {precision} "
           f"--max-batch {max_batch}" + (f" --cache-dir {cache_dir}" if cache_dir else ""))
    if not force:
        ec.decide(status, build_if_missing, how)
        if status.state != "missing":
            _emitter(progress)(f"rebuilding engine ({status.explain()})")
    with ec.build_lock(status.engine_path):
        again = ec.lookup(cache, stem, key)  # another process may have built it meanwhile
        if again.valid and not force:
            return again
        ec.remove_entry(status.engine_path)
        engine = build_serialized_engine(
            source, profile, workspace_mb,
            ec.timing_cache_path(cache, trt.__version__, gpu_name, cc), progress)
        ec.write_entry(status.engine_path, engine, key, info,
                       build={"onnx": os.path.abspath(source), "workspace_mb": workspace_mb,
                              "strongly_typed": True})
    final = ec.lookup(cache, stem, key)
    if not final.valid:
        raise EngineBuildError(f"engine written but not valid: {final.explain()}")
    return final


# --------------------------------------------------------------------------------------------
# Running


class _Buffer:
    """A device allocation plus a pinned host twin with a numpy view on it."""

    def __init__(self, rt, nbytes: int) -> None:
        self.rt = rt
        self.nbytes = nbytes
        self.device = 0
        self.host = 0
        try:
            self.device = int(cuda_call(rt.cudaMalloc(nbytes), "cudaMalloc"))
            self.host = int(cuda_call(rt.cudaMallocHost(nbytes), "cudaMallocHost"))
        except CudaError:
            self.free()
            raise
        self.array = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(self.host))

    def free(self) -> None:
        if self.device:
            self.rt.cudaFree(self.device)
            self.device = 0
        if self.host:
            self.array = None
            self.rt.cudaFreeHost(self.host)
            self.host = 0


class TensorRTBackend(Backend):
    """Runs a seg_perception model as a TensorRT engine.

    model_path: an .onnx file (engine built or taken from the cache) or an .engine/.plan file
    with its .json sidecar (checked against this TensorRT and GPU, never rebuilt).
    Options: cache_dir ("" = user cache), build_if_missing, precision (fp32|fp16|int8),
    progress (callable taking a str, or None), use_cuda_graph, max_batch, workspace_mb,
    num_threads (ignored: TensorRT runs on the GPU)."""

    name = "tensorrt"

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
        self._rt = None
        self._logger = self._runtime = self._engine = self._context = self._stream = None
        self._in = self._out = self._conf = None
        self._conf_name: Optional[str] = None
        self._graphs: Dict[int, Tuple[Any, Any]] = {}
        self._batch = 0
        self._trt_version = ""

    # -- load ---------------------------------------------------------------------------------

    def load(self) -> None:
        usable, why = tensorrt_usable()
        if not usable:
            raise BackendUnavailable(f"TensorRT backend unavailable: {why}")
        trt = _trt()
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
        self.engine_path = status.engine_path
        self.info = status.info
        key = ec.EngineKey.from_dict(status.sidecar["key"])
        self.max_batch = min(self.max_batch, key.inputs[0].max[0]) if ext == ".onnx" else key.inputs[0].max[0]
        self._load_engine(trt)

    def _load_engine(self, trt) -> None:
        rt = self._rt = cuda_runtime()
        # The logger must outlive the runtime and engine that report through it.
        self._logger = _make_logger(trt)
        runtime = trt.Runtime(self._logger)
        with open(self.engine_path, "rb") as f:
            engine = runtime.deserialize_cuda_engine(f.read())
        if engine is None:
            raise SegmenterError(f"TensorRT could not deserialize {self.engine_path} (see log)")
        self._runtime, self._engine = runtime, engine
        tensors = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            tensors.append((name, is_input, str(engine.get_tensor_dtype(name)).split(".")[-1],
                            tuple(engine.get_tensor_shape(name))))
        self._in_name, self._out_name, self._h, self._w, self._conf_name = check_io(tensors, self.info)
        self.has_confidence = self._conf_name is not None
        profile_max = engine.get_tensor_profile_shape(self._in_name, 0)[2]
        self.max_batch = min(self.max_batch, int(profile_max[0]))
        self._context = engine.create_execution_context()
        if self._context is None:
            raise SegmenterError("TensorRT could not create an execution context (GPU memory?)")
        self._stream = cuda_call(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking),
                                 "cudaStreamCreateWithFlags")
        in_bytes = self.max_batch * self._h * self._w * 3
        out_bytes = self.max_batch * self._h * self._w
        self._in = _Buffer(rt, in_bytes)
        self._out = _Buffer(rt, out_bytes)
        self._conf = _Buffer(rt, out_bytes) if self._conf_name else None
        # Addresses never change: set once, reused by every call and by captured graphs.
        self._context.set_tensor_address(self._in_name, self._in.device)
        self._context.set_tensor_address(self._out_name, self._out.device)
        if self._conf is not None:
            self._context.set_tensor_address(self._conf_name, self._conf.device)
        gpu_name, cc = gpu_identity()
        self.device = f"cuda ({gpu_name}, sm {cc})"
        self._set_batch(1)

    # -- infer --------------------------------------------------------------------------------

    def _set_batch(self, n: int) -> None:
        if n != self._batch:
            if not self._context.set_input_shape(self._in_name, (n, self._h, self._w, 3)):
                raise SegmenterError(f"engine rejects batch {n} (profile 1..{self.max_batch})")
            self._batch = n

    def _enqueue(self, n: int) -> None:
        rt = self._rt
        cuda_call(rt.cudaMemcpyAsync(self._in.device, self._in.host, n * self._h * self._w * 3,
                                     rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream),
                  "cudaMemcpyAsync (input)")
        if not self._context.execute_async_v3(int(self._stream)):
            raise SegmenterError("TensorRT execute_async_v3 failed (see log)")
        cuda_call(rt.cudaMemcpyAsync(self._out.host, self._out.device, n * self._h * self._w,
                                     rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream),
                  "cudaMemcpyAsync (class map)")
        if self._conf is not None:
            cuda_call(rt.cudaMemcpyAsync(self._conf.host, self._conf.device, n * self._h * self._w,
                                         rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream),
                      "cudaMemcpyAsync (confidence)")

    def _graph_for(self, n: int):
        """A CUDA graph of copy-in, execute, copy-out for batch n, captured on first use. None
        when capture fails (then the plain path runs; logged once)."""
        if n in self._graphs:
            return self._graphs[n][1]
        rt = self._rt
        # One ordinary run first: TensorRT finishes shape-dependent setup outside the capture.
        self._enqueue(n)
        cuda_call(rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        try:
            cuda_call(rt.cudaStreamBeginCapture(
                self._stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
                "cudaStreamBeginCapture")
            try:
                self._enqueue(n)
            finally:
                graph = cuda_call(rt.cudaStreamEndCapture(self._stream), "cudaStreamEndCapture")
            graph_exec = cuda_call(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except SegmenterError as exc:
            log.warning("CUDA graph capture failed for batch %d, running without: %s", n, exc)
            self._graphs[n] = (None, None)
            return None
        self._graphs[n] = (graph, graph_exec)
        return graph_exec

    def _infer(self, images: np.ndarray):
        out = np.empty(images.shape[:3], np.uint8)
        conf = np.empty(images.shape[:3], np.uint8) if self._conf is not None else None
        for start in range(0, len(images), self.max_batch):
            chunk = images[start:start + self.max_batch]
            n = len(chunk)
            self._set_batch(n)
            frame_in = self._h * self._w * 3
            self._in.array[:n * frame_in].reshape(chunk.shape)[...] = chunk
            graph_exec = self._graph_for(n) if self.use_cuda_graph else None
            if graph_exec is not None:
                cuda_call(self._rt.cudaGraphLaunch(graph_exec, self._stream), "cudaGraphLaunch")
            else:
                self._enqueue(n)
            cuda_call(self._rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
            # The pinned output buffer is reused by the next call: hand out a copy.
            out[start:start + n] = self._out.array[:n * self._h * self._w].reshape(n, self._h, self._w)
            if conf is not None:
                conf[start:start + n] = self._conf.array[:n * self._h * self._w].reshape(
                    n, self._h, self._w)
        return out, conf

    # -- release ------------------------------------------------------------------------------

    def _release(self) -> None:
        rt = self._rt
        if rt is None:
            return
        for graph, graph_exec in self._graphs.values():
            if graph_exec is not None:
                rt.cudaGraphExecDestroy(graph_exec)
            if graph is not None:
                rt.cudaGraphDestroy(graph)
        self._graphs.clear()
        if self._stream is not None:
            rt.cudaStreamSynchronize(self._stream)
        for buf in (self._in, self._out, self._conf):
            if buf is not None:
                buf.free()
        self._in = self._out = self._conf = None
        if self._stream is not None:
            rt.cudaStreamDestroy(self._stream)
            self._stream = None
        # context before engine before runtime: each depends on the next
        self._context = None
        self._engine = None
        self._runtime = None
        self._batch = 0
        self._rt = None

    def describe(self) -> str:
        graph = ", CUDA graph" if self.use_cuda_graph else ""
        return (f"tensorrt {self._trt_version or '?'} {self.precision} on {self.device}{graph} "
                f"(engine {os.path.basename(self.engine_path) or '?'})")
