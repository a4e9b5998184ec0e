"""What a training run is told: the recipe, data, schedule and budget, as one dataclass that
the run directory's checkpoints and the exported model's metadata record. Needs no torch."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

from ..datasets import CITYSCAPES_PARKING
from ..model_info import ClassInfo, ModelInfo


@dataclasses.dataclass
class TrainConfig:
    data_root: str
    run_dir: str
    layout: str = "camvid"
    architecture: str = "lraspp_mobilenet_v3_large"
    # The model's classes: camvid_parking (CamVid's 11 and painted Parking) or cityscapes_parking
    # (Cityscapes' 19 and painted Parking; CamVid's labels refined with ``teacher``).
    classes: str = "camvid_parking"
    # A pretrained Cityscapes model (project checkpoint) that splits CamVid's coarse labels into
    # Cityscapes classes and labels what CamVid leaves unlabelled where it is sure enough
    # (core/training/refine.py): what Cityscapes taught, kept where CamVid says nothing or too little.
    teacher: Optional[str] = None
    teacher_min_confidence: float = 0.7
    train_splits: Tuple[str, ...] = ("train",)
    val_split: Optional[str] = "val"
    test_split: Optional[str] = "test"
    input_size: Tuple[int, int] = (360, 480)     # model input (h, w); frames stretched to it
    crop: Tuple[int, int] = (240, 320)
    scale: Tuple[float, float] = (0.6, 1.5)
    color_jitter: float = 0.3
    epochs: int = 150
    batch_size: int = 8
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_epochs: float = 2.0
    class_weighting: str = "isqrt"
    paint_parking: float = 0.3
    # Negatives and realism for the painted parking (issue #13): road paint that stays Road,
    # unmarked kerb lanes, parked cars cut from the training frames.
    paint_markings: float = 0.0
    kerb_parking: float = 0.0
    parked_cars: float = 0.0
    photometric: float = 0.0                     # camera/light augmentation strength (0 = off)
    aspect: Tuple[float, float] = (1.0, 1.0)     # random width stretch range
    init_from: Optional[str] = None              # start from these weights (.pt), not random
    ema: float = 0.0                             # EMA decay of the weights (0 = off)
    # torchvision's MobileNetV3 builds its BatchNorm with momentum 0.01: from scratch, the
    # running statistics then lag the fast-changing weights for thousands of steps and eval-mode
    # predictions collapse to one class. 0.1 (PyTorch's default) tracks them.
    bn_momentum: float = 0.1
    # BatchNorm layers kept in eval mode (their pretrained statistics): fine-tuning a pretrained
    # network with batches of a few crops, the batch statistics are too noisy to learn.
    freeze_bn: bool = False
    max_class_weight: float = 50.0
    threads: int = 1
    # "cpu" or a torch CUDA device ("cuda", "cuda:1"): on CUDA the steps run in bfloat16
    # autocast and ``workers`` processes prepare the augmented batches (the CPU is then the limit).
    device: str = "cpu"
    workers: int = 0
    val_every: int = 5
    log_every: int = 20
    max_steps: Optional[int] = None
    # Wall-clock budget for the optimisation steps (0 = none). When set, the schedule follows
    # whichever is further along, steps or time, so a run on a busy shared machine still decays
    # its learning rate to zero and ends on time (accumulated across --resume).
    time_budget_s: float = 0.0
    limit: Optional[int] = None                  # images per split (tests, quick trials)
    seed: int = 0

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


TRAIN_CLASSES = ("camvid_parking", CITYSCAPES_PARKING)


def camvid_parking_info(architecture: str, input_size: Tuple[int, int],
                        source: Optional[Dict[str, Any]] = None) -> ModelInfo:
    return model_info(architecture, input_size, "camvid_parking", source)


def model_info(architecture: str, input_size: Tuple[int, int], classes: str = "camvid_parking",
               source: Optional[Dict[str, Any]] = None) -> ModelInfo:
    """The metadata of a model trained for the class set ``classes`` (TRAIN_CLASSES)."""
    from ..class_sets import CLASS_SETS

    if classes not in TRAIN_CLASSES:
        raise ValueError(f"unknown training classes {classes!r}; known: {list(TRAIN_CLASSES)}")
    return ModelInfo(
        classes=tuple(ClassInfo(name, color) for name, color in CLASS_SETS[classes]),
        input_height=int(input_size[0]), input_width=int(input_size[1]), fit="stretch",
        architecture=architecture, source=dict(source or {}))
