"""Segmentation ONNX files exported the ways other projects export them (not the project's own
contract): float NCHW normalised input and float logits, logits at 1/4 resolution, ids already
argmaxed (int64), NHWC float input, weights in an external .onnx.data file. Random weights: the
wrap's checks compare the wrapped graph with the original, not with the truth."""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F


class TorchvisionOut(nn.Module):
    """torchvision's segmentation models return {'out': logits}; exporters take the tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


class QuarterLogits(nn.Module):
    """An mmsegmentation-style head: logits at 1/4 of the input size."""

    def __init__(self, classes: int, argmax: bool = False, nhwc: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.head = nn.Conv2d(32, classes, 1)
        self.argmax, self.nhwc = argmax, nhwc

    def forward(self, x):
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        logits = self.head(self.stem(x))
        return logits.argmax(1) if self.argmax else logits


class FullResolution(QuarterLogits):
    def forward(self, x):
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        logits = self.head(self.stem(x))
        out = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out.argmax(1) if self.argmax else out


class ConstantReshape(QuarterLogits):
    """A head that reshapes through a constant shape, as exports with a fixed batch often do
    (flattening for a per-pixel layer): the graph runs at batch 1 only."""

    def __init__(self, classes: int) -> None:
        super().__init__(classes)
        self.pixel = nn.Conv1d(classes, classes, 1)  # the per-pixel layer between the reshapes

    def forward(self, x):
        logits = self.head(self.stem(x))
        c, h, w = logits.shape[1:]
        return self.pixel(logits.reshape(1, c, h * w)).reshape(1, c, h, w)


def export(module: nn.Module, path: str, height: int, width: int, nhwc: bool = False,
           dynamic_hw: bool = False, external: bool = False, seed: int = 0) -> str:
    torch.manual_seed(seed)
    for p in module.parameters():  # random, but not degenerate: a spread of classes
        nn.init.normal_(p, 0.0, 0.5)
    module.eval()
    shape = (1, height, width, 3) if nhwc else (1, 3, height, width)
    example = torch.randn(*shape)
    kwargs = {}
    if dynamic_hw:
        h, w = (1, 2) if nhwc else (2, 3)
        kwargs["dynamic_shapes"] = {"x": {h: torch.export.Dim("h", min=32, max=2048),
                                          w: torch.export.Dim("w", min=32, max=2048)}}
    program = torch.onnx.export(module, (example,), dynamo=True, opset_version=18,
                                input_names=["input"], output_names=["output"], **kwargs)
    program.save(path, external_data=external)
    return path


def torchvision_lraspp(path: str, classes: int = 19, height: int = 128, width: int = 256,
                       dynamic_hw: bool = True, external: bool = True) -> str:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    model = TorchvisionOut(lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=classes))
    return export(model, path, height, width, dynamic_hw=dynamic_hw, external=external)


if __name__ == "__main__":  # python test/foreign_models.py DIR: write them all to look at
    import sys

    d = sys.argv[1]
    os.makedirs(d, exist_ok=True)
    torchvision_lraspp(os.path.join(d, "lraspp_cityscapes.onnx"))
    export(QuarterLogits(19), os.path.join(d, "quarter.onnx"), 128, 256)
    export(FullResolution(19, argmax=True), os.path.join(d, "ids.onnx"), 128, 256)
    export(FullResolution(19, nhwc=True), os.path.join(d, "nhwc.onnx"), 128, 256, nhwc=True)
