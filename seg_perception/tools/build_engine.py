"""`seg-perception build-engine`: build (or reuse from the cache) a TensorRT engine from an ONNX
file, then check it against ONNX Runtime on the sample frames (unless --build-only).

    seg-perception build-engine model.onnx --precision fp16 --max-batch 4
    seg-perception build-engine model.onnx --precision int8     # needs model_int8.onnx (export --int8)
    seg-perception build-engine model.onnx --build-only --out /opt/models/model.engine
    seg-perception build-engine --list                           # what the cache holds (no TensorRT needed)

Engines are cached in $XDG_CACHE_HOME/seg_perception/engines (or ~/.cache/...), keyed by the ONNX
file's hash, TensorRT version, GPU and compute capability, precision and input shapes; see
docs/engine.md. The TensorRT build path has never run in this project's CI (no TensorRT there).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("onnx", nargs="?", default="", help="ONNX model file (FP32 export)")
    from ..core.model_info import PRECISIONS

    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="engine precision; taken from the matching ONNX graph (strongly typed)")
    parser.add_argument("--cache-dir", default="", help="engine cache (default: user cache dir)")
    parser.add_argument("--min-batch", type=int, default=1)
    parser.add_argument("--opt-batch", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=1)
    parser.add_argument("--workspace-mb", type=int, default=1024, help="builder workspace limit (MiB)")
    parser.add_argument("--build-only", action="store_true",
                        help="build or reuse the engine, do not load and check it")
    parser.add_argument("--force", action="store_true", help="rebuild even when a valid engine is cached")
    parser.add_argument("--out", default="", help="also copy the engine (and its .json) to this path")
    parser.add_argument("--list", action="store_true", help="list the cached engines and exit")
    parser.add_argument("--check-frames", type=int, default=4,
                        help="sample frames for the agreement check after the build (4)")


def list_cache(cache_dir: str) -> int:
    from ..core import engine_cache as ec

    cache = ec.resolve_cache_dir(cache_dir)
    entries = ec.list_entries(cache)
    print(f"engine cache: {cache} ({len(entries)} engines)")
    for e in entries:
        if e.sidecar:
            k = e.sidecar["key"]
            batch = f"batch {k['inputs'][0]['min'][0]}..{k['inputs'][0]['max'][0]}"
            print(f"  {os.path.basename(e.engine_path)}  {e.state}  {k['precision']}  TensorRT "
                  f"{k['tensorrt_version']}  {k['gpu_name']} (sm {k['compute_capability']})  {batch}")
        else:
            print(f"  {os.path.basename(e.engine_path)}  {e.explain()}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list:
        return list_cache(args.cache_dir)
    if not args.onnx:
        print("build-engine: give an ONNX file (or --list)", file=sys.stderr)
        return 2
    if not os.path.isfile(args.onnx):
        print(f"build-engine: ONNX file not found: {args.onnx}", file=sys.stderr)
        return 2
    from ..core import engine_cache as ec
    from ..core.backends import tensorrt as trt_backend
    from ..core.backends.base import SegmenterError

    usable, why = trt_backend.tensorrt_usable()
    if not usable:
        print(f"build-engine: TensorRT cannot run here: {why}. Build on the target machine "
              "(TensorRT, cuda-python and its GPU); engines are specific to the GPU model and "
              "TensorRT version anyway.", file=sys.stderr)
        return 2
    try:
        status = trt_backend.ensure_engine(
            args.onnx, args.precision, args.cache_dir, build_if_missing=True, progress=print,
            min_batch=args.min_batch, opt_batch=args.opt_batch, max_batch=args.max_batch,
            workspace_mb=args.workspace_mb, force=args.force)
    except (SegmenterError, ec.EngineCacheError) as exc:
        print(f"build-engine failed: {exc}", file=sys.stderr)
        return 1
    print(f"engine: {status.engine_path}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
        shutil.copyfile(status.engine_path, args.out)
        shutil.copyfile(ec.sidecar_path(status.engine_path), ec.sidecar_path(args.out))
        print(f"copied to {args.out} (+ {os.path.basename(ec.sidecar_path(args.out))})")
    if args.build_only:
        return 0
    return check_engine(args)


def check_engine(args: argparse.Namespace) -> int:
    """Load the engine through the backend and compare it with ONNX Runtime on sample frames."""
    from .compare import compare, format_table
    from ..core.quantize import sample_frames

    frames = sample_frames(args.check_frames, 360, 480)
    spec = f"tensorrt/{args.precision}:{args.onnx}"
    result = compare([f"onnxruntime:{args.onnx}", spec], frames,
                     backend_options={"cache_dir": args.cache_dir, "build_if_missing": False,
                                      "max_batch": args.max_batch})
    print(format_table(result))
    return 0
