"""Benchmark of the drivable-area grid: lookup-table build and per-frame grid, and the drivable
map's update per frame (the default 60 x 60 m window at 0.1 m, the sample drive's motion).

Uses the sample camera (1920x1080 CameraInfo, 1.5 m high, pitched 0.08 rad down) and a label map
at the default model's input size, rendered from the sample street scene. Called by
``seg-perception bench --grid``; also runs alone: ``python -m seg_perception.tools.bench_grid``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..core import sample
from ..core.datasets import CAMVID_PARKING_CLASSES
from ..core.drivable_map import DrivableMap, MapSpec
from ..core.camera_model import CameraModel, camera_pose
from ..core.grid import GridSpec, GroundGrid
from ..core.labels import load_label_file
from ..core.resources import DEFAULT_LABEL_FILE
from .support.common import parse_size, percentiles_ms

# Distortion coefficients used when a distorted model is benchmarked (moderate, monotonic).
_BENCH_D = {"plumb_bob": (-0.25, 0.07, 0.0005, -0.0005, 0.0),
            "rational_polynomial": (0.2, 0.02, 0.0005, 0.0003, 0.0, 0.6, 0.06, 0.0),
            "equidistant": (0.04, -0.01, 0.003, -0.0005)}


def _sample_labels(label_width: int, label_height: int, frame: int) -> np.ndarray:
    """Class map of a sample frame at the label size (rendered small, then nearest resize, as a
    stretched model output would be)."""
    cam = sample.SampleCamera(width=640, height=360)  # same field of view as the 1920x1080 one
    _, labels = sample.render_frame(frame, cam)
    return cv2.resize(labels, (label_width, label_height), interpolation=cv2.INTER_NEAREST)


def bench_grid(spec: Optional[GridSpec] = None, label_size: Tuple[int, int] = (480, 360),
               frames: int = 300, builds: int = 3, distortion_model: str = "plumb_bob",
               distorted: bool = False, threads: Optional[int] = None,
               print_fn: Optional[Callable[[str], None]] = print) -> Dict[str, object]:
    """Time the LUT build and the per-frame grid; returns the numbers (ms) and prints a summary.

    label_size is (width, height) of the class map; distorted=True uses non-zero coefficients of
    ``distortion_model`` (build cost only: the per-frame cost does not depend on the model).
    threads sets cv2.setNumThreads for the run (None: leave OpenCV's setting).
    """
    spec = spec or GridSpec()
    old_threads = cv2.getNumThreads()
    if threads is not None:
        cv2.setNumThreads(int(threads))
    try:
        names = [n for n, _ in CAMVID_PARKING_CLASSES]
        groups = load_label_file(DEFAULT_LABEL_FILE, names)
        cam = sample.SampleCamera()
        info = sample.camera_info_dict(cam)
        D = _BENCH_D[distortion_model] if distorted else (0.0,) * len(_BENCH_D[distortion_model])
        model = CameraModel.from_fields(info["width"], info["height"], info["k"], D, distortion_model)
        T = camera_pose(cam.pose_xyz, cam.pose_rpy)
        lw, lh = label_size

        grid, build_ms = _time_builds(spec, groups, model, T, lh, lw, builds)
        t0 = time.perf_counter()
        rebuilt = grid.configure(model, T, lh, lw)
        unchanged_us = (time.perf_counter() - t0) * 1e6

        label_frames = [_sample_labels(lw, lh, i) for i in range(4)]
        times = _time_computes(grid, label_frames, frames)
        map_ms, publish_ms = _bench_map(spec, [grid.compute(lab) for lab in label_frames], frames)
        compute, update = percentiles_ms(times / 1e3), percentiles_ms(map_ms / 1e3)
        result: Dict[str, object] = {
            "grid_cells": f"{spec.width}x{spec.height}",
            "resolution_m": spec.resolution,
            "visible_cells": grid.visible_cells,
            "camera": f"{info['width']}x{info['height']} {distortion_model}{' distorted' if distorted else ''}",
            "label_size": f"{lw}x{lh}",
            "opencv_threads": cv2.getNumThreads(),
            "build_ms_median": float(np.median(build_ms)),
            "configure_unchanged_us": unchanged_us,
            "configure_unchanged_rebuilt": rebuilt,
            "frames": frames,
            "compute_ms_median": compute["median"],
            "compute_ms_p90": compute["p90"],
            "compute_ms_min": float(times.min()),
            "compute_ms_max": float(times.max()),
            "map_cells": "x".join(str(v) for v in reversed(MapSpec().cells)),
            "map_update_ms_median": update["median"],
            "map_update_ms_p90": update["p90"],
            "map_publish_ms_median": float(np.median(publish_ms)),
        }
    finally:
        cv2.setNumThreads(old_threads)
    if print_fn is not None:
        _print_result(result, spec, len(build_ms), unchanged_us, frames, print_fn)
    return result


def _time_computes(grid, label_frames, frames: int) -> np.ndarray:
    """ms of each of ``frames`` grid computations (after 20 for warm-up), cycling the frames."""
    for i in range(20):
        grid.compute(label_frames[i % len(label_frames)])
    times = np.empty(frames)
    for i in range(frames):
        labels = label_frames[i % len(label_frames)]
        t0 = time.perf_counter()
        grid.compute(labels)
        times[i] = time.perf_counter() - t0
    return times * 1e3


def _time_builds(spec: GridSpec, groups, model, T, lh: int, lw: int, builds: int):
    """(the last grid built, ms of each build): a fresh GroundGrid each time, a real build."""
    build_ms = []
    for _ in range(max(1, builds)):
        grid = GroundGrid(spec, groups)
        t0 = time.perf_counter()
        grid.configure(model, T, lh, lw)
        build_ms.append((time.perf_counter() - t0) * 1e3)
    return grid, build_ms


def _print_result(result: Dict[str, object], spec: GridSpec, builds: int, unchanged_us: float, frames: int,
                  print_fn: Callable[[str], None]) -> None:
    print_fn(f"grid {result['grid_cells']} cells @ {spec.resolution} m "
             f"({result['visible_cells']} in view), camera {result['camera']}, "
             f"labels {result['label_size']}, OpenCV threads {result['opencv_threads']}")
    print_fn(f"  LUT build: {result['build_ms_median']:.1f} ms (median of {builds}); "
             f"configure with nothing changed: {unchanged_us:.0f} us")
    print_fn(f"  per frame: median {result['compute_ms_median']:.3f} ms, "
             f"p90 {result['compute_ms_p90']:.3f} ms, min {result['compute_ms_min']:.3f} ms "
             f"over {frames} frames")
    print_fn(f"  drivable map {result['map_cells']} cells @ {MapSpec().resolution} m: update per frame median "
             f"{result['map_update_ms_median']:.2f} ms, p90 {result['map_update_ms_p90']:.2f} ms (target < 2 ms); "
             f"occupancy for publishing {result['map_publish_ms_median']:.2f} ms")


def _bench_map(spec: GridSpec, grids, frames: int):
    """Per-frame map update with the vehicle driving at 8 m/s and turning slowly (10 Hz)."""
    m = DrivableMap(MapSpec())
    update, publish = np.empty(frames), np.empty(max(1, frames // 10))
    weight = np.full(grids[0].shape, 200, np.uint8)  # the model's confidence behind each cell, as the node passes it
    for i in range(frames):
        t = i / 10.0
        pose = (8.0 * t, 0.5 * t, 0.02 * t)
        t0 = time.perf_counter()
        m.update(grids[i % len(grids)], spec, pose, t, weight)
        update[i] = time.perf_counter() - t0
        if i % 10 == 0:
            t0 = time.perf_counter()
            m.occupancy()
            publish[i // 10] = time.perf_counter() - t0
    return update * 1e3, publish * 1e3


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--label-size", default="480x360", help="WxH of the class map (default 480x360)")
    p.add_argument("--resolution", type=float, default=GridSpec.resolution)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--distortion", default="plumb_bob", choices=sorted(_BENCH_D))
    p.add_argument("--distorted", action="store_true", help="non-zero distortion coefficients")
    p.add_argument("--threads", type=int, default=None, help="cv2.setNumThreads for the run")
    args = p.parse_args(argv)
    w, h = parse_size(args.label_size)
    bench_grid(GridSpec(resolution=args.resolution), (w, h), frames=args.frames,
               distortion_model=args.distortion, distorted=args.distorted, threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
