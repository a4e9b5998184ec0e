"""`seg-perception wrap MODEL.onnx --out OUT.onnx --classes NAME|FILE`: a segmentation ONNX
from elsewhere (torchvision, mmsegmentation, a Hugging Face SegFormer export) made to meet the
project's graph contract, verified against the original, with a summary (core/wrap.py).

    seg-perception wrap deeplab.onnx --out deeplab_sp.onnx --classes cityscapes --size 512x1024
    seg-perception wrap segformer.onnx --out segformer_sp.onnx --classes cityscapes   # 1/4 logits
    seg-perception wrap model.onnx --out m.onnx --classes my_classes.yaml --range 255 \\
        --mean 123.675 116.28 103.53 --std 58.395 57.12 57.375 --bgr                 # mmseg style
    seg-perception wrap espnetv2.onnx --out espnetv2_sp.onnx --classes cityscapes+background
"""

from __future__ import annotations

import argparse
import json
import sys

from .support.common import size_argument


_size = size_argument("HxW")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the ONNX file to wrap (an external weight file beside it is read too)")
    p.add_argument("--out", required=True, help="the wrapped ONNX file to write")
    p.add_argument("--classes", required=True,
                   help="the model's classes in output order: a packaged set (cityscapes, camvid, "
                        "camvid_parking), a set with classes appended after it (cityscapes+background: "
                        "19 Cityscapes classes and a background channel last), or a YAML/JSON file "
                        "(names, or {name, color})")
    p.add_argument("--size", type=_size, default=None,
                   help="HxW to fix a dynamic input size at (required when the model's is dynamic)")
    p.add_argument("--range", dest="value_range", type=float, choices=(1.0, 255.0), default=1.0,
                   help="the value range the model's normalisation starts from: 1 (pixels / 255, "
                        "torchvision, Hugging Face) or 255 (raw pixel values, mmsegmentation). Default 1")
    p.add_argument("--mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                   help="per-channel mean in that range (default ImageNet: 0.485 0.456 0.406, x255 with --range 255)")
    p.add_argument("--std", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                   help="per-channel std in that range (default ImageNet: 0.229 0.224 0.225, x255 with --range 255)")
    p.add_argument("--bgr", action="store_true", help="the model takes BGR channel order (camera frames are RGB)")
    p.add_argument("--layout", choices=("auto", "nchw", "nhwc"), default="auto",
                   help="the model's input layout (default: from its shape)")
    p.add_argument("--output", default="", help="the model output holding the segmentation (default: the first)")
    p.add_argument("--fit", choices=("stretch", "letterbox"), default="stretch",
                   help="how camera frames are fitted to the input size (stretch)")
    p.add_argument("--no-confidence", action="store_true", help="do not add the confidence output")
    p.add_argument("--keep-batch", action="store_true",
                   help="keep a fixed batch dimension (default: made dynamic where the graph runs at "
                        "another batch, so the node can batch several cameras)")
    p.add_argument("--frames", default="",
                   help="camera frames to verify on: a folder (one-channel images, label or mask maps, "
                        "are left out) or a glob pattern such as 'dir/front_camera_*.jpg' (quote it); "
                        "default: sample frames")
    p.add_argument("--num-frames", type=int, default=4, help="verification frames (4)")
    p.add_argument("--min-agreement", type=float, default=None,
                   help="pixel agreement with the original the wrap needs (0.999)")
    p.add_argument("--json", default="", help="also write the report as JSON to this file")


def run(args: argparse.Namespace) -> int:
    from ..core.class_sets import ClassSetError, load_classes
    from ..core.wrap import IMAGENET_MEAN, IMAGENET_STD, MIN_WRAP_AGREEMENT, WrapError, WrapOptions, wrap_model

    r = args.value_range
    try:
        opts = WrapOptions(classes=load_classes(args.classes), size=args.size, value_range=r,
                           mean=tuple(args.mean or (m * r for m in IMAGENET_MEAN)),
                           std=tuple(args.std or (s * r for s in IMAGENET_STD)),
                           bgr=args.bgr, layout=args.layout, output=args.output, fit=args.fit,
                           confidence=not args.no_confidence, keep_batch=args.keep_batch)
        report = wrap_model(args.model, args.out, opts, frames_dir=args.frames, num_frames=args.num_frames,
                            min_agreement=MIN_WRAP_AGREEMENT if args.min_agreement is None else args.min_agreement)
    except (WrapError, ClassSetError) as exc:
        print(f"seg-perception wrap: {exc}", file=sys.stderr)
        return 1
    h, w = report.model_size
    n = report.batch
    print(f"wrote {args.out}" + (f" (weights in {args.out}.data)" if report.external_data else ""))
    print(f"  original input:  {report.input}")
    print(f"  original output: {report.output}")
    print(f"  wrapped:         image uint8 [{n}, {h}, {w}, 3] RGB -> labels uint8 [{n}, {h}, {w}]"
          + (f", confidence uint8 [{n}, {h}, {w}]" if report.confidence else "")
          + ("" if tuple(report.output_size) == (h, w) else
             f" (the model's {report.output_size[0]}x{report.output_size[1]} output resized to {h}x{w})"))
    print(f"  batch:           {report.batch_note}")
    print(f"  classes:         {report.classes} ({args.classes})")
    print(f"  verified:        {100 * report.agreement:.3f}% of pixels equal argmax of the original's "
          f"output ({report.frames} frames from {report.frames_source})")
    print(f"  speed:           {report.ms_per_frame:.1f} ms per frame ({report.speed})")
    for line in run_it_lines(args.out, [c.name for c in opts.classes]):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_dict(), f, indent=2)
    return 0


def run_it_lines(model: str, class_names) -> list:
    """How to run the wrapped model, as a command that works as printed: label_file:= only
    where no packaged label file fits its classes (then the user writes one first)."""
    import os

    from ..core.class_sets import ignored_classes, label_file_for

    model = os.path.abspath(model)
    command = f"ros2 launch seg_perception camera_seg.launch.py model:={model}"
    label_file = label_file_for(class_names)
    if label_file is None:
        return ["no packaged label file fits these classes: write one that names the road, pedestrian, "
                "parking, drivable, ground and obstacle classes (docs/models.md, Label files), then",
                f"run it: {command} label_file:=/path/to/your_labels.yaml"]
    lines = [f"run it: {command}",
             f"  (label_file \"\": the packaged {os.path.basename(label_file)} fits its classes"]
    extra = ignored_classes(class_names, label_file)
    if extra:
        lines[-1] += f"; {', '.join(extra)} in no group: no mask shows it, the grid leaves it unknown"
    lines[-1] += ")"
    return lines
