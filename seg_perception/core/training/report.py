"""Numbers for a model card: accuracy on a labelled split and ONNX Runtime speed.

    python -m seg_perception.core.training.report --model MODEL.onnx --data ../shared/data/camvid

Accuracy: the 11 CamVid classes with Parking counted as Road (a Cityscapes-class model's
classes scored as the CamVid classes they belong to: truck as Car, wall as Building, ...). Speed: median wall time per frame
through Segmenter (ONNX Runtime, CPU, N threads), at the model's own input size (no resize) and
for a 1920x1080 frame (resize in, class map back to 1080p out, both included).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Dict

import numpy as np


def measure_speed(model_path: str, threads: int = 2, repeats: int = 60) -> Dict[str, Any]:
    from ..segmenter import Segmenter

    out: Dict[str, Any] = {"threads": threads, "repeats": repeats}
    with Segmenter.from_file(model_path, backend="onnxruntime", num_threads=threads,
                             providers=["CPUExecutionProvider"]) as seg:
        h, w = seg.info.input_height, seg.info.input_width
        rng = np.random.default_rng(0)
        for name, shape in ((f"{w}x{h}", (h, w, 3)), ("1920x1080", (1080, 1920, 3))):
            frame = rng.integers(0, 256, shape, dtype=np.uint8)
            for _ in range(5):
                seg.segment(frame)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                seg.segment(frame)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            out[name] = {"median_ms": round(1e3 * med, 2),
                         "p90_ms": round(1e3 * float(np.percentile(times, 90)), 2),
                         "fps": round(1.0 / med, 1)}
    return out


def measure_accuracy(model_path: str, data_root: str, layout: str = "camvid",
                     split: str = "test", threads: int = 2) -> Dict[str, Any]:
    from ..segmenter import Segmenter
    from .data import load_split
    from .scoring import camvid_lut, evaluate_predictions

    with Segmenter.from_file(model_path, backend="onnxruntime", num_threads=threads,
                             providers=["CPUExecutionProvider"]) as seg:
        data = load_split(data_root, layout, split, (seg.info.input_height, seg.info.input_width))
        lut = camvid_lut(seg.info.class_names)  # a Cityscapes-class model scored on CamVid's classes
        summary = evaluate_predictions(
            lambda images: seg.backend.infer(images) if lut is None else lut[seg.backend.infer(images)], data)
    summary.pop("confusion_matrix", None)
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", default=None, help="dataset root; accuracy is skipped without it")
    p.add_argument("--layout", default="camvid")
    p.add_argument("--split", default="test")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=60)
    args = p.parse_args(argv)
    report: Dict[str, Any] = {"model": args.model}
    if args.data:
        acc = measure_accuracy(args.model, args.data, args.layout, args.split, args.threads)
        report["accuracy"] = acc
        print(f"{args.split}: {acc['frames']} frames, mIoU {100 * acc['miou']:.1f}, road "
              f"{100 * acc['road_iou']:.1f}, pedestrian {100 * acc['pedestrian_iou']:.1f}")
        print("| class | IoU |\n| --- | --- |")
        for name, v in acc["per_class_iou"].items():
            print(f"| {name} | {'n/a' if v is None else f'{100 * v:.1f}'} |")
    report["speed"] = measure_speed(args.model, args.threads, args.repeats)
    for k, v in report["speed"].items():
        if isinstance(v, dict):
            print(f"{k}: {v['median_ms']} ms median, {v['p90_ms']} ms p90, {v['fps']} fps "
                  f"({args.threads} threads)")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
