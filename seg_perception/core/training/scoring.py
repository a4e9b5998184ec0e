"""Scoring a model on CamVid: its 11 classes, with Parking counted as Road. Needs only numpy,
so the reports score ONNX models without torch."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from ..datasets import CAMVID_CLASSES, CAMVID_PARKING_CLASSES, CITYSCAPES_TO_CAMVID
from ..metrics import ConfusionMatrix
from .data import IGNORE, NUM_CAMVID, PARKING, ROAD, LabelledSet

CAMVID_NAMES = [name for name, _ in CAMVID_CLASSES]


def camvid_lut(class_names: Sequence[str]) -> Optional[np.ndarray]:
    """[256] model class id -> CamVid-parking id, for a model whose classes are not those (None
    when they are): Cityscapes classes by CITYSCAPES_TO_CAMVID, a class without one -> IGNORE."""
    camvid = [n for n, _ in CAMVID_PARKING_CLASSES]
    if list(class_names) == camvid:
        return None
    lut = np.full(256, IGNORE, np.uint8)
    for i, name in enumerate(class_names):
        if name in CITYSCAPES_TO_CAMVID:
            lut[i] = camvid.index(CITYSCAPES_TO_CAMVID[name])
    return lut


def to_camvid_ids(ids: np.ndarray) -> np.ndarray:
    """Model class ids -> the 11 CamVid classes: Parking counts as Road, IGNORE stays."""
    out = ids.copy()
    out[out == PARKING] = ROAD
    return out


def evaluate_predictions(predict: Callable[[np.ndarray], np.ndarray], data: LabelledSet,
                         batch_size: int = 4) -> Dict[str, Any]:
    """Run ``predict`` (uint8 [N, H, W, 3] -> class ids [N, H, W]) over ``data`` and score it on
    the 11 CamVid classes with Parking counted as Road (in predictions and in truth)."""
    cm = ConfusionMatrix(NUM_CAMVID, extra_predictions=1)  # the column of a class CamVid lacks
    for start in range(0, len(data), batch_size):
        images = np.stack(data.images[start:start + batch_size])
        preds = predict(images)
        for pred, truth in zip(preds, data.labels[start:start + batch_size]):
            pred = to_camvid_ids(np.asarray(pred))
            pred[pred >= NUM_CAMVID] = NUM_CAMVID  # e.g. a background class: a miss
            cm.update(to_camvid_ids(truth), pred)
    summary = cm.summary(CAMVID_NAMES)
    summary["road_iou"] = summary["per_class_iou"]["Road"]
    summary["pedestrian_iou"] = summary["per_class_iou"]["Pedestrian"]
    summary["frames"] = len(data)
    return summary


def format_summary(s: Dict[str, Any]) -> str:
    pct = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"
    return f"mIoU {pct(s['miou'])} road {pct(s['road_iou'])} pedestrian {pct(s['pedestrian_iou'])}"
