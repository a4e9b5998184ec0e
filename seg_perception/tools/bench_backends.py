"""Backend benchmark: per model, backend and precision, latency (median, p90, p99) of
preprocess (fitting camera frames to the model input), inference and postprocess (class map back
to the frame's size), at given camera frame sizes and batch sizes, and frames per second.

    python -m seg_perception.tools.bench_backends model.onnx model.pt --backends onnxruntime torch \
        --sizes 1920x1080 640x480 --batch-sizes 1 4 --threads 2 --iters 20 --json out.json

A model is a file path, ``backend[/precision]:path``, or ``arch:NAME@HxW`` for a fresh,
untrained model of an architecture at a model input size (exported to a temporary folder as
ONNX and checkpoint; needs torch) - latency does not depend on trained weights.

``bench_backends`` returns the results as a dict; ``format_table`` prints them. The ``bench``
command can call ``add_arguments``/``run`` for ``seg-perception bench --backends ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.backends.registry import BACKEND_TABLE, parse_model_spec
from .support.common import parse_size, percentiles_ms



def _fresh_model_files(spec: str, work_dir: str) -> Dict[str, str]:
    """'arch:NAME@HxW' -> {'onnx': path, 'torch': path} of a fresh model (untrained)."""
    from ..core import export as ex

    body = spec[len("arch:"):]
    name, _, size = body.partition("@")
    height, width = parse_size(size, "HxW") if size else (360, 480)
    wrapped, info = ex.fresh_model(name, height, width)
    stem = os.path.join(work_dir, f"{name}_{height}x{width}")
    ex.save_checkpoint(wrapped, info, stem + ".pt")
    ex.export_onnx(wrapped, info, stem + ".onnx")
    return {"onnx": stem + ".onnx", "pt": stem + ".pt"}


def _model_runs(spec: str, backends: Sequence[str], work_dir: str
                ) -> Tuple[List[Tuple[str, str, str]], List[Dict[str, str]]]:
    """(backend, precision, path) to run for one model spec, and the skipped combinations."""
    runs, skipped = [], []
    if spec.startswith("arch:"):
        files = _fresh_model_files(spec, work_dir)
        candidates = [files["onnx"], files["pt"]]
    else:
        head, sep, _ = spec.partition(":")
        if sep and head.split("/")[0] in BACKEND_TABLE:  # backend named: that run only
            return [tuple(parse_model_spec(spec))], []
        candidates = [spec]
    for entry in backends:
        backend, _, precision = entry.partition("/")
        if backend not in BACKEND_TABLE:
            raise ValueError(f"unknown backend {backend!r}; choose from {sorted(BACKEND_TABLE)}")
        fitting = [p for p in candidates
                   if os.path.splitext(p)[1].lower() in BACKEND_TABLE[backend].files]
        if not fitting:
            skipped.append({"model": spec, "backend": entry,
                            "reason": f"{backend} cannot run {', '.join(os.path.basename(c) for c in candidates)}"})
            continue
        runs.append((backend, precision, fitting[0]))
    return runs, skipped


def _precision_of(backend: str, precision: str, path: str) -> str:
    if precision:
        return precision
    if path.endswith(".onnx"):
        try:
            from ..core.quantize import graph_precision
            return graph_precision(path)
        except ImportError:
            return "fp32"
    return "fp32"


def bench_one(segmenter, frame: np.ndarray, batch: int, iters: int, warmup: int = 2
              ) -> Dict[str, Any]:
    """Time preprocess / inference / postprocess of ``batch`` copies of ``frame`` through the
    node's own path: SegmentationPipeline.prepare (pooled buffers), run_batch (the network once
    on the batch, both graph outputs) and FrameResult.labels (the class map at the frame's size)."""
    from ..core.image import frame_from_rgb
    from ..core.labels import MASK_GROUPS, LabelGroups
    from ..core.pipeline import SegmentationPipeline, run_batch

    # the class map only: no mask is asked for, so no label file is needed
    groups = LabelGroups(tuple(segmenter.info.class_names), {g: () for g in MASK_GROUPS})
    pipeline = SegmentationPipeline(segmenter, groups)
    frames = [frame_from_rgb(frame) for _ in range(batch)]
    pre, inf, post, total = [], [], [], []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        prepared = [pipeline.prepare(f, pooled=True) for f in frames]
        t1 = time.perf_counter()
        results = run_batch([(pipeline, p) for p in prepared])
        t2 = time.perf_counter()
        for r in results:
            r.labels()
        t3 = time.perf_counter()
        if i >= warmup:
            pre.append(t1 - t0)
            inf.append(t2 - t1)
            post.append(t3 - t2)
            total.append(t3 - t0)
    med_total = float(np.median(total))
    return {"preprocess_ms": percentiles_ms(pre), "inference_ms": percentiles_ms(inf),
            "postprocess_ms": percentiles_ms(post), "total_ms": percentiles_ms(total),
            "fps": batch / med_total if med_total > 0 else 0.0}


def bench_backends(model_paths_or_specs: Sequence[str], backends: Sequence[str] = ("onnxruntime",),
                   sizes: Sequence[Any] = ((1920, 1080),), batch_sizes: Sequence[int] = (1,),
                   threads: int = 0, iters: int = 20,
                   backend_options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Benchmark every (model, backend[/precision], frame size, batch size) combination.

    sizes: camera frame sizes as (width, height) tuples or 'WxH' strings. A backend that cannot
    open a model file or is unavailable here is listed under 'skipped' with the reason."""
    from ..core.quantize import sample_frames
    from ..core.backends.base import SegmenterError
    from ..core.backends.registry import create_backend
    from ..core.segmenter import Segmenter

    sizes = [parse_size(s) if isinstance(s, str) else (int(s[0]), int(s[1])) for s in sizes]
    frames = {(w, h): sample_frames(1, h, w, first=5)[0] for w, h in sizes}
    result: Dict[str, Any] = {
        "host": {"machine": platform.machine(), "processor": platform.processor() or "",
                 "cpus": os.cpu_count(), "python": platform.python_version()},
        "threads": threads, "iters": iters, "runs": [], "skipped": []}
    with tempfile.TemporaryDirectory(prefix="seg_perception_bench_") as work:
        for spec in model_paths_or_specs:
            runs, skipped = _model_runs(spec, backends, work)
            result["skipped"] += skipped
            for backend, precision, path in runs:
                opts = dict(backend_options or {})
                opts["num_threads"] = threads
                if backend == "tensorrt":
                    opts["precision"] = precision or "fp32"
                    opts["max_batch"] = max(batch_sizes)
                try:
                    seg = Segmenter(create_backend(path, backend, **opts))
                except (SegmenterError, RuntimeError) as exc:
                    result["skipped"].append({"model": spec, "backend": backend + (f"/{precision}" if precision else ""),
                                                "reason": str(exc)})
                    continue
                with seg:
                    for (w, h) in sizes:
                        for batch in batch_sizes:
                            entry = {"model": spec, "file": os.path.basename(path), "backend": backend,
                                     "precision": _precision_of(backend, precision, path),
                                     "device": seg.backend.describe(),
                                     "model_input": f"{seg.info.input_width}x{seg.info.input_height}",
                                     "frame": f"{w}x{h}", "batch": int(batch)}
                            entry.update(bench_one(seg, frames[(w, h)], int(batch), iters))
                            result["runs"].append(entry)
    return result


def format_table(result: Dict[str, Any]) -> str:
    head = (f"{'model':<22} {'backend':<12} {'prec':<5} {'input':>8} {'frame':>10} {'N':>2} "
            f"{'pre med/p90/p99 ms':>20} {'infer med/p90/p99 ms':>22} {'post med/p90/p99 ms':>20} {'fps':>7}")
    lines = [head, "-" * len(head)]

    def trio(d):
        return f"{d['median']:.1f}/{d['p90']:.1f}/{d['p99']:.1f}"

    for r in result["runs"]:
        lines.append(f"{os.path.basename(r['file'])[:22]:<22} {r['backend']:<12} {r['precision']:<5} "
                     f"{r['model_input']:>8} {r['frame']:>10} {r['batch']:>2} "
                     f"{trio(r['preprocess_ms']):>20} {trio(r['inference_ms']):>22} "
                     f"{trio(r['postprocess_ms']):>20} {r['fps']:>7.1f}")
    for s in result["skipped"]:
        lines.append(f"skipped {s['model']} on {s['backend']}: {s['reason']}")
    lines.append(f"({result['iters']} timed iterations each; threads {result['threads'] or 'default'}; "
                 f"{result['host']['cpus']} CPUs)")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", help="model files, backend[/precision]:path, or arch:NAME@HxW")
    parser.add_argument("--backends", nargs="+", default=["onnxruntime", "torch"],
                        help="backends to try per model, e.g. onnxruntime torch tensorrt/fp16")
    parser.add_argument("--sizes", nargs="+", default=["1920x1080"], help="camera frame sizes WxH")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per backend (0 = default)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--json", default="", help="also write the results as JSON to this file")


def run(args: argparse.Namespace) -> int:
    try:
        result = bench_backends(args.models, args.backends, args.sizes, args.batch_sizes,
                                args.threads, args.iters)
    except (ValueError, FileNotFoundError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if result["runs"] else 1


def main(argv: Optional[List[str]] = None) -> int:
    import logging

    parser = argparse.ArgumentParser(prog="bench_backends", description=__doc__.splitlines()[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.WARNING)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
