"""ESPNetv2 for semantic segmentation (S. Mehta, M. Rastegari, L. Shapiro, H. Hajishirzi,
"ESPNetv2: A Light-weight, Power Efficient, and General Purpose Convolutional Neural Network",
CVPR 2019), written for this project so that the authors' Cityscapes weights (github
sacmehta/EdgeNets, MIT licence) load with ``strict=True``.

The parameter paths (``base_net.level3.0.spp_dw.2.conv.weight``, ``bu_dec_l1.merge_layer.2.cbr.0
.weight``, ...) are dictated by those weights, so the attribute names that make up the paths follow
the authors' layout; everything else is our own.

Layout (channels at width s = 2.0, strides relative to the input):

- ``base_net``, the ImageNet-pretrained encoder (EESPNet without its level 5 and classifier):
  level1 3x3 conv /2 (32), level2_0 strided EESP /4 (128), level3_0 /8 (256) + 3 EESP blocks,
  level4_0 /16 (512) + 7 EESP blocks. Every strided unit also sees the input image, average
  pooled to its resolution ("input reinforcement").
- The segmentation head: ``bu_dec_l1`` (efficient pyramid pooling at 1/16), then three times:
  upsample x2, add a gated projection of the encoder's feature at that scale
  (``merge_enc_dec_l2/3/4``), BN + PReLU (``bu_br_l2/3/4``), pyramid pooling (``bu_dec_l2/3/4``).
  Decoder channels 64, 48, 32, then the classes at 1/2; a bilinear resize to the input size ends it.
"""

from __future__ import annotations

import math
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

# Output channels of levels 1-4 for each width s (the reference's table; level 5 is unused here).
WIDTH_CHANNELS: Dict[float, Tuple[int, int, int, int]] = {
    0.5: (16, 32, 64, 128),
    1.0: (32, 64, 128, 256),
    1.25: (32, 80, 160, 320),
    1.5: (32, 96, 192, 384),
    2.0: (32, 128, 256, 512),
}
# Tensors in the state dict, whatever the width or the number of classes.
STATE_DICT_KEYS = 526

_BRANCHES = 4                       # parallel dilated branches in every EESP unit
_LEVEL3_BLOCKS, _LEVEL4_BLOCKS = 3, 7
# Largest effective kernel (receptive field of a dilated 3x3) allowed per stage: deeper stages,
# with smaller maps, get smaller dilations.
_RF_LEVEL2, _RF_LEVEL3_DOWN, _RF_LEVEL3, _RF_LEVEL4 = 13, 11, 9, 7
_DECODER_BASE = 16                  # decoder widths are 4x, 3x, 2x this (Cityscapes/VOC setting)
_PYRAMID_SCALES = (2.0, 1.5, 1.0, 0.5, 0.1)
_PYRAMID_MIN_SIZE = 5
_IMAGE_CHANNELS = 3
_FILE_WIDTH = re.compile(r"espnetv2_s_?(\d+(?:\.\d+)?)")


def _bilinear(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    # align_corners=True throughout, as the weights were trained with it.
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=True)


# ----------------------------------------------------------------------------------------------
# Building blocks. Two key layouts exist in the weights: the encoder names its parts
# (conv / bn / act), the head packs them in an nn.Sequential (cbr.0 / cbr.1 / cbr.2, br.0 / br.1).
# ----------------------------------------------------------------------------------------------

class ConvBNAct(nn.Module):
    """Conv (no bias), optionally BatchNorm and PReLU, as named attributes (encoder layout)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, norm: bool = True, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=(kernel // 2) * dilation,
                              dilation=dilation, groups=groups, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(out_ch) if norm else nn.Identity()
        self.act: nn.Module = nn.PReLU(out_ch) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class BNAct(nn.Module):
    """BatchNorm + PReLU as named attributes (encoder layout)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class PackedConvBNAct(nn.Module):
    """Conv (no bias) + BatchNorm + PReLU held as one nn.Sequential ``cbr`` (head layout)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, groups: int = 1) -> None:
        super().__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.PReLU(out_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cbr(x)


class PackedBNAct(nn.Module):
    """BatchNorm + PReLU held as one nn.Sequential ``br`` (head layout)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.br = nn.Sequential(nn.BatchNorm2d(channels), nn.PReLU(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.br(x)


class ChannelShuffle(nn.Module):
    """Interleave ``groups`` equal channel groups, so that a following grouped conv mixes them."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # No reference to the batch size: it stays symbolic under torch.export.
        return x.unflatten(1, (self.groups, -1)).transpose(1, 2).flatten(1, 2)


# ----------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------

def _branch_dilations(branches: int, receptive_limit: int) -> List[int]:
    """Dilation of each branch's 3x3 depth-wise conv: effective kernels 3, 5, 7, ... capped at
    ``receptive_limit`` (beyond it a branch falls back to a plain 3x3), in ascending order so that
    the hierarchical sums add wider contexts onto narrower ones."""
    kernels = sorted(3 + 2 * i if 3 + 2 * i <= receptive_limit else 3 for i in range(branches))
    return [(k - 1) // 2 for k in kernels]


class EESPUnit(nn.Module):
    """Extremely Efficient Spatial Pyramid unit: grouped 1x1 reduce, parallel dilated depth-wise
    3x3 branches summed hierarchically (against gridding), concat, BN-PReLU, grouped 1x1 expand.

    Stride 1: adds the input (same shape) and applies PReLU. Stride 2 (inside DownsampleUnit):
    returns the expansion before any activation; the caller fuses it first.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, branches: int = _BRANCHES,
                 receptive_limit: int = 7) -> None:
        super().__init__()
        if out_ch % branches:
            raise ValueError(f"EESP: {out_ch} output channels do not split into {branches} branches")
        width = out_ch // branches
        self.stride = stride
        self.residual = stride == 1 and in_ch == out_ch
        self.proj_1x1 = ConvBNAct(in_ch, width, 1, groups=branches)
        self.spp_dw = nn.ModuleList(
            ConvBNAct(width, width, 3, stride=stride, dilation=d, groups=width, norm=False, act=False)
            for d in _branch_dilations(branches, receptive_limit))
        self.conv_1x1_exp = ConvBNAct(out_ch, out_ch, 1, groups=branches, act=False)
        self.br_after_cat = BNAct(out_ch)
        self.module_act = nn.PReLU(out_ch)  # present (and unused) in strided units too

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.proj_1x1(x)
        outs: List[torch.Tensor] = []
        for branch in self.spp_dw:
            y = branch(reduced)
            outs.append(y if not outs else y + outs[-1])
        y = self.conv_1x1_exp(self.br_after_cat(torch.cat(outs, dim=1)))
        if self.stride != 1:
            return y
        if self.residual:
            y = y + x
        return self.module_act(y)


class DownsampleUnit(nn.Module):
    """Halves the resolution: [avg-pooled input, strided EESP] concatenated (the EESP supplies the
    extra channels), plus a projection of the image pooled to the same size, then PReLU."""

    def __init__(self, in_ch: int, out_ch: int, receptive_limit: int,
                 branches: int = _BRANCHES) -> None:
        super().__init__()
        self.eesp = EESPUnit(in_ch, out_ch - in_ch, stride=2, branches=branches,
                             receptive_limit=receptive_limit)
        self.avg = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)
        self.inp_reinf = nn.Sequential(
            ConvBNAct(_IMAGE_CHANNELS, _IMAGE_CHANNELS, 3),
            ConvBNAct(_IMAGE_CHANNELS, out_ch, 1, act=False),
        )
        self.act = nn.PReLU(out_ch)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``image``: the network input already pooled to this unit's output size."""
        y = torch.cat([self.avg(x), self.eesp(x)], dim=1)
        return self.act(y + self.inp_reinf(image))


class EESPBackbone(nn.Module):
    """The ImageNet-pretrained encoder (levels 1-4, output strides 2, 4, 8, 16)."""

    def __init__(self, width: float = 2.0) -> None:
        super().__init__()
        if width not in WIDTH_CHANNELS:
            raise ValueError(f"ESPNetv2 width s={width} not supported (one of {sorted(WIDTH_CHANNELS)})")
        c1, c2, c3, c4 = WIDTH_CHANNELS[width]
        self.channels = (c1, c2, c3, c4)
        self.level1 = ConvBNAct(_IMAGE_CHANNELS, c1, 3, stride=2)
        self.level2_0 = DownsampleUnit(c1, c2, _RF_LEVEL2)
        self.level3_0 = DownsampleUnit(c2, c3, _RF_LEVEL3_DOWN)
        self.level3 = nn.ModuleList(EESPUnit(c3, c3, receptive_limit=_RF_LEVEL3)
                                    for _ in range(_LEVEL3_BLOCKS))
        self.level4_0 = DownsampleUnit(c3, c4, _RF_LEVEL3)
        self.level4 = nn.ModuleList(EESPUnit(c4, c4, receptive_limit=_RF_LEVEL4)
                                    for _ in range(_LEVEL4_BLOCKS))
        # The image pooling that feeds input reinforcement: the same size arithmetic as the
        # stride-2 convs and pools (ceil(n / 2)), so one pool per level matches every map.
        self._halve = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        image = self._halve(x)  # 1/2
        f1 = self.level1(x)
        image = self._halve(image)  # 1/4
        f2 = self.level2_0(f1, image)
        image = self._halve(image)  # 1/8
        f3 = self.level3_0(f2, image)
        for block in self.level3:
            f3 = block(f3)
        image = self._halve(image)  # 1/16
        f4 = self.level4_0(f3, image)
        for block in self.level4:
            f4 = block(f4)
        return f1, f2, f3, f4


# ----------------------------------------------------------------------------------------------
# Segmentation head
# ----------------------------------------------------------------------------------------------

class EfficientPyramidPool(nn.Module):
    """1x1 projection to a few channels, one depth-wise 3x3 per scale applied to the map resized
    by that scale (up: bilinear then pool back; down: adaptive average pool then bilinear back),
    concat, BN-PReLU, channel shuffle, grouped 3x3 fusion, 1x1 to ``out_ch``, optional BN-PReLU."""

    def __init__(self, in_ch: int, proj_ch: int, out_ch: int, out_norm: bool = True,
                 scales: Sequence[float] = _PYRAMID_SCALES) -> None:
        super().__init__()
        self.scales = tuple(sorted(scales, reverse=True))
        n = len(self.scales)
        self.stages = nn.ModuleList(
            nn.Conv2d(proj_ch, proj_ch, 3, padding=1, groups=proj_ch, bias=False) for _ in self.scales)
        self.projection_layer = PackedConvBNAct(in_ch, proj_ch, 1)
        self.merge_layer = nn.Sequential(
            PackedBNAct(proj_ch * n),  # one BN over all scales instead of one per scale
            ChannelShuffle(n),          # so each fusion group sees every scale
            PackedConvBNAct(proj_ch * n, proj_ch, 3, groups=proj_ch),
            nn.Conv2d(proj_ch, out_ch, 1, bias=not out_norm),
        )
        self.br: nn.Module = PackedBNAct(out_ch) if out_norm else nn.Identity()

    @staticmethod
    def _scaled(n: int, scale: float) -> int:
        # The reference's rule, float product included (it decides e.g. ceil(30 * 0.1) = 4).
        return max(int(math.ceil(n * scale)), _PYRAMID_MIN_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projection_layer(x)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        outs: List[torch.Tensor] = []
        for scale, stage in zip(self.scales, self.stages):
            size = (self._scaled(h, scale), self._scaled(w, scale))
            if scale > 1.0:
                y = F.adaptive_avg_pool2d(stage(_bilinear(x, size)), (h, w))
            elif scale < 1.0:
                y = _bilinear(stage(F.adaptive_avg_pool2d(x, size)), (h, w))
            else:
                y = stage(x)
            outs.append(y)
        return self.br(self.merge_layer(torch.cat(outs, dim=1)))


class GatedSkipProjection(nn.Module):
    """Encoder feature -> decoder width: grouped 3x3 Conv-BN-PReLU, scaled per channel by a
    sigmoid gate computed from the feature's global average (a squeeze-excitation-like weight)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.wt_layer = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.Sigmoid(),
        )
        self.expansion_layer = PackedConvBNAct(in_ch, out_ch, 3, groups=math.gcd(in_ch, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expansion_layer(x) * self.wt_layer(x)


def _bn_prelu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.PReLU(channels))


class ESPNetV2Seg(nn.Module):
    """ESPNetv2 semantic segmentation: normalised RGB [N, 3, H, W] (ImageNet mean/std on /255)
    -> logits [N, num_classes, H, W] at the input size, any H and W.

    ``base_net`` is the ImageNet-pretrained encoder; every other child is the segmentation head
    (``head_parameters()``), which the authors trained at 10x the encoder's learning rate.
    """

    def __init__(self, num_classes: int = 20, width: float = 2.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError("ESPNetv2Seg needs at least 2 classes")
        self.num_classes = num_classes
        self.width = float(width)
        self.base_net = EESPBackbone(self.width)
        c1, c2, c3, c4 = self.base_net.channels
        d1, d2, d3 = 4 * _DECODER_BASE, 3 * _DECODER_BASE, 2 * _DECODER_BASE
        # The pyramid's projection width depends on the class count (10 for 20 classes), so the
        # head's weights fit only a model with the same number of classes.
        proj = min(num_classes // 2, _DECODER_BASE)
        self.bu_dec_l1 = EfficientPyramidPool(c4, proj, d1)
        self.bu_dec_l2 = EfficientPyramidPool(d1, proj, d2)
        self.bu_dec_l3 = EfficientPyramidPool(d2, proj, d3)
        self.bu_dec_l4 = EfficientPyramidPool(d3, proj, num_classes, out_norm=False)
        self.merge_enc_dec_l2 = GatedSkipProjection(c3, d1)
        self.merge_enc_dec_l3 = GatedSkipProjection(c2, d2)
        self.merge_enc_dec_l4 = GatedSkipProjection(c1, d3)
        self.bu_br_l2 = _bn_prelu(d1)
        self.bu_br_l3 = _bn_prelu(d2)
        self.bu_br_l4 = _bn_prelu(d3)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def backbone_parameters(self) -> List[nn.Parameter]:
        return list(self.base_net.parameters())

    def head_parameters(self) -> List[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("base_net.")]

    @staticmethod
    def _merge(y: torch.Tensor, skip: torch.Tensor, project: nn.Module, fuse: nn.Module) -> torch.Tensor:
        # Upsample to the skip's own size rather than by 2: odd sizes (e.g. 45 -> 23 at 1/16 for a
        # 360-row input) then line up; for even sizes it is the same resize.
        return fuse(_bilinear(y, skip.shape[-2:]) + project(skip))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1, f2, f3, f4 = self.base_net(x)
        y = self.bu_dec_l1(f4)                                                     # 1/16
        y = self.bu_dec_l2(self._merge(y, f3, self.merge_enc_dec_l2, self.bu_br_l2))  # 1/8
        y = self.bu_dec_l3(self._merge(y, f2, self.merge_enc_dec_l3, self.bu_br_l3))  # 1/4
        y = self.bu_dec_l4(self._merge(y, f1, self.merge_enc_dec_l4, self.bu_br_l4))  # 1/2
        return _bilinear(y, x.shape[-2:])


def width_from_name(path: str) -> Optional[float]:
    """Width s in an authors'-style file name (espnetv2_s_2.0_city_1024x512.pth -> 2.0), else None."""
    m = _FILE_WIDTH.search(os.path.basename(path))
    return float(m.group(1)) if m else None


def _width_from_state(state: Dict[str, torch.Tensor]) -> Optional[float]:
    key = "base_net.level4_0.act.weight"
    if key not in state:
        return None
    channels = int(state[key].shape[0])
    return next((s for s, ch in WIDTH_CHANNELS.items() if ch[3] == channels), None)


def load_espnetv2(path: str, width: Optional[float] = None) -> ESPNetV2Seg:
    """The authors' state dict at ``path`` in an ESPNetV2Seg, loaded strictly, in eval mode.

    ``width``: s; by default from the file name, else from the tensors' shapes. The number of
    classes comes from the final layer (20 for the Cityscapes files). A width that does not fit
    the file raises load_state_dict's RuntimeError, which names the mismatched keys.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if width is None:
        width = width_from_name(path)
    if width is None:
        width = _width_from_state(state)
    if width is None:
        raise ValueError(f"cannot tell the ESPNetv2 width of {path}: pass width=")
    head_key = "bu_dec_l4.merge_layer.3.weight"
    num_classes = int(state[head_key].shape[0]) if head_key in state else 20
    model = ESPNetV2Seg(num_classes=num_classes, width=width)
    model.load_state_dict(state, strict=True)
    return model.eval()
