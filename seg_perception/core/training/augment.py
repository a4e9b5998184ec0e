"""Training samples: painted road markings (negatives) and parking bays with parked cars, then
camera and light augmentation on the image (gamma, exposure, white balance, blur, sensor noise,
JPEG), a random aspect-ratio change, and torchvision.transforms.v2 applied jointly to image and
label (random scale, crop, horizontal flip, colour jitter on the image only).

The photometric steps stand in for cameras and light the training frames do not have: the
CamVid test drive is at dusk (mean pixel 62 against 108 in training), other cars' cameras have
other white balance, optics, noise and compression.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from .data import IGNORE, LabelledSet
import cv2

from .markings import paint_road_markings
from .parking import CarCutout, car_cutouts, paint_parking


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


def photometric(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Camera and light changes on one HxWx3 uint8 RGB frame (labels unaffected); each step is
    drawn independently. ``strength`` 0 returns the frame unchanged."""
    if strength <= 0:
        return image
    img = image.astype(np.float32) / 255.0
    if rng.random() < 0.8 * strength:           # exposure and gamma: dusk to bright noon
        img = img * rng.uniform(0.45, 1.3)
        img = np.clip(img, 0, 1) ** rng.uniform(0.7, 1.8)
    if rng.random() < 0.5 * strength:           # white balance / colour cast per channel
        img = img * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    img = np.clip(img * 255.0, 0, 255)
    if rng.random() < 0.25 * strength:          # defocus or motion blur
        if rng.random() < 0.5:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.5))
        else:
            k = int(rng.integers(3, 8))
            kernel = np.zeros((k, k), np.float32)
            kernel[k // 2] = 1.0 / k
            img = cv2.filter2D(img, -1, kernel)
    if rng.random() < 0.3 * strength:           # sensor noise, stronger in the dark
        sigma = rng.uniform(2.0, 10.0)
        img = img + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.3 * strength:           # JPEG (CompressedImage topics, dashcams)
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY,
                                                        int(rng.integers(25, 90))])
        if ok:
            out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return out


def stretch_aspect(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                   limits: Tuple[float, float]) -> Tuple[np.ndarray, np.ndarray]:
    """Change the frame's aspect ratio by a random factor in ``limits`` (width only): other
    cameras, and wide frames stretched to the model input, change shapes this way."""
    lo, hi = limits
    if hi <= lo or (lo == 1.0 and hi == 1.0):
        return image, label
    factor = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    h, w = label.shape
    new_w = max(8, int(round(w * factor)))
    return (cv2.resize(image, (new_w, h), interpolation=cv2.INTER_LINEAR),
            cv2.resize(label, (new_w, h), interpolation=cv2.INTER_NEAREST))


class SegmentationTrainSet(Dataset):
    """LabelledSet -> (uint8 image [3, h, w], int64 label [h, w]) training samples.

    Per sample: road-marking negatives with probability ``paint_markings_p``, parking bays with
    ``paint_parking_p`` (an unmarked kerb lane instead with ``kerb_p``; parked cars cut from the
    training frames with ``car_p``), then the aspect change, the photometric steps and the
    torchvision transforms. The random generator is reseeded per epoch (``set_epoch``) so a
    resumed run sees the same sequence of samples it would have seen without the interruption.
    """

    def __init__(self, data: LabelledSet, transforms: v2.Compose, paint_parking_p: float = 0.0,
                 seed: int = 0, paint_markings_p: float = 0.0, kerb_p: float = 0.0,
                 car_p: float = 0.0, photometric_strength: float = 0.0,
                 aspect: Tuple[float, float] = (1.0, 1.0), targets: Optional[List[np.ndarray]] = None,
                 primary: Optional[np.ndarray] = None) -> None:
        """``targets``: each frame's labels in the model's classes when they are not the
        CamVid-parking ids of ``data`` (core/training/refine.py); painting still works on the
        CamVid labels, and what it changes goes into the target labels as ``primary`` (a
        256-entry table: CamVid-parking id -> target class) says."""
        self.data = data
        self.targets = targets
        self.primary = primary
        self.transforms = transforms
        self.paint_parking_p = float(paint_parking_p)
        self.paint_markings_p = float(paint_markings_p)
        self.kerb_p = float(kerb_p)
        self.car_p = float(car_p)
        self.photometric_strength = float(photometric_strength)
        self.aspect = tuple(aspect)
        self.cars: List[CarCutout] = car_cutouts(data.images, data.labels) if car_p > 0 else []
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def set_epoch(self, epoch: int) -> None:
        self.rng = np.random.default_rng([self.seed, epoch])
        torch.manual_seed(self.seed * 100003 + epoch)

    def __len__(self) -> int:
        return len(self.data)

    def sample(self, index: int, paint: Optional[bool] = None):
        """The painted frame (markings, bays) before augmentation, with its labels in the
        model's classes."""
        image, label = self.data.images[index], self.data.labels[index]
        original = label
        if self.paint_markings_p > 0 and self.rng.random() < self.paint_markings_p:
            image, label, _ = paint_road_markings(image, label, self.rng)
        if paint if paint is not None else self.rng.random() < self.paint_parking_p:
            image, label, _ = paint_parking(image, label, self.rng, cars=self.cars,
                                            kerb_p=self.kerb_p, car_p=self.car_p)
        if self.targets is None:
            return image, label
        target = self.targets[index]
        if label is not original:
            changed = label != original
            target = target.copy()
            target[changed] = self.primary[label[changed]]
        return image, target

    def __getitem__(self, index: int):
        image, label = self.sample(index)
        image, label = stretch_aspect(image, label, self.rng, self.aspect)
        image = photometric(image, self.rng, self.photometric_strength)
        img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        lab = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(label)))
        img, lab = self.transforms(img, lab)
        return img.as_subclass(torch.Tensor), lab.as_subclass(torch.Tensor).long()
