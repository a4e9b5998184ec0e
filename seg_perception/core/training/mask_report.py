"""What the masks are worth to a planner: precision and recall of the pedestrian, road and parking
masks per confidence threshold, parking false alarms per frame, and a check on another
country's camera (PandaSet's sparse LiDAR-projected labels).

    python -m seg_perception.core.training.mask_report --model MODEL.onnx \
        --camvid ../shared/data/camvid --split test --pandaset ../shared/data/street_frames/pandaset

Pixels are counted over the whole split (one tally, not a mean of per-frame figures). A mask at
threshold t keeps a pixel of its class only where the model's confidence is at least t, as the
node's ``min_confidence.<mask>`` does; the grid's drivable cells follow ``min_confidence.grid``
the same way. CamVid has no parking class: its parking areas are labelled Road, so there the
parking figure is a false-alarm rate (frames where the mask covers more than 1000 pixels) and
"drivable" (Road + Parking predicted) is scored against CamVid's Road.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

DEFAULT_THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
PARKING_ALARM_PIXELS = 1000       # at 360x480: a parking mask of this size is not noise
PARKING_ALARM_SHARE = PARKING_ALARM_PIXELS / (360 * 480)  # the same share of a frame of any size
# PandaSet class ids (street_frames/pandaset/classes.json)
PANDASET_DRIVABLE = (7, 8, 9, 10, 12)   # Road, lane/road markings, Driveway
PANDASET_PEDESTRIAN = (30, 31)          # Pedestrian, Pedestrian with object


class Tally:
    """True/false positives and false negatives of one binary mask, summed over frames."""

    def __init__(self) -> None:
        self.tp = self.fp = self.fn = 0

    def add(self, truth: np.ndarray, pred: np.ndarray, scored: Optional[np.ndarray] = None) -> None:
        if scored is not None:
            truth, pred = truth[scored], pred[scored]
        self.tp += int(np.count_nonzero(truth & pred))
        self.fp += int(np.count_nonzero(~truth & pred))
        self.fn += int(np.count_nonzero(truth & ~pred))

    def to_dict(self) -> Dict[str, Optional[float]]:
        def ratio(a: int, b: int) -> Optional[float]:
            return round(a / b, 4) if b else None
        return {"iou": ratio(self.tp, self.tp + self.fp + self.fn),
                "precision": ratio(self.tp, self.tp + self.fp),
                "recall": ratio(self.tp, self.tp + self.fn)}


def _levels(thresholds: Sequence[float]) -> List[int]:
    from ..pipeline import confidence_level

    return [confidence_level(t) for t in thresholds]


def _groups(class_names):
    """The label groups of the packaged label file of the model's classes (as the node's
    label_file "" takes them)."""
    from ..class_sets import packaged_label_file
    from ..labels import load_label_file

    return load_label_file(packaged_label_file(class_names), class_names)


def _predict(seg, images: np.ndarray):
    ids, conf = seg.backend.infer_with_confidence(images)
    if conf is None:  # a model without the confidence output: every pixel counts as sure
        conf = np.full(ids.shape, 255, np.uint8)
    return ids, conf


def camvid_masks(model_path: str, data_root: str, split: str = "test",
                 thresholds: Sequence[float] = DEFAULT_THRESHOLDS, threads: int = 2
                 ) -> Dict[str, Any]:
    """Mask figures on a CamVid split at the model's input size (CamVid's own 360x480)."""
    from ..segmenter import Segmenter
    from .data import load_split
    from .scoring import CAMVID_NAMES

    with Segmenter.from_file(model_path, backend="onnxruntime", num_threads=threads,
                               providers=["CPUExecutionProvider"]) as seg:
        groups = _groups(seg.info.class_names)  # the masks as the node makes them
        truth_id = {n: i for i, n in enumerate(CAMVID_NAMES)}
        data = load_split(data_root, "camvid", split, (seg.info.input_height, seg.info.input_width))
        levels = _levels(thresholds)
        ped = [Tally() for _ in levels]
        road = [Tally() for _ in levels]
        drivable = [Tally() for _ in levels]
        alarms = [0 for _ in levels]
        ped_pixels_on = {n: 0 for n in CAMVID_NAMES}
        conf_hist = np.zeros(256, np.int64)
        for start in range(0, len(data), 4):
            ids, conf = _predict(seg, np.stack(data.images[start:start + 4]))
            for k, truth in enumerate(data.labels[start:start + 4]):
                scored = truth < len(CAMVID_NAMES)  # void pixels are not scored
                t_ped = truth == truth_id["Pedestrian"]
                t_road = truth == truth_id["Road"]
                p_ped = groups.member("pedestrian")[ids[k]]
                p_road = groups.member("road")[ids[k]]
                p_park = groups.member("parking")[ids[k]]
                p_drive = groups.member("drivable")[ids[k]]
                alarm_pixels = PARKING_ALARM_SHARE * truth.size
                conf_hist += np.bincount(conf[k].ravel(), minlength=256)
                for n, tid in truth_id.items():
                    ped_pixels_on[n] += int(np.count_nonzero(p_ped & (truth == tid)))
                for j, level in enumerate(levels):
                    sure = conf[k] >= level
                    ped[j].add(t_ped, p_ped & sure, scored)
                    road[j].add(t_road, p_road & sure, scored)
                    drivable[j].add(t_road, p_drive & sure, scored)
                    alarms[j] += int(np.count_nonzero(p_park & sure) > alarm_pixels)
    total_ped = sum(ped_pixels_on.values())
    return {
        "split": split, "frames": len(data),
        "thresholds": list(thresholds),
        "pedestrian": [t.to_dict() for t in ped],
        "road": [t.to_dict() for t in road],
        "drivable_vs_road": [t.to_dict() for t in drivable],
        "parking_alarm_frames": [round(a / len(data), 4) for a in alarms],
        # where the pedestrian pixels that are not pedestrians fall (threshold 0)
        "pedestrian_pixels_on": {n: round(v / total_ped, 4) for n, v in ped_pixels_on.items()
                                 if total_ped and v},
        "confidence_share_below": {str(t): round(float(conf_hist[:lv].sum() / conf_hist.sum()), 4)
                                   for t, lv in zip(thresholds, levels)},
    }


def pandaset_masks(model_path: str, folder: str, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                   threads: int = 2) -> Dict[str, Any]:
    """Drivable and pedestrian figures on PandaSet's front-camera frames, scored only where a
    LiDAR point was projected (label > 0), at the camera's 1920x1080 through the node's path."""
    import cv2

    from ..image import frame_from_rgb
    from ..pipeline import SegmentationPipeline
    from ..segmenter import Segmenter

    with Segmenter.from_file(model_path, backend="onnxruntime", num_threads=threads,
                               providers=["CPUExecutionProvider"]) as seg:
        pipe = SegmentationPipeline(seg, _groups(seg.info.class_names))
        images = sorted(glob.glob(os.path.join(folder, "front_camera_*.jpg")))
        drivable = [Tally() for _ in thresholds]
        ped = [Tally() for _ in thresholds]
        parking_share: List[float] = []
        for path in images:
            label = cv2.imread(path.replace("front_camera_", "label_").replace(".jpg", ".png"),
                               cv2.IMREAD_UNCHANGED)
            rgb = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            scored = label > 0
            t_drive = np.isin(label, PANDASET_DRIVABLE)
            t_ped = np.isin(label, PANDASET_PEDESTRIAN)
            for j, t in enumerate(thresholds):
                pipe.apply(dataclasses.replace(pipe.outputs, min_confidence={
                    **pipe.outputs.min_confidence, "road": t, "parking": t, "pedestrian": t}))
                res = pipe.process(frame_from_rgb(rgb))
                p_drive = (res.mask("road") > 0) | (res.mask("parking") > 0)  # drivable: road + parking
                drivable[j].add(t_drive, p_drive, scored)
                ped[j].add(t_ped, res.mask("pedestrian") > 0, scored)
                if t == 0.0:
                    parking_share.append(round(float(np.mean(res.mask("parking") > 0)), 4))
    return {"frames": [os.path.basename(p) for p in images], "thresholds": list(thresholds),
            "drivable": [t.to_dict() for t in drivable], "pedestrian": [t.to_dict() for t in ped],
            "parking_share_of_frame": parking_share}


def format_tables(report: Dict[str, Any]) -> str:
    def pct(v: Optional[float]) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}"

    lines = []
    cv = report.get("camvid")
    if cv:
        lines += [f"CamVid {cv['split']} ({cv['frames']} frames)", "",
                  "| min confidence | pedestrian P / R / IoU | road P / R / IoU | drivable IoU | "
                  "frames with parking > 1000 px | pixels below |", "|---|---|---|---|---|---|"]
        for j, t in enumerate(cv["thresholds"]):
            p, r, d = cv["pedestrian"][j], cv["road"][j], cv["drivable_vs_road"][j]
            lines.append(f"| {t:.1f} | {pct(p['precision'])} / {pct(p['recall'])} / {pct(p['iou'])} | "
                         f"{pct(r['precision'])} / {pct(r['recall'])} / {pct(r['iou'])} | "
                         f"{pct(d['iou'])} | {pct(cv['parking_alarm_frames'][j])}% | "
                         f"{pct(cv['confidence_share_below'][str(t)])}% |")
        lines += ["", "pedestrian pixels by truth class: " + ", ".join(
            f"{n} {pct(v)}%" for n, v in sorted(cv["pedestrian_pixels_on"].items(), key=lambda kv: -kv[1]))]
    pd = report.get("pandaset")
    if pd:
        lines += ["", f"PandaSet ({len(pd['frames'])} frames, sparse LiDAR labels)", "",
                  "| min confidence | drivable P / R / IoU | pedestrian P / R / IoU |", "|---|---|---|"]
        for j, t in enumerate(pd["thresholds"]):
            d, p = pd["drivable"][j], pd["pedestrian"][j]
            lines.append(f"| {t:.1f} | {pct(d['precision'])} / {pct(d['recall'])} / {pct(d['iou'])} | "
                         f"{pct(p['precision'])} / {pct(p['recall'])} / {pct(p['iou'])} |")
        lines.append("parking share of each frame: " + ", ".join(pct(v) + "%" for v in pd["parking_share_of_frame"]))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--camvid", default="", help="CamVid root")
    p.add_argument("--split", default="test")
    p.add_argument("--pandaset", default="", help="street_frames/pandaset folder")
    p.add_argument("--thresholds", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default="", help="also write the report here")
    args = p.parse_args(argv)
    report: Dict[str, Any] = {"model": args.model}
    if args.camvid:
        report["camvid"] = camvid_masks(args.model, args.camvid, args.split, args.thresholds, args.threads)
    if args.pandaset:
        report["pandaset"] = pandaset_masks(args.model, args.pandaset, args.thresholds, args.threads)
    print(format_tables(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
