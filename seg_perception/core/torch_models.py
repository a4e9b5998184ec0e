"""The networks as torch modules: the architectures a checkpoint may name (torchvision's
segmentation models, a tiny one for tests) and ClassMapModel, which folds the model contract
into the graph: uint8 RGB NHWC -> float, /255, mean/std normalisation, NCHW, network, argmax
over classes (and the per-pixel confidence), uint8 out. Needs torch: used by training, export and
the torch backend, never by the node's ONNX Runtime or TensorRT paths."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .model_info import ModelInfo

ARCHITECTURES: Dict[str, Callable[[int], nn.Module]] = {}


def _register(name: str):
    def deco(fn):
        ARCHITECTURES[name] = fn
        return fn
    return deco


@_register("lraspp_mobilenet_v3_large")
def _lraspp(num_classes: int) -> nn.Module:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)


@_register("deeplabv3_mobilenet_v3_large")
def _deeplab_mnv3(num_classes: int) -> nn.Module:
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                        num_classes=num_classes, aux_loss=False)


def _espnetv2(width: float):
    def build(num_classes: int) -> nn.Module:
        from .espnetv2 import ESPNetV2Seg

        return ESPNetV2Seg(num_classes=num_classes, width=width)
    return build


for _width in (1.0, 1.5, 2.0):  # the widths of the authors' Cityscapes weights (core/pretrained.py)
    ARCHITECTURES[f"espnetv2_s{_width:.1f}"] = _espnetv2(_width)


class TinyFCN(nn.Module):
    """A small fully convolutional network (a few thousand weights) for tests and smoke runs.

    A colour path (1x1 convolution of the normalised pixel) plus a context path (two strided 3x3
    convolutions, upsampled bilinearly) so that the exported graph has the same kinds of operators
    as the real models (Conv, Relu, Resize, Add, ArgMax) at a fraction of the export time.
    """

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.colour = nn.Conv2d(3, num_classes, 1)
        self.context = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        ctx = F.interpolate(self.context(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"out": self.colour(x) + ctx}


@_register("tiny_fcn")
def _tiny_fcn(num_classes: int) -> nn.Module:
    return TinyFCN(num_classes)


def build_model(architecture: str, num_classes: int) -> nn.Module:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[architecture](num_classes)


class ClassMapModel(nn.Module):
    """uint8 RGB [N, H, W, 3] -> uint8 class ids [N, H, W]: the graph contract of every backend."""

    def __init__(self, model: nn.Module, mean, std) -> None:
        super().__init__()
        self.model = model
        scale = torch.tensor(std, dtype=torch.float32) * 255.0
        self.register_buffer("mean", (torch.tensor(mean, dtype=torch.float32) * 255.0).view(1, 3, 1, 1))
        self.register_buffer("inv_std", (1.0 / scale).view(1, 3, 1, 1))

    def _normalised(self, images_u8: torch.Tensor) -> torch.Tensor:
        # Cast before the transpose: TensorRT accepts uint8 tensors only as network I/O feeding a
        # Cast, so the graph must not shuffle the uint8 input first.
        x = images_u8.float().permute(0, 3, 1, 2)
        return (x - self.mean) * self.inv_std

    def logits(self, images_u8: torch.Tensor) -> torch.Tensor:
        out = self.model(self._normalised(images_u8))
        return out["out"] if isinstance(out, dict) else out

    def _head_logits(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Logits at the head's own resolution for torchvision's segmentation models (LR-ASPP:
        1/8, DeepLabV3: 1/16), computed as their forward() does before its bilinear resize;
        None for other models."""
        from torchvision.models.segmentation._utils import _SimpleSegmentationModel
        from torchvision.models.segmentation.lraspp import LRASPP

        if isinstance(self.model, LRASPP):
            return self.model.classifier(self.model.backbone(x))
        if isinstance(self.model, _SimpleSegmentationModel):
            return self.model.classifier(self.model.backbone(x)["out"])
        return None

    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        return self.logits(images_u8).argmax(dim=1).to(torch.uint8)

    def with_confidence(self, images_u8: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(class ids, confidence) both uint8 [N, H, W]: confidence = round(255 x the largest
        softmax probability), as 1 / sum(exp(logit - max logit)) (no softmax tensor kept). The
        class ids are exactly forward()'s. For torchvision's models the probability is taken at
        the head's resolution and resized bilinearly with the logits: the same figure away from
        class boundaries at a 64th of the exponentials (docs/measurements.md)."""
        x = self._normalised(images_u8)
        head = self._head_logits(x)
        if head is None:
            logits = self.logits(images_u8)
            p_max = _max_probability(logits)
        else:
            size = x.shape[-2:]
            logits = F.interpolate(head, size=size, mode="bilinear", align_corners=False)
            p_max = F.interpolate(_max_probability(head).unsqueeze(1), size=size, mode="bilinear",
                                  align_corners=False).squeeze(1)
        ids = logits.argmax(dim=1).to(torch.uint8)
        return ids, torch.round(p_max * 255.0).to(torch.uint8)


def _max_probability(logits: torch.Tensor) -> torch.Tensor:
    top = logits.amax(dim=1, keepdim=True)
    return torch.reciprocal(torch.exp(logits - top).sum(dim=1))


class ConfidenceGraph(nn.Module):
    """The exported graph with both outputs (ONNX export needs a module whose forward it is)."""

    def __init__(self, wrapped: ClassMapModel) -> None:
        super().__init__()
        self.wrapped = wrapped

    def forward(self, images_u8: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.wrapped.with_confidence(images_u8)


def build_wrapped_model(info: ModelInfo) -> ClassMapModel:
    return ClassMapModel(build_model(info.architecture, info.num_classes), info.mean, info.std)
