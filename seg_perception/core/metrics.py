"""Segmentation metrics accumulated over a whole dataset (not averaged per frame)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np


class ConfusionMatrix:
    """Counts (ground truth, prediction) pairs; IoU and accuracy come from the totals."""

    def __init__(self, num_classes: int, ignore_index: Optional[int] = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), np.int64)

    def update(self, truth: np.ndarray, pred: np.ndarray) -> None:
        if truth.shape != pred.shape:
            raise ValueError(f"truth {truth.shape} and prediction {pred.shape} differ in shape")
        t = truth.reshape(-1).astype(np.int64)
        p = pred.reshape(-1).astype(np.int64)
        keep = (t >= 0) & (t < self.num_classes)
        if self.ignore_index is not None:
            keep &= t != self.ignore_index
        t, p = t[keep], p[keep]
        if p.size and (p.min() < 0 or p.max() >= self.num_classes):
            raise ValueError(f"prediction ids outside 0..{self.num_classes - 1}")
        self.matrix += np.bincount(t * self.num_classes + p,
                                   minlength=self.num_classes ** 2).reshape(self.num_classes, -1)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def summary(self, class_names: Sequence[str]) -> Dict[str, object]:
        iou = self.iou()
        return {
            "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(class_names, iou)},
            "miou": self.miou(),
            "pixel_accuracy": self.pixel_accuracy(),
            "confusion_matrix": self.matrix.tolist(),
            "class_names": list(class_names),
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
