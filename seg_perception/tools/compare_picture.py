"""The README's picture of a compare-bags report: two models over short drives of real street
frames (sample-bag --images), compared on an embedded Ray, and the report's worst frame with its
heat map of where the two disagree.

    python -m seg_perception.tools.compare_picture docs/compare_bags.png --b model:=fast \
        --images "../shared/data/street_frames/pandaset/front_camera_*.jpg"

Needs Ray (requirements/fleet.txt). The frames keep their own licence (docs/real_streets/).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="PNG to write")
    p.add_argument("--images", nargs="+", required=True, help="frames (or glob patterns), one drive")
    p.add_argument("--hfov", type=float, default=64.0, help="their camera's horizontal field of view")
    p.add_argument("--a", action="append", default=[], metavar="NAME:=VALUE")
    p.add_argument("--b", action="append", default=[], metavar="NAME:=VALUE")
    p.add_argument("--keep", help="keep the drive and the report here")
    args = p.parse_args(argv)
    cli = os.path.join(os.path.dirname(sys.executable), "seg-perception")
    root = args.keep or tempfile.mkdtemp(prefix="compare_picture_")
    bag = os.path.join(root, "drives", "street")
    subprocess.run([cli, "sample-bag", bag, "--images", *args.images, "--hfov", str(args.hfov), "--overwrite"],
                   check=True, capture_output=True)
    out = os.path.join(root, "compared")
    cmd = [cli, "compare-bags", os.path.dirname(bag), "--out", out, "--workers", "1", "--quiet", "--worst", "1"]
    cmd += [x for a in args.a for x in ("--a", a)] + [x for b in args.b for x in ("--b", b)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print(res.stdout + res.stderr, file=sys.stderr)
        return res.returncode
    report = json.load(open(os.path.join(out, "report.json")))
    worst = cv2.imread(os.path.join(out, report["worst"][0]["picture"]), cv2.IMREAD_COLOR)
    where = cv2.imread(os.path.join(out, "pictures", "where.png"), cv2.IMREAD_COLOR)
    table = _table(report, worst.shape[1] - where.shape[1])
    h = max(where.shape[0], table.shape[0])
    bottom = np.full((h, worst.shape[1], 3), 255, np.uint8)
    bottom[:where.shape[0], :where.shape[1]] = where
    bottom[:table.shape[0], where.shape[1]:where.shape[1] + table.shape[1]] = table
    cv2.imwrite(args.out, np.vstack([worst, bottom]))
    print(args.out)
    return 0


def _table(report, width: int) -> np.ndarray:
    """The report's fleet rows (masks first) as a small picture of text."""
    fleet = report["fleet"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"
    lines = [f"A: {report['a']}", f"B: {report['b']}",
             f"{fleet['frames']} frames; pixels in different masks: {pct(fleet['disagreement'])}",
             f"mean confidence A {pct(fleet['mean_confidence_a'])}, B {pct(fleet['mean_confidence_b'])}", "",
             "mask / class        IoU A-B   share A   share B"]
    rows = sorted(fleet["rows"].items(), key=lambda kv: (kv[1]["kind"] != "mask", -(kv[1]["share_a"] + kv[1]["share_b"])))
    for name, r in rows[:12]:
        label = f"{name} mask" if r["kind"] == "mask" else name
        lines.append(f"{label[:18]:<18} {pct(r['iou']):>8} {pct(r['share_a']):>9} {pct(r['share_b']):>9}")
    img = np.full((22 * len(lines) + 16, max(width, 10), 3), 255, np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(img, text, (12, 24 + 22 * i), cv2.FONT_HERSHEY_PLAIN, 1.1, (0, 0, 0), 1, cv2.LINE_AA)
    return img


if __name__ == "__main__":
    sys.exit(main())
