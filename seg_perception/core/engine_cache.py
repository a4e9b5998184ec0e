"""The TensorRT engine cache: where engines live, what makes one valid, and the JSON beside each.

An engine is only valid for the exact ONNX graph it was built from, the TensorRT version that
built it, the GPU model (name and compute capability) it was tuned on, its precision and its
input shapes (the optimisation profile). All of these form the cache key; its digest is part of
the file name, and the key itself is written in a JSON sidecar beside the engine together with the
engine's size and SHA-256 and the model's metadata (class names, colours, input size...), which a
serialized engine cannot carry.

Nothing here imports TensorRT: the versions and GPU facts come in as arguments, so that the
rules (keys, invalidation, corrupt files, errors) are plain functions tested without a GPU. The
TensorRT backend supplies the real values.

Default location: ``$XDG_CACHE_HOME/seg_perception/engines`` (``~/.cache/...`` when unset), never
the package's install share, which may be read-only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from .model_info import PRECISIONS, ModelInfo, ModelInfoError

CACHE_FORMAT = "seg_perception-engine/1"
ENGINE_EXT = ".engine"
SIDECAR_EXT = ".json"   # engine file name + this


class EngineCacheError(RuntimeError):
    """A cached engine is missing, stale or corrupt and may not be (re)built here."""


def default_cache_dir(environ: Optional[Mapping[str, str]] = None) -> str:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".cache")
    return os.path.join(base, "seg_perception", "engines")


def resolve_cache_dir(cache_dir: str = "", environ: Optional[Mapping[str, str]] = None) -> str:
    """``cache_dir`` ("" = the default user cache), made absolute and user-expanded."""
    return os.path.abspath(os.path.expanduser(cache_dir)) if cache_dir else default_cache_dir(environ)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_sha256(onnx_path: str) -> str:
    """The ONNX file's hash, with its external weight file (``MODEL.onnx.data``, as
    torch.onnx and `seg-perception wrap` name it) folded in: new weights beside an unchanged
    graph must not reuse the old engine."""
    digest = file_sha256(onnx_path)
    data = onnx_path + ".data"
    if os.path.isfile(data):
        digest = hashlib.sha256((digest + file_sha256(data)).encode()).hexdigest()
    return digest


Shape = Tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class InputProfile:
    """Optimisation profile of one input: the shapes an engine accepts (min <= opt <= max)."""

    name: str
    min: Shape
    opt: Shape
    max: Shape

    def validate(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ValueError(f"profile of {self.name!r}: min/opt/max ranks differ")
        for lo, mid, hi in zip(self.min, self.opt, self.max):
            if not (1 <= lo <= mid <= hi):
                raise ValueError(f"profile of {self.name!r} needs 1 <= min <= opt <= max per "
                                 f"dimension, got {self.min} / {self.opt} / {self.max}")

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "InputProfile":
        return cls(str(d["name"]), tuple(int(v) for v in d["min"]),
                   tuple(int(v) for v in d["opt"]), tuple(int(v) for v in d["max"]))


def batch_profile(name: str, height: int, width: int, min_batch: int = 1, opt_batch: int = 1,
                  max_batch: int = 1) -> InputProfile:
    """The profile of the graph contract's uint8 NHWC input with a range of batch sizes."""
    prof = InputProfile(name, (min_batch, height, width, 3), (opt_batch, height, width, 3),
                        (max_batch, height, width, 3))
    prof.validate()
    return prof


@dataclasses.dataclass(frozen=True)
class EngineKey:
    """Everything that makes an engine valid. Two equal keys may share one engine."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str     # "8.9"
    precision: str
    inputs: Tuple[InputProfile, ...]

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {PRECISIONS}")
        if len(self.onnx_sha256) != 64:
            raise ValueError("onnx_sha256 must be a SHA-256 hex digest")
        for field in ("tensorrt_version", "gpu_name", "compute_capability"):
            if not getattr(self, field):
                raise ValueError(f"engine key needs {field}")
        if not self.inputs:
            raise ValueError("engine key needs at least one input profile")
        for p in self.inputs:
            p.validate()

    def to_dict(self) -> Dict[str, Any]:
        return {"onnx_sha256": self.onnx_sha256, "tensorrt_version": self.tensorrt_version,
                "gpu_name": self.gpu_name, "compute_capability": self.compute_capability,
                "precision": self.precision, "inputs": [p.to_dict() for p in self.inputs]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EngineKey":
        return cls(str(d["onnx_sha256"]), str(d["tensorrt_version"]), str(d["gpu_name"]),
                   str(d["compute_capability"]), str(d["precision"]),
                   tuple(InputProfile.from_dict(p) for p in d["inputs"]))

    def digest(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def make_key(onnx_path: str, tensorrt_version: str, gpu_name: str, compute_capability: str,
             precision: str, inputs: Sequence[InputProfile], onnx_sha256: str = "") -> EngineKey:
    key = EngineKey(onnx_sha256 or model_sha256(onnx_path), str(tensorrt_version), str(gpu_name),
                    str(compute_capability), precision, tuple(inputs))
    key.validate()
    return key


def key_differences(expected: EngineKey, found: EngineKey) -> List[str]:
    """Human-readable reasons why an engine built for ``found`` is not valid for ``expected``."""
    labels = {"onnx_sha256": "ONNX file (SHA-256)", "tensorrt_version": "TensorRT version",
              "gpu_name": "GPU", "compute_capability": "compute capability",
              "precision": "precision", "inputs": "input shapes"}
    want, have = expected.to_dict(), found.to_dict()
    out = []
    for field, label in labels.items():
        if want[field] != have[field]:
            w, h = want[field], have[field]
            if field == "onnx_sha256":
                w, h = w[:12], h[:12]
            out.append(f"{label}: engine built for {h}, needed {w}")
    return out


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60] or "model"


def engine_path(cache_dir: str, model_stem: str, key: EngineKey) -> str:
    """``<cache>/<model>.<precision>.<key digest prefix>.engine``: the name tells a person which
    model and precision it is; the digest keeps different keys apart."""
    return os.path.join(cache_dir, f"{_safe(model_stem)}.{key.precision}.{key.digest()[:16]}{ENGINE_EXT}")


def sidecar_path(engine_file: str) -> str:
    return engine_file + SIDECAR_EXT


def timing_cache_path(cache_dir: str, tensorrt_version: str, gpu_name: str,
                      compute_capability: str) -> str:
    """One timing cache per TensorRT version and GPU model, reused by every build there (layer
    timings do not depend on the model, so a second model builds faster too)."""
    return os.path.join(cache_dir, f"timing.trt{_safe(tensorrt_version)}."
                                   f"{_safe(gpu_name)}.sm{_safe(compute_capability)}.cache")


def _atomic_write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # readers see the old file or the whole new one, never half of it


def write_entry(engine_file: str, engine_bytes: bytes, key: EngineKey, info: ModelInfo,
                build: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Write the engine and its sidecar. The sidecar goes last: an engine without one is never
    taken as valid, so a crash between the two leaves a rebuild, not a bad load."""
    key.validate()
    sidecar = {
        "format": CACHE_FORMAT,
        "key": key.to_dict(),
        "key_digest": key.digest(),
        "engine": {"file": os.path.basename(engine_file), "bytes": len(engine_bytes),
                   "sha256": hashlib.sha256(engine_bytes).hexdigest()},
        "model": info.to_dict(),
        "build": dict(build or {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    side = sidecar_path(engine_file)
    if os.path.exists(side):
        os.remove(side)
    _atomic_write(engine_file, engine_bytes)
    _atomic_write(side, json.dumps(sidecar, indent=2, sort_keys=True).encode())
    return sidecar


def read_sidecar(path: str) -> Dict[str, Any]:
    """The sidecar as a dict; EngineCacheError when it is missing, unreadable or malformed."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise EngineCacheError(f"engine metadata file missing: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineCacheError(f"engine metadata file {path} is unreadable: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        fmt = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise EngineCacheError(f"engine metadata file {path} has format {fmt!r}, expected "
                               f"{CACHE_FORMAT!r}")
    try:
        EngineKey.from_dict(data["key"])
        ModelInfo.from_dict(data["model"])
        int(data["engine"]["bytes"]), str(data["engine"]["sha256"])
    except (KeyError, TypeError, ValueError, ModelInfoError) as exc:
        raise EngineCacheError(f"engine metadata file {path} is malformed: {exc!r}") from exc
    return data


@dataclasses.dataclass
class EntryStatus:
    """What the cache holds for a key. state: valid | missing | stale | corrupt."""

    state: str
    engine_path: str
    reasons: List[str] = dataclasses.field(default_factory=list)
    sidecar: Optional[Dict[str, Any]] = None

    @property
    def valid(self) -> bool:
        return self.state == "valid"

    @property
    def info(self) -> ModelInfo:
        if self.sidecar is None:
            raise EngineCacheError(f"no metadata for {self.engine_path}")
        return ModelInfo.from_dict(self.sidecar["model"])

    def explain(self) -> str:
        return f"{self.state}: " + ("; ".join(self.reasons) if self.reasons else self.engine_path)


def check_entry(engine_file: str, expected: Optional[EngineKey] = None,
                runtime: Optional[Tuple[str, str, str]] = None, verify_hash: bool = True
                ) -> EntryStatus:
    """Check an engine file against its sidecar and against what it must be valid for.

    expected: the full key (a cache lookup); runtime: (TensorRT version, GPU name, compute
    capability) only, for an .engine file given directly, whose ONNX may not be at hand.
    The engine's size and SHA-256 must match the sidecar (a truncated or overwritten file is
    corrupt, never deserialized)."""
    if not os.path.isfile(engine_file):
        return EntryStatus("missing", engine_file, [f"no engine at {engine_file}"])
    try:
        side = read_sidecar(sidecar_path(engine_file))
    except EngineCacheError as exc:
        return EntryStatus("corrupt", engine_file, [str(exc)])
    found = EngineKey.from_dict(side["key"])
    reasons: List[str] = []
    if expected is not None:
        reasons += key_differences(expected, found)
    if runtime is not None:
        version, gpu, cc = (str(v) for v in runtime)
        if found.tensorrt_version != version:
            reasons.append(f"TensorRT version: engine built with {found.tensorrt_version}, "
                           f"this is {version}")
        if (found.gpu_name, found.compute_capability) != (gpu, cc):
            reasons.append(f"GPU: engine built for {found.gpu_name} (sm {found.compute_capability}), "
                           f"this is {gpu} (sm {cc})")
    if reasons:
        return EntryStatus("stale", engine_file, reasons, side)
    size = os.path.getsize(engine_file)
    if size != int(side["engine"]["bytes"]):
        return EntryStatus("corrupt", engine_file,
                           [f"engine file is {size} bytes, its metadata says {side['engine']['bytes']}"], side)
    if verify_hash and file_sha256(engine_file) != side["engine"]["sha256"]:
        return EntryStatus("corrupt", engine_file,
                           ["engine file's SHA-256 differs from the one recorded when it was built"], side)
    return EntryStatus("valid", engine_file, [], side)


def lookup(cache_dir: str, model_stem: str, key: EngineKey, verify_hash: bool = True) -> EntryStatus:
    return check_entry(engine_path(cache_dir, model_stem, key), expected=key, verify_hash=verify_hash)


def decide(status: EntryStatus, build_if_missing: bool, how_to_build: str = "") -> str:
    """'load' a valid engine, 'build' one otherwise when allowed; else EngineCacheError saying
    what is wrong and how to build it."""
    if status.valid:
        return "load"
    if build_if_missing:
        return "build"
    hint = f" Build it with: {how_to_build}" if how_to_build else ""
    what = {"missing": "no cached TensorRT engine",
            "stale": "the cached TensorRT engine does not match",
            "corrupt": "the cached TensorRT engine is corrupt"}[status.state]
    raise EngineCacheError(f"{what} ({'; '.join(status.reasons)}) and building is turned off "
                           f"(build_if_missing: false).{hint}")


def remove_entry(engine_file: str) -> None:
    for path in (sidecar_path(engine_file), engine_file):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def list_entries(cache_dir: str) -> List[EntryStatus]:
    """Every engine in the cache with its state (checked against its own sidecar only)."""
    if not os.path.isdir(cache_dir):
        return []
    return [check_entry(os.path.join(cache_dir, name), verify_hash=False)
            for name in sorted(os.listdir(cache_dir)) if name.endswith(ENGINE_EXT)]


@contextlib.contextmanager
def build_lock(engine_file: str) -> Iterator[None]:
    """Exclusive lock around a build, so that two processes starting together build once (the
    second finds the first's engine when it gets the lock)."""
    import fcntl

    os.makedirs(os.path.dirname(os.path.abspath(engine_file)), exist_ok=True)
    with open(engine_file + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
