"""`seg-perception compare`: pixel agreement between backends, or between FP32 / FP16 / INT8
model files, over a folder of images (the project's sample frames when no folder is given).

    seg-perception compare model.pt model.onnx                     # PyTorch vs ONNX Runtime
    seg-perception compare model.onnx model_fp16.onnx model_int8.onnx --images camvid/test
    seg-perception compare torch:model.pt onnxruntime:model.onnx tensorrt/fp16:model.onnx

A model is ``[backend[/precision]:]path``; without a backend, the file type decides (.pt: torch,
.onnx: onnxruntime, .engine: tensorrt). Every model segments every image at the image's own size
through the same frame fitting as the node, so models of different input sizes compare too.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.backends.registry import parse_model_spec



def compare(specs: Sequence[str], images: Sequence[np.ndarray], num_threads: int = 0,
            backend_options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Run every model on every image (RGB uint8) and count, per pair of models, the pixels
    with the same class. Returns a JSON-ready dict: models, per-pair agreement (overall and the
    worst image), and the classes each model predicted (1 means a trivial model)."""
    from ..core.backends.registry import create_backend
    from ..core.segmenter import Segmenter

    if len(specs) < 2:
        raise ValueError("compare needs at least two models")
    if not images:
        raise ValueError("compare needs at least one image")
    labels = [parse_model_spec(s).label for s in specs]
    if len(set(labels)) != len(labels):
        labels = [f"{i}:{lab}" for i, lab in enumerate(labels)]
    segmenters: List[Segmenter] = []
    with contextlib.ExitStack() as owned:  # every segmenter loaded so far released at the end
        for spec in specs:
            backend, precision, path = parse_model_spec(spec)
            opts = dict(backend_options or {})
            opts["num_threads"] = num_threads
            if precision:
                opts["precision"] = precision
            segmenters.append(owned.enter_context(Segmenter(create_backend(path, backend, **opts))))
        names = [tuple(s.info.class_names) for s in segmenters]
        for lab, n in zip(labels[1:], names[1:]):
            if n != names[0]:
                raise ValueError(f"{lab} has classes {list(n)}, {labels[0]} has {list(names[0])}: "
                                 "class ids would not mean the same thing")
        pairs = list(itertools.combinations(range(len(specs)), 2))
        same = {p: 0 for p in pairs}
        worst = {p: 1.0 for p in pairs}
        seen = [set() for _ in specs]
        total = 0
        for img in images:
            maps = [s.segment(img) for s in segmenters]
            for i, m in enumerate(maps):
                seen[i].update(np.unique(m).tolist())
            for a, b in pairs:
                eq = int(np.count_nonzero(maps[a] == maps[b]))
                same[(a, b)] += eq
                worst[(a, b)] = min(worst[(a, b)], eq / maps[a].size)
            total += maps[0].size
        return {
            "models": [{"spec": s, "label": lab, "backend": seg.backend.describe(),
                        "classes_predicted": sorted(names[0][c] for c in seen[i] if c < len(names[0]))}
                       for i, (s, lab, seg) in enumerate(zip(specs, labels, segmenters))],
            "images": len(images),
            "pixels": total,
            "pairs": [{"a": labels[a], "b": labels[b], "agreement": same[(a, b)] / total,
                       "worst_image_agreement": worst[(a, b)]} for a, b in pairs],
        }


def load_compare_images(folder: str, count: int) -> Tuple[List[np.ndarray], str]:
    from ..core.quantize import load_images, sample_frames

    if folder:
        return load_images(folder, count), folder
    return sample_frames(count, 360, 480), "seg_perception sample frames (480x360)"


def format_table(result: Dict[str, Any]) -> str:
    lines = [f"{result['images']} images, {result['pixels']} pixels", ""]
    for m in result["models"]:
        lines.append(f"  {m['label']}: {m['backend']}; predicts {len(m['classes_predicted'])} classes")
    lines.append("")
    width = max(len(p["a"]) + len(p["b"]) for p in result["pairs"]) + 5
    lines.append(f"  {'pair':<{width}} {'agreement':>10} {'worst image':>12}")
    for p in result["pairs"]:
        pair = f"{p['a']} vs {p['b']}"
        lines.append(f"  {pair:<{width}} {p['agreement']:>10.4%} {p['worst_image_agreement']:>12.4%}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", help="[backend[/precision]:]path, two or more")
    parser.add_argument("--images", default="", help="folder of images (default: sample frames)")
    parser.add_argument("--num-images", type=int, default=16,
                        help="images taken evenly from the folder (16; 0 = all)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per backend (0 = default)")
    parser.add_argument("--min-agreement", type=float, default=0.0,
                        help="exit 1 when any pair agrees less than this (e.g. 0.999)")
    parser.add_argument("--json", default="", help="also write the result as JSON to this file")


def run(args: argparse.Namespace) -> int:
    from ..core.backends.base import SegmenterError

    try:
        images, source = load_compare_images(args.images, args.num_images or (8 if not args.images else 0))
        result = compare(args.models, images, num_threads=args.threads)
    except (ValueError, FileNotFoundError, SegmenterError) as exc:
        print(f"compare failed: {exc}", file=sys.stderr)
        return 2
    result["source"] = source
    print(f"images from {source}")
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    low = [p for p in result["pairs"] if p["agreement"] < args.min_agreement]
    if low:
        print(f"below the required {args.min_agreement:.2%}: "
              + ", ".join(f"{p['a']} vs {p['b']}" for p in low), file=sys.stderr)
        return 1
    return 0
