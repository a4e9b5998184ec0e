"""`seg-perception import-espnetv2 WEIGHTS.pth --out DIR`: ESPNetv2 weights trained on Cityscapes
by their authors (github sacmehta/EdgeNets, MIT) -> the project's checkpoint and a verified ONNX,
the licence beside them (core/pretrained.py).

    seg-perception import-espnetv2 ../shared/models/espnetv2_cityscapes/espnetv2_s_2.0_city_1024x512.pth \\
        --out runs/pretrained
"""

from __future__ import annotations

import argparse
import sys

from .support.common import size_argument

_size = size_argument("HxW")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("weights", help="the authors' .pth (a state dict), e.g. espnetv2_s_2.0_city_1024x512.pth")
    p.add_argument("--out", required=True, help="folder for the .pt, the .onnx and the licence")
    p.add_argument("--width", type=float, default=None, help="network width s (default: from the file name)")
    p.add_argument("--size", type=_size, default=None,
                   help="model input HxW (default: the size in the file name, what it was trained at)")
    p.add_argument("--num-frames", type=int, default=4, help="frames the ONNX is verified on (4)")


def run(args: argparse.Namespace) -> int:
    from ..core.export import ExportError
    from ..core.pretrained import PretrainedError, import_espnetv2

    try:
        out = import_espnetv2(args.weights, args.out, args.width, args.size, args.num_frames)
    except (PretrainedError, ExportError) as exc:
        print(f"seg-perception import-espnetv2: {exc}", file=sys.stderr)
        return 1
    info = out["info"]
    print(f"wrote {out['checkpoint']}")
    print(f"wrote {out['onnx']}: {info.architecture}, {info.num_classes} classes (cityscapes+background), "
          f"input {info.input_width}x{info.input_height}; {100 * out['agreement']:.3f}% of pixels agree "
          f"with PyTorch ({out['frames']} frames)")
    print(f"wrote {out['licence']}: the weights' MIT licence, to keep beside every file made from them; "
          "their training data (Cityscapes) is for non-commercial use only")
    return 0
