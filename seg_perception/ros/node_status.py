"""The camera_seg node's diagnostics: what it tells /diagnostics about the network, each camera
and its grid, and the surround grid. Read-only over the node's counters (ros/diagnostics.py)."""

from __future__ import annotations

import os
import time
from typing import Dict, List

from . import diagnostics as diag
from .camera import Camera


def node_statuses(node) -> list:
    """Every status of the node: the network's, each camera's (segmentation, grid) and, with
    several cameras, the surround grid's. The single camera shares one status with the network."""
    name = node.get_fully_qualified_name().lstrip("/")
    if not node.configured:  # a managed node before configure: nothing loaded, nothing to count
        failed = node.configure_error
        return [diag.make_status(
            f"{name}: segmentation", os.path.basename(node.model_path), diag.ERROR if failed else diag.OK,
            f"configure failed: {failed}" if failed else f"{node.lifecycle_state}: configure loads the model",
            {"lifecycle state": node.lifecycle_state, "model": node.model_path})]
    now, busy = time.monotonic(), node._network.busy_seconds()
    busy_share = (busy - node._busy_mark[1]) / max(now - node._busy_mark[0], 1e-6)
    node._busy_mark = (now, busy)
    network = {
        "backend": node.backend_text,
        "backend selection": node.backend_reason,
        "model": node.model_path,
        "label file": node.label_path,
        "masks always empty": node.empty_masks,
        # near 100: the network is the limit; well below it while frames are dropped: the
        # node's own work (decoding, outputs, DDS) is. Several runs at once: their mean
        "network busy (%)": f"{100 * busy_share:.1f}",
        "worker restarts": node._worker_restarts,
    }
    if node.lifecycle_state:
        network["lifecycle state"] = node.lifecycle_state
    map_status = [node.map.status(name)] if node.map is not None else []
    if not node.multi:  # one status for the camera and the network, as ever
        return camera_statuses(node, node.cameras[""], name, network) + map_status
    _, out_rate, lat, problems = node.stats.window()
    node_problems = [pr for k, pr in problems.items() if k in ("model", "worker")]
    p50 = diag.percentile(lat, 50)
    values = dict(network, cameras=", ".join(node.cameras), **{
        "network runs at once": node.inference_workers,
        "frames per network run (max)": node.batch_limit,
        "frames per network run (mean)": f"{node.network_frames / max(node.network_runs, 1):.2f}",
        "processed rate (Hz)": f"{out_rate:.2f}", "frames processed": node.stats.processed,
        "latency median (ms)": "n/a" if p50 is None else f"{p50 * 1e3:.1f}"})
    statuses = [diag.make_status(
        f"{name}: segmentation", os.path.basename(node.model_path),
        diag.worst([pr.level for pr in node_problems]),
        "; ".join(pr.message for pr in node_problems) if node_problems else
        f"segmenting {len(node.cameras)} cameras at {out_rate:.1f} Hz in all", values)]
    for cam in node.cameras.values():
        statuses += camera_statuses(node, cam, f"{name}: {cam.name}", {})
    if node.surround is not None:
        fused = node.surround.fused()
        used = fused[2] if fused else []
        statuses.append(diag.make_status(
            f"{name}: drivable grid", node.p["grid.frame_id"], diag.OK if used else diag.WARN,
            f"fused from {', '.join(used)}" if used else "no camera grid yet",
            {"cameras in it": ", ".join(used) or "none", "max spread (s)": node.p["grid.max_spread"]}))
    return statuses + map_status


def camera_statuses(node, cam: Camera, prefix: str, extra: Dict[str, object]) -> List[object]:
    """A camera's segmentation status (with ``extra`` values) and its grid's."""
    in_rate, out_rate, lat, problems = cam.stats.window()
    s = cam.stats
    seg_problems = [pr for k, pr in problems.items() if k != "grid"]
    level = diag.worst([pr.level for pr in seg_problems])
    if seg_problems:
        message = "; ".join(pr.message for pr in seg_problems)
    elif not node.active:
        message = "inactive: the model is loaded; activate subscribes the camera"
    elif in_rate == 0.0:
        level, message = diag.WARN, f"no images on {cam.image_topic}"
    elif cam.idle:
        message = "idle: no subscribers to any output"
    else:
        message = f"segmenting at {out_rate:.1f} Hz"
    p50, pmax = diag.percentile(lat, 50), (max(lat) if lat else None)
    values = dict(extra)
    values.update({
        "input topic": cam.image_topic,
        "input reliability": cam.sub_reliability.get("image", "not subscribed yet: no publisher"),
        "input rate (Hz)": f"{in_rate:.2f}",
        "processed rate (Hz)": f"{out_rate:.2f}",
        "frames received": s.received,
        "frames processed": s.processed,
        "frames dropped": s.dropped,
        "frames failed": s.failed,
        "latency median (ms)": "n/a" if p50 is None else f"{p50 * 1e3:.1f}",
        "latency max (ms)": "n/a" if pmax is None else f"{pmax * 1e3:.1f}",
        "last error": s.last_error or "none",
    })
    for stage, ms in sorted(s.stage_ms.items()):
        values[f"stage {stage} (ms)"] = f"{ms:.2f}"
    sep = ":" if cam.name == "" else ""  # "camera_seg: segmentation", "camera_seg: front segmentation"
    statuses = [diag.make_status(f"{prefix}{sep} segmentation", os.path.basename(node.model_path), level,
                                 message, values)]
    if node.p["grid.enabled"]:
        g = problems.get("grid")
        statuses.append(diag.make_status(
            f"{prefix}{sep} drivable grid", node.p["grid.frame_id"],
            g.level if g else diag.OK, g.message if g else "publishing",
            {"frame": node.p["grid.frame_id"], "resolution (m)": node.p["grid.resolution"],
             "camera_info topic": cam.info_topic,
             "camera_info timeout (s)": node.p["camera_info_timeout"],
             "lookup table builds": cam.pipeline.grid.builds if cam.pipeline is not None else 0}))
    return statuses
