"""CamVid's labels in Cityscapes' classes, with what a pretrained Cityscapes model knows.

CamVid says too little for a Cityscapes-class model in two ways: its classes are coarser (its
Car is also truck, bus and train; its Building also wall; its Bicyclist the rider and the bicycle
or motorcycle), and a part of every frame is unlabelled. A frozen model trained on Cityscapes
(the teacher: the pretrained weights the fine-tuning starts from) fills both in, once per frame
before training:

- a labelled pixel becomes the class the teacher finds likeliest among those its CamVid label
  may be (core/datasets.CAMVID_TO_CITYSCAPES): a partial label resolved by the teacher;
- an unlabelled pixel becomes the teacher's class where the teacher is sure enough
  (``min_confidence``, of its probability over the Cityscapes classes), else stays ignored.

Hard labels, not the teacher's soft probabilities: they go through the same painting (parking,
markings, pasted cars) and augmentation as CamVid's labels, at no cost per training step.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable, List, Sequence

import cv2
import numpy as np

from ..datasets import CAMVID_PARKING_CLASSES, CAMVID_TO_CITYSCAPES
from .data import IGNORE, LabelledSet

# (images [N, H, W, 3] uint8) -> probabilities [N, C, H, W] over the target classes
ProbabilityFn = Callable[[np.ndarray], np.ndarray]


def allowed_classes(target_names: Sequence[str]) -> np.ndarray:
    """[256, C] bool: for each CamVid-parking label id, the target classes it may be. IGNORE
    (and any id without a class) may be any target class but the painted parking."""
    index = {n: i for i, n in enumerate(target_names)}
    table = np.ones((256, len(target_names)), bool)
    if "parking" in index:
        table[:, index["parking"]] = False
    for camvid_id, (name, _) in enumerate(CAMVID_PARKING_CLASSES):
        table[camvid_id] = False
        for cs in CAMVID_TO_CITYSCAPES[name]:
            table[camvid_id, index[cs]] = True
    return table


def primary_class(target_names: Sequence[str]) -> np.ndarray:
    """[256] uint8: a CamVid-parking id's first target class (what painting makes of a pixel:
    Road -> road, Parking -> parking, a pasted Car -> car); IGNORE elsewhere."""
    index = {n: i for i, n in enumerate(target_names)}
    lut = np.full(256, IGNORE, np.uint8)
    for camvid_id, (name, _) in enumerate(CAMVID_PARKING_CLASSES):
        lut[camvid_id] = index[CAMVID_TO_CITYSCAPES[name][0]]
    return lut


def refine(label: np.ndarray, probs: np.ndarray, allowed: np.ndarray, min_confidence: float) -> np.ndarray:
    """One frame: CamVid-parking ``label`` [H, W] and the teacher's ``probs`` [C, H, W] -> target
    class ids [H, W] (IGNORE where an unlabelled pixel's teacher is unsure)."""
    mask = allowed[label]                                   # [H, W, C]
    p = np.moveaxis(probs, 0, -1)                           # [H, W, C]
    masked = np.where(mask, p, -1.0)
    out = masked.argmax(-1).astype(np.uint8)
    unlabelled = label == IGNORE
    if unlabelled.any():
        within = np.where(mask, p, 0.0).sum(-1)
        sure = masked.max(-1) >= min_confidence * np.maximum(within, 1e-12)
        out[unlabelled & ~sure] = IGNORE
    return out


def refine_set(data: LabelledSet, teacher: ProbabilityFn, target_names: Sequence[str],
               min_confidence: float = 0.7, batch: int = 2,
               progress: Callable[[int, int], None] = lambda done, total: None) -> List[np.ndarray]:
    """Every frame of ``data`` refined (see refine); the teacher runs on the frames as loaded."""
    allowed = allowed_classes(target_names)
    out: List[np.ndarray] = []
    for start in range(0, len(data), batch):
        images = np.stack(data.images[start:start + batch])
        probs = teacher(images)
        for label, p in zip(data.labels[start:start + batch], probs):
            if p.shape[1:] != label.shape:
                p = np.stack([cv2.resize(c, label.shape[::-1], interpolation=cv2.INTER_LINEAR) for c in p])
            out.append(refine(label, p, allowed, min_confidence))
        progress(min(start + batch, len(data)), len(data))
    return out


def cache_key(teacher_path: str, data: LabelledSet, min_confidence: float) -> str:
    """Names the refined labels of one teacher file, frame list, frame size and threshold."""
    from ..engine_cache import file_sha256

    h = hashlib.sha256()
    h.update(file_sha256(teacher_path).encode())
    h.update("\n".join(data.names).encode())
    h.update(repr((data.labels[0].shape if data.labels else None, round(min_confidence, 4))).encode())
    return h.hexdigest()[:16]


def cached_refined(path: str, data: LabelledSet, make: Callable[[], List[np.ndarray]]) -> List[np.ndarray]:
    """The refined labels from ``path`` (.npy), or made and written there (atomically)."""
    if os.path.isfile(path):
        stack = np.load(path)
        if len(stack) == len(data):
            return list(stack)
    labels = make()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npy"
    np.save(tmp, np.stack(labels))
    os.replace(tmp, path)
    return labels
