"""Where two models (or one model at two settings) disagree on the same frames: what
compare-bags counts. Per mask (road, pedestrian, parking: the masks the node publishes, with
their minimum confidences) and per class both models name, the pixels each one claims and the
pixels both claim; per frame the share of pixels the two put in different masks; where in the
image that happens (a small heat map); each model's mask shares and mean confidence.

Counts, not ratios, are kept, so drives add up to the fleet (``combine``).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

MASKS = ("road", "pedestrian", "parking")
# A frame counts for a mask or class when one of the two models gives it this share of the frame.
MIN_SHARE = 0.001
# ... and as a frame where they disagree on it when their IoU there is below this.
DISAGREE_IOU = 0.5
HEAT_SHAPE = (36, 64)  # rows, columns of the heat map (16:9)


def mask_index(masks: Dict[str, np.ndarray]) -> np.ndarray:
    """HxW uint8: 0 in no mask, 1 + the mask's position in MASKS (a pixel in two masks takes the
    later one: pedestrian over road, parking over both)."""
    first = next(iter(masks.values()))
    out = np.zeros(first.shape[:2], np.uint8)
    for i, name in enumerate(MASKS):
        if name in masks:
            out[masks[name] > 0] = i + 1
    return out


@dataclasses.dataclass(frozen=True)
class FrameDisagreement:
    t: float
    camera: str
    disagreement: float                 # share of pixels in different masks
    mask_iou: Dict[str, Optional[float]]  # None where neither model shows the mask
    shares_a: Dict[str, float]
    shares_b: Dict[str, float]
    confidence_a: Optional[float]
    confidence_b: Optional[float]

    def to_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)


class Disagreement:
    """The counts over frames. ``classes_a``/``classes_b``: the two models' class names; the
    classes both name (case-insensitive) are compared class by class."""

    def __init__(self, classes_a: Sequence[str], classes_b: Sequence[str]) -> None:
        lower_b = {n.lower(): i for i, n in enumerate(classes_b)}
        self.shared = [n for n in classes_a if n.lower() in lower_b]
        # class id -> position in ``shared`` (255: a class the other model does not name)
        self.lut_a = np.full(256, 255, np.uint8)
        self.lut_b = np.full(256, 255, np.uint8)
        for k, name in enumerate(self.shared):
            self.lut_a[list(classes_a).index(name)] = k
            self.lut_b[lower_b[name.lower()]] = k
        self.same_classes = [n.lower() for n in classes_a] == [n.lower() for n in classes_b]
        n = len(MASKS) + len(self.shared)
        self.a = np.zeros(n, np.int64)        # pixels model A gives the mask / class
        self.b = np.zeros(n, np.int64)
        self.both = np.zeros(n, np.int64)
        self.seen = np.zeros(n, np.int64)     # frames where one of them shows it
        self.split = np.zeros(n, np.int64)    # of those, frames with IoU < DISAGREE_IOU
        self.pixels = 0
        self.frames = 0
        self.disagree_pixels = 0
        self.conf_sum = np.zeros(2)
        self.conf_frames = np.zeros(2, np.int64)
        self.heat = np.zeros(HEAT_SHAPE, np.float64)

    @property
    def names(self) -> List[str]:
        return list(MASKS) + self.shared

    def add(self, masks_a: Dict[str, np.ndarray], masks_b: Dict[str, np.ndarray], labels_a: np.ndarray,
            labels_b: np.ndarray, confidence_a: Optional[np.ndarray] = None,
            confidence_b: Optional[np.ndarray] = None, t: float = 0.0, camera: str = "") -> FrameDisagreement:
        """One frame: each model's masks (HxW, 255 in the mask) and class map (HxW ids) at the
        frame's size, and its confidence map (any size, uint8) when it has one."""
        import cv2

        ia, ib = mask_index(masks_a), mask_index(masks_b)
        ca, cb = self.lut_a[labels_a], self.lut_b[labels_b]
        px = ia.size
        row_a = np.concatenate([np.bincount(ia.ravel(), minlength=len(MASKS) + 1)[1:],
                                np.bincount(ca.ravel(), minlength=256)[:len(self.shared)]])
        row_b = np.concatenate([np.bincount(ib.ravel(), minlength=len(MASKS) + 1)[1:],
                                np.bincount(cb.ravel(), minlength=256)[:len(self.shared)]])
        same_mask = ia == ib
        same_class = ca == cb
        row_both = np.concatenate([np.bincount(ia[same_mask].ravel(), minlength=len(MASKS) + 1)[1:],
                                   np.bincount(ca[same_class].ravel(), minlength=256)[:len(self.shared)]])
        union = row_a + row_b - row_both
        seen = np.maximum(row_a, row_b) >= MIN_SHARE * px
        iou = np.where(union > 0, row_both / np.maximum(union, 1), 1.0)
        self.a += row_a
        self.b += row_b
        self.both += row_both
        self.seen += seen
        self.split += seen & (iou < DISAGREE_IOU)
        differ = ~same_mask
        n_differ = int(differ.sum())
        self.pixels += px
        self.frames += 1
        self.disagree_pixels += n_differ
        self.heat += cv2.resize(differ.astype(np.float32), HEAT_SHAPE[::-1], interpolation=cv2.INTER_AREA)
        means = []
        for k, conf in enumerate((confidence_a, confidence_b)):
            m = None if conf is None else float(conf.mean()) / 255.0
            if m is not None:
                self.conf_sum[k] += m
                self.conf_frames[k] += 1
            means.append(m)
        k_masks = len(MASKS)
        return FrameDisagreement(
            t, camera, n_differ / px,
            {g: (float(iou[i]) if seen[i] else None) for i, g in enumerate(MASKS)},
            {g: float(row_a[i]) / px for i, g in enumerate(MASKS)},
            {g: float(row_b[i]) / px for i, g in enumerate(MASKS)}, means[0], means[1])

    # -- counts, and what they say
    def counts(self) -> Dict[str, object]:
        return {"names": self.names, "a": self.a.tolist(), "b": self.b.tolist(), "both": self.both.tolist(),
                "seen": self.seen.tolist(), "split": self.split.tolist(), "pixels": self.pixels,
                "frames": self.frames, "disagree_pixels": self.disagree_pixels,
                "conf_sum": self.conf_sum.tolist(), "conf_frames": self.conf_frames.tolist(),
                "heat": self.heat.tolist(), "shared_classes": self.shared, "same_classes": self.same_classes}


def combine(counts: Iterable[Dict[str, object]]) -> Optional[Dict[str, object]]:
    """The counts of several drives as one (the fleet's); None for none."""
    counts = list(counts)
    if not counts:
        return None
    out = dict(counts[0])
    names = out["names"]
    for c in counts[1:]:
        if c["names"] != names:
            raise ValueError("drives compared with different class lists cannot be added up")
        for key in ("a", "b", "both", "seen", "split", "conf_sum", "conf_frames"):
            out[key] = [x + y for x, y in zip(out[key], c[key])]
        for key in ("pixels", "frames", "disagree_pixels"):
            out[key] = out[key] + c[key]
        out["heat"] = (np.asarray(out["heat"]) + np.asarray(c["heat"])).tolist()
    return out


def summary(counts: Dict[str, object]) -> Dict[str, object]:
    """Per mask and shared class: IoU of the two models' pixels, the share of frames (where one
    shows it) they disagree on, each model's share of the pixels; the share of pixels in
    different masks; each model's mean confidence; the heat map as shares (0..1)."""
    a, b, both = (np.asarray(counts[k], np.float64) for k in ("a", "b", "both"))
    seen, split = np.asarray(counts["seen"]), np.asarray(counts["split"])
    px = max(1, counts["pixels"])
    union = a + b - both
    rows = {}
    for i, name in enumerate(counts["names"]):
        rows[name] = {
            "kind": "mask" if i < len(MASKS) else "class",
            "iou": float(both[i] / union[i]) if union[i] > 0 else None,
            "frames_seen": int(seen[i]),
            "frames_disagree": float(split[i] / seen[i]) if seen[i] else None,
            "share_a": float(a[i] / px), "share_b": float(b[i] / px),
        }
    conf = [counts["conf_sum"][k] / counts["conf_frames"][k] if counts["conf_frames"][k] else None for k in (0, 1)]
    frames = max(1, counts["frames"])
    return {"frames": counts["frames"], "disagreement": counts["disagree_pixels"] / px, "rows": rows,
            "mean_confidence_a": conf[0], "mean_confidence_b": conf[1],
            "heat": (np.asarray(counts["heat"]) / frames).tolist(),
            "shared_classes": counts["shared_classes"], "same_classes": counts["same_classes"]}

