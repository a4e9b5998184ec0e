"""`seg-perception evaluate DATA`: how well a model segments a labelled image folder.

Runs the node's own pipeline (Segmenter + SegmentationPipeline: same fit, same upsampling) on
every image and scores the class map at the image's full size against its label image. All
numbers come from one confusion matrix summed over the dataset (core.metrics): per-class IoU,
mIoU, pixel accuracy, and the IoU of the road, pedestrian and parking masks (the label file's
groups). Printed as a table, and written as JSON (--json) and a picture (--picture).

Layouts: CamVid (DATA/<split>/*.png with DATA/<split>annot/*.png) and Cityscapes
(DATA/leftImg8bit/<split>/<city>/*_leftImg8bit.png with
DATA/gtFine/<split>/<city>/*_gtFine_labelIds.png).

Mapping (YAML, --mapping) from the dataset's label ids to the model's class names::

    name: my_dataset
    classes:          # label id in the label images -> model class name; other ids are not scored
      0: Sky
      3: Road
      9: Pedestrian
    predictions:      # model classes the dataset cannot label, scored as another model class
      Parking: Road

Scored classes are the model classes some label id maps to. A prediction of any other model class
counts as a miss ("other"), except those listed under ``predictions``; and where the dataset labels
no class of the parking group, parking predictions count as road (CamVid has no parking class).
Built-in mappings: CamVid's 11 classes and Cityscapes labelIds onto a CamVid-class model, and
onto a model of Cityscapes classes (each CamVid class scored as the Cityscapes classes it may be).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

IGNORE = 255
OTHER = "other"


# ----------------------------------------------------------------------------- mapping

@dataclasses.dataclass
class ClassMapping:
    name: str
    classes: Dict[int, str]                 # dataset label id -> model class name
    predictions: Dict[str, str] = dataclasses.field(default_factory=dict)
    source: str = "built-in"


# Cityscapes labelIds -> its 19 train classes (cityscapesScripts labels.py) and its parking (9),
# for a model of Cityscapes classes scored on Cityscapes' own labels.
CITYSCAPES_IDS_TO_TRAIN = {
    7: "road", 8: "sidewalk", 9: "parking", 11: "building", 12: "wall", 13: "fence", 17: "pole",
    19: "traffic light", 20: "traffic sign", 21: "vegetation", 22: "terrain", 23: "sky", 24: "person",
    25: "rider", 26: "car", 27: "truck", 28: "bus", 31: "train", 32: "motorcycle", 33: "bicycle",
}


# CamVid classes scored under another name than their first Cityscapes class
CAMVID_NAMED_AS = {"SignSymbol": "traffic sign"}


def default_mapping(layout: str, model_classes: Optional[Sequence[str]] = None) -> ClassMapping:
    """The built-in mapping of ``layout``'s labels onto a model's classes: the CamVid-class
    models' own, or for a model of Cityscapes classes (the default model) CamVid's 11 classes
    each scored as the Cityscapes classes it may be (its Car as car, truck, bus or train)."""
    from ..core.datasets import CAMVID_CLASSES, CITYSCAPES_TO_CAMVID, PARKING

    names = set(model_classes or ())
    cityscapes_model = bool(names) and "road" in names and "Road" not in names
    if layout == "camvid" and cityscapes_model:
        classes: Dict[int, str] = {}
        predictions: Dict[str, str] = {}
        for i, (camvid, _) in enumerate(CAMVID_CLASSES):
            members = sorted((n for n in model_classes if CITYSCAPES_TO_CAMVID.get(n) == camvid),
                             key=lambda n: n != CAMVID_NAMED_AS.get(camvid, n))
            if members:  # scored under its first member's name; the others count as it
                classes[i] = members[0]
                predictions.update({m: members[0] for m in members[1:]})
        return ClassMapping("camvid as Cityscapes classes", classes, predictions)
    if layout == "camvid":
        return ClassMapping("camvid", {i: name for i, (name, _) in enumerate(CAMVID_CLASSES)},
                            {PARKING[0]: "Road"})
    if layout == "cityscapes" and cityscapes_model:
        return ClassMapping("cityscapes", {k: v for k, v in CITYSCAPES_IDS_TO_TRAIN.items() if v in names})
    if layout == "cityscapes":
        from ..core.training.data import CITYSCAPES_TO_CLASS

        return ClassMapping("cityscapes", dict(CITYSCAPES_TO_CLASS))
    raise ValueError(f"no built-in mapping for layout {layout!r}")


def load_mapping(path: str) -> ClassMapping:
    import yaml

    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read mapping file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict) or not data["classes"]:
        raise ValueError(f"mapping file {path} needs a 'classes' mapping of label id -> model class name")
    classes = {}
    for k, v in data["classes"].items():
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < 65536:
            raise ValueError(f"mapping file {path}: label id {k!r} is not an integer 0..65535")
        if v is None:
            continue  # listed but not scored
        if not isinstance(v, str):
            raise ValueError(f"mapping file {path}: label id {k} maps to {v!r}, not a class name")
        classes[k] = v
    preds = data.get("predictions") or {}
    if not isinstance(preds, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in preds.items()):
        raise ValueError(f"mapping file {path}: 'predictions' must map model class names to model class names")
    return ClassMapping(str(data.get("name") or os.path.splitext(os.path.basename(path))[0]), classes,
                        dict(preds), path)


class Scorer:
    """Accumulates a dataset's confusion matrix over the scored classes (see module doc)."""

    def __init__(self, mapping: ClassMapping, model_classes: Sequence[str], groups=None) -> None:
        from ..core.metrics import ConfusionMatrix

        model_classes = list(model_classes)
        unknown = sorted(set(mapping.classes.values()) - set(model_classes))
        if unknown:
            raise ValueError(f"mapping {mapping.source} names class(es) {unknown} that the model does not have; "
                             f"model classes: {model_classes}. Pass a --mapping for this model.")
        mapped = set(mapping.classes.values())
        self.names = [n for n in model_classes if n in mapped]   # scored classes, in model order
        index = {n: i for i, n in enumerate(self.names)}
        predictions = dict(mapping.predictions)
        self.notes: List[str] = []
        for src, dst in predictions.items():
            if src not in model_classes or dst not in index:
                raise ValueError(f"mapping {mapping.source}: predictions {src} -> {dst} must map a model class "
                                 f"to a scored class ({self.names})")
            if src in index:
                raise ValueError(f"mapping {mapping.source}: {src} is scored itself; it cannot be scored as {dst}")
        if groups is not None:  # the dataset labels no parking: parking predictions count as road
            road = [n for n in groups.groups.get("road", ()) if n in index]
            for n in groups.groups.get("parking", ()):
                if n not in index and n not in predictions and road:
                    predictions[n] = road[0]
        for src, dst in predictions.items():
            self.notes.append(f"{src} predictions count as {dst} (the dataset does not label {src})")
        self.predictions = predictions
        self.truth_lut = np.full(65536, IGNORE, np.uint8)
        for label_id, name in mapping.classes.items():
            self.truth_lut[label_id] = index[name]
        other_classes = [n for n in model_classes if n not in index and n not in predictions]
        self.extra_names = [OTHER] if other_classes else []
        if other_classes:
            self.notes.append(f"predictions of {other_classes} count as misses ('{OTHER}')")
        self.pred_lut = np.zeros(256, np.uint8)
        for i, n in enumerate(model_classes):
            self.pred_lut[i] = index[predictions.get(n, n)] if predictions.get(n, n) in index else len(self.names)
        self.cm = ConfusionMatrix(len(self.names), ignore_index=IGNORE, extra_predictions=len(self.extra_names))
        self.groups = groups
        self.images = 0

    def update(self, label_image: np.ndarray, model_ids: np.ndarray) -> None:
        """A dataset label image and the model's class map of the same size."""
        if label_image.shape != model_ids.shape:
            raise ValueError(f"label image {label_image.shape[::-1]} and prediction "
                             f"{model_ids.shape[::-1]} differ in size")
        lab = label_image.astype(np.intp, copy=False)
        self.cm.update(self.truth_lut[lab], self.pred_lut[model_ids])
        self.images += 1

    def mask_iou(self) -> Dict[str, Optional[float]]:
        """IoU of each mask group over the scored classes; None when the dataset cannot tell."""
        from ..core.labels import MASK_GROUPS

        out: Dict[str, Optional[float]] = {}
        if self.groups is None:
            return out
        index = {n: i for i, n in enumerate(self.names)}
        for g in MASK_GROUPS:
            ids = [index[n] for n in self.groups.groups.get(g, ()) if n in index]
            value = self.cm.group_iou(ids) if ids else float("nan")
            out[g] = None if math.isnan(value) else value
            if not ids:
                self.notes.append(f"{g} mask: not scored, the dataset labels none of {list(self.groups.groups[g])}")
        return out

    def results(self) -> Dict[str, object]:
        s = self.cm.summary(self.names, self.extra_names)
        truth_px = self.cm.matrix.sum(1)
        total = max(1, int(truth_px.sum()))
        return {
            "images": self.images,
            "pixels_scored": int(truth_px.sum()),
            "per_class_iou": s["per_class_iou"],
            "class_pixel_share": {n: float(c) / total for n, c in zip(self.names, truth_px)},
            "miou": _num(s["miou"]),
            "pixel_accuracy": _num(s["pixel_accuracy"]),
            "mask_iou": self.mask_iou(),
            "confusion_matrix": {"rows_truth": self.names, "columns_prediction": s["prediction_names"],
                                 "counts": s["confusion_matrix"]},
            "notes": list(dict.fromkeys(self.notes)),
        }


def _num(v: float) -> Optional[float]:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


# ----------------------------------------------------------------------------- dataset

def detect_layout(root: str) -> str:
    return "cityscapes" if os.path.isdir(os.path.join(root, "leftImg8bit")) else "camvid"


def read_pair(img_path: str, lab_path: str) -> Tuple[np.ndarray, np.ndarray]:
    import cv2

    bgr = cv2.imread(img_path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {img_path}")
    lab = cv2.imread(lab_path, cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise ValueError(f"cannot read label image {lab_path}")
    if lab.ndim == 3:  # some tools save label maps as 3 equal channels
        lab = lab[..., 0]
    if lab.shape != bgr.shape[:2]:
        raise ValueError(f"{lab_path} is {lab.shape[1]}x{lab.shape[0]} but its image is "
                         f"{bgr.shape[1]}x{bgr.shape[0]}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), lab


# ----------------------------------------------------------------------------- table

def format_table(results: Dict[str, object]) -> str:
    pct = lambda v: "  n/a" if v is None else f"{100 * v:5.1f}"
    names = list(results["per_class_iou"])
    w = max([len(n) for n in names] + [len(g) + 9 for g in results["mask_iou"]] + [14])
    lines = [f"{'class':<{w}}  IoU %  pixels %"]
    for n in names:
        lines.append(f"{n:<{w}}  {pct(results['per_class_iou'][n])}  {100 * results['class_pixel_share'][n]:7.2f}")
    lines.append("-" * (w + 18))
    lines.append(f"{'mIoU':<{w}}  {pct(results['miou'])}")
    lines.append(f"{'pixel accuracy':<{w}}  {pct(results['pixel_accuracy'])}")
    for g, v in results["mask_iou"].items():
        lines.append(f"{g + ' mask IoU':<{w}}  {pct(v)}")
    for note in results["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command

def add_arguments(p) -> None:
    p.add_argument("data", help="dataset root in CamVid layout (<split>/, <split>annot/) or Cityscapes layout "
                                "(leftImg8bit/, gtFine/)")
    p.add_argument("--layout", choices=("auto", "camvid", "cityscapes"), default="auto")
    p.add_argument("--split", help="split to score (default: test for CamVid, val for Cityscapes)")
    p.add_argument("--model", help="model file (default: the packaged model)")
    p.add_argument("--label-file", help="label groups of the model (default: the packaged one)")
    p.add_argument("--backend", default="auto", help="auto, onnxruntime, tensorrt or torch")
    p.add_argument("--num-threads", type=int, default=0, help="CPU inference threads (0: runtime default)")
    p.add_argument("--mapping", help="YAML mapping of dataset label ids to model classes (default: built in "
                                     "for CamVid and Cityscapes)")
    p.add_argument("--limit", type=int, help="score only the first N images")
    p.add_argument("--json", help="write the results as JSON to this file")
    p.add_argument("--picture", help="write the confusion matrix picture (PNG) to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _fail(text: str, code: int = 2) -> int:
    print(f"seg-perception evaluate: {text}", file=sys.stderr)
    return code


def run(args) -> int:
    from ..core import resources

    layout = detect_layout(args.data) if args.layout == "auto" else args.layout
    split = args.split or ("test" if layout == "camvid" else "val")
    model_path = args.model or resources.DEFAULT_MODEL
    try:
        results = evaluate_model(args.data, model_path, layout=layout, split=split, backend=args.backend,
                                 label_file=args.label_file, num_threads=args.num_threads,
                                 mapping_file=args.mapping, limit=args.limit, quiet=args.quiet)
    except EvaluationError as exc:
        return _fail(str(exc))
    print(f"{layout} {split}: {results['images']} images from {args.data}; model {os.path.basename(model_path)} "
          f"({results['backend']}); mapping {results['mapping']['name']}")
    print(format_table(results))
    return _write(results, args.json, args.picture,
                  f"{os.path.basename(model_path)} on {layout} {split} ({results['images']} images)")


class EvaluationError(ValueError):
    """A dataset, mapping or model that cannot be scored, with the reason."""


def evaluate_model(data: str, model_path: str, layout: str = "auto", split: Optional[str] = None,
                   backend: str = "auto", label_file: Optional[str] = None, num_threads: int = 0,
                   mapping_file: Optional[str] = None, limit: Optional[int] = None,
                   quiet: bool = True) -> Dict[str, object]:
    """The scores of ``model_path`` on the labelled folder ``data`` (what `evaluate` prints and
    writes; compare-bags --eval scores each of its two models with it)."""
    from ..core.segmenter import Segmenter
    from ..core.training.data import find_pairs

    layout = detect_layout(data) if layout == "auto" else layout
    split = split or ("test" if layout == "camvid" else "val")
    try:
        pairs = find_pairs(data, layout, split)[:limit]
        mapping = load_mapping(mapping_file) if mapping_file else None
    except (FileNotFoundError, ValueError) as exc:
        raise EvaluationError(str(exc)) from None
    try:
        options = {"num_threads": num_threads} if num_threads else {}
        segmenter = Segmenter.from_file(model_path, backend, **options)
    except Exception as exc:
        raise EvaluationError(f"cannot load model {model_path}: {exc}") from None
    t0 = time.perf_counter()
    try:
        with segmenter:
            if mapping is None:
                mapping = default_mapping(layout, segmenter.info.class_names)
            backend_text = segmenter.backend.describe()
            scorer, label_path = _score(segmenter, model_path, label_file, mapping, pairs, quiet)
    except ValueError as exc:  # mapping/model mismatch, unreadable or mismatched files
        raise EvaluationError(str(exc)) from None
    seconds = time.perf_counter() - t0
    results = scorer.results()
    results.update({
        "dataset": os.path.abspath(data), "layout": layout, "split": split,
        "model": model_path, "label_file": label_path, "backend": backend_text,
        "mapping": {"name": mapping.name, "source": mapping.source,
                    "classes": {str(k): v for k, v in sorted(mapping.classes.items())},
                    "predictions": scorer.predictions},
        "seconds": seconds, "images_per_second": len(pairs) / seconds if seconds > 0 else None,
    })
    return results


def _score(segmenter, model_path: str, label_file: Optional[str], mapping, pairs, quiet: bool):
    """(Scorer over every pair, the label file used): each image through the node's pipeline."""
    from ..core.image import frame_from_rgb
    from ..core.pipeline import SegmentationPipeline, model_label_groups
    from .support.common import Progress

    groups, label_path = model_label_groups(segmenter, label_file or "", model_path)
    scorer = Scorer(mapping, segmenter.info.class_names, groups)
    pipeline = SegmentationPipeline(segmenter, groups)
    progress = Progress(len(pairs), "images", stream=sys.stderr, enabled=not quiet)
    for i, (img_path, lab_path) in enumerate(pairs):
        rgb, lab = read_pair(img_path, lab_path)
        scorer.update(lab, pipeline.process(frame_from_rgb(rgb)).labels())
        progress.update(i + 1)
    progress.finish()
    return scorer, label_path


def _write(results: Dict[str, object], json_path: Optional[str], picture: Optional[str],
           title: str) -> int:
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {json_path}")
    if picture:
        import cv2

        from .support.pictures import confusion_picture

        if not cv2.imwrite(picture, confusion_picture(results, title)):
            return _fail(f"cannot write {picture}")
        print(f"wrote {picture}")
    return 0
