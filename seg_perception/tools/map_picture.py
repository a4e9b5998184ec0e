"""The picture of the drivable map in docs/grid.md (docs/drivable_map.png): the ray-cast sample
drive's last single-frame grid beside the map after 5 s of driving, both in the map window.

    python -m seg_perception.tools.map_picture docs/drivable_map.png
"""

from __future__ import annotations

import sys

import cv2
import numpy as np

from ..core import sample
from ..core.class_sets import packaged_label_file
from ..core.datasets import CAMVID_PARKING_CLASSES
from ..core.drivable_map import DrivableMap, MapSpec
from ..core.grid import CameraModel, GridSpec, GroundGrid, camera_pose
from ..core.labels import load_label_file
from .pictures import map_picture


def drive(frames: int = 50, spec: MapSpec = MapSpec()):
    """(single-frame map, fused map) of the sample drive from its true labels and known motion."""
    cam = sample.SampleCamera(width=480, height=270)
    names = [n for n, _ in CAMVID_PARKING_CLASSES]
    grid_spec = GridSpec(x_min=0.0, x_max=30.0, y_min=-15.0, y_max=15.0, max_range=30.0)
    grid = GroundGrid(grid_spec, load_label_file(packaged_label_file(names), names))
    info = sample.camera_info_dict(cam)
    grid.configure(CameraModel.from_fields(info["width"], info["height"], info["k"], info["d"],
                                           info["distortion_model"]),
                   camera_pose(cam.pose_xyz, cam.pose_rpy), cam.height, cam.width)
    fused, single = DrivableMap(spec), DrivableMap(spec)
    for i in range(frames):
        t = i / cam.rate
        pose = (cam.speed * t, 0.0, 0.0)
        cells = grid.compute(sample.render_frame(i, cam)[1])
        fused.update(cells, grid_spec, pose, t)
    single.origin = fused.origin
    single.update(cells, grid_spec, pose, t)
    return single, fused


def picture() -> np.ndarray:
    single, fused = drive()
    panels = []
    for title, m in (("one frame's grid", single), ("~/drivable_map after 5 s", fused)):
        img = cv2.resize(map_picture(m.occupancy()), (360, 360), interpolation=cv2.INTER_AREA)
        bar = np.full((34, 360, 3), 255, np.uint8)
        cv2.putText(bar, title, (8, 23), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        panels += [np.vstack([bar, img]), np.full((394, 10, 3), 255, np.uint8)]
    legend = np.full((30, 730, 3), 255, np.uint8)
    cv2.putText(legend, "60 x 60 m window in odom, driving up at 8 m/s; green: drivable, black: not, grey: unknown",
                (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([np.hstack(panels[:-1]), legend])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = argv[0] if argv else "drivable_map.png"
    cv2.imwrite(out, cv2.cvtColor(picture(), cv2.COLOR_RGB2BGR))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
