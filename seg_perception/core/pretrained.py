"""Pretrained weights from elsewhere brought into the project: ESPNetv2 trained on Cityscapes by
its authors (github sacmehta/EdgeNets, MIT licence), from their .pth to the project's checkpoint
(`seg-perception train --init-from / --teacher` take it) and a verified ONNX with the contract in
the graph (normalisation, argmax, confidence), the origin and licence in the metadata and the
licence file beside every file written. Needs torch."""

from __future__ import annotations

import os
import re
import shutil
from typing import Dict, Optional, Tuple

from .class_sets import load_classes
from .engine_cache import file_sha256
from .model_info import ModelInfo
from .resources import DATA_DIR

ESPNETV2_LICENCE = "LICENSE-EdgeNets-MIT.txt"
ESPNETV2_ORIGIN = {
    "weights": "ESPNetv2 trained on Cityscapes by its authors",
    "repository": "github.com/sacmehta/EdgeNets (commit 2b232d3), model/segmentation/model_zoo/espnetv2/",
    "licence": "MIT, Copyright (c) 2021 Sachin Mehta (" + ESPNETV2_LICENCE + " beside this file)",
    "paper": "S. Mehta, M. Rastegari, L. Shapiro, H. Hajishirzi, ESPNetv2: A Light-weight, Power "
             "Efficient, and General Purpose Convolutional Neural Network, CVPR 2019",
    "training_data": "Cityscapes (Cordts et al., CVPR 2016): its terms allow non-commercial use only",
}
_NAME = re.compile(r"espnetv2_s_(\d+(?:\.\d+)?)_city_(\d+)x(\d+)")


class PretrainedError(ValueError):
    """The weights cannot be imported as asked; the message says why."""


def espnetv2_file_facts(path: str) -> Tuple[float, Tuple[int, int]]:
    """(width s, (height, width) trained at) from the authors' file name
    (espnetv2_s_2.0_city_1024x512.pth: s 2.0, trained at 1024 x 512)."""
    m = _NAME.search(os.path.basename(path))
    if not m:
        raise PretrainedError(f"{os.path.basename(path)} is not named as the authors name their "
                              "Cityscapes files (espnetv2_s_<width>_city_<W>x<H>.pth): give --width and --size")
    return float(m.group(1)), (int(m.group(3)), int(m.group(2)))


def import_espnetv2(pth: str, out_dir: str, width: Optional[float] = None,
                    size: Optional[Tuple[int, int]] = None, num_frames: int = 4) -> Dict[str, object]:
    """Write ``<out_dir>/espnetv2_s<width>_cityscapes_<W>x<H>.pt`` and ``.onnx`` (verified
    against PyTorch) and the licence beside them; returns what was written and measured."""
    from .espnetv2 import load_espnetv2
    from .export import export_verified, save_checkpoint
    from .torch_models import ClassMapModel

    if not os.path.isfile(pth):
        raise PretrainedError(f"weights not found: {pth}")
    if width is None or size is None:
        file_width, file_size = espnetv2_file_facts(pth)
        width = file_width if width is None else width
        size = file_size if size is None else size
    try:
        net = load_espnetv2(pth, width)
    except RuntimeError as exc:  # load_state_dict(strict=True) names the keys that do not fit
        raise PretrainedError(f"{pth} does not load into ESPNetv2 s{width:g}: {exc}") from exc
    # The authors' 20 outputs: Cityscapes' 19 train ids, then their loader's ignore class.
    info = ModelInfo(classes=load_classes("cityscapes+background"), input_height=int(size[0]),
                     input_width=int(size[1]), fit="stretch", architecture=f"espnetv2_s{width:.1f}",
                     source=dict(ESPNETV2_ORIGIN, file=os.path.basename(pth), sha256=file_sha256(pth),
                                 note="imported unchanged (seg-perception import-espnetv2)"))
    info.validate()
    wrapped = ClassMapModel(net, info.mean, info.std).eval()
    stem = os.path.join(out_dir, f"espnetv2_s{width:.1f}_cityscapes_{size[1]}x{size[0]}")
    os.makedirs(out_dir, exist_ok=True)
    save_checkpoint(wrapped, info, stem + ".pt")
    verify = export_verified(wrapped, info, stem + ".onnx", num_frames=num_frames)
    licence = ship_licence(pth, out_dir)
    return {"checkpoint": stem + ".pt", "onnx": stem + ".onnx", "licence": licence,
            "agreement": verify.agreement, "frames": verify.frames, "info": info}


def ship_licence(pth: str, out_dir: str) -> str:
    """The EdgeNets MIT licence beside files derived from the weights: the copy beside the
    weights, else the package's own."""
    src = os.path.join(os.path.dirname(os.path.abspath(pth)), ESPNETV2_LICENCE)
    if not os.path.isfile(src):
        src = os.path.join(DATA_DIR, "models", ESPNETV2_LICENCE)
    dst = os.path.join(out_dir, ESPNETV2_LICENCE)
    if os.path.abspath(src) != os.path.abspath(dst):
        shutil.copyfile(src, dst)
    return dst
