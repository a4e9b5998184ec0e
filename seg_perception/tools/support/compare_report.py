"""compare-bags' report: DIR/report.md (pictures under DIR/pictures/ and each drive's result
folder) and DIR/report.json, from the drives' counts (core/disagreement)."""

from __future__ import annotations

import datetime
import json
import os
from typing import Dict, List, Optional

import numpy as np


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def heat_picture(heat: List[List[float]], width: int = 640) -> np.ndarray:
    """The heat map (share of frames a pixel is in different masks) as a picture, with its scale."""
    import cv2

    h = np.asarray(heat, np.float32)
    top = max(float(h.max()), 1e-6)
    img = cv2.applyColorMap((255 * h / top).astype(np.uint8), cv2.COLORMAP_INFERNO)
    img = cv2.resize(img, (width, int(width * h.shape[0] / h.shape[1])), interpolation=cv2.INTER_NEAREST)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    from .pictures import with_caption

    return with_caption(img, f"pixels in different masks: black in no frame, yellow in {100 * top:.0f} % of them")


def write_compare_report(out_dir: str, run, names: Dict[str, str], evaluation: Optional[Dict[str, object]]
                         ) -> Optional[str]:
    from ...core.disagreement import DISAGREE_IOU, combine, summary
    from .pictures import save_rgb

    done = [(b, r) for b, r in run.results.items() if r.get("status") == "done" and r.get("counts")]
    failed = [{"bag": b, "reason": run.results[b].get("reason")} for b in run.with_status("failed")]
    if not done and not failed:
        return None
    fleet_counts = combine(r["counts"] for _, r in done)
    fleet = summary(fleet_counts) if fleet_counts else None
    drives = []
    for bag, r in sorted(done, key=lambda br: -br[1]["summary"]["disagreement"]):
        rel = os.path.relpath(r["result"], out_dir)
        drives.append({"bag": bag, "result": rel, "frames": r["frames"], "summary": r["summary"],
                       "worst": [dict(w, picture=os.path.join(rel, w["picture"])) for w in r.get("worst", [])]})
    worst = sorted((dict(w, bag=d["bag"]) for d in drives for w in d["worst"]), key=lambda w: -w["disagreement"])[:6]
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump({"a": names["a"], "b": names["b"], "fleet": fleet, "drives": drives, "worst": worst,
                   "failed": failed, "evaluation": _eval_rows(evaluation) if evaluation else None}, f, indent=1)

    frames = fleet["frames"] if fleet else 0
    lines = [f"# {names['a']} (A) against {names['b']} (B)", "",
             f"{len(drives)} drives, {frames} frames; written {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by "
             "`seg-perception compare-bags`. Masks are compared as the node publishes them (each with its "
             "minimum confidence), classes by name.", ""]
    if fleet:
        os.makedirs(os.path.join(out_dir, "pictures"), exist_ok=True)
        save_rgb(os.path.join(out_dir, "pictures", "where.png"), heat_picture(fleet["heat"]))
        lines += ["## Over the fleet", "",
                  f"- pixels the two put in different masks: **{_pct(fleet['disagreement'])}**",
                  f"- mean confidence: A {_pct(fleet['mean_confidence_a'])}, B {_pct(fleet['mean_confidence_b'])}",
                  "", _rows_table(fleet, DISAGREE_IOU), "", "![where they disagree](pictures/where.png)", ""]
        if not fleet["same_classes"]:
            lines += [f"The two models' classes differ; compared class by class: {', '.join(fleet['shared_classes']) or 'none'} "
                      "(the masks always).", ""]
    if evaluation:
        lines += _eval_section(evaluation)
    if worst:
        lines += ["## The frames where they disagree most", ""]
        for w in worst:
            cam = f", camera {w['camera']}" if w.get("camera") else ""
            lines += [f"**{os.path.basename(str(w['bag']))}** at {w['second']:.1f} s{cam}: "
                      f"{_pct(w['disagreement'])} of the pixels in different masks", "",
                      f"![{os.path.basename(str(w['bag']))} {w['second']:.1f} s]({w['picture']})", ""]
    if drives:
        lines += ["## Per drive", "", "| drive | frames | pixels in different masks | road IoU | pedestrian IoU "
                  "| parking IoU | mean confidence A | mean confidence B |", "|---|---|---|---|---|---|---|---|"]
        for d in drives:
            s = d["summary"]
            iou = {g: s["rows"][g]["iou"] for g in ("road", "pedestrian", "parking")}
            lines.append(f"| [{os.path.basename(str(d['bag']))}]({d['result']}) | {d['frames']} | {_pct(s['disagreement'])} "
                         f"| {_pct(iou['road'])} | {_pct(iou['pedestrian'])} | {_pct(iou['parking'])} "
                         f"| {_pct(s['mean_confidence_a'])} | {_pct(s['mean_confidence_b'])} |")
        lines.append("")
    if failed:
        lines += [f"## {len(failed)} bag(s) failed", ""] + [f"- `{f['bag']}`: {f['reason']}" for f in failed] + [""]
    lines += ["## How to read it", "",
              "- **IoU of A and B**: of the pixels either gives the mask (class), the share both give it; 100 % is "
              "full agreement.",
              f"- **frames they disagree on**: of the frames where one of them gives the mask (class) at least "
              f"0.1 % of the pixels, those where that IoU is under {100 * DISAGREE_IOU:.0f} %.",
              "- **share A / B**: of all pixels, those each model gives the mask (class): one model seeing more "
              "road, or fewer pedestrians, shows here.",
              "- Each drive's frames.jsonl has every compared frame's figures."]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _rows_table(s: Dict[str, object], disagree_iou: float) -> str:
    lines = ["| mask / class | IoU of A and B | frames they disagree on | share A | share B |",
             "|---|---|---|---|---|"]
    for name, row in s["rows"].items():
        if row["kind"] == "class" and row["frames_seen"] == 0:
            continue  # a class neither model shows on these drives
        label = f"**{name} mask**" if row["kind"] == "mask" else name
        seen = f"{_pct(row['frames_disagree'])} of {row['frames_seen']}" if row["frames_seen"] else "never shown"
        lines.append(f"| {label} | {_pct(row['iou'])} | {seen} | {_pct(row['share_a'])} | {_pct(row['share_b'])} |")
    return "\n".join(lines)


def _eval_rows(evaluation: Dict[str, object]) -> Dict[str, object]:
    return {k: {"model": r["model"], "miou": r["miou"], "pixel_accuracy": r["pixel_accuracy"], "mask_iou": r["mask_iou"],
                "per_class_iou": r["per_class_iou"], "dataset": r["dataset"], "split": r["split"],
                "images": r["images"], "mapping": r["mapping"]["name"], "notes": r["notes"]}
            for k, r in evaluation.items()}


def _eval_section(evaluation: Dict[str, object]) -> List[str]:
    a, b = evaluation["a"], evaluation["b"]
    lines = [f"## On labelled frames: {a['dataset']} ({a['split']}, {a['images']} images)", "",
             "| | A | B |", "|---|---|---|",
             f"| mIoU | {_pct(a['miou'])} | {_pct(b['miou'])} |",
             f"| pixel accuracy | {_pct(a['pixel_accuracy'])} | {_pct(b['pixel_accuracy'])} |"]
    for g in ("road", "pedestrian", "parking"):
        va, vb = a["mask_iou"].get(g), b["mask_iou"].get(g)
        if va is not None or vb is not None:
            lines.append(f"| {g} mask IoU | {_pct(va)} | {_pct(vb)} |")
    lines += ["", f"Scored with the mappings '{a['mapping']['name']}' (A) and '{b['mapping']['name']}' (B); each "
              "model's per-class IoU is in report.json."]
    if a["model"] == b["model"]:
        lines.append("A and B are the same model file: its class map, and so its mIoU, is the same for both; "
                     "their settings change the masks and the grid, compared above.")
    lines.append("")
    return lines
