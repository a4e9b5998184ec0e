"""The fleet report: which drives to look at first (DIR/fleet_report.md and fleet.json), from
the drive figures each bag's result carries (core/drive_metrics)."""

from __future__ import annotations

import datetime
import json
import os
from typing import Dict, List, Optional


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def _worst(drive: Dict[str, object]) -> str:
    parts = []
    for w in drive.get("worst_seconds") or []:
        why = []
        if w.get("no_drivable_ahead"):
            why.append("no drivable area ahead")
        why.append(f"{100 * w['unsure_share']:.0f} % unsure")
        if w.get("pedestrian_near"):
            why.append("pedestrian near")
        parts.append(f"{w['second']} s ({', '.join(why)})")
    return "; ".join(parts) or "-"


def write_fleet_report(out_dir: str, run) -> Optional[str]:
    """DIR/fleet_report.md and DIR/fleet.json over the bags of this run that are done (now or
    before), ranked by the drive's look-first score, with the failed ones and their reasons."""
    from ...core import drive_metrics as dm

    done = [(b, r) for b, r in run.results.items() if r.get("status") == "done" and r.get("drive")]
    if not done and not run.with_status("failed"):
        return None
    done.sort(key=lambda br: -float(br[1]["drive"]["look_first"]))
    rows: List[Dict[str, object]] = []
    for bag, r in done:
        d = r["drive"]
        rows.append({"bag": bag, "result": os.path.relpath(r["result"], out_dir) if r.get("result") else None,
                     "frames": d["frames"], "unsure": d["unsure"], "no_drivable_ahead": d["no_drivable_ahead"],
                     "pedestrian_near": d["pedestrian_near"], "mean_confidence": d["mean_confidence"],
                     "worst_seconds": d["worst_seconds"], "look_first": d["look_first"]})
    failed = [{"bag": b, "reason": run.results[b].get("reason")} for b in run.with_status("failed")]
    with open(os.path.join(out_dir, "fleet.json"), "w", encoding="utf-8") as f:
        json.dump({"drives": rows, "failed": failed}, f, indent=1)

    lines = [f"# Fleet report: {len(rows)} drives", "",
             f"Written {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by `seg-perception process-bags`. "
             "Drives are ranked by what is worth a look first (the sum of the first two shares and half "
             "the third).", "",
             "| # | drive | frames | unsure frames | no drivable area ahead | pedestrian near | mean confidence "
             "| worst seconds (from the drive's start) |",
             "|---|---|---|---|---|---|---|---|"]
    for i, row in enumerate(rows, 1):
        name = os.path.basename(str(row["bag"]))
        link = f"[{name}]({row['result']})" if row["result"] else name
        lines.append(f"| {i} | {link} | {row['frames']} | {_pct(row['unsure'])} | {_pct(row['no_drivable_ahead'])} "
                     f"| {_pct(row['pedestrian_near'])} | {_pct(row['mean_confidence'])} | {_worst(row)} |")
    if failed:
        lines += ["", f"## {len(failed)} bag(s) failed", ""]
        lines += [f"- `{f['bag']}`: {f['reason']}" for f in failed]
    lines += ["", "## What the columns count", "",
              f"- **unsure frames**: frames with more than {100 * dm.UNSURE_SHARE:.0f} % of their pixels below "
              "`min_confidence.grid` (the share the drivable grid leaves unknown).",
              f"- **no drivable area ahead**: frames whose grid calls under {100 * dm.MIN_DRIVABLE_AHEAD:.0f} % of the "
              f"known cells of the corridor {dm.AHEAD_X[0]:g}-{dm.AHEAD_X[1]:g} m ahead, {2 * dm.AHEAD_HALF_WIDTH:g} m "
              f"wide, drivable (of the frames whose grid knows at least {100 * dm.MIN_KNOWN_AHEAD:.0f} % of it).",
              f"- **pedestrian near**: frames whose pedestrian mask covers at least {100 * dm.PEDESTRIAN_NEAR_SHARE:.1f} % "
              "of the image's lower 40 %.",
              "- **worst seconds**: the three seconds of the drive with the most unsure pixels (a second with no "
              "drivable area ahead counts as all unsure). Each drive's frames.jsonl has every frame's figures."]
    path = os.path.join(out_dir, "fleet_report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path
