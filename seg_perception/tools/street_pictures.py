"""Pictures of a model on real street frames, through the node's own pipeline (same fit, same
per-group confidence thresholds as config/camera_seg.yaml): per frame, the camera image, the
overlay, the three masks painted on the image (road green, pedestrian red, parking blue) and the
confidence (dark = unsure, black where below the grid's threshold).

    python -m seg_perception.tools.street_pictures --out docs/real_streets.png \
        ../shared/data/camvid/test/0001TP_008550.png ...

Used for the README's pictures of real streets (see docs/model_card.md for the data's licences).
"""

from __future__ import annotations

import argparse
from typing import Dict, Optional, Sequence

import cv2
import numpy as np

from .support.pictures import composite, save_rgb, stack_rows

MASK_TINTS = {"road": (40, 220, 60), "parking": (40, 110, 255), "pedestrian": (255, 30, 30)}


def default_thresholds() -> Dict[str, float]:
    """The node's default min_confidence.* per use (config/camera_seg.yaml)."""
    from ..core.config import OutputConfig

    return dict(OutputConfig.defaults().min_confidence)


def masks_on_image(rgb: np.ndarray, masks: Dict[str, np.ndarray]) -> np.ndarray:
    out = (rgb.astype(np.float32) * 0.55)
    for group, tint in MASK_TINTS.items():  # pedestrian painted last: it wins where they touch
        sel = masks[group] > 0
        out[sel] = 0.35 * rgb[sel] + 0.65 * np.array(tint, np.float32)
    return out.astype(np.uint8)


def confidence_picture(confidence: Optional[np.ndarray], level: int, shape) -> np.ndarray:
    if confidence is None:
        return np.zeros(shape[:2] + (3,), np.uint8)
    pic = cv2.applyColorMap(confidence, cv2.COLORMAP_VIRIDIS)[..., ::-1].copy()
    pic[confidence < level] = 0
    return pic


def street_rows(model: str, images: Sequence[str], thresholds: Optional[Dict[str, float]] = None,
                height: int = 240):
    from ..core.config import OutputConfig
    from ..core.image import frame_from_rgb
    from ..core.pipeline import SegmentationPipeline, confidence_level, model_label_groups
    from ..core.segmenter import Segmenter

    with Segmenter.from_file(model, backend="onnxruntime", providers=["CPUExecutionProvider"]) as seg:
        thresholds = default_thresholds() if thresholds is None else thresholds
        groups, _ = model_label_groups(seg, "", model)  # the packaged label file of its classes
        pipe = SegmentationPipeline(seg, groups, OutputConfig.defaults(
            overlay_alpha=0.55, min_confidence={**default_thresholds(), **thresholds}))
        rows = []
        for path in images:
            bgr = cv2.imread(path, cv2.IMREAD_COLOR)
            if bgr is None:
                raise OSError(f"cannot read {path}")
            rgb = np.ascontiguousarray(bgr[..., ::-1])
            res = pipe.process(frame_from_rgb(rgb))
            masks = {g: res.mask(g) for g in MASK_TINTS}
            conf = confidence_picture(res.confidence(), confidence_level(thresholds.get("grid", 0.0)),
                                      rgb.shape)
            rows.append(composite([rgb, res.overlay(), masks_on_image(rgb, masks), conf],
                                  ["camera", "overlay (classes)", "road / pedestrian / parking",
                                   "confidence"], height=height))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="+")
    p.add_argument("--model", default="", help="default: the packaged model")
    p.add_argument("--out", required=True)
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=240, help="panel height before scaling")
    args = p.parse_args(argv)
    from ..core.resources import DEFAULT_MODEL

    rows = street_rows(args.model or DEFAULT_MODEL, args.images, height=args.height)
    save_rgb(args.out, stack_rows(rows, args.width))
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
