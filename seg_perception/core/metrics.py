"""Segmentation metrics accumulated over a whole dataset (not averaged per frame).

Every number comes from one confusion matrix of pixel counts summed over all frames: a class's
IoU is its true positives over the union of its truth and prediction pixels in the whole
dataset, so a frame where a class covers 3 pixels weighs as little as those 3 pixels.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np


class ConfusionMatrix:
    """Counts (ground truth, prediction) pairs; IoU and accuracy come from the totals.

    Rows are the ``num_classes`` scored classes (truth). Columns are the same classes followed
    by ``extra_predictions`` columns for predictions that are no scored class (e.g. a model class
    the dataset cannot label): such a pixel is a miss for its truth class and a hit for nobody.
    """

    def __init__(self, num_classes: int, ignore_index: Optional[int] = None,
                 extra_predictions: int = 0) -> None:
        if num_classes < 1 or extra_predictions < 0:
            raise ValueError(f"need num_classes >= 1 and extra_predictions >= 0, got "
                             f"{num_classes}, {extra_predictions}")
        self.num_classes = num_classes
        self.num_predictions = num_classes + extra_predictions
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, self.num_predictions), np.int64)

    def update(self, truth: np.ndarray, pred: np.ndarray) -> None:
        """Add one frame. Truth ids outside 0..num_classes-1 (and ``ignore_index``) are not
        scored; prediction ids must be valid columns."""
        if truth.shape != pred.shape:
            raise ValueError(f"truth {truth.shape} and prediction {pred.shape} differ in shape")
        t = truth.reshape(-1).astype(np.int64)
        p = pred.reshape(-1).astype(np.int64)
        keep = (t >= 0) & (t < self.num_classes)
        if self.ignore_index is not None:
            keep &= t != self.ignore_index
        t, p = t[keep], p[keep]
        if p.size and (p.min() < 0 or p.max() >= self.num_predictions):
            raise ValueError(f"prediction ids outside 0..{self.num_predictions - 1}")
        counts = np.bincount(t * self.num_predictions + p, minlength=self.num_classes * self.num_predictions)
        self.matrix += counts.reshape(self.num_classes, self.num_predictions)

    def merge(self, other: "ConfusionMatrix") -> None:
        if other.matrix.shape != self.matrix.shape:
            raise ValueError(f"cannot merge a {other.matrix.shape} matrix into {self.matrix.shape}")
        self.matrix += other.matrix

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both truth and prediction."""
        tp = np.diag(self.matrix[:, :self.num_classes]).astype(np.float64)
        union = self.matrix[:, :self.num_classes].sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        """Mean of the per-class IoUs of the classes present in truth or prediction."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def group_iou(self, ids: Iterable[int]) -> float:
        """IoU of a mask made of several classes (e.g. the road mask = Road): truth pixels of
        any class in ``ids`` against predictions of any class in ``ids``. NaN when both empty."""
        ids = sorted(set(int(i) for i in ids))
        if not ids:
            return float("nan")
        if ids[0] < 0 or ids[-1] >= self.num_classes:
            raise ValueError(f"class ids {ids} outside 0..{self.num_classes - 1}")
        inter = self.matrix[np.ix_(ids, ids)].sum()
        union = self.matrix[ids, :].sum() + self.matrix[:, ids].sum() - inter
        return float(inter / union) if union else float("nan")

    def recall_matrix(self) -> np.ndarray:
        """Rows normalised to sum 1 (share of each truth class predicted as each column); rows
        without any truth pixel are all zero."""
        rows = self.matrix.sum(1, keepdims=True).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(rows > 0, self.matrix / np.maximum(rows, 1), 0.0)

    def summary(self, class_names: Sequence[str],
                extra_names: Sequence[str] = ()) -> Dict[str, object]:
        iou = self.iou()
        if len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
        return {
            "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(class_names, iou)},
            "miou": self.miou(),
            "pixel_accuracy": self.pixel_accuracy(),
            "confusion_matrix": self.matrix.tolist(),
            "class_names": list(class_names),
            "prediction_names": list(class_names) + list(extra_names),
        }


def binary_iou(truth: np.ndarray, pred: np.ndarray) -> float:
    """IoU of two boolean masks; NaN when both are empty."""
    inter = np.logical_and(truth, pred).sum()
    union = np.logical_or(truth, pred).sum()
    return float(inter / union) if union else float("nan")


def remap(labels: np.ndarray, table: List[int]) -> np.ndarray:
    """Map ids through a lookup table (e.g. model classes -> dataset classes)."""
    lut = np.asarray(table, dtype=np.int64)
    return lut[labels]
