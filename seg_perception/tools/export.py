"""`seg-perception export`: a trained checkpoint (or a fresh model of a named architecture) to an
ONNX file with the metadata embedded, verified against PyTorch before it reports success.

    seg-perception export model.pt --out model.onnx
    seg-perception export model.pt --out model.onnx --fp16 --int8 --calib-dir images/
    seg-perception export --arch tiny_fcn --height 64 --width 96 --out /tmp/tiny.onnx
    seg-perception export torchvision_weights.pth --arch lraspp_mobilenet_v3_large \
        --classes cityscapes --height 512 --width 1024 --out lraspp_cityscapes.onnx
    seg-perception export whole_model.pt --classes my_classes.yaml --out model.onnx
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?", default="",
                        help="a checkpoint of `seg-perception train`, a torchvision state_dict "
                             "(with --arch, --classes) or a whole torch.save(model) file (with "
                             "--classes); omit it with --arch for a fresh model")
    parser.add_argument("--classes", default="",
                        help="the classes of foreign weights: cityscapes, camvid, camvid_parking or a "
                             "YAML/JSON class file")
    parser.add_argument("--out", required=True, help="ONNX file to write (FP32)")
    parser.add_argument("--arch", default="",
                        help="architecture: checks the checkpoint's, or exports a fresh (untrained) "
                             "model of it when no checkpoint is given")
    parser.add_argument("--height", type=int, default=0, help="input height of a fresh model or foreign weights (360)")
    parser.add_argument("--width", type=int, default=0, help="input width of a fresh model or foreign weights (480)")
    parser.add_argument("--frames", default="",
                        help="folder of images to verify on (default: the project's sample frames)")
    parser.add_argument("--num-frames", type=int, default=8, help="verification images (8)")
    parser.add_argument("--fp16", action="store_true", help="also write the FP16 variant (_fp16.onnx)")
    parser.add_argument("--int8", action="store_true",
                        help="also write the INT8 Q/DQ variant (_int8.onnx), calibrated on --calib-dir")
    parser.add_argument("--calib-dir", default="", help="folder of calibration images for --int8")
    parser.add_argument("--calib-images", type=int, default=64,
                        help="calibration images taken evenly from --calib-dir (64)")
    parser.add_argument("--calib-method", default="minmax", choices=["minmax", "percentile", "entropy"])
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--min-agreement", type=float, default=None,
                        help="pixel agreement with PyTorch the FP32 file needs (0.999)")
    parser.add_argument("--json", default="", help="also write the report as JSON to this file")


def run(args: argparse.Namespace) -> int:
    from ..core import export as ex
    from ..core.class_sets import ClassSetError, load_classes

    try:
        classes = load_classes(args.classes) if args.classes else None
        report = ex.export_model(
            args.out, checkpoint=args.checkpoint, architecture=args.arch, height=args.height,
            width=args.width, frames_dir=args.frames, num_frames=args.num_frames, fp16=args.fp16,
            int8=args.int8, calib_dir=args.calib_dir, calib_images=args.calib_images,
            calib_method=args.calib_method, opset=args.opset,
            min_agreement=ex.MIN_EXPORT_AGREEMENT if args.min_agreement is None else args.min_agreement,
            classes=classes)
    except (ex.ExportError, ClassSetError, FileNotFoundError, ValueError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    v = report.verify
    print(f"wrote {report.onnx_path}")
    print(f"  verified against PyTorch: {v.agreement:.4%} of {v.pixels} pixels agree "
          f"({v.frames} frames from {v.frames_source}; {v.classes_seen} classes predicted)")
    for precision, entry in report.variants.items():
        print(f"wrote {entry['path']} ({precision}): {entry['agreement_vs_torch']:.4%} of pixels "
              f"agree with PyTorch (floor {entry['min_agreement']:.2%}; ONNX Runtime CPU)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_dict(), f, indent=2)
    return 0
