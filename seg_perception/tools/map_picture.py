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
from ..core.camera_model import CameraModel, camera_pose
from ..core.grid import GridSpec, GroundGrid
from ..core.labels import load_label_file
from .support.pictures import composite, map_picture, with_caption, write_picture


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
    panels = [cv2.resize(map_picture(m.occupancy()), (360, 360), interpolation=cv2.INTER_AREA)
              for m in (single, fused)]
    return with_caption(composite(panels, ["one frame's grid", "~/drivable_map after 5 s"], 360),
                        "60 x 60 m window in odom, driving up at 8 m/s; green: drivable, black: not, grey: unknown")


def main(argv=None) -> int:
    return write_picture(picture, "drivable_map.png", argv)


if __name__ == "__main__":
    sys.exit(main())
