"""`seg-perception`: one command, one subcommand per tool.

Each subcommand lives in its own module ``seg_perception.tools.<module>`` with two functions,
``add_arguments(parser)`` and ``run(args) -> int``, and is imported only when it is run, so the
command starts fast and a tool's heavy dependencies (torch, rosbags) load only for that tool.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

# subcommand -> (module, one-line help)
COMMANDS = {
    "demo": ("demo", "run the node on the sample camera stream and save what it publishes"),
    "bench": ("bench", "per-stage timings and frames per second of the pipeline (and backends)"),
    "export": ("export", "export a trained checkpoint to ONNX with metadata, verified against PyTorch"),
    "import-espnetv2": ("import_espnetv2", "ESPNetv2 Cityscapes weights (their authors') -> checkpoint and ONNX"),
    "wrap": ("wrap", "make a segmentation ONNX from elsewhere meet the project's contract, verified"),
    "build-engine": ("build_engine", "build (or reuse from cache) a TensorRT engine from ONNX"),
    "compare": ("compare", "pixel agreement between backends or precisions over an image folder"),
    "train": ("train", "train a segmentation model on a labelled folder (CamVid/Cityscapes layout)"),
    "evaluate": ("evaluate", "per-class IoU, mIoU and confusion matrix on a labelled folder"),
    "replay": ("replay", "publish a rosbag's topics over ROS 2 with recorded timing and /clock"),
    "process-bag": ("process_bag", "run the node's pipeline over a bag and write its outputs to a bag"),
    "process-bags": ("process_bags", "process-bag over many bags on Ray, resumable, with a fleet report"),
    "compare-bags": ("compare_bags", "two models (or settings) over the same bags: where they disagree"),
    "sample-bag": ("sample_bag", "write the project's sample drive as a rosbag"),
}


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg-perception", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only == name:  # import just the tool that runs
            importlib.import_module(f"seg_perception.tools.{module}").add_arguments(p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    try:
        parser = build_parser(command)
    except ImportError as exc:
        print(f"seg-perception {command}: a dependency is missing: {exc}. "
              "Install the development set: pip install -r requirements/dev.txt", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.command:
        parser.print_help()
        return 1
    module = importlib.import_module(f"seg_perception.tools.{COMMANDS[args.command][0]}")
    from .support.common import ParameterError

    try:
        return int(module.run(args) or 0)
    except ParameterError as exc:
        print(f"seg-perception {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
