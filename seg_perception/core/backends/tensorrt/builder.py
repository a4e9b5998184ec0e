"""TensorRT engine building: ONNX parser errors, build progress, the ONNX file for a precision,
``build_serialized_engine`` and ``ensure_engine`` (build or take from the engine cache).

  * strongly typed networks: precision comes from the ONNX graph (FP16 export, INT8 Q/DQ export);
    no FP16/INT8 builder flags and no implicit INT8 calibrator (deprecated in 10.1, removed in 11);
  * every ONNX parser error is reported (node, operator, description), not just the first;
  * workspace memory-pool limit; an optimisation profile over the batch sizes;
  * a timing cache per TensorRT version and GPU, loaded before and saved after every build;
  * progress (phases and steps) from an IProgressMonitor, passed to a callback and the log;
  * engines go to the engine cache (core/engine_cache.py), keyed by what makes them valid.

NOT RUN here (no TensorRT, no GPU): written against the documented TensorRT 10 API and
type-checked against tensorrt-stubs (test/test_typecheck.py); parser-error formatting, progress
and the precision choice are tested.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from ... import engine_cache as ec
from ...model_info import PRECISIONS, ModelInfo
from ..base import SegmenterError
from .loader import gpu_identity, require_tensorrt, trt_major

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_MB = 1024
ProgressFn = Optional[Callable[[str], None]]


class EngineBuildError(SegmenterError):
    """TensorRT could not parse the ONNX file or build an engine from it."""


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
        from ...quantize import graph_precision
        return graph_precision(onnx_path)
    except ImportError:
        from ...model_info import read_onnx_metadata
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
    from ...quantize import variant_path

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
        from ...quantize import convert_fp16
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


def _make_logger() -> "trt.ILogger":
    """A trt.ILogger that forwards TensorRT's messages to Python logging."""
    import tensorrt as trt

    levels = {trt.ILogger.Severity.INTERNAL_ERROR: logging.CRITICAL,
              trt.ILogger.Severity.ERROR: logging.ERROR,
              trt.ILogger.Severity.WARNING: logging.WARNING,
              trt.ILogger.Severity.INFO: logging.DEBUG,  # TensorRT's INFO is chatty
              trt.ILogger.Severity.VERBOSE: logging.DEBUG}

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: "trt.ILogger.Severity", msg: str) -> None:
            log.log(levels.get(severity, logging.INFO), "TensorRT: %s", msg)

    return _Logger()


def _make_progress_monitor(progress: BuildProgress) -> "trt.IProgressMonitor":
    import tensorrt as trt

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            progress.phase_finish(phase_name)

    return _Monitor()


def _parse_network(builder: "trt.Builder", logger: "trt.ILogger", onnx_path: str
                   ) -> Tuple["trt.INetworkDefinition", "trt.OnnxParser"]:
    """The strongly typed network of ``onnx_path`` and its parser (which must outlive the
    build); raises EngineBuildError listing every parser error."""
    import tensorrt as trt

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
    return network, parser


def _use_timing_cache(config: "trt.IBuilderConfig", timing_cache_file: str
                      ) -> Optional["trt.ITimingCache"]:
    """The timing cache read from ``timing_cache_file`` (a new one when it is missing or from
    another TensorRT or GPU), set on ``config``; None without a file."""
    if not timing_cache_file:
        return None
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
    return timing_cache


def build_serialized_engine(onnx_path: str, profile: ec.InputProfile,
                            workspace_mb: int = DEFAULT_WORKSPACE_MB,
                            timing_cache_file: str = "", progress: ProgressFn = None) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network and build a serialized engine.

    Raises EngineBuildError listing every parser error, or saying the build failed."""
    require_tensorrt()
    import tensorrt as trt

    logger = _make_logger()
    builder = trt.Builder(logger)
    network, parser = _parse_network(builder, logger, onnx_path)  # the parser owns the weights

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)

    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(profile.name, trt.Dims(list(profile.min)), trt.Dims(list(profile.opt)),
                          trt.Dims(list(profile.max)))
    config.add_optimization_profile(opt_profile)

    timing_cache = _use_timing_cache(config, timing_cache_file)

    monitor = None
    tracker = BuildProgress(_emitter(progress))
    if hasattr(config, "progress_monitor"):  # TensorRT >= 10.0
        monitor = _make_progress_monitor(tracker)
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
    del monitor, parser
    return bytes(serialized)


def ensure_engine(onnx_path: str, precision: str = "fp32", cache_dir: str = "",
                  build_if_missing: bool = True, progress: ProgressFn = None,
                  min_batch: int = 1, opt_batch: int = 1, max_batch: int = 1,
                  workspace_mb: int = DEFAULT_WORKSPACE_MB, force: bool = False) -> ec.EntryStatus:
    """The cached engine for ``onnx_path`` at ``precision`` on this GPU and TensorRT: loaded from
    the cache when valid, else built (when allowed) and stored with its sidecar. Stale and corrupt
    entries are rebuilt, never loaded; with building off they raise EngineCacheError."""
    from ...model_info import read_onnx_metadata

    require_tensorrt()
    import tensorrt as trt

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
