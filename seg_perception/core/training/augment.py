"""Training samples: optional painted parking, then torchvision.transforms.v2 augmentation
applied jointly to image and label (random scale, crop, horizontal flip; colour on the image only).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from .data import IGNORE, LabelledSet
from .parking import paint_parking


def train_transforms(crop: Tuple[int, int], base_height: int,
                     scale: Tuple[float, float] = (0.6, 1.5), color: float = 0.3) -> v2.Compose:
    """Multi-scale random crop: the shorter side is resized to base_height x [scale range], then
    a crop of ``crop`` (h, w) is cut, padded with IGNORE labels where the image is smaller."""
    lo, hi = int(round(base_height * scale[0])), int(round(base_height * scale[1])) + 1
    steps = [
        v2.RandomResize(lo, hi, antialias=True),
        v2.RandomCrop(crop, pad_if_needed=True,
                      fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}),
        v2.RandomHorizontalFlip(0.5),
    ]
    if color > 0:
        steps.append(v2.ColorJitter(brightness=color, contrast=color, saturation=color))
    return v2.Compose(steps)


class SegmentationTrainSet(Dataset):
    """LabelledSet -> (uint8 image [3, h, w], int64 label [h, w]) training samples.

    Parking bays are painted with probability ``paint_parking_p`` before augmentation. The
    random generator is reseeded per epoch (``set_epoch``) so a resumed run sees the same
    sequence of samples it would have seen without the interruption.
    """

    def __init__(self, data: LabelledSet, transforms: v2.Compose, paint_parking_p: float = 0.0,
                 seed: int = 0) -> None:
        self.data = data
        self.transforms = transforms
        self.paint_parking_p = float(paint_parking_p)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def set_epoch(self, epoch: int) -> None:
        self.rng = np.random.default_rng([self.seed, epoch])
        torch.manual_seed(self.seed * 100003 + epoch)

    def __len__(self) -> int:
        return len(self.data)

    def sample(self, index: int, paint: Optional[bool] = None):
        image, label = self.data.images[index], self.data.labels[index]
        if paint if paint is not None else self.rng.random() < self.paint_parking_p:
            image, label, _ = paint_parking(image, label, self.rng)
        return image, label

    def __getitem__(self, index: int):
        image, label = self.sample(index)
        img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        lab = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(label)))
        img, lab = self.transforms(img, lab)
        return img.as_subclass(torch.Tensor), lab.as_subclass(torch.Tensor).long()
