"""`seg-perception train`: train a segmentation model on a labelled folder (issue #6).

Example (the shipped default model; see docs/model_card.md for the exact recipe):
    seg-perception train --data ../shared/data/camvid --name camvid_parking --epochs 150 \\
        --export runs/camvid_parking/camvid_parking_lraspp.onnx
Checkpoints, log and exports go to ./runs/<name>/ (gitignored); --resume continues from
runs/<name>/last.pt after an interruption.
"""

from __future__ import annotations

import argparse
import json
import os

from .support.common import size_argument


_size = size_argument("HxW")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options in four groups; defaults are TrainConfig's."""
    from ..core.training.config import TrainConfig

    d = TrainConfig(data_root="", run_dir="")
    _data_arguments(p.add_argument_group("data"), d)
    _schedule_arguments(p.add_argument_group("model and schedule"), d)
    _augmentation_arguments(p.add_argument_group("augmentation"), d)
    _run_arguments(p.add_argument_group("run"), d)


def _data_arguments(g, d) -> None:
    g.add_argument("--data", required=True, help="dataset root (e.g. ../shared/data/camvid)")
    g.add_argument("--layout", choices=["camvid", "cityscapes"], default=d.layout,
                   help="folder layout: camvid (train/ trainannot/ ...) or cityscapes "
                        "(leftImg8bit/<split>/<city>/, gtFine/<split>/<city>/)")
    g.add_argument("--train-splits", default="train",
                   help="comma-separated training splits (e.g. train,val)")
    g.add_argument("--val-split", default=d.val_split, help="validation split ('' for none)")
    g.add_argument("--test-split", default=d.test_split,
                   help="split scored once at the end and recorded in the export ('' for none)")
    g.add_argument("--limit", type=int, default=d.limit, help="use only the first N frames per split")


def _schedule_arguments(g, d) -> None:
    g.add_argument("--architecture", default=d.architecture,
                   help="model from core.torch_models.ARCHITECTURES")
    g.add_argument("--classes", choices=["camvid_parking", "cityscapes_parking"], default=d.classes,
                   help="the model's classes: CamVid's 11 + Parking, or Cityscapes' 19 + Parking "
                        "(needs --teacher)")
    g.add_argument("--teacher", default=d.teacher, metavar="PATH.pt",
                   help="a pretrained Cityscapes model (project checkpoint, e.g. from "
                        "`seg-perception import-espnetv2`) that splits CamVid's coarse labels into "
                        "Cityscapes classes and labels what CamVid leaves unlabelled")
    g.add_argument("--teacher-min-confidence", type=float, default=d.teacher_min_confidence,
                   help="an unlabelled pixel takes the teacher's class only this sure (0.7)")
    g.add_argument("--freeze-bn", action="store_true",
                   help="keep BatchNorm statistics as pretrained (small batches of a pretrained net)")
    g.add_argument("--max-class-weight", type=float, default=d.max_class_weight,
                   help="cap of a class's loss weight (rare classes)")
    g.add_argument("--input-size", type=_size, default=d.input_size,
                   help="model input HxW (frames are stretched to it)")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--optimizer", choices=["adamw", "sgd"], default=d.optimizer)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="decoupled weight decay for adamw (use about 1e-4 with sgd)")
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    g.add_argument("--class-weighting", choices=["isqrt", "median", "enet", "none"],
                   default=d.class_weighting)
    g.add_argument("--init-from", default=d.init_from, metavar="PATH.pt",
                   help="start from these weights (e.g. the shipped model) instead of random")
    g.add_argument("--ema", type=float, default=d.ema, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999) and "
                        "validate/export it")
    g.add_argument("--bn-momentum", type=float, default=d.bn_momentum,
                   help="BatchNorm running-statistics momentum while training")
    g.add_argument("--time-budget", type=float, default=0.0, metavar="MINUTES",
                   help="end training after this much optimisation time; the LR schedule then "
                        "follows time or steps, whichever is further (0 = epochs only)")
    g.add_argument("--max-steps", type=int, default=d.max_steps, help="stop after N steps (tests)")
    g.add_argument("--seed", type=int, default=d.seed)


def _augmentation_arguments(g, d) -> None:
    g.add_argument("--crop", type=_size, default=d.crop, help="training crop HxW")
    g.add_argument("--scale", type=float, nargs=2, default=d.scale, metavar=("MIN", "MAX"),
                   help="random rescale range relative to the input height")
    g.add_argument("--color-jitter", type=float, default=d.color_jitter)
    g.add_argument("--paint-parking", type=float, default=d.paint_parking, metavar="P",
                   help="probability of painting parking bays onto a training frame")
    g.add_argument("--paint-markings", type=float, default=d.paint_markings, metavar="P",
                   help="probability of painting road markings that stay Road (lane lines, "
                        "zig-zags, crossings, arrows, tram rails): negatives for parking")
    g.add_argument("--kerb-parking", type=float, default=d.kerb_parking, metavar="P",
                   help="share of painted parking that is an unmarked lane along a kerb")
    g.add_argument("--parked-cars", type=float, default=d.parked_cars, metavar="P",
                   help="probability of a parked car (cut from the training frames) per bay")
    g.add_argument("--photometric", type=float, default=d.photometric, metavar="S",
                   help="strength of camera/light augmentation: exposure, gamma, white balance, "
                        "blur, noise, JPEG (0 = off, 1 = the documented recipe)")
    g.add_argument("--aspect", type=float, nargs=2, default=d.aspect, metavar=("MIN", "MAX"),
                   help="random width stretch range (other cameras' aspect ratios)")


def _run_arguments(g, d) -> None:
    g.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    g.add_argument("--device", default=d.device,
                   help="cpu, or a CUDA device (cuda, cuda:1): steps in bfloat16 autocast")
    g.add_argument("--workers", type=int, default=d.workers,
                   help="processes preparing augmented batches (0 = in the training process); "
                        "on a GPU the augmentation is the limit, give it the CPU cores")
    g.add_argument("--val-every", type=int, default=d.val_every, help="validate every N epochs")
    g.add_argument("--log-every", type=int, default=d.log_every, help="progress line every N steps")
    g.add_argument("--name", default="train", help="run name: the run directory is ./runs/<name>")
    g.add_argument("--run-dir", default=None, help="run directory (overrides --name)")
    g.add_argument("--resume", action="store_true", help="continue from <run-dir>/last.pt")
    g.add_argument("--export", default=None, metavar="PATH.onnx",
                   help="export the best model to this ONNX file (and PATH.pt beside it)")


def config_from_args(args):
    from ..core.training.config import TrainConfig

    run_dir = args.run_dir or os.path.join("runs", args.name)
    splits = tuple(s for s in args.train_splits.split(",") if s)
    return TrainConfig(
        data_root=args.data, run_dir=run_dir, layout=args.layout, architecture=args.architecture,
        train_splits=splits, val_split=args.val_split or None, test_split=args.test_split or None,
        input_size=tuple(args.input_size), crop=tuple(args.crop), scale=tuple(args.scale),
        color_jitter=args.color_jitter, epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs, class_weighting=args.class_weighting,
        paint_parking=args.paint_parking, paint_markings=args.paint_markings,
        kerb_parking=args.kerb_parking, parked_cars=args.parked_cars,
        photometric=args.photometric, aspect=tuple(args.aspect), init_from=args.init_from,
        ema=args.ema, bn_momentum=args.bn_momentum, threads=args.threads, device=args.device,
        classes=args.classes, teacher=args.teacher, teacher_min_confidence=args.teacher_min_confidence,
        freeze_bn=args.freeze_bn, max_class_weight=args.max_class_weight,
        workers=args.workers, val_every=args.val_every,
        log_every=args.log_every, max_steps=args.max_steps, limit=args.limit, seed=args.seed,
        time_budget_s=60.0 * args.time_budget)


def run(args) -> int:
    import logging

    from ..core.torch_models import ARCHITECTURES

    logging.getLogger("onnx_ir").setLevel(logging.WARNING)  # one line per folded initializer
    from ..core.training.loop import Trainer

    if args.architecture not in ARCHITECTURES:
        print(f"unknown architecture {args.architecture!r}; known: {sorted(ARCHITECTURES)}")
        return 2
    for flag in ("paint_parking", "paint_markings", "kerb_parking", "parked_cars"):
        value = getattr(args, flag)
        if not 0.0 <= value <= 1.0:
            print(f"--{flag.replace('_', '-')} must be a probability in [0, 1], got {value}")
            return 2
    if not 0.0 <= args.ema < 1.0:
        print(f"--ema must be a decay in [0, 1), got {args.ema}")
        return 2
    if args.workers < 0:
        print(f"--workers must be >= 0, got {args.workers}")
        return 2
    for flag in ("init_from", "teacher"):
        path = getattr(args, flag)
        if path and not os.path.isfile(path):
            print(f"--{flag.replace('_', '-')}: no such checkpoint {path}")
            return 2
    cfg = config_from_args(args)
    if os.path.abspath(cfg.run_dir).startswith(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))):
        print(f"refusing to write the run directory {cfg.run_dir} inside the package")
        return 2
    trainer = Trainer(cfg, resume=args.resume)
    try:
        result = trainer.run()
    except (FileNotFoundError, ValueError) as exc:
        print(f"seg-perception train: {exc}")
        return 2
    test = trainer.evaluate_test()
    summary = {"checkpoint": result["checkpoint"], "epoch": result["epoch"],
               "best_val_miou": result["best_val_miou"]}
    if test is not None:
        summary["test"] = {k: test[k] for k in ("miou", "road_iou", "pedestrian_iou",
                                                "per_class_iou", "frames")}
    if args.export:
        summary["exported"] = list(trainer.export(args.export, result, test))
    with open(os.path.join(cfg.run_dir, "result.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return 0
