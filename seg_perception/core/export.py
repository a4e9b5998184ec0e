"""Model definitions (torchvision) and ONNX export. Needs torch: used by training, export and the
torch backend, never by the node's ONNX Runtime or TensorRT paths.

The exported graph folds the whole contract in: uint8 RGB NHWC -> float, /255, mean/std
normalisation, NCHW, network, argmax over classes, uint8. Every backend therefore shares the same
pre- and post-processing, and only an HxW uint8 map leaves the device.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional

import torch
from torch import nn

from .model_info import METADATA_KEY, ModelInfo

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


def build_model(architecture: str, num_classes: int) -> nn.Module:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[architecture](num_classes)


class SegmentationLogits(nn.Module):
    """Normalised float NCHW -> logits NCHW (torchvision models return a dict)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out["out"] if isinstance(out, dict) else out


class ClassMapModel(nn.Module):
    """uint8 RGB [N, H, W, 3] -> uint8 class ids [N, H, W]: the graph contract of every backend."""

    def __init__(self, model: nn.Module, mean, std) -> None:
        super().__init__()
        self.model = model
        scale = torch.tensor(std, dtype=torch.float32) * 255.0
        self.register_buffer("mean", (torch.tensor(mean, dtype=torch.float32) * 255.0).view(1, 3, 1, 1))
        self.register_buffer("inv_std", (1.0 / scale).view(1, 3, 1, 1))

    def logits(self, images_u8: torch.Tensor) -> torch.Tensor:
        x = images_u8.permute(0, 3, 1, 2).float()
        x = (x - self.mean) * self.inv_std
        out = self.model(x)
        return out["out"] if isinstance(out, dict) else out

    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        return self.logits(images_u8).argmax(dim=1).to(torch.uint8)


def build_wrapped_model(info: ModelInfo) -> ClassMapModel:
    return ClassMapModel(build_model(info.architecture, info.num_classes), info.mean, info.std)


def save_checkpoint(wrapped: ClassMapModel, info: ModelInfo, path: str, **extra) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({"metadata": info.to_dict(), "state_dict": wrapped.model.state_dict(), **extra}, path)


def export_onnx(wrapped: ClassMapModel, info: ModelInfo, path: str, opset: int = 18,
                dynamic_batch: bool = True) -> str:
    """Write ``path`` (.onnx) with the graph contract and the metadata embedded."""
    import onnx

    wrapped = wrapped.eval().cpu()
    # Batch 2 in the example: torch.export specialises a size-1 dimension to a constant.
    example = torch.zeros(2 if dynamic_batch else 1, info.input_height, info.input_width, 3,
                          dtype=torch.uint8)
    kwargs = {}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = {"images_u8": {0: torch.export.Dim.DYNAMIC}}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    program = torch.onnx.export(wrapped, (example,), dynamo=True, opset_version=opset,
                                input_names=[info.input_name], output_names=[info.output_name],
                                external_data=False, optimize=True, verbose=False, **kwargs)
    program.save(path)
    model = onnx.load(path)
    set_onnx_metadata(model, info)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def set_onnx_metadata(model, info: ModelInfo) -> None:
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = info.to_json()


def load_checkpoint(path: str, map_location: Optional[str] = "cpu"):
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    info = ModelInfo.from_dict(ckpt["metadata"])
    wrapped = build_wrapped_model(info)
    wrapped.model.load_state_dict(ckpt["state_dict"])
    return wrapped.eval(), info
