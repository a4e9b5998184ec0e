"""Labelled image folders in CamVid or Cityscapes layout, loaded into memory as model class ids.

Every label map is converted once, at load time, to the model's class list
(CAMVID_PARKING_CLASSES: 11 CamVid classes, then Parking = 11) with IGNORE (255) for pixels
that have no class. Note the clash this resolves: in CamVid files id 11 means "Unlabelled",
in the model id 11 is Parking.

Frames are stretched to one working size at load time (the model input size by default), the
same way the node's "stretch" fit shows camera frames to the model.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..datasets import CAMVID_CLASSES, CAMVID_IGNORE_ID, CAMVID_PARKING_CLASSES

IGNORE = 255
LAYOUTS = ("camvid", "cityscapes")
CLASS_ID = {name: i for i, (name, _) in enumerate(CAMVID_PARKING_CLASSES)}
ROAD = CLASS_ID["Road"]
PARKING = CLASS_ID["Parking"]
NUM_CAMVID = len(CAMVID_CLASSES)

# CamVid layout: <root>/<split>/*.png with labels of the same name in <root>/<split>annot/.
CAMVID_SPLIT_DIRS = {"train": ("train", "trainannot"), "val": ("val", "valannot"),
                     "test": ("test", "testannot")}

# Cityscapes labelIds -> model class names (the usual CamVid-11 grouping; Cityscapes' own
# parking class keeps its name). Ids not listed (void, ground, rail track, tunnel...) are ignored.
CITYSCAPES_TO_CLASS = {
    7: "Road", 8: "Pavement", 9: "Parking", 11: "Building", 12: "Building", 13: "Fence",
    14: "Fence", 17: "Pole", 18: "Pole", 19: "SignSymbol", 20: "SignSymbol", 21: "Tree",
    22: "Tree", 23: "Sky", 24: "Pedestrian", 25: "Bicyclist", 26: "Car", 27: "Car", 28: "Car",
    29: "Car", 30: "Car", 31: "Car", 32: "Bicyclist", 33: "Bicyclist",
}


def camvid_lut() -> np.ndarray:
    lut = np.full(256, IGNORE, np.uint8)
    lut[:NUM_CAMVID] = np.arange(NUM_CAMVID)  # same ids, same order; 11 (Unlabelled) and up ignored
    assert CAMVID_IGNORE_ID == NUM_CAMVID
    return lut


def cityscapes_lut() -> np.ndarray:
    lut = np.full(256, IGNORE, np.uint8)
    for cs_id, name in CITYSCAPES_TO_CLASS.items():
        lut[cs_id] = CLASS_ID[name]
    return lut


@dataclasses.dataclass
class LabelledSet:
    """Images (HxWx3 uint8 RGB) and label maps (HxW uint8 model class ids, IGNORE = 255)."""

    images: List[np.ndarray]
    labels: List[np.ndarray]
    names: List[str]

    def __len__(self) -> int:
        return len(self.images)

    def __add__(self, other: "LabelledSet") -> "LabelledSet":
        return LabelledSet(self.images + other.images, self.labels + other.labels,
                           self.names + other.names)


def find_pairs(root: str, layout: str, split: str) -> List[Tuple[str, str]]:
    """(image path, label path) pairs of one split, sorted by name. Raises FileNotFoundError
    with what was expected when the folder does not have the layout's shape."""
    if layout == "camvid":
        if split not in CAMVID_SPLIT_DIRS:
            raise ValueError(f"unknown CamVid split {split!r}; known: {sorted(CAMVID_SPLIT_DIRS)}")
        img_dir, lab_dir = (os.path.join(root, d) for d in CAMVID_SPLIT_DIRS[split])
        images = sorted(glob.glob(os.path.join(img_dir, "*.png")))
        pairs = [(p, os.path.join(lab_dir, os.path.basename(p))) for p in images]
        expected = f"{img_dir}/*.png with labels of the same name in {lab_dir}/"
    elif layout == "cityscapes":
        img_dir = os.path.join(root, "leftImg8bit", split)
        images = sorted(glob.glob(os.path.join(img_dir, "*", "*_leftImg8bit.png")))
        pairs = []
        for p in images:
            city = os.path.basename(os.path.dirname(p))
            stem = os.path.basename(p)[:-len("_leftImg8bit.png")]
            pairs.append((p, os.path.join(root, "gtFine", split, city, stem + "_gtFine_labelIds.png")))
        expected = (f"{img_dir}/<city>/*_leftImg8bit.png with "
                    f"{root}/gtFine/{split}/<city>/*_gtFine_labelIds.png")
    else:
        raise ValueError(f"unknown layout {layout!r}; known: {list(LAYOUTS)}")
    if not pairs:
        raise FileNotFoundError(f"no {layout} {split} images found: expected {expected}")
    missing = [lab for _, lab in pairs if not os.path.isfile(lab)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} label files missing, e.g. {missing[0]}")
    return pairs


def parse_split(text: str) -> Tuple[str, slice]:
    """"val" -> ("val", all frames); "val[:76]" / "val[76:]" -> a contiguous part of the split in
    name order, so a split can be shared between training and a held-back check."""
    text = text.strip()
    if "[" not in text:
        return text, slice(None)
    name, rest = text.split("[", 1)
    if not rest.endswith("]") or rest.count(":") != 1:
        raise ValueError(f"bad split {text!r}: expected NAME or NAME[START:END]")
    start, end = rest[:-1].split(":")
    try:
        return name, slice(int(start) if start else None, int(end) if end else None)
    except ValueError:
        raise ValueError(f"bad split {text!r}: START and END must be integers") from None


def has_split(root: str, layout: str, split: str) -> bool:
    try:
        find_pairs(root, layout, parse_split(split)[0])
        return True
    except (FileNotFoundError, ValueError):
        return False


def load_split(root: str, layout: str, split: str, size: Optional[Tuple[int, int]] = None,
               limit: Optional[int] = None) -> LabelledSet:
    """Load one split into memory. ``size`` = (height, width) to stretch every frame to
    (labels by nearest neighbour); None keeps the files' size. ``split`` may name a part of a
    split, e.g. "val[:76]" (see parse_split)."""
    name, part = parse_split(split)
    pairs = find_pairs(root, layout, name)[part][:limit]
    if not pairs:
        raise ValueError(f"split {split!r} selects no frames")
    lut = camvid_lut() if layout == "camvid" else cityscapes_lut()
    images, labels = [], []
    for img_path, lab_path in pairs:
        bgr = cv2.imread(img_path, cv2.IMREAD_COLOR)
        lab = cv2.imread(lab_path, cv2.IMREAD_UNCHANGED)
        if bgr is None or lab is None:
            raise OSError(f"cannot read {img_path if bgr is None else lab_path}")
        if lab.ndim == 3:  # some tools save label maps as 3 equal channels
            lab = lab[..., 0]
        if lab.shape != bgr.shape[:2]:
            raise ValueError(f"{lab_path} is {lab.shape[::-1]}, its image {bgr.shape[1::-1]}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        lab = lut[lab]
        if size is not None and rgb.shape[:2] != tuple(size):
            h, w = size
            shrinking = h < rgb.shape[0] or w < rgb.shape[1]
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
            lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)
        images.append(np.ascontiguousarray(rgb))
        labels.append(np.ascontiguousarray(lab))
    return LabelledSet(images, labels, [os.path.basename(p) for p, _ in pairs])


def class_frequencies(labels: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """Share of labelled pixels per class (IGNORE excluded)."""
    counts = np.zeros(num_classes, np.int64)
    for lab in labels:
        counts += np.bincount(lab.reshape(-1), minlength=256)[:num_classes]
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)
