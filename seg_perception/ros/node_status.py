"""The camera_seg node's diagnostics: what it tells /diagnostics about the network, each camera
and its grid, and the surround grid, from the frame runtime's snapshot (core/runtime) and what
the node knows of its topics."""

from __future__ import annotations

import os
from typing import Dict, List

from ..core.runtime.runtime import CameraSnapshot, RuntimeSnapshot
from ..core.runtime.stats import worst
from . import diagnostics as diag


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
    snap: RuntimeSnapshot = node.runtime.snapshot()
    network = {
        "backend": node.backend_text,
        "backend selection": node.backend_reason,
        "model": node.model_path,
        "label file": node.label_path,
        "masks always empty": node.empty_masks,
        # near 100: the network is the limit; well below it while frames are dropped: the
        # node's own work (decoding, outputs, DDS) is. Several runs at once: their mean
        "network busy (%)": f"{100 * snap.network_busy_share:.1f}",
        "worker restarts": snap.worker_restarts,
    }
    if node.lifecycle_state:
        network["lifecycle state"] = node.lifecycle_state
    map_status = [node.map.status(name)] if node.map is not None else []
    if not node.multi:  # one status for the camera and the network, as ever
        return camera_statuses(node, "", snap.cameras[""], name, network) + map_status
    node_problems = [pr for k, pr in snap.node.problems.items() if k in ("model", "worker")]
    p50 = snap.node.latency_p50
    values = dict(network, cameras=", ".join(node.cameras), **{
        "network runs at once": snap.runs_at_once,
        "frames per network run (max)": snap.frames_per_run,
        "frames per network run (mean)": f"{snap.network_frames / max(snap.network_runs, 1):.2f}",
        "processed rate (Hz)": f"{snap.node.processed_rate:.2f}",
        "frames processed": sum(c.processed for c in snap.cameras.values()),
        "latency median (ms)": "n/a" if p50 is None else f"{p50 * 1e3:.1f}"})
    statuses = [diag.make_status(
        f"{name}: segmentation", os.path.basename(node.model_path),
        diag.level(worst([pr.level for pr in node_problems])),
        "; ".join(pr.message for pr in node_problems) if node_problems else
        f"segmenting {len(node.cameras)} cameras at {snap.node.processed_rate:.1f} Hz in all", values)]
    for cam_name, cam_snap in snap.cameras.items():
        statuses += camera_statuses(node, cam_name, cam_snap, f"{name}: {cam_name}", {})
    surround = node.finisher.surround if node.finisher is not None else None
    if surround is not None:
        fused = surround.fused()
        used = fused[2] if fused else []
        statuses.append(diag.make_status(
            f"{name}: drivable grid", node.cfg.grid.frame_id, diag.OK if used else diag.WARN,
            f"fused from {', '.join(used)}" if used else "no camera grid yet",
            {"cameras in it": ", ".join(used) or "none", "max spread (s)": node.cfg.grid.max_spread}))
    return statuses + map_status


def camera_statuses(node, cam_name: str, snap: CameraSnapshot, prefix: str, extra: Dict[str, object]) -> List[object]:
    """A camera's segmentation status (with ``extra`` values) and its grid's."""
    cam = node.cameras[cam_name]
    w = snap.window
    seg_problems = [pr for k, pr in w.problems.items() if k != "grid"]
    level = diag.level(worst([pr.level for pr in seg_problems]))
    if seg_problems:
        message = "; ".join(pr.message for pr in seg_problems)
    elif not node.active:
        message = "inactive: the model is loaded; activate subscribes the camera"
    elif w.input_rate == 0.0:
        level, message = diag.WARN, f"no images on {cam.image_topic}"
    elif snap.idle:
        message = "idle: no subscribers to any output"
    else:
        message = f"segmenting at {w.processed_rate:.1f} Hz"
    p50, pmax = w.latency_p50, w.latency_max
    values = dict(extra)
    values.update({
        "input topic": cam.image_topic,
        "input reliability": cam.sub_reliability.get("image", "not subscribed yet: no publisher"),
        "input rate (Hz)": f"{w.input_rate:.2f}",
        "processed rate (Hz)": f"{w.processed_rate:.2f}",
        "frames received": snap.received,
        "frames processed": snap.processed,
        "frames dropped": snap.dropped,
        "frames failed": snap.failed,
        "latency median (ms)": "n/a" if p50 is None else f"{p50 * 1e3:.1f}",
        "latency max (ms)": "n/a" if pmax is None else f"{pmax * 1e3:.1f}",
        "last error": snap.last_error or "none",
    })
    for stage, ms in sorted(snap.stage_ms.items()):
        values[f"stage {stage} (ms)"] = f"{ms:.2f}"
    sep = ":" if cam_name == "" else ""  # "camera_seg: segmentation", "camera_seg: front segmentation"
    statuses = [diag.make_status(f"{prefix}{sep} segmentation", os.path.basename(node.model_path), level,
                                 message, values)]
    if node.cfg.grid.enabled:
        g = w.problems.get("grid")
        lane = node.runtime.lanes[cam_name]
        statuses.append(diag.make_status(
            f"{prefix}{sep} drivable grid", node.cfg.grid.frame_id,
            diag.level(g.level) if g else diag.OK, g.message if g else "publishing",
            {"frame": node.cfg.grid.frame_id, "resolution (m)": node.cfg.grid.resolution,
             "camera_info topic": cam.info_topic,
             "camera_info timeout (s)": node.cfg.grid.camera_info_timeout,
             **_pose_values(node, lane)}))
    return statuses


def _pose_values(node, lane) -> dict:
    """The grid's table builds and where its camera pose comes from (camera_pose.source)."""
    grid = lane.pipeline.grid if lane.pipeline is not None else None
    if grid is None:
        return {"lookup table builds": 0, "camera pose": node.cfg.camera("").pose.source}
    return {"lookup table builds": grid.builds,
            "camera pose": grid.pose_from if grid.pose_source is not None else "camera_pose.xyz/rpy (parameters)",
            "frames skipped (no camera pose)": grid.pose_skipped}
